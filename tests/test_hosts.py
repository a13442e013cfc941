"""Workers on several machines sharing one database: each machine signals and judges only its own job processes.

Two workers on this machine play two machines through DUS_HOST_ID (the name a worker writes into the jobs it
claims); a process id means something only on the machine that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import timedelta

from sqlmodel import select

from backend import registry, runner
from backend.specs import UpscaleSpec
from storage import db
from storage.models import WorkerBeat, utcnow
from tests.test_faults import start_worker
from tests.test_jobs import group_alive, wait_for


def _running_elsewhere(host: str, pid: int) -> int:
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="elsewhere"))
    runner._update(job.id, status="running", started=utcnow(), pid=pid, host=host)
    return job.id


def _beat(host: str, age: float) -> None:
    with db.session() as s:
        s.add(WorkerBeat(host=host, pid=1, seen=utcnow() - timedelta(seconds=age)))
        s.commit()


def test_another_machines_job_is_interrupted_only_when_its_workers_fell_silent(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setenv("DUS_HOST_ID", "machine-a")
    job_id = _running_elsewhere("machine-b", pid=2 ** 22 + 12345)  # no such process here: meaningless on machine a
    _beat("machine-b", age=2)
    assert runner.recover_orphans() == [] and runner.get(job_id).status == "running"
    with db.session() as s:
        for b in s.exec(select(WorkerBeat)):
            b.seen = utcnow() - timedelta(seconds=runner.BEAT_STALE + 5)
            s.add(b)
        s.commit()
    assert runner.recover_orphans() == [job_id]  # machine b is silent: its job is taken for dead
    assert runner.get(job_id).status == "interrupted"


def test_cancel_from_another_machine_marks_the_job_and_its_own_worker_kills_it(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="slow", shard_size="20KB"))
    monkeypatch.setenv("DUS_HOST_ID", "machine-b")
    worker = start_worker(0.5)  # slow progress: the job is still running when cancelled
    try:
        running = wait_for(lambda: (j := runner.get(job.id)).status == "running" and j.pid and j, 60, "a start")
        assert running.host == "machine-b"
        monkeypatch.setenv("DUS_HOST_ID", "machine-a")
        # The row now names a bystander process: a machine that signalled the row's pid would kill it. Machine b's
        # worker kills its own child by the handle it holds.
        bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            runner._update(job.id, pid=bystander.pid)
            assert runner.cancel(job.id).status == "cancelled"
            wait_for(lambda: not group_alive(running.pid), 30, "machine b's worker to kill the cancelled job")
            assert bystander.poll() is None  # machine a sent no signal
        finally:
            os.killpg(bystander.pid, signal.SIGKILL)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert runner.get(job.id).status == "cancelled" and registry.get("slow") is None


def test_slots_count_the_jobs_of_this_machine(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setenv("DUS_HOST_ID", "machine-a")
    _running_elsewhere("machine-b", pid=os.getpid())
    _beat("machine-b", age=0)
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="here"))
    runner.worker(once=True, slots=1)  # machine b's running job does not take machine a's only slot
    assert runner.get(job.id).status == "succeeded" and runner.get(job.id).host == "machine-a"
    with db.session() as s:
        assert {b.host for b in s.exec(select(WorkerBeat))} == {"machine-a", "machine-b"}
