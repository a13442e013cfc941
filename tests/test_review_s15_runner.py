"""Fifteenth session, the job runner's state machine: an evaluation that waits for a stage (soft) and left its
model out is queued again when that stage is resumed, whichever way the runs interleave; a queued import's name is
known to the queue. Each test fails without its fix."""

from __future__ import annotations

import pytest

from backend import evaljob, evaluate, registry, runner
from backend.recipe import tables
from backend.specs import DataSource, EvalSpec, ImportSpec, SftSpec
from storage.models import utcnow


def _fast_sft(model: str, name: str) -> SftSpec:
    return SftSpec(model=model, data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=1,
                   save_steps=1, eval_fraction=0.0, max_length=32, max_rows=4)


def _finished(job_id: int, tiny_llama, name: str) -> None:
    """What a stage's run on another worker leaves behind: its model registered, its row succeeded."""
    registry.import_folder(tiny_llama, name)
    runner._update(job_id, status="succeeded", finished=utcnow(), progress=1.0)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_an_evaluation_whose_resumed_stage_succeeded_before_it_ended_is_queued_again(tiny_llama, monkeypatch):
    """The stage was resumed while the evaluation that left its model out ran, and a second slot (or machine)
    finished it before the evaluation ended: only a stage still queued or running queued the evaluation again, so
    it ended "succeeded" with the model skipped and the model, made, was never scored."""
    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(_fast_sft("tiny", "made-by-a"))
    ev = runner.submit(EvalSpec(models=["tiny", "made-by-a"], tasks=["perplexity"], limit=2, skip_missing=True),
                       waits=[a.id])
    runner._update(a.id, status="failed", error="x")
    real = evaluate.score_task

    def resumed_and_finished_meanwhile(*args, **kw):
        if runner.get(a.id).status == "failed":
            runner.resume(a.id)
            _finished(a.id, tiny_llama, "made-by-a")
        return real(*args, **kw)

    monkeypatch.setattr(evaljob, "score_task", resumed_and_finished_meanwhile)
    assert runner.execute(ev.id) == 0
    row = runner.get(ev.id)
    assert row.result["skipped"] == ["made-by-a"]
    assert row.status == "queued" and row.message == f"queued again: job {a.id} it waits for was queued again"
    # run again it scores the model and stays done: no loop
    assert runner.execute(ev.id) == 0
    row = runner.get(ev.id)
    assert row.status == "succeeded" and not row.result.get("skipped")
    assert tables.latest_scores(["made-by-a"])["made-by-a"]["perplexity"] > 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_an_evaluation_that_had_none_of_its_models_is_queued_again_with_its_stage(tiny_llama):
    """A recipe rerun evaluates only its changed stage's model: the stage failed, so did the evaluation ("none of
    the models to evaluate exists"), and resuming the stage left the evaluation failed for good."""
    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(_fast_sft("tiny", "made-by-a"))
    ev = runner.submit(EvalSpec(models=["made-by-a"], tasks=["perplexity"], limit=2, skip_missing=True), waits=[a.id])
    other = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=2, skip_missing=True), waits=[a.id])
    runner._update(a.id, status="failed", error="x")
    runner._update(other.id, status="failed", error="out of memory")  # failed for its own reason: it stays failed
    assert runner.execute(ev.id) == 1
    assert runner.get(ev.id).status == "failed" and "none of the models" in runner.get(ev.id).error
    runner.resume(a.id)
    row = runner.get(ev.id)
    assert row.status == "queued" and row.message == f"queued again: job {a.id} it waits for was queued again"
    assert row.error == "" and row.finished is None and runner.get(other.id).status == "failed"
    _finished(a.id, tiny_llama, "made-by-a")
    assert runner.execute(ev.id) == 0 and runner.get(ev.id).status == "succeeded"
    assert tables.latest_scores(["made-by-a"])["made-by-a"]["perplexity"] > 1


def test_the_queue_knows_the_name_a_queued_import_registers(tiny_llama):
    """A named import (the Models page queues one) was not among the jobs that "will register" a name: a second
    job under that name was queued and failed when its turn came, and a job reading the model was refused."""
    registry.import_folder(tiny_llama, "tiny")
    imp = runner.submit(ImportSpec(target=str(tiny_llama), name="mine"))
    for spec in (ImportSpec(target=str(tiny_llama), name="mine"), _fast_sft("tiny", "mine")):
        with pytest.raises(ValueError, match=f"Job {imp.id} \\(import, queued\\) will register a model named 'mine'"):
            runner.submit(spec)
    assert [j.id for j in runner.list_jobs()] == [imp.id]  # the refusals queued nothing
    reads = runner.submit(_fast_sft("mine", "mine-sft"), after=imp.id)  # `train --model mine --queue --after`
    assert runner.get(reads.id).after == imp.id
    runner.submit(ImportSpec(target="builtin"))  # the built-in model, asked for twice, is imported as one: both queue
    runner.submit(ImportSpec(target="builtin"))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_queued_job_is_never_seen_without_its_log_path(tiny_llama):
    """submit() committed the row, then its log path in a second commit: a worker claiming it in between (13 of 200
    jobs against a claiming loop) ran it with its output sent to os.devnull, and the log its row names never
    existed."""
    from sqlalchemy import event
    from sqlmodel import Session, select

    from storage import db
    from storage.models import Job

    registry.import_folder(tiny_llama, "tiny")
    seen: list[int] = []

    def look(_session) -> None:  # what another process (a worker) sees after each commit
        with db.session() as s:
            seen.extend(s.exec(select(Job.id).where(Job.log_path == "")).all())

    event.listen(Session, "after_commit", look)
    try:
        job = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=2))
    finally:
        event.remove(Session, "after_commit", look)
    assert seen == [] and runner.get(job.id).log_path.endswith(f"logs/job-{job.id}.log")
