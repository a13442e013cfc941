"""Session 19: a reply blank until the token limit (a broken or untrained model's whitespace) never answered: it is
"cut off", not "abstained" — counted as abstaining, a model that says nothing looked like one that knows it does not
know (hallucination rate 0), and the length check said it had nothing to explain. A resumed job's progress starts
again from its queue, not the cancelled run's bar."""

from __future__ import annotations

import pytest

from backend import qa, runner
from backend.specs import CptSpec, DataSource
from storage import db
from storage.models import Job


@pytest.mark.parametrize("kind, answers", [("math", ["12"]), ("answerable", ["Rome"]), ("unanswerable", [])])
def test_a_reply_blank_to_the_token_limit_is_cut_off_not_abstained(kind, answers):
    blank = " \n\n  \t" * 12  # 48 tokens of whitespace, stopped by max_new_tokens
    assert qa.classify(blank, answers, kind, truncated=True) == "cut off"
    assert qa.classify(blank, answers, kind, truncated=False) == "empty"  # ended by itself: said nothing (s20)
    assert qa.classify("", answers, kind, truncated=False) == "empty"
    assert qa.flags("cut off") == {"correct": False, "hallucination": False, "answered": False}
    # a judge sees no token limit: its "abstained" on a blank reply to the limit is cut off too
    assert qa.unless_cut_off("abstained", blank, kind, truncated=True) == "cut off"
    assert qa.unless_cut_off("abstained", "I don't know", kind, truncated=True) == "abstained"
    # an explicit decline stopped by the limit is still a decline
    assert qa.classify("I don't know, but", answers, kind, truncated=True) == "abstained"


def test_a_resumed_job_starts_its_progress_again(tiny_llama, workspace):
    job = runner.submit(CptSpec(model=str(tiny_llama), data=[DataSource(source="builtin:facts-corpus")], max_steps=30,
                                out=str(workspace / "models" / "resumed")))
    runner._update(job.id, status="cancelled", progress=16 / 30, message="step 16/30 · cancelled")
    resumed = runner.resume(job.id)
    assert (resumed.status, resumed.progress, resumed.message) == ("queued", 0.0, "queued to resume")
    with db.session() as s:
        assert s.get(Job, job.id).progress == 0.0
