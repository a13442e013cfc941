"""Blind side-by-side rounds and the Bradley–Terry leaderboard with Chatbot Arena's style control: planted strengths
are recovered, ties count as FastChat counts them, rounds (not votes) are resampled, positions are recorded."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from backend import arena
from storage.models import Vote

TRUE = {"m1": 1100.0, "m2": 1000.0, "m3": 950.0, "m4": 950.0}  # Elo scale, mean 1000
LENGTH = {"m1": (20, 120), "m2": (20, 120), "m3": (200, 400), "m4": (20, 120)}  # m3 pads its answers


def _p(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def planted_votes(n: int = 4000, gamma: float = 3.0, tie_rate: float = 0.1, seed: int = 0) -> list[Vote]:
    """Pairs drawn at random, sides at random; P(A wins) = σ(ln10·(θa − θb)/400 + γ·(ta − tb)/(ta + tb + 1))."""
    rng = random.Random(seed)
    vs = []
    for i in range(n):
        a, b = rng.sample(sorted(TRUE), 2)
        ta, tb = rng.randint(*LENGTH[a]), rng.randint(*LENGTH[b])
        logit = math.log(10) * (TRUE[a] - TRUE[b]) / 400 + gamma * (ta - tb) / (ta + tb + 1)
        u = rng.random()
        outcome = "tie" if u < tie_rate else "a" if rng.random() < _p(logit) else "b"
        vs.append(Vote(transcript_id=i, model_a=a, model_b=b, outcome=outcome, tokens_a=ta, tokens_b=tb,
                       position_a=0, position_b=1, blind=True))
    return vs


def test_style_control_recovers_planted_strengths_that_the_plain_fit_gets_wrong():
    vs = planted_votes()
    plain = arena.fit(vs)["elo"]
    styled = arena.fit(vs, style_control=True)
    assert sum(plain.values()) == pytest.approx(4000) and sum(styled["elo"].values()) == pytest.approx(4000)
    assert plain["m3"] - TRUE["m3"] > 100  # length buys m3 more than 100 points in the plain fit
    assert max(plain, key=plain.get) == "m3"
    for m, elo in styled["elo"].items():
        assert elo == pytest.approx(TRUE[m], abs=35), m  # within 35 Elo of the truth
    assert styled["style"]["tokens"] > 0.3  # the length preference is found (log10-odds per sd)
    assert set(styled["style"]) == {"tokens"}  # no markdown in any answer: those columns are left out, said so
    assert any("headers" in n for n in styled["notes"])


def test_style_matrix_follows_fastchat():
    vs = [Vote(transcript_id=1, model_a="x", model_b="y", outcome="a", tokens_a=30, tokens_b=10, bold_a=2),
          Vote(transcript_id=2, model_a="y", model_b="x", outcome="tie", tokens_a=10, tokens_b=10),
          Vote(transcript_id=3, model_a="x", model_b="y", outcome="bad", tokens_a=5, tokens_b=25)]
    x, y, kept, _ = arena._design(vs, ["x", "y"], style_control=True)
    assert x.shape == (6, 4) and kept == ["tokens", "bold"]
    assert np.allclose(x[:3, :2], [[math.log(10), -math.log(10)], [-math.log(10), math.log(10)],
                                   [math.log(10), -math.log(10)]])
    d = np.array([20 / 41, 0 / 21, -20 / 31])
    assert np.allclose(x[:3, 2], (d - d.mean()) / d.std())
    assert np.allclose(x[3:], x[:3])  # every vote written twice
    # a win is two A wins; a tie and a both-bad tie are one A win (first copy) and one B win (second copy)
    assert y.tolist() == [1, 1, 1, 1, 0, 0]


def test_round_bootstrap_is_wider_than_vote_bootstrap_on_multi_model_rounds():
    """Four models per round, one judgement (the best answer) per round: 3 votes that share a winner."""
    rng = random.Random(1)
    vs = []
    for r in range(300):
        order = rng.sample(sorted(TRUE), 4)
        utility = {m: TRUE[m] / 400 * math.log(10) - math.log(-math.log(rng.random())) for m in order}
        best = max(utility, key=utility.get)
        for y in order:
            if y != best:
                a, b = (best, y) if order.index(best) < order.index(y) else (y, best)
                vs.append(Vote(transcript_id=r, model_a=a, model_b=b, outcome="a" if a == best else "b",
                               position_a=order.index(a), position_b=order.index(b), blind=True))
    width = {how: np.mean([r["high"] - r["low"] for r in arena.leaderboard(vs, boots=150, resample=how)])
             for how in ("rounds", "votes")}
    assert width["rounds"] > 1.15 * width["votes"]
    with pytest.raises(ValueError, match="resample"):
        arena.leaderboard(vs, resample="items")


def test_blind_round_records_positions_and_votes_best_against_the_rest():
    answers = {m: {"text": t, "tokens": n} for m, t, n in (("m1", "## Plan\n- a\n- b\n**yes**", 12),
                                                            ("m2", "4", 1), ("m3", "```\n# no\n```\nfour", 5))}
    positions = arena.shuffle_positions(list(answers), random.Random(3))
    t = arena.save_transcript("2+2?", {"temperature": 0}, answers, positions=positions, blind=True)
    assert t.positions == positions and t.blind
    vs = arena.vote_round(t.id, "m2")
    assert len(vs) == 2 and all("m2" in (v.model_a, v.model_b) for v in vs)  # no invented m1–m3 tie
    for v in vs:
        assert (v.position_a, v.position_b) == (positions.index(v.model_a), positions.index(v.model_b))
        assert v.position_a < v.position_b and v.blind  # model_a is the one shown further left
        assert v.outcome == ("a" if v.model_a == "m2" else "b")
    m1_vote = next(v for v in vs if "m1" in (v.model_a, v.model_b))
    side = "a" if m1_vote.model_a == "m1" else "b"
    assert (getattr(m1_vote, f"headers_{side}"), getattr(m1_vote, f"lists_{side}"),
            getattr(m1_vote, f"bold_{side}")) == (1, 2, 1)
    assert arena.style_counts(answers["m3"]["text"]) == {"headers": 0, "lists": 0, "bold": 0}  # code removed
    tied = arena.save_transcript("2+2?", {}, answers, positions=positions, blind=True)  # one vote per round
    assert len(arena.vote_round(tied.id, "tie")) == 3
    with pytest.raises(ValueError, match="best must be one of"):
        arena.vote_round(t.id, "m9")


def test_shuffle_changes_positions_across_rounds():
    seen = {tuple(arena.shuffle_positions(["m1", "m2"], random.Random(s))) for s in range(20)}
    assert seen == {("m1", "m2"), ("m2", "m1")}
    with pytest.raises(ValueError, match="positions must list"):
        arena.save_transcript("q", {}, {"m1": {}, "m2": {}}, positions=["m1", "m3"])


def test_position_bias_counts_wins_by_screen_position():
    vs = [Vote(transcript_id=i, model_a="x", model_b="y", outcome="a" if i < 8 else "b", position_a=0,
               position_b=1) for i in range(10)]
    vs.append(Vote(transcript_id=10, model_a="x", model_b="y", outcome="tie", position_a=0, position_b=1))
    rows = {r["position"]: r for r in arena.position_bias(vs)}
    assert rows["Model A"]["win_rate"] == 0.8 and rows["Model A"]["decisive"] == 10
    assert rows["Model B"]["wins"] == 2
    lo, hi = rows["Model A"]["low"], rows["Model A"]["high"]
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)  # Wilson, by hand


def test_ties_count_half_and_votes_are_recorded():
    t = arena.save_transcript("2+2?", {"temperature": 0}, {"m1": {"text": "4", "tokens": 3},
                                                           "m2": {"text": "5", "tokens": 9}})
    v = arena.vote(t.id, "m1", "m2", "tie")
    assert (v.tokens_a, v.tokens_b, v.position_a, v.position_b, v.blind) == (3, 9, 0, 1, False)
    board = arena.leaderboard(boots=10)
    assert board[0]["score"] == pytest.approx(board[1]["score"], abs=1e-6)
    assert arena.leaderboard(blind_only=True) == []  # a vote cast with names shown is not a blind vote
    arena.flag_hallucination(t.id, "m2")
    with pytest.raises(ValueError, match="outcome must be"):
        arena.vote(t.id, "m1", "m2", "maybe")
    with pytest.raises(ValueError, match="both models must have answered"):
        arena.vote(t.id, "m1", "m3", "a")


def test_the_page_hides_names_until_the_vote_and_records_the_shuffled_order(tiny_llama_untied, tokenizer_dir,
                                                                               tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from backend import registry
    from storage import db
    from storage.models import ChatTranscript
    from tests.conftest import make_llama

    # untied: a tied random model repeats the prompt's last token ("\n"), and answers that show nothing take no vote
    registry.import_folder(tiny_llama_untied, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5, tie=False), "tiny-b")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/arena.py").run()
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception, at.exception
    heads = [m.value for m in at.markdown if m.value.startswith("**Model ")]
    assert heads == ["**Model A**", "**Model B**"]  # no names before the vote…
    assert not any("tokens/s" in c.value for c in at.caption)  # …and no speeds, which would give a model away
    at.button(key="vote_a").click().run()
    (v,) = arena.votes()
    with db.session() as s:
        t = s.get(ChatTranscript, v.transcript_id)
    assert sorted(t.positions) == ["tiny", "tiny-b"] and t.blind
    assert (v.model_a, v.model_b, v.position_a, v.position_b, v.outcome, v.blind) == (*t.positions, 0, 1, "a", True)
    revealed = next(s.value for s in at.success)
    assert f"Model A was **{t.positions[0]}**" in revealed and f"Model B was **{t.positions[1]}**" in revealed
    assert len([c for c in at.caption if "tokens/s" in c.value]) == 2
    board = at.dataframe[0].value
    assert board["model"].iloc[0] == t.positions[0]  # the one voted for leads
    at.toggle(key="arena_show_names").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("And 3 + 3?").run()
    with db.session() as s:
        second = s.get(ChatTranscript, v.transcript_id + 1)
    assert not second.blind  # names shown while answering: not a blind round


def test_position_bias_figure_draws_the_rates():
    from pages.figures import position_bias_figure

    vs = [Vote(transcript_id=i, model_a="x", model_b="y", outcome="ab"[i % 3 == 0], position_a=0, position_b=1)
          for i in range(9)]
    fig = position_bias_figure(arena.position_bias(vs))
    assert list(fig.data[0].x) == ["Model A", "Model B"] and list(fig.data[0].y) == pytest.approx([6 / 9, 3 / 9])
