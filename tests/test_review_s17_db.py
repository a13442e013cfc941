"""A unit of database work run again after its connection was lost (storage/db.py `retrying`), when the commit of
its first run had reached the server: the connection died between the server's commit and its answer. Simulated
by a session whose commit commits, then raises the error SQLAlchemy raises for a lost connection, once. On SQLite
and on a throw-away PostgreSQL server.

    .venv/bin/python -m pytest tests/test_review_s17_db.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest
import sqlalchemy as sa

from backend import registry, runner
from backend.specs import UpscaleSpec
from storage import db
from storage.models import Job, utcnow
from tests.test_review_machines import _row  # an upscale job's row in a given status

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


_real_session = db.session  # the tests' own reads and writes: never through a session that loses its answer


def _read(job_id: int) -> Job:
    with _real_session() as s:
        return s.get(Job, job_id)


def lose_answers(monkeypatch, *when: Callable[[], bool]) -> list[str]:
    """Sessions whose commit commits, then, the first time each of `when` holds after a commit, raises a lost
    connection (connection_invalidated, as SQLAlchemy says when the server vanished). Returns the losses' names."""
    pending, lost = list(when), []

    def session():
        s = _real_session()
        commit = s.commit

        def commit_then_lose():
            commit()
            if (hit := next((w for w in pending if w()), None)) is not None:
                pending.remove(hit)
                lost.append(hit.__name__)
                raise sa.exc.DBAPIError("COMMIT", {}, Exception("server closed the connection unexpectedly"),
                                        connection_invalidated=True)

        s.commit = commit_then_lose
        return s

    monkeypatch.setattr(db, "session", session)
    return lost


def status_is(job_id: int, status: str) -> Callable[[], bool]:
    def check() -> bool:
        return _read(job_id).status == status

    check.__name__ = f"job {job_id} {status}"
    return check


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---------------------------------------------------------------- _transition

@BOTH
def test_a_transition_whose_commit_landed_reports_it_applied(monkeypatch):
    job = _row("running", pid=4242, host=runner.host_id())
    lost = lose_answers(monkeypatch, status_is(job.id, "interrupted"))
    assert runner._transition(job.id, "running", _of_pid=4242, status="interrupted", finished=utcnow(),
                              message="interrupted: gone\x00") is True  # a NUL: stored as U+FFFD on PostgreSQL
    assert lost == [f"job {job.id} interrupted"]  # the commit was answered by a lost connection, and ran again
    assert _read(job.id).status == "interrupted"
    # a result (JSON) and a pid cleared: the same
    done = _row("running", pid=7, host=runner.host_id())
    lost = lose_answers(monkeypatch, status_is(done.id, "succeeded"))
    assert runner._transition(done.id, "running", _of_pid=7, status="succeeded", finished=utcnow(), progress=1.0,
                              result={"model": "m", "loss": float("nan"), "layers": (1, 2)}, pid=None)
    assert lost == [f"job {done.id} succeeded"] and _read(done.id).result["model"] == "m"


@BOTH
def test_a_rerun_does_not_take_another_writers_state_for_its_own(monkeypatch):
    """The row changed again between the lost commit and the rerun (a resume), or another run wrote a state that
    differs from ours: not applied, as before."""
    job = _row("running", pid=4242, host=runner.host_id())
    real = _real_session

    def then_resumed() -> bool:
        if _read(job.id).status != "interrupted":
            return False
        with real() as s:  # a resume lands before this process reconnects
            s.exec(sa.update(Job).where(Job.id == job.id).values(status="queued", pid=None))
            s.commit()
        return True

    lost = lose_answers(monkeypatch, then_resumed)
    assert runner._transition(job.id, "running", _of_pid=4242, status="interrupted", finished=utcnow()) is False
    assert lost and _read(job.id).status == "queued"
    # no rerun: a row already in the target state, set by someone else, is not ours (the first run's answer stands)
    other = _row("cancelled", finished=None, message="m")
    monkeypatch.setattr(db, "session", real)
    assert runner._transition(other.id, "running", status="cancelled", message="m") is False
    # a rerun, but another run took the row meanwhile (a resumed run under another pid): not this run's to claim
    mine = _row("running", pid=11, host=runner.host_id())

    def then_taken() -> bool:
        if _read(mine.id).message != "progress":
            return False
        with real() as s:
            s.exec(sa.update(Job).where(Job.id == mine.id).values(pid=12))
            s.commit()
        return True

    lost = lose_answers(monkeypatch, then_taken)
    assert runner._transition(mine.id, "running", _of_pid=11, message="progress") is False and lost


@BOTH
@pytest.mark.parametrize("lost_at", ["resumed job", "waiting job"])
def test_a_resume_whose_commit_was_answered_by_a_lost_connection_resumes_its_chain(monkeypatch, lost_at):
    """A failed; B and C waited for it in a chain and were cancelled unstarted. Old code: the resume said "it was
    resumed meanwhile" (lost at A's commit), or left C cancelled (lost at B's)."""
    a = _row("failed", finished=utcnow(), error="boom")
    b = _row("cancelled", finished=utcnow(), after=a.id, waits=[a.id],
             message=f"not run: job {a.id} it waited for failed")
    c = _row("cancelled", finished=utcnow(), after=b.id, waits=[b.id],
             message=f"not run: job {b.id} it waited for cancelled")
    target = a if lost_at == "resumed job" else b
    lost = lose_answers(monkeypatch, status_is(target.id, "queued"))
    assert runner.resume(a.id).status == "queued"
    assert lost == [f"job {target.id} queued"]
    assert [_read(j.id).status for j in (a, b, c)] == ["queued", "queued", "queued"]


@BOTH
def test_a_cancel_whose_commit_was_answered_by_a_lost_connection_still_stops_the_process(monkeypatch):
    job = _row("running", host=runner.host_id(), started=utcnow())
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job.id)],
                            start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped at once, as its worker would
    try:
        with db.session() as s:
            s.exec(sa.update(Job).where(Job.id == job.id).values(pid=proc.pid))
            s.commit()
        lost = lose_answers(monkeypatch, status_is(job.id, "cancelled"))
        assert runner.cancel(job.id).status == "cancelled"
        assert lost == [f"job {job.id} cancelled"]
        for _ in range(50):
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() == -signal.SIGTERM  # old code: the cancel thought it lost the race and left it running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@BOTH
def test_a_job_whose_success_commit_was_answered_by_a_lost_connection_exits_0(tiny, monkeypatch):
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="landed"))
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    lost = lose_answers(monkeypatch, status_is(job.id, "succeeded"))
    assert runner.execute(job.id) == 0  # old code: 1, as if cancelled while it finished
    assert lost == [f"job {job.id} succeeded"]
    done = _read(job.id)
    assert done.status == "succeeded" and done.message.startswith("done: ") and done.result["model"] == "landed"
    assert registry.get("landed") is not None


# ---------------------------------------------------------------- _claim_next

@BOTH
@pytest.mark.parametrize("slots", [None, 1])
def test_a_claim_whose_commit_was_answered_by_a_lost_connection_is_the_claim_returned(monkeypatch, slots):
    """Old code: the rerun found the job claimed already and claimed the next (or, with one slot, none), leaving
    the first "running" with no process until recover_orphans marked it interrupted 30 s later."""
    first, second = _row("queued"), _row("queued")
    lost = lose_answers(monkeypatch, status_is(first.id, "running"))
    claimed = runner._claim_next(slots)
    assert lost == [f"job {first.id} running"]
    assert claimed is not None and claimed.id == first.id and claimed.status == "running"
    assert claimed.host == runner.claim_host() and claimed.pid is None
    assert [_read(j.id).status for j in (first, second)] == ["running", "queued"]
    # the next claim takes the second, as it would have without the lost answer
    assert runner._claim_next().id == second.id


@BOTH
def test_a_claim_lost_before_its_commit_landed_is_made_again(monkeypatch):
    """The connection lost before the claim reached the server: the rerun claims the job as the first run would."""
    job = _row("queued")
    real, opened = _real_session, []

    def lost_in_the_claim():
        s = real()
        commit = s.commit
        opened.append(s)

        def lose():
            if len(opened) == 1:
                s.rollback()
                raise sa.exc.DBAPIError("COMMIT", {}, Exception("server closed the connection"),
                                        connection_invalidated=True)
            commit()

        s.commit = lose
        return s

    monkeypatch.setattr(db, "session", lost_in_the_claim)
    claimed = runner._claim_next()
    assert claimed is not None and claimed.id == job.id and len(opened) >= 2
    assert _read(job.id).status == "running"


# ---------------------------------------------------------------- db.retrying itself

def test_retrying_tells_a_unit_and_the_units_it_calls_that_they_run_again():
    seen = []

    @db.retrying
    def inner():
        seen.append(("inner", db.rerun(), dict(db.unit_notes())))

    @db.retrying
    def outer():
        notes = db.unit_notes()
        seen.append(("outer", db.rerun(), dict(notes)))
        inner()
        if not notes:
            notes["first"] = 1
            raise sa.exc.DBAPIError("COMMIT", {}, Exception("gone"), connection_invalidated=True)
        return "done"

    assert db.rerun() is False
    assert outer() == "done"
    # the inner unit of the rerun may have committed in the first run: it is told so; notes are each unit's own
    assert seen == [("outer", False, {}), ("inner", False, {}), ("outer", True, {"first": 1}), ("inner", True, {})]
    assert db.rerun() is False  # and after it, no longer
    with pytest.raises(RuntimeError, match="retrying"):
        db.unit_notes()
