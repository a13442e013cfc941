"""Job state as a reader sees it: a job whose worker was killed (-9) was listed "running" until a worker started
again, and a queued job whose dependency failed read "waiting for job N" for as long as no worker looked for work.
Read-only views say so; they repair no row (the worker does)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlmodel import select

from backend import runner
from storage import db
from storage.models import Job, WorkerBeat, utcnow
from tests.test_review_cli import add, cli
from tests.test_pages import app

GONE = ("running? — its worker stopped beating 2 min ago and its process is gone; start a worker (python -m backend "
        "worker) to mark it interrupted, then resume it (python -m backend jobs resume {})")


def _dead_pid() -> int:
    """A process id that ran and ended (reaped): no process of a job holds it."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(host: str, pid: int | None, message: str = "step 3/6") -> Job:
    (job,) = add(Job(kind="upscale", spec={"kind": "upscale", "base": "tiny", "m": 1}, status="running", progress=0.4,
                     message=message, host=host, pid=pid, started=utcnow() - timedelta(minutes=10)))
    return job


def _beat(host: str, age: float) -> None:
    add(WorkerBeat(host=host, pid=1, seen=utcnow() - timedelta(seconds=age)))


def _line(out: str, job_id: int) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{job_id:5d} "))


@pytest.fixture
def job_process():
    """A live process whose command line is a job's (`… jobs exec ID`), for the job id the test gives it."""
    procs = []

    def start(job_id: int) -> int:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "jobs", "exec",
                                       str(job_id)]))
        return procs[-1].pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_jobs_list_says_when_a_running_jobs_worker_and_process_are_gone(job_process):
    _beat(runner.host_id(), age=130)  # this machine's worker was killed 130 s ago
    dead = _running(runner.host_id(), _dead_pid())
    alive = _running(runner.host_id(), None)
    runner._update(alive.id, pid=job_process(alive.id))  # its process still runs: nothing to doubt
    _beat("machine-b", age=30)  # not long enough for a worker to give machine b's job up (BEAT_STALE)
    beating = _running("machine-b", 2 ** 22 + 12345)  # another machine's pid: its worker vouches for it
    _beat("machine-c", age=runner.BEAT_STALE + 5)
    silent = _running("machine-c", 2 ** 22 + 12345)
    rc, out, err = cli("jobs", "list")
    assert rc == 0, err
    said = GONE.format(dead.id)
    made = f"{'tiny-dus-m1':24}"  # what each job makes (runner.job_output), then its message
    assert _line(out, dead.id) == f"{dead.id:5d} upscale    running       40.0% {made} {said[:59]}…"
    assert _line(out, alive.id).endswith(f"40.0% {made} step 3/6")
    assert _line(out, beating.id).endswith(f"40.0% {made} step 3/6")
    assert _line(out, silent.id).endswith(f"40.0% {made} running? — the workers of machine-c stopped beating 65 s "
                                          "ag…")
    rc, out, _ = cli("jobs", "show", str(silent.id))
    assert "message: running? — the workers of machine-c stopped beating 65 s ago; start a worker (python -m " \
           f"backend worker) to mark it interrupted, then resume it (python -m backend jobs resume {silent.id})" \
           in out.splitlines()
    assert "python -m backend jobs show ID" in err
    rc, out, _ = cli("jobs", "show", str(dead.id))
    assert f"message: {said}" in out.splitlines()
    # a look repairs nothing: the rows stay running until a worker marks them
    assert [runner.get(j.id).status for j in (dead, alive, beating, silent)] == ["running"] * 4


def test_a_live_worker_anywhere_leaves_the_rows_to_it():
    """A live worker repairs the rows itself (recover_orphans: this machine's at its next poll, another machine's
    once silent for BEAT_STALE): the message would tell the reader to start a worker that runs already."""
    _beat(runner.host_id(), age=130)
    dead = _running(runner.host_id(), _dead_pid())
    _beat("machine-c", age=runner.BEAT_STALE + 5)
    silent = _running("machine-c", 2 ** 22 + 12345)
    _beat("machine-b", age=2)  # a worker alive on machine b
    rc, out, err = cli("jobs", "list")
    assert rc == 0, err
    assert [_line(out, j.id).split(maxsplit=4)[-1] for j in (dead, silent)] == [f"{'tiny-dus-m1':24} step 3/6"] * 2
    assert runner.job_message(runner.get(dead.id)) == "step 3/6"


def test_a_freshly_beating_worker_here_leaves_its_job_running():
    """A worker that beats here marks a job whose process is gone at its next poll: no need to doubt it."""
    _beat(runner.host_id(), age=2)
    job = _running(runner.host_id(), _dead_pid())
    assert runner.job_message(runner.get(job.id)) == "step 3/6"
    with db.session() as s:  # that worker falls silent: past the pages' "no worker" window
        for b in s.exec(select(WorkerBeat)):
            b.seen = utcnow() - timedelta(seconds=runner.ALIVE_WITHIN + 1)
            s.add(b)
        s.commit()
    assert runner.job_message(runner.get(job.id)).startswith("running? — its worker stopped beating 16 s ago")


def test_a_machine_without_any_beat_and_a_ray_job_are_told_apart():
    """Rows from before heartbeats (no beat at all) are doubted too; a job on a Ray cluster runs on when its worker
    dies and is judged by Ray's status of it (backend/cluster/ray_jobs.py), never by heartbeats."""
    local = _running("", _dead_pid())
    on_ray = _running("ray:http://127.0.0.1:8265", 4242, message="submitted to the Ray cluster")
    assert runner.job_message(runner.get(local.id)).startswith(
        "running? — its worker sent no heartbeat in the last day and its process is gone;")
    assert runner.job_message(runner.get(on_ray.id)) == "submitted to the Ray cluster"


def test_jobs_page_shows_the_doubt_in_its_table_and_status_box():
    _beat(runner.host_id(), age=130)
    dead = _running(runner.host_id(), _dead_pid())
    _beat("machine-b", age=30)
    beating = _running("machine-b", 2 ** 22 + 12345)
    at = app("jobs.py")
    table = at.dataframe[0].value
    shown = dict(zip(table["id"], table["message"]))
    assert shown == {dead.id: GONE.format(dead.id), beating.id: "step 3/6"}
    assert dict(zip(table["id"], table["status"])) == {dead.id: "running?", beating.id: "running"}
    at.selectbox(key="job").set_value(dead.id).run()
    label = f"Job {dead.id} (upscale): {GONE.format(dead.id)}"  # its status said once
    assert not at.get("progress") and label in [w.value for w in at.warning]  # no live bar (tests/test_review_s11.py)
    assert runner.get(dead.id).status == "running"
    _beat("machine-b", age=0)  # a worker beats again: it marks the row itself, the page no longer doubts it
    at.run()
    assert at.dataframe[0].value["message"].tolist() == ["step 3/6", "step 3/6"]


def test_a_queued_job_whose_dependency_failed_says_it_will_not_run():
    (first,) = add(Job(kind="sft", spec={"kind": "sft"}, status="failed", error="out of memory", message="failed"))
    (then,) = add(Job(kind="dpo", spec={"kind": "dpo"}, status="queued", after=first.id,
                      message=f"waiting for job {first.id}"))
    (merge,) = add(Job(kind="merge", spec={"kind": "merge"}, status="queued", needs=[then.id, 999],
                       message=f"waiting for jobs {then.id}, 999"))
    assert runner.job_message(runner.get(then.id)) == (
        f"will not run: job {first.id} it waits for failed; resume job {first.id} (python -m backend jobs resume "
        f"{first.id}) to run this one after it, or cancel this one")
    assert runner.job_message(runner.get(merge.id)) == "will not run: job 999 it waits for is gone; cancel it"
    rc, out, _ = cli("jobs", "list")
    assert _line(out, then.id).endswith(f"will not run: job {first.id} it waits for failed; resume job {first.id} "
                                        "(pyth…")
    runner.resume(first.id)  # queued again: the chain waits for it once more
    assert runner.job_message(runner.get(then.id)) == f"waiting for job {first.id}"


def test_a_queued_spec_an_older_version_wrote_does_not_block_later_submissions(tiny_llama):
    """A llama-pro spec with m (accepted before an option of another method was refused) waits in the queue: every
    later submission checked its output name against it and failed on its validation."""
    from backend import registry
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    (old,) = add(Job(kind="upscale", status="queued", spec={"kind": "upscale", "base": "tiny", "method": "llama-pro",
                                                             "groups": 2, "m": 4}))
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="deeper"))
    assert [j.id for j in runner.list_jobs()] == [job.id, old.id]
