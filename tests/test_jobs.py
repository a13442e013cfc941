"""The runner under stress: a killed worker, cancel, order and dependencies — with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend import registry, runner
from backend.specs import DataSource, SftSpec, UpscaleSpec

ROOT = Path(__file__).resolve().parent.parent
LONG = dict(max_steps=150, save_steps=5, eval_fraction=0.0, batch_size=1, max_length=32, learning_rate=1e-3)
# the killed-worker test: long enough to still run when its worker is killed a second after step 12 (~0.05 s a step
# here, so ~30 at most), short enough that the resumed run's remaining steps take no longer than they must
KILLED = {**LONG, "max_steps": 60}


def start_worker() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.2"], cwd=ROOT,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, timeout: float = 120, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def last_step(job_id: int) -> int:
    rows = runner.metrics([job_id])
    return max((m.step for m in rows), default=0)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_killed_worker_interrupts_the_job_and_resume_continues_from_the_checkpoint(tiny, workspace):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="long", **KILLED))
    worker = start_worker()
    try:
        wait_for(lambda: last_step(job.id) >= 12, what="12 logged steps")
        pgid = runner.get(job.id).pid
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not group_alive(pgid), 10, "the job's process group to end with its worker")
    finally:
        worker.kill()
    assert runner.get(job.id).status == "running"  # nobody has looked yet
    assert runner.recover_orphans() == [job.id]
    assert runner.get(job.id).status == "interrupted"
    run_dir = Path(workspace / "runs" / f"job-{job.id}")
    # only complete checkpoints count: the kill may land while one is being written
    ckpts = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")
                   if (p / "trainer_state.json").exists())
    assert ckpts and ckpts[-1] >= 10
    logged_before = len((run_dir / "metrics.jsonl").read_text().splitlines())
    runner.resume(job.id)
    runner.worker(once=True)
    done = runner.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.result["resumed_from"] == f"checkpoint-{ckpts[-1]}" and done.result["global_step"] == 60
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    # the steps the killed run logged past its checkpoint were dropped at the resume and logged again: once each
    assert steps == list(range(1, 61)) and logged_before >= ckpts[-1]
    db_steps = sorted({m.step for m in runner.metrics([job.id]) if m.name == "loss"})
    assert db_steps == list(range(1, 61))  # rows logged past the checkpoint were replaced, not duplicated
    assert registry.get("long").parents == ["tiny"]


def test_cancel_stops_the_whole_process_tree(tiny):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="c", **LONG))
    worker = start_worker()
    try:
        wait_for(lambda: last_step(job.id) >= 3, what="training to start")
        pgid = runner.get(job.id).pid
        tree = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
        assert len(tree) >= 2  # the job process, accelerate launch and the trainer
        runner.cancel(job.id)
        wait_for(lambda: not group_alive(pgid), 15, "the process group to end")
        time.sleep(1)
        assert runner.get(job.id).status == "cancelled"
        assert registry.get("c") is None
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_queue_order_and_dependencies(tiny, tmp_path):
    fast = dict(max_steps=2, save_steps=2, eval_fraction=0.0, max_length=32, max_rows=8)
    first = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="s1", **fast))
    # a job on the model the first job registers: it must wait for it. An up-scaling, as `second` below: any kind
    # shows the wait, and a second training (it was a DPO) cost a trainer's start for nothing this test asserts
    chained = runner.submit(UpscaleSpec(base="s1", m=1, name="u1"), after=first.id)
    # fails when it runs (its data file, deleted after it was queued, is read then; a missing file or an unknown
    # model would be refused before queueing)
    gone = tmp_path / "gone.jsonl"
    gone.write_text('{"instruction": "Say hi.", "output": "Hi."}\n')
    broken = runner.submit(SftSpec(model="tiny", data=[DataSource(source=str(gone))], name="b", **fast))
    gone.unlink()
    orphan = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="x", **fast),
                           after=broken.id)
    # queued after the failure, it still runs, in its turn: any kind shows that, and an up-scaling starts no trainer
    second = runner.submit(UpscaleSpec(base="tiny", m=1, name="s2"))
    runner.worker(once=True, light_slots=0)  # one lane: the whole queue in its order (light jobs: runner/lanes.py)
    jobs = {j.id: runner.get(j.id) for j in (first, chained, broken, orphan, second)}
    assert jobs[first.id].status == jobs[chained.id].status == jobs[second.id].status == "succeeded"
    assert jobs[broken.id].status == "failed" and f"{gone} does not exist" in jobs[broken.id].error
    assert jobs[orphan.id].status == "cancelled" and f"job {broken.id}" in jobs[orphan.id].message
    order = sorted((jobs[i].started, i) for i in (first.id, chained.id, broken.id, second.id))
    assert [i for _, i in order] == [first.id, chained.id, broken.id, second.id]
    assert registry.get("u1").parents == ["s1"] and registry.get("s1").parents == ["tiny"]
    assert registry.get("s2").parents == ["tiny"]
