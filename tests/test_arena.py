"""Side-by-side chat records and the Bradley–Terry leaderboard (plain and length-controlled)."""

from __future__ import annotations

import random

import pytest

from backend import arena
from storage.models import Vote


def synthetic_votes(n: int = 300, seed: int = 0) -> list[Vote]:
    """Judges prefer longer answers; only 'good' is really better. 'long' answers long, so it wins on length."""
    import math

    rng = random.Random(seed)
    quality = {"good": 1.0, "long": 0.0, "weak": 0.0}
    length = {"long": (150, 300), "good": (20, 120), "weak": (20, 120)}
    vs = []
    for _ in range(n):
        a, b = rng.sample(sorted(quality), 2)
        ta, tb = rng.randint(*length[a]), rng.randint(*length[b])
        logit = quality[a] - quality[b] + 3.0 * (ta - tb) / (ta + tb)
        outcome = "a" if rng.random() < 1 / (1 + math.exp(-logit)) else "b"
        vs.append(Vote(transcript_id=0, model_a=a, model_b=b, outcome=outcome, tokens_a=ta, tokens_b=tb))
    return vs


def test_bradley_terry_orders_models_and_gives_intervals():
    board = arena.leaderboard(synthetic_votes(600), boots=100)
    assert [r["model"] for r in board] == ["long", "good", "weak"]
    assert sum(r["score"] for r in board) == pytest.approx(3000)
    assert all(r["low"] <= r["score"] <= r["high"] for r in board)
    assert sum(r["votes"] for r in board) == 2 * 600


def test_length_control_removes_an_advantage_that_is_only_length():
    vs = synthetic_votes(2000)
    plain = {r["model"]: r["score"] for r in arena.leaderboard(vs, boots=20)}
    controlled = {r["model"]: r["score"] for r in arena.leaderboard(vs, length_control=True, boots=20)}
    assert plain["long"] > plain["good"] > plain["weak"]  # plain: length buys the top place
    assert controlled["good"] > controlled["long"]  # controlled: quality ranks first again
    assert abs(controlled["long"] - controlled["weak"]) < 60  # and 'long' is no better than 'weak' (true: equal)


def test_ties_count_half_and_votes_are_recorded():
    t = arena.save_transcript("2+2?", {"temperature": 0}, {"m1": {"text": "4", "tokens": 3},
                                                           "m2": {"text": "5", "tokens": 9}})
    v = arena.vote(t.id, "m1", "m2", "tie")
    assert (v.tokens_a, v.tokens_b) == (3, 9)
    board = arena.leaderboard(boots=10)
    assert board[0]["score"] == pytest.approx(board[1]["score"], abs=1e-6)
    arena.flag_hallucination(t.id, "m2")
    with pytest.raises(ValueError, match="outcome must be"):
        arena.vote(t.id, "m1", "m2", "maybe")
    with pytest.raises(ValueError, match="both models must have answered"):
        arena.vote(t.id, "m1", "m3", "a")
