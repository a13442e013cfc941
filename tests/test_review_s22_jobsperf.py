"""Session 22: the Jobs page's table (refreshed every 2 s) and `jobs list` read the queue, the models, the heartbeats
and the rows waited on once per pass (runner.messages.one_pass), not once per job: at 3,058 jobs (240 active) a
refresh made 453 SQL statements and worked out the queue's order once per queued job. The messages are the
unbatched ones, word for word; `jobs list` says how many jobs it left out and how to see them."""

from __future__ import annotations

import collections
import contextlib
import os
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from backend import registry, runner
from backend.specs import EvalSpec, SftSpec, DataSource, UpscaleSpec
from storage import db
from storage.models import WorkerBeat, utcnow


@contextlib.contextmanager
def counted():
    """The SQL statements run inside, by their first words."""
    seen = collections.Counter()

    def count(conn, cursor, statement, *args):
        seen[" ".join(statement.split())[:60]] += 1

    sa.event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(Engine, "before_cursor_execute", count)


def _jobs(n: int, tiny_llama) -> None:
    """`n` jobs in every state and every way of waiting, made as the runner makes them (submit, _transition): ready
    evaluations, builds, chains after a succeeded, a queued and a failed job, a `waits` on a running one, a training
    on a built-in set, a job reading a model deleted since, running jobs here and on a machine gone silent."""
    db.init_db()
    for name in ("tiny", "doomed"):
        registry.import_folder(tiny_llama, name=name)
    ev = lambda *models: EvalSpec(models=list(models) or ["tiny"], tasks=["perplexity"], limit=2)  # noqa: E731
    ended = runner.submit(ev()).id
    for i in range(n):
        step = i % 10
        if step == 0:
            job = runner.submit(UpscaleSpec(base="tiny", m=1, name=f"up-{i}"))
        elif step == 1:
            job = runner.submit(ev(), after=ended if i else None)
        elif step == 2:
            job = runner.submit(ev("doomed", "tiny"))
        elif step == 3:
            job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name=f"s-{i}"))
        else:
            job = runner.submit(ev())
        # states: 0-3 stay queued (4 waits on 3, queued); 5 runs here with no process; 6 runs on a silent machine
        # and 7 waits (waits=) on it; 8 ends by cycle; one more waits on 9, queued
        if step == 4:
            runner.submit(ev(), after=job.id - 1)
        if step in (5, 6):
            runner._transition(job.id, "queued", status="running", started=utcnow() - timedelta(minutes=5),
                               pid=None, host="" if step == 5 else "gone-host", message="step 3/9", progress=0.3)
            if step == 6:
                runner.submit(ev(), waits=[job.id])
        if step == 8:
            runner._transition(job.id, "queued", status="running", started=utcnow(), pid=None, message="starting")
            end = ["succeeded", "failed", "cancelled", "interrupted"][(i // 10) % 4]
            runner._transition(job.id, "running", status=end, finished=utcnow(), message=f"{end}: done",
                               error="EvalFailed: x" if end == "failed" else "")
        if step == 9:
            runner.submit(ev(), after=job.id)
    # the job the chains wait on, and one more chain after a job that then failed
    runner._transition(ended, "queued", status="running", started=utcnow(), pid=None)
    waiting = runner.submit(ev(), after=ended).id
    runner._transition(ended, "running", status="failed", finished=utcnow(), error="boom", message="failed")
    assert runner.get(waiting).status == "queued"
    registry.delete("doomed", delete_files=False, force=True)
    with db.session() as s:  # the silent machine's worker beat long ago
        s.add(WorkerBeat(host="gone-host", pid=1, seen=utcnow() - timedelta(hours=2)))
        s.commit()


def _worker_alive(on: bool) -> None:
    with db.session() as s:
        if on:
            s.add(WorkerBeat(host=runner.host_id(), pid=os.getpid(), seen=utcnow()))
        else:
            for b in s.exec(sa.select(WorkerBeat).where(WorkerBeat.host == runner.host_id())).scalars():
                s.delete(b)
        s.commit()


def _unbatched(jobs) -> tuple[dict, list]:
    """The messages and warnings as the page and `jobs list` made them before one_pass: row by row."""
    alive, active = runner.worker_alive(), runner.active_jobs()
    making = runner.made_by(active)
    return ({j.id: runner.job_message(j, active, alive) for j in jobs},
            [w for j in jobs if (w := runner.will_fail(j, active, making))])


def _batched(jobs) -> tuple[dict, list]:
    from backend.runner.messages import one_pass

    with one_pass(jobs) as (active, alive):
        making = runner.made_by(active)
        return ({j.id: runner.job_message(j, active, alive) for j in jobs},
                [w for j in jobs if (w := runner.will_fail(j, active, making))])


@pytest.mark.parametrize("alive", [False, True])
def test_one_pass_says_every_message_and_warning_as_the_row_by_row_path(alive, tiny_llama):
    _jobs(30, tiny_llama)
    _worker_alive(alive)
    jobs = runner.list_jobs(None)
    before, after = _unbatched(jobs), _batched(jobs)
    assert after == before  # row by row, word for word
    said = set(after[0].values())
    # every way a message is made is among them, so the equality above compared each
    assert any(s.startswith("will not run: job ") for s in said)
    assert any(s.startswith("waiting for job ") for s in said)
    assert any(s.startswith("failed: ") for s in said)
    if alive:
        assert any(s.startswith("queued: the worker is busy with jobs ") and "go first" in s for s in said)
    else:
        assert runner.WAITING in said
        assert any("the workers of gone-host stopped beating 2 h ago" in s for s in said)
        assert any(s.startswith("running? — its worker sent no heartbeat") for s in said)
    assert after[1] and all("its model doomed is gone" in w for w in after[1])


def test_a_table_pass_reads_the_database_a_fixed_number_of_times_whatever_the_jobs(tiny_llama, monkeypatch):
    """50 jobs or 200, a worker alive or not: the same statements, at most 20 (the walk's 249 rows took 453: a model
    lookup per model each queued job reads; in `jobs list`, a heartbeat read per running job); and the queue's
    order is worked out once a pass, not once per queued job (19,659 dependency checks for 197 queued)."""
    from backend.runner import messages

    checks, real = [], messages._waits_on_a_job
    monkeypatch.setattr(messages, "_waits_on_a_job", lambda *a: checks.append(1) or real(*a))
    per_pass, row_by_row = {}, {}
    for n in (50, 200):
        if n == 200:  # a fresh workspace of 200 jobs
            _wipe()
        _jobs(n, tiny_llama)
        jobs = runner.list_jobs(None)
        for alive in (False, True):
            _worker_alive(alive)
            checks.clear()
            with counted() as seen:
                _batched(jobs)
            per_pass[n, alive] = sum(seen.values())
            queued = sum(j.status == "queued" for j in jobs)
            assert len(checks) <= 2 * queued, (n, alive, len(checks), queued)  # once in the order, once its own
            with counted() as seen:
                _unbatched(jobs)
            row_by_row[n, alive] = sum(seen.values())
    for alive in (False, True):
        assert per_pass[200, alive] == per_pass[50, alive] <= 20, per_pass
        assert row_by_row[200, alive] > 5 * per_pass[200, alive], row_by_row  # what one_pass saves


def _wipe() -> None:
    with db.session() as s:
        for table in ("jobs", "models", "worker_beats"):
            s.exec(sa.text(f"DELETE FROM {table}"))
        s.commit()


def test_jobs_list_reads_the_database_a_fixed_number_of_times_and_says_what_it_left_out(tiny_llama, capsys):
    from backend.__main__ import main

    counts = {}
    for n in (20, 80):
        if n == 80:
            _wipe()
        _jobs(n, tiny_llama)
        capsys.readouterr()
        with counted() as seen:
            main(["jobs", "list", "--limit", "5"])
        counts[n] = sum(seen.values())
    out, err = capsys.readouterr()
    assert counts[80] == counts[20], counts
    total = len(runner.list_jobs(None))
    listed = len(out.splitlines())
    assert listed < total
    assert (f"{listed} of {total} jobs shown (the 5 newest, and any older one queued or running); --limit 0 lists "
            "all, --limit N the newest N") in err
    main(["jobs", "list", "--limit", "0"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == total and "jobs shown" not in err
    main(["jobs", "list", "--limit", "2", "--status", "failed"])  # of the jobs the filters keep
    failed = len(runner.list_jobs(None, statuses=["failed"]))
    assert f"2 of {failed} matching jobs shown" in capsys.readouterr().err


def test_the_jobs_page_table_says_what_the_row_by_row_path_says(tiny_llama):
    """The page itself (AppTest): its message column and warnings are the unbatched ones."""
    from tests.test_pages import app

    _jobs(20, tiny_llama)
    _worker_alive(True)
    jobs = runner.list_jobs(100)
    said, warnings = _unbatched(jobs)
    at = app("jobs.py")
    assert not at.exception
    table = at.dataframe[0].value  # the jobs table, the page's first
    shown = dict(zip(table["id"], table["message"]))
    from pages.common import job_said

    active, alive = runner.active_jobs(), runner.worker_alive()
    assert shown == {j.id: job_said(j, active, alive) for j in jobs}
    assert [w.value for w in at.warning if w.value.startswith("Job ")] == warnings
