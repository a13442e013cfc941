"""Review of several machines sharing one database: a job given up for dead by another machine must stop where it
runs (else a resume runs it twice), a process is the job's only if it is the job's `jobs exec` (not a zombie, not a
reused pid), heartbeats are read by the database's clock, a resume is one conditional update, and a Ray cluster
that spans machines is refused a SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlmodel import select

from backend import registry, runner
from backend.cluster import ray_checks, ray_jobs
from backend.cluster.ray_jobs import ClusterError, Node
from backend.specs import UpscaleSpec
from storage import db
from storage.models import Job, utcnow
from tests.test_faults import release_progress, slow_upscale_on_machine_b
from tests.test_jobs import group_alive, wait_for

ON_POSTGRES = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def _row(status: str = "running", **fields) -> Job:
    with db.session() as s:
        job = Job(kind="upscale", spec={"kind": "upscale", "base": "tiny", "m": 1}, status=status, **fields)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def _looks_like_job(job_id: int) -> subprocess.Popen:
    """A process whose command line is a job process's (`… jobs exec ID`), in a group of its own."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job_id)],
                            start_new_session=True)


def test_only_the_jobs_own_live_process_counts_as_the_job():
    job = _row()
    own, other, bystander = _looks_like_job(job.id), _looks_like_job(job.id + 1), subprocess.Popen(["sleep", "60"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "jobs", "exec", str(job.id)])
    try:
        # ended, not reaped (no poll() here): os.kill(pid, 0) still answers for it
        wait_for(lambda: db._stat_fields(Path(f"/proc/{zombie.pid}"))[0] == "Z", 10, "the zombie")
        assert runner._runs_job(own.pid, job.id) is True
        assert runner._runs_job(other.pid, job.id) is False  # another job's process
        assert runner._runs_job(bystander.pid, job.id) is False  # a reused pid: an unrelated process
        assert runner._runs_job(zombie.pid, job.id) is False
    finally:
        for p in (own, other, bystander, zombie):
            p.kill()
            p.wait()


def test_a_reused_pid_is_recovered_and_spared_by_cancel():
    """After a reboot a row still running named a pid some unrelated process got: the job held its slot for ever
    and a cancel killed that process's group."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stale = _row(pid=bystander.pid, host=runner.host_id(), started=utcnow() - timedelta(hours=3))
        assert runner.recover_orphans() == [stale.id]
        assert runner.get(stale.id).status == "interrupted"
        again = _row(pid=bystander.pid, host=runner.host_id(), started=utcnow())
        assert runner.cancel(again.id).status == "cancelled"
        time.sleep(0.3)
        assert bystander.poll() is None  # no signal reached it
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()


def test_a_run_given_up_for_dead_elsewhere_is_stopped_here_and_then_resumes_once(tiny_llama, monkeypatch):
    """Machine a marks b's job interrupted (b's heartbeat looked stale: a database outage, a paused machine). b's
    worker used to kill only cancelled jobs: the old run went on, a resume ran the job twice into the same folder,
    and the old run's "succeeded" landed on the new run's row."""
    with slow_upscale_on_machine_b(tiny_llama, monkeypatch) as (job, _):
        old = job
        # what machine a's recover_orphans writes when b's heartbeat is stale
        assert runner._transition(job.id, "running", _of_pid=old.pid, status="interrupted", finished=utcnow(),
                                  message="interrupted: its process ended without finishing")
        wait_for(lambda: not group_alive(old.pid), 30, "b's worker to stop the run it no longer holds")
        wait_for(lambda: runner.get(job.id).pid is None, 30, "b's worker to say the run has stopped")
        assert runner.get(job.id).status == "interrupted"
        release_progress()  # the old run has stopped: the rerun need not crawl (52 progress lines x 0.3 s)
        runner.resume(job.id)
        done = wait_for(lambda: (j := runner.get(job.id)).status in ("succeeded", "failed") and j, 120, "the rerun")
        assert done.status == "succeeded", done.error
        assert registry.get("slow") is not None


def test_an_old_runs_end_does_not_land_on_the_row_of_the_run_that_replaced_it(monkeypatch):
    """A run whose row was resumed and claimed by another process meanwhile must not write its end into that row."""
    job = _row(status="queued")

    def work(spec, out, progress):
        progress(0.5, "half way")
        runner._update(job.id, pid=os.getpid() + 1, message="the new run")  # resumed, started again elsewhere
        progress(0.9, "nearly")  # the old run's progress no longer lands either
        return {"path": "/x"}

    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    assert runner.execute(job.id) == 1
    row = runner.get(job.id)
    assert (row.status, row.message, row.pid) == ("running", "the new run", os.getpid() + 1)


def test_of_two_resumes_racing_a_claim_the_claimed_run_stays_running(monkeypatch):
    """The status was checked, then written unconditionally: a claim in between was turned back to queued, and the
    job ran twice."""
    job = _row(status="interrupted")

    def claimed_meanwhile(j):
        runner._update(job.id, status="running", pid=4242, message="claimed by a worker")
        return None

    monkeypatch.setattr(runner.states, "_still_stopping", claimed_meanwhile)
    with pytest.raises(ValueError, match=f"Job {job.id} is running now: it was resumed meanwhile"):
        runner.resume(job.id)
    assert (runner.get(job.id).status, runner.get(job.id).pid) == ("running", 4242)


@ON_POSTGRES
def test_heartbeats_are_read_by_the_database_clock_on_postgresql(monkeypatch):
    """Machine b's clock runs 90 s behind a's: by each machine's own clock b's fresh beats looked 90 s old to a,
    which then interrupted b's jobs."""
    real = runner.utcnow
    monkeypatch.setattr(runner.hosts, "utcnow", lambda: real() - timedelta(seconds=90))
    monkeypatch.setenv("DUS_HOST_ID", "machine-b")
    runner.beat()
    monkeypatch.setattr(runner.hosts, "utcnow", real)
    monkeypatch.setenv("DUS_HOST_ID", "machine-a")
    assert "machine-b" in runner.live_hosts()
    elsewhere = _row(host="machine-b", pid=1, started=real())
    assert elsewhere.id not in runner.recover_orphans()
    assert runner.get(elsewhere.id).status == "running"


def test_a_ray_cluster_on_several_machines_is_refused_a_sqlite_database(monkeypatch):
    head, other = (Node(id="a" * 8, ip="10.0.0.1", head=True, alive=True),
                   Node(id="b" * 8, ip="10.0.0.2", head=False, alive=True))
    with pytest.raises(ClusterError, match=r"spans 2 machines \(10.0.0.1, 10.0.0.2\).*PostgreSQL"):
        ray_jobs.check_database([head, other])
    ray_jobs.check_database([head, Node(id="c" * 8, ip="10.0.0.1", head=False, alive=True)])  # one machine
    ray_jobs.check_database([head, Node(id="d" * 8, ip="10.0.0.9", head=False, alive=False)])  # a dead node
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:p@db:5432/dus")
    ray_jobs.check_database([head, other])  # a server every node reaches


# ---------------------------------------------------------------- refused before queueing (CLI walk: --queue took
# work the same command refuses in the foreground, and it failed later in the worker)

def test_what_the_registry_shows_would_fail_is_refused_before_queueing(tiny_llama):
    from backend.specs import CptSpec, DataSource, EvalSpec

    registry.import_folder(tiny_llama, "tiny")
    depth = registry.get("tiny").num_layers
    refused = {
        "m out of range": (UpscaleSpec(base="tiny", m=depth, name="deep"), f"m={depth} is out of range"),
        "unknown base": (UpscaleSpec(base="nosuch", m=1), "'nosuch' is neither a registered model"),
        "unknown model": (CptSpec(model="nosuch", data=[DataSource(source="builtin:facts-corpus")]),
                          "'nosuch' is neither a registered model"),
        "missing folder": (EvalSpec(models=["/no/such/folder"], tasks=["perplexity"]), "is not a folder on this"),
        "name taken": (UpscaleSpec(base="tiny", m=1, name="tiny"), "A model named 'tiny' is already registered"),
    }
    for what, (spec, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            runner.submit(spec)
    assert runner.list_jobs() == []  # nothing queued
    first = runner.submit(UpscaleSpec(base="tiny", m=1, name="deep"))
    with pytest.raises(ValueError, match=f"Job {first.id} \\(upscale, queued\\) will register a model named 'deep'"):
        runner.submit(UpscaleSpec(base="tiny", m=1, name="deep"))
    # the model a queued job will make may be read by the next one (a CPT → SFT chain queued at once)
    chained = runner.submit(CptSpec(model="deep", data=[DataSource(source="builtin:facts-corpus")]), after=first.id)
    assert [j.id for j in runner.list_jobs()] == [chained.id, first.id]


def test_a_worker_whose_workspace_is_not_the_shared_one_refuses_to_start(monkeypatch):
    """A worker on machine b that shares the database but not the workspace (DUS_WORKSPACE forgotten) claimed jobs,
    built into a folder only it had, and registered its paths for everyone."""
    from storage.models import WorkerBeat

    monkeypatch.setenv("DUS_HOST_ID", "machine-b")
    runner.beat()
    with db.session() as s:
        (row,) = s.exec(select(WorkerBeat)).all()
    assert row.workspace == ray_jobs.workspace_marker().name  # what every beat says
    with db.session() as s:  # machine a's worker beats from another workspace
        s.add(WorkerBeat(host="machine-a", pid=1, seen=utcnow(), workspace=".dus-workspace-0123456789abcdef"))
        s.commit()
    with pytest.raises(RuntimeError, match=r"not the one the workers of machine-a share through this database "
                                           r"\(theirs holds \.dus-workspace-0123456789abcdef"):
        runner.worker(once=True)
    with db.session() as s:  # the same workspace (its marker seen alike from a's mount): b starts
        a = s.exec(select(WorkerBeat).where(WorkerBeat.host == "machine-a")).one()
        a.workspace = row.workspace
        s.add(a)
        s.commit()
    runner.worker(once=True)


def test_a_worker_sharing_its_host_id_with_another_container_refuses_to_start(monkeypatch):
    """Two containers with one host name (docker --network host) got one host id: each judged the other's running
    jobs by pids it cannot see (dead: marked interrupted) and could signal an unrelated process of its own."""
    from storage.models import WorkerBeat

    runner.beat()
    with db.session() as s:
        (row,) = s.exec(select(WorkerBeat)).all()
    assert row.space == db.process_space() and row.space.count("/pid:[") == 1  # boot id / pid namespace
    with db.session() as s:  # a worker in another container beat under our host id 20 s ago
        s.add(WorkerBeat(host=runner.host_id(), pid=7, seen=utcnow() - timedelta(seconds=20),
                         space="0f0e0d0c-boot/pid:[4026532999]"))
        s.commit()
    with pytest.raises(RuntimeError, match=r"Another worker \(pid 7 there\) beat as host .* from another machine or "
                                           r"container .* Give each machine or container its own DUS_HOST_ID"):
        runner.worker(once=True)
    monkeypatch.setenv("DUS_HOST_ID", "container-2")  # what the message asks for
    runner.worker(once=True)
    with db.session() as s:  # and a beat older than BEAT_STALE (that container stopped) does not count
        other = s.exec(select(WorkerBeat).where(WorkerBeat.pid == 7)).one()
        other.host, other.seen = "container-2", utcnow() - timedelta(seconds=runner.BEAT_STALE + 5)
        s.add(other)
        s.commit()
    runner.worker(once=True)


class _SlowRay:
    """A Ray Jobs client whose submit lands but whose answer is lost (a timeout: requests raises an OSError)."""

    def __init__(self):
        self.held: list[str] = []

    def submit_job(self, *, submission_id, **_):
        self.held.append(submission_id)
        raise OSError("Read timed out (read timeout=30)")

    def get_job_info(self, submission_id):
        if submission_id not in self.held:
            raise RuntimeError(f"Job {submission_id} does not exist")
        return object()


def test_a_ray_submission_whose_answer_was_lost_is_watched_not_queued_again(monkeypatch):
    """The worker gave a job whose submit raised back to the queue; the submission had landed, so the next claim
    submitted the next attempt and the job ran twice on the cluster."""
    fake = _SlowRay()
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # missing_paths looks it up there
    job = _row()
    run = ray_jobs.submit(job, "http://head:8265")
    assert fake.held == [run.submission_id] and run.submission_id.endswith(f"-{job.id}-1")
    fake = _SlowRay()
    fake.submit_job = lambda **_: (_ for _ in ()).throw(OSError("Connection refused"))  # never landed
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # missing_paths looks it up there
    with pytest.raises(OSError, match="Connection refused"):  # the worker gives it back to the queue
        ray_jobs.submit(job, "http://head:8265")


class _KeptRay:
    """A Ray Jobs client holding earlier attempts of a job: Ray refuses a taken submission id ("already exists")."""

    def __init__(self, statuses: dict):
        self.statuses, self.submitted = statuses, []

    def submit_job(self, *, submission_id, **_):
        if submission_id in self.statuses:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists. Please use a different id.")
        self.submitted.append(submission_id)

    def get_job_info(self, submission_id):
        return SimpleNamespace(status=self.statuses[submission_id])


def test_a_ray_submission_lost_while_the_cluster_was_unreachable_is_watched_when_it_comes_back(monkeypatch):
    """Its submit landed, but neither the answer nor `_holds` reached the cluster, so the job went back to the
    queue; the next claim found attempt 1 taken, submitted attempt 2 and the job ran twice at once. A still running
    attempt is watched; an ended one (a resumed job's earlier run) is skipped as before."""
    from ray.job_submission import JobStatus

    job = _row()
    sid = lambda n: f"dus-{ray_jobs.workspace_tag()}-{job.id}-{n}"  # noqa: E731
    fake = _KeptRay({sid(1): JobStatus.RUNNING})
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # missing_paths looks it up there
    run = ray_jobs.submit(job, "http://head:8265")
    assert run.submission_id == sid(1) and fake.submitted == []
    fake = _KeptRay({sid(1): JobStatus.FAILED, sid(2): JobStatus.STOPPED})
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # missing_paths looks it up there
    run = ray_jobs.submit(job, "http://head:8265")
    assert run.submission_id == sid(3) and fake.submitted == [sid(3)]


def test_a_cancelled_ray_job_resumes_only_once_its_run_has_stopped(monkeypatch):
    """Ray keeps a stopped job RUNNING for a few seconds (for ever when the cancel never reached the cluster); a
    resume then queued it, and the claim attached to that dying run (its id was taken and running), which Ray
    reported stopped: the row said its node was lost and the resumed job never ran."""
    from ray.job_submission import JobStatus

    job = _row("cancelled", host="ray:http://head:8265")
    sid = lambda n: f"dus-{ray_jobs.workspace_tag()}-{job.id}-{n}"  # noqa: E731
    runner._update(job.id, cluster_ref=sid(1))
    fake = _KeptRay({sid(1): JobStatus.RUNNING})
    fake.stopped = []
    fake.stop_job = fake.stopped.append
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # missing_paths looks it up there
    with pytest.raises(ValueError, match=f"Job {job.id}'s Ray run {sid(1)} is still stopping on the cluster at "
                                         r"http://head:8265 \(asked to stop again\)"):
        runner.resume(job.id)
    assert fake.stopped == [sid(1)] and runner.get(job.id).status == "cancelled"
    fake.statuses[sid(1)] = JobStatus.STOPPED  # Ray says it stopped: the resume queues it, the claim runs attempt 2
    assert runner.resume(job.id).status == "queued"
    monkeypatch.setattr(ray_jobs, "address", lambda: "http://head:8265")
    claimed = runner._claim_next()
    assert claimed.id == job.id
    assert runner.start_child(claimed).submission_id == sid(2) and fake.submitted == [sid(2)]
