"""Light jobs (imports, upscales, merges, pushes: backend/runner/lanes.py) run beside the device jobs in slots of
their own, $DUS_LIGHT_SLOTS. A user's walk: with two SFT trainings queued (one job slot), a local model's import
said "queued: the worker is busy with job 3 (sft); job 4 goes first" and started 8 minutes later, for 25 s of work;
a merge waited the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlmodel import select

from backend import runner
from backend.runner import lanes, loop
from storage import db
from storage.models import Job, WorkerBeat, utcnow

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


def _job(kind: str, status: str = "queued", **fields) -> Job:
    with db.session() as s:
        job = Job(kind=kind, spec={"kind": kind}, status=status, message=fields.pop("message", runner.WAITING),
                  **fields)
        if status == "running":
            job.host, job.started = runner.claim_host(), utcnow()
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def _status(job_id: int) -> str:
    return runner.get(job_id).status


# ---------------------------------------------------------------- the claim (one conditional UPDATE per lane)

@BOTH
def test_a_light_job_behind_a_running_training_is_claimed_with_a_light_slot_and_waits_without():
    _job("sft", "running")
    queued_sft = _job("sft")
    merge = _job("merge")
    assert runner._claim_next(1, light=0) is None  # one lane, as before: the merge waits for the training
    assert _status(merge.id) == "queued"
    claimed = runner._claim_next(1, light=1)
    assert claimed is not None and claimed.id == merge.id  # the older sft waits for the device, the merge does not
    assert _status(merge.id) == "running" and _status(queued_sft.id) == "queued"
    assert runner._claim_next(1, light=1) is None  # both lanes full now


@BOTH
def test_one_light_slot_runs_light_jobs_one_at_a_time_oldest_first():
    first, second = _job("import"), _job("upscale")
    assert runner._claim_next(1, light=1).id == first.id
    assert runner._claim_next(1, light=1) is None and _status(second.id) == "queued"
    assert runner._claim_next(1, light=2).id == second.id  # a second light slot


@BOTH
def test_device_slots_are_not_taken_by_light_jobs():
    _job("merge", "running")
    _job("push", "running")  # more light jobs than light slots (a worker started with more before): still no device
    ev = _job("eval")
    claimed = runner._claim_next(1, light=1)
    assert claimed is not None and claimed.id == ev.id
    assert runner._claim_next(1, light=0) is None  # one lane: three running, one slot


def test_the_claims_own_count_holds_the_light_cap():
    """The count in the UPDATE is what holds the cap (another worker of the machine may have claimed since the
    lanes were read): with a light job running, a light claim updates nothing, a device claim goes through."""
    _job("import", "running")
    merge, sft = _job("merge"), _job("sft")
    with db.session() as s:
        assert loop._claim(s, s.get(Job, merge.id), 1, {}, light=True) is False
        assert loop._claim(s, s.get(Job, sft.id), 1, {}, light=False) is True
        assert loop._claim(s, s.get(Job, merge.id), 2, {}, light=True) is True


def test_a_light_job_still_waits_for_the_job_it_needs():
    train = _job("sft", "running")
    merge = _job("merge", after=train.id, message=f"waiting for job {train.id}")
    assert runner._claim_next(1, light=1) is None and _status(merge.id) == "queued"


def test_every_kind_of_work_is_in_one_lane_or_the_other():
    from backend.specs import SPECS, TRAIN_KINDS

    assert set(lanes.LIGHT_KINDS) <= set(SPECS)
    device = set(SPECS) - set(lanes.LIGHT_KINDS)
    assert device == {*TRAIN_KINDS, "eval", "synth-math"}
    assert not lanes.is_light("merge", 0) and lanes.is_light("merge", 1) and not lanes.is_light("sft", 3)


# ---------------------------------------------------------------- the worker loop

def _fake_start(monkeypatch, seconds: float = 1.0) -> dict[int, set[int]]:
    """start_child stand-in: a short process per job that runs no job code (its command line holds "jobs exec ID",
    which is how recover_orphans knows a job's process), and for each job the jobs that ran when it started."""
    seen: dict[int, set[int]] = {}

    def start(job):
        with db.session() as s:
            seen[job.id] = set(s.exec(select(Job.id).where(Job.status == "running", Job.id != job.id)).all())
        proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})", "jobs", "exec",
                                 str(job.id)], start_new_session=True)
        runner._update(job.id, pid=proc.pid)
        return proc

    monkeypatch.setattr(loop, "start_child", start)
    return seen


def test_the_worker_runs_a_merge_beside_a_training_with_a_light_slot(monkeypatch):
    seen = _fake_start(monkeypatch)
    sft, sft2, merge = _job("sft"), _job("sft"), _job("merge")
    runner.worker(poll=0.05, once=True, slots=1, light_slots=1)
    assert seen[merge.id] == {sft.id}  # started beside the first training, not after both
    assert sft.id not in seen[sft2.id] and set(seen) == {sft.id, sft2.id, merge.id}


def test_the_worker_reads_light_slots_from_the_environment_and_refuses_a_bad_value(monkeypatch):
    seen = _fake_start(monkeypatch, 0.3)
    monkeypatch.setenv("DUS_LIGHT_SLOTS", "0")
    sft, imp = _job("sft"), _job("import")
    runner.worker(poll=0.05, once=True, slots=1)
    assert seen[imp.id] == set() and list(seen) == [sft.id, imp.id]
    monkeypatch.setenv("DUS_LIGHT_SLOTS", "-1")
    with pytest.raises(ValueError, match="DUS_LIGHT_SLOTS='-1'"):
        runner.worker(poll=0.05, once=True)


def test_worker_light_slots_on_the_command_line(monkeypatch):
    from backend.__main__ import main

    got = {}
    monkeypatch.setattr(runner, "worker", lambda **kw: got.update(kw))
    main(["worker", "--once", "--slots", "2", "--light-slots", "3"])
    assert got["slots"] == 2 and got["light_slots"] == 3


# ---------------------------------------------------------------- what the queued job says

def _alive():
    with db.session() as s:
        s.add(WorkerBeat(host="elsewhere", pid=1, seen=utcnow()))
        s.commit()


def test_a_queued_light_job_says_it_runs_beside_the_training(monkeypatch):
    from backend.runner import job_message

    _alive()
    sft = _job("sft", "running", message="step 3/6")
    sft2 = _job("sft")
    imp = _job("import")
    merge = _job("merge")
    jobs = runner.active_jobs()
    # was "queued: the worker is busy with job 1 (sft); job 2 goes first" for the import
    assert job_message(imp, jobs, alive=True) == f"queued: the worker starts it next, beside job {sft.id} (sft)"
    assert job_message(merge, jobs, alive=True) == (f"queued; job {imp.id} goes first; it runs beside job "
                                                    f"{sft.id} (sft) (light jobs: 1 at a time)")
    assert job_message(sft2, jobs, alive=True) == f"queued: the worker is busy with job {sft.id} (sft)"
    monkeypatch.setenv("DUS_LIGHT_SLOTS", "0")  # one lane: the words of before
    assert job_message(imp, jobs, alive=True) == (f"queued: the worker is busy with job {sft.id} (sft); "
                                                  f"job {sft2.id} goes first")


def test_a_queued_training_is_not_said_to_wait_for_a_merge():
    from backend.runner import job_message

    merge = _job("merge", "running", message="merging")
    imp = _job("import")
    sft = _job("sft")
    jobs = runner.active_jobs()
    assert job_message(sft, jobs, alive=True) == "queued: the worker starts it next"
    assert job_message(imp, jobs, alive=True) == f"queued: the worker is busy with job {merge.id} (merge)"


LANES_RACE = r"""
import json, sys, time
from pathlib import Path
from sqlmodel import select
from backend import runner
from backend.runner import lanes
from storage import db
from storage.models import Job
db.init_db()
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
mine, seen = [], {"light": 0, "device": 0}
while True:
    job = runner._claim_next(1, light=1)  # one device slot and one light slot, shared by both workers
    if job is None:
        with db.session() as s:
            if not s.exec(select(Job.id).where(Job.status == "queued")).first():
                break
        time.sleep(0.002)
        continue
    mine.append(job.id)
    with db.session() as s:  # what anyone looking at the table sees while this job runs
        kinds = s.exec(select(Job.kind).where(Job.status == "running")).all()
    light = sum(k in lanes.LIGHT_KINDS for k in kinds)
    seen = {"light": max(seen["light"], light), "device": max(seen["device"], len(kinds) - light)}
    time.sleep(0.01)
    runner._update(job.id, status="succeeded")
    time.sleep(0.01)
print(json.dumps({"claimed": mine, "running_seen": seen}))
"""


@BOTH
def test_two_workers_racing_never_run_more_than_each_lanes_slots(tmp_path):
    """The claim stays one conditional UPDATE per lane: two workers of one machine, racing for light and device
    jobs, never run two of a lane at once, and every job runs once."""
    from tests.test_postgres import race

    with db.session() as s:
        s.add_all([Job(kind=("merge", "sft", "import", "eval")[i % 4], spec={}, status="queued") for i in range(16)])
        s.commit()
    runs = race(LANES_RACE, tmp_path, timeout=120)
    assert sorted(i for r in runs for i in r["claimed"]) == sorted(j.id for j in runner.list_jobs())
    assert {k: max(r["running_seen"][k] for r in runs) for k in ("light", "device")} == {"light": 1, "device": 1}
