"""Review s26: the arena counted a vote between two answers that showed nothing (two tiny models' 96 newlines each:
"A is better" moved the leaderboard to 1188.6 against 811.4), and an evaluation said nothing inside a generating task
("[ 0.0%] SmolLM2-135M-Instruct: qa" for 7 minutes, then "[ 25.0%] … synth-math")."""

from __future__ import annotations

import pytest

from backend import arena, evaljob, evaluate, registry
from backend.specs import EvalSpec
from storage import db
from storage.models import Vote
from tests.test_pages import app

BLANK = {"text": "\n" * 96, "error": None, "tokens": 96, "first_token_s": 0.01, "seconds": 0.7,
         "tokens_per_s": 135.0, "hallucination": False}
OK = {**BLANK, "text": "7", "tokens": 1}


def _vote_row(t, a: str, b: str, outcome: str) -> None:
    """A vote written as vote_round wrote it before it refused answers that show nothing (an older database)."""
    with db.session() as s:
        s.add(Vote(transcript_id=t.id, model_a=a, model_b=b, outcome=outcome, position_a=t.positions.index(a),
                   position_b=t.positions.index(b), blind=True))
        s.commit()


def test_a_round_whose_answers_show_nothing_takes_no_vote():
    t = arena.save_transcript("What is 3 + 4?", {}, {"a": BLANK, "b": {**BLANK, "text": "\n\n\x12\x12"}},
                              positions=["a", "b"], blind=True)
    for outcome in arena.OUTCOMES:  # "A is better" was taken; "both bad" counts as a tie in the fit, so it goes too
        with pytest.raises(ValueError, match=rf"^round {t.id} cannot be voted on: Model A, Model B gave no answer "
                                             r"\(nothing visible\), so there is nothing to compare"):
            arena.vote(t.id, "a", "b", outcome)
    with pytest.raises(ValueError, match="Model A, Model B gave no answer"):
        arena.vote_round(t.id, "a")
    assert not arena.voted(t.id) and arena.votes() == [] and arena.leaderboard() == []
    assert arena.last_unvoted_round() is None  # not offered again as a round to vote on
    assert arena.no_answer(t) == {"a": "nothing visible", "b": "nothing visible"}


def test_an_empty_answer_beside_an_error_and_a_real_answer_is_said_by_label():
    err = {**BLANK, "text": "", "error": "generation failed: x"}
    t = arena.save_transcript("q", {}, {"m1": OK, "m2": {**OK, "text": ""}, "m3": err, "m4": OK},
                              positions=["m1", "m2", "m3", "m4"], blind=True)
    with pytest.raises(ValueError, match=r"Model B gave no answer \(nothing visible\)"):
        arena.vote(t.id, "m1", "m2", "bad")
    assert arena.no_answer_words(t) == "Model B, Model C gave no answer (nothing visible; an error)"
    with pytest.raises(ValueError, match=r"Model B, Model C gave no answer"):
        arena.vote_round(t.id, "tie")
    v = arena.vote(t.id, "m1", "m4", "a")  # the two real answers of the round can still be compared
    assert (v.model_a, v.model_b, v.outcome) == ("m1", "m4", "a")


def test_votes_already_cast_on_answers_that_show_nothing_stay_out_of_the_fit():
    good = arena.save_transcript("q", {}, {"x": OK, "y": {**OK, "text": "8"}}, positions=["x", "y"], blind=True)
    _vote_row(good, "x", "y", "a")
    alone = {r["model"]: r["score"] for r in arena.leaderboard(boots=5)}
    blank = arena.save_transcript("q", {}, {"x": OK, "y": BLANK}, positions=["y", "x"], blind=True)
    _vote_row(blank, "y", "x", "a")  # the walk's vote: the answer of newlines "won"
    board = {r["model"]: r["score"] for r in arena.leaderboard(boots=5)}
    assert board == pytest.approx(alone) and board["x"] > 1000  # was a 1:1 split, both at 1000
    assert [v.transcript_id for v in arena.votes()] == [good.id]
    assert [v.transcript_id for v in arena.votes_on_errors()] == [blank.id]
    assert {r["model"]: r["votes"] for r in arena.leaderboard(boots=5)} == {"x": 1, "y": 1}


@pytest.fixture
def two(tiny_llama):
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(tiny_llama, "b")


def test_the_page_offers_no_vote_on_answers_that_show_nothing_and_says_why(two):
    t = arena.save_transcript("What is 3 + 4?", {"max_new_tokens": 96}, {"a": BLANK, "b": BLANK},
                              positions=["a", "b"], blind=True)
    at = app("arena.py")
    at.session_state["arena_round"] = t.id
    at.run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key and b.key.startswith("vote_")]  # were A/B is better, Tie, Both bad
    assert [w.value for w in at.warning if w.value.startswith("No vote")] == [
        "No vote on this round: Model A, Model B gave no answer (nothing visible), so there is nothing to compare. "
        "Regenerate the round or send another prompt."]


# ---- 2. progress within a generating task -----------------------------------------------------------------------

def test_an_evaluation_says_its_progress_within_each_generating_task(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    # every batch said (a real run: at most twice a second)
    monkeypatch.setattr(evaljob, "ITEM_PROGRESS_EVERY", 0, raising=False)
    said: list[tuple[float, str]] = []
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["qa", "synth-math"], limit=4, batch_size=2, samples=2,
                               max_new_tokens=8), None, lambda f, m: said.append((round(f, 4), m)))
    within = [(f, m) for f, m in said if "/" in m]
    # qa: one pass of 4 answers at batch 2; synth-math: a greedy pass and a sampled one (samples=2), 8 answers
    assert within == [(0.25, "tiny: qa 2/4"), (0.5, "tiny: qa 4/4"), (0.625, "tiny: synth-math 2/8"),
                      (0.75, "tiny: synth-math 4/8"), (0.875, "tiny: synth-math 6/8"),
                      (1.0, "tiny: synth-math 8/8")]
    assert [m for _, m in said if m.startswith("tiny: ") and "/" not in m][1:] == ["tiny: qa", "tiny: synth-math"]


def test_progress_within_a_task_is_said_at_most_every_half_second(monkeypatch):
    clock = iter([10.0, 10.2, 10.6, 10.9, 11.2])  # the task's line at 10.0, then one batch at each later time
    monkeypatch.setattr(evaljob.time, "monotonic", lambda: next(clock))
    said: list[tuple[float, str]] = []
    on_items = evaljob._within(lambda f, m: said.append((f, m)), 1, 4, "m: qa")
    for done in (4, 8, 12, 16):
        on_items(done, 16)
    assert said == [(1.5 / 4, "m: qa 8/16"), (2 / 4, "m: qa 16/16")]
