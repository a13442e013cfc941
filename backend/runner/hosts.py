"""Machines and their workers: heartbeats in the shared database, which machines are alive, and whether a running
job still has its process (this machine's by process id, another machine's by its workers' heartbeats); the jobs
whose process is gone become interrupted (recover_orphans)."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path

from sqlmodel import func, select

from backend.cluster import ray_jobs
from backend.runner import resume_step
from backend.runner.resume_step import with_resume_step
from backend.runner.rows import STOPPED, _transition, get
from storage import db
from storage.models import Job, WorkerBeat, as_utc, utcnow

BEAT_EVERY = 5.0  # seconds between a worker's heartbeat rows
BEAT_STALE = 60.0  # a machine none of whose workers beat for this long is taken for dead
ALIVE_WITHIN = 15.0  # a worker that beat this recently runs (the pages' "no job worker" banner, job_message)

host_id = db.host_id  # this machine's name in job rows (DUS_HOST_ID overrides it: two workers on one machine play two)


def claim_host() -> str:
    """The `host` this worker writes into the jobs it claims: this machine, or with a Ray cluster configured
    (DUS_RAY_ADDRESS) the cluster, whose rows Ray's job status judges and whose in-flight jobs the slots count."""
    addr = ray_jobs.address()
    return ray_jobs.host_for(addr) if addr else host_id()


def _hosts_here() -> tuple[str, ...]:
    """The `host` values of the jobs this worker's slots share: rows from before jobs recorded a machine ("") belong
    to a local worker, never to a cluster."""
    here = claim_host()
    return (here,) if ray_jobs.is_ray(here) else ("", here)


def _mine():
    """Running on this machine (or cluster): rows it claimed, and rows from before jobs recorded a machine."""
    return Job.host.in_(_hosts_here())


def heartbeat_path() -> Path:
    return db.workspace() / "worker.json"


def worker_alive() -> bool:
    """A worker beat within ALIVE_WITHIN: in the shared database (any machine), else this workspace's heartbeat
    file."""
    try:
        if live_hosts(ALIVE_WITHIN):
            return True
    except Exception:  # noqa: BLE001 (the banner must not fail on a database hiccup; the file still answers)
        pass
    try:
        info = json.loads(heartbeat_path().read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, json.JSONDecodeError):
        return False
    except PermissionError:
        return True
    return time.time() - info.get("time", 0) < ALIVE_WITHIN


@db.retrying
def beat() -> None:
    """Record that this worker is alive (one row per worker process, updated in place)."""
    with db.session() as s:
        row = s.exec(select(WorkerBeat).where(WorkerBeat.host == host_id(), WorkerBeat.pid == os.getpid())).first()
        row = row or WorkerBeat(host=host_id(), pid=os.getpid())
        row.seen, row.workspace, row.space = _db_now(s), ray_jobs.workspace_marker().name, db.process_space()
        s.add(row)
        for old in s.exec(select(WorkerBeat).where(WorkerBeat.seen < utcnow() - timedelta(days=1))):
            s.delete(old)  # workers long gone
        s.commit()


def check_shared_workspace() -> None:
    """Refuse to start a worker whose workspace is not the one the other machines' workers use with this database:
    it would claim their jobs, build into a folder they cannot read and register paths only it sees (or fail each
    job on a log path it lacks). A workspace is known by its marker file, a name unique to it, which every machine
    mounting the same folder sees."""
    mine = ray_jobs.workspace_marker().name
    with db.session() as s:
        others = s.exec(select(WorkerBeat).where(WorkerBeat.host != host_id(), WorkerBeat.workspace != "",
                                                 WorkerBeat.workspace != mine)).all()
    if others:
        raise RuntimeError(
            f"This machine's workspace {db.workspace()} is not the one the workers of "
            f"{', '.join(sorted({b.host for b in others}))} share through this database (theirs holds "
            f"{others[0].workspace}, this one does not). Mount the shared workspace on this machine and set "
            "DUS_WORKSPACE to it (README: A shared database).")


def check_host_id() -> None:
    """Refuse to start a worker when a live worker under the same host id runs in another kernel or process-id
    namespace: two containers sharing a host name (docker --network host) or two machines given one DUS_HOST_ID.
    Each would take the other's jobs for its own, judge them dead by pids it cannot see, and mark them interrupted
    (or signal an unrelated process of its own with their pid)."""
    mine = db.process_space()
    with db.session() as s:
        beats, now = s.exec(select(WorkerBeat).where(WorkerBeat.host == host_id())).all(), _db_now(s)
    other = [b for b in beats if b.space not in ("", mine) and _age(b.seen, now) < BEAT_STALE]
    if mine and other:
        raise RuntimeError(
            f"Another worker (pid {other[0].pid} there) beat as host {host_id()!r} {_age(other[0].seen, now):.0f} s "
            "ago from another machine or container (another kernel or process-id namespace): the two would take "
            "each other's jobs for their own and judge them by process ids they cannot see. Give each machine or "
            "container its own DUS_HOST_ID (README: A shared database), then start this worker again.")


_utc = as_utc  # the name this package's modules read it by


def _age(when, now=None) -> float:
    """Seconds from `when` to `now` (default this machine's clock; SQLite hands datetimes back without their UTC
    zone)."""
    return ((now or utcnow()) - _utc(when)).total_seconds()


def _db_now(s):
    """The time by the database server's clock on PostgreSQL, whose heartbeats machines read of each other: written
    and read by each machine's own clock, a machine 60 s behind the others looked dead to them, and they
    interrupted its jobs. SQLite is one machine's file: its clock."""
    if s.get_bind().dialect.name != "postgresql":
        return utcnow()
    return s.exec(select(func.now())).one()


# the beat ages one beats_once() read; None: each call reads the worker_beats table
_BEATS_ONCE: ContextVar[dict[str, float] | None] = ContextVar("beats_once", default=None)


@contextmanager
def beats_once():
    """Inside it, _beat_ages (and so worker_alive, live_hosts, dead_hosts) answers from one read of the heartbeats:
    `jobs list` with no worker alive read them once per running job (job_message → _unwatched: 281 queries). A pass
    over the jobs takes a second, in which ages move by that second; a worker's beat every BEAT_EVERY s is coarser.
    Per context (a thread), never shared."""
    if _BEATS_ONCE.get() is not None:
        yield
        return
    token = _BEATS_ONCE.set(_beat_ages())
    try:
        yield
    finally:
        _BEATS_ONCE.reset(token)


@db.retrying
def _beat_ages() -> dict[str, float]:
    """Each machine's seconds since its youngest worker beat (beats are kept a day); inside beats_once, its one
    read."""
    if (once := _BEATS_ONCE.get()) is not None:
        return dict(once)
    with db.session() as s:
        beats, now = s.exec(select(WorkerBeat)).all(), _db_now(s)
    ages: dict[str, float] = {}
    for b in beats:
        ages[b.host] = min(ages.get(b.host, float("inf")), _age(b.seen, now))
    return ages


def live_hosts(within: float = BEAT_STALE) -> set[str]:
    """Machines with a worker that beat within the last `within` seconds."""
    return {host for host, age in _beat_ages().items() if age < within}


def dead_hosts() -> set[str]:
    """Other machines whose workers have all stopped beating (within the day beats are kept): known dead. A machine
    that never ran a worker here is not among them."""
    return {host for host, age in _beat_ages().items() if age >= BEAT_STALE} - {host_id()}


@db.retrying
def recover_orphans() -> list[int]:
    """Running jobs whose process is gone (worker or machine died) become interrupted: this machine's by their
    process ids, another machine's only when none of its workers has beaten for BEAT_STALE seconds."""
    orphans = []  # each end says what a resume of the job does, as the Jobs page's button does (with_resume_step)
    here = host_id()
    with db.session() as s:
        running = list(s.exec(select(Job).where(Job.status == "running")))
    by_id = {j.id: j for j in running}
    # jobs on a Ray cluster: judged by Ray's status of their submission, not by local pids or machines' heartbeats
    on_ray = ray_jobs.lost([j for j in running if ray_jobs.is_ray(j.host)])
    running = [j for j in running if not ray_jobs.is_ray(j.host)]
    live = live_hosts() if any(j.host not in ("", here) for j in running) else set()
    for job in running:
        if job.host not in ("", here):
            if job.host not in live:
                orphans.append(job)
            continue
        if not _local_run_alive(job):
            orphans.append(job)
    # conditional, so a job that finished while we looked keeps the state its own process wrote, and one resumed
    # and started again meanwhile (another pid) its new run
    return [j.id for j in orphans if _transition(j.id, "running", _of_pid=j.pid, **with_resume_step(j, dict(
        status="interrupted", finished=utcnow(),
        message="interrupted: its process ended without finishing (worker or machine stopped)")))] + [
        i for i, fields in on_ray.items() if _transition(i, "running", **with_resume_step(by_id[i], fields))]


def _local_run_alive(job: Job) -> bool:
    """Whether this machine's running job still has its process: its own, or, just claimed, one being started."""
    if job.pid:
        return _runs_job(job.pid, job.id)
    return job.started is not None and _age(job.started) < 30


def _runs_job(pid: int, job_id: int) -> bool:
    """Whether process `pid` here is job `job_id`'s own (`python -m backend jobs exec ID`). A bare os.kill(pid, 0)
    took, after a reboot, an unrelated process that got the same pid for the job: the job stayed running for ever,
    held its slot, and a cancel killed that process's group. An ended process not reaped yet (a zombie) still runs
    only while a worker is its parent: that worker reaps it on its next poll and records its exit code; with no
    worker to reap it (reparented), it has ended for good."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours to signal: it runs
        return True
    try:
        state, ppid = db._stat_fields(Path(f"/proc/{pid}"))[:2]
    except FileNotFoundError:  # ended since, or no /proc (macOS): os.kill's answer stands
        return not Path("/proc/self").exists()
    except OSError:
        return True
    # ended (a zombie), or ending: a killed process's command line is gone before it is a zombie, and a check in
    # that instant called a job killed by SIGKILL "interrupted" before its worker recorded it failed with the code
    try:
        ending = _cmdline(pid) == [b""]
    except OSError:  # not ours to read: judged by its command line below, as before
        ending = False
    if state == "Z" or ending:
        return _command_holds(int(ppid), [b"backend", b"worker"])
    return _command_holds(pid, [b"jobs", b"exec", str(job_id).encode()])


def _cmdline(pid: int) -> list[bytes] | None:
    """Process `pid`'s command line, split (an ending process's: [b""]); None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None


def _command_holds(pid: int, words: list[bytes]) -> bool:
    """Whether process `pid`'s command line holds `words` in a row."""
    try:
        args = _cmdline(pid)
    except OSError:  # not ours to read
        return True
    if args is None:
        return False
    return any(args[i:i + len(words)] == words for i in range(len(args) - len(words) + 1))


@db.retrying
def _clear_stopped() -> None:
    """Clear the pid of this machine's stopped jobs (cancelled, or interrupted: given up for dead by another
    machine) whose processes have all ended (the job's whole process group: accelerate's workers may outlive their
    launcher by a moment): the sign _still_stopping reads, on any machine, that a resume can no longer run beside
    the old run."""
    here = tuple(h for h in _hosts_here() if not ray_jobs.is_ray(h))
    if not here:  # a Ray cluster's jobs: cancel() has Ray stop them, wherever they run
        return
    with db.session() as s:
        rows = s.exec(select(Job.id, Job.status, Job.pid).where(Job.status.in_(STOPPED), Job.pid != None,  # noqa: E711
                                                                Job.host.in_(here))).all()
    for job_id, status, pid in rows:
        if not db._group_running(pid):
            _stopped_run_ended(job_id, status, pid)


def _ended_here(job: Job, pid: int | None) -> bool:
    """Whether this machine knows `job`'s run (process group `pid`) has ended, so that none of its processes may still
    be saving a checkpoint: the row still holds that run, it ran here, its processes are gone, and it is one machine's
    (a rank of a multi-machine run shares its run folder with the others, which may save on)."""
    return (pid is not None and job.pid == pid and job.host in ("", db.host_id()) and not db._group_running(pid)
            and int((job.spec or {}).get("num_machines") or 1) == 1)


def _stopped_run_ended(job_id: int, status: str, pid: int | None) -> None:
    """A stopped job's run has ended: its row's pid is cleared and, cancelled, its message gets what a resume of it
    now does (with_resume_step), read as the run left it. states.cancel wrote the step while the process still ran:
    a training cancelled in its hand-over read "resume it to continue from its last checkpoint", then registered its
    model before the kill landed, and the Jobs page's button read "Mark done". One update, on that run's row only
    (`pid`; None: a run without a process here, a Ray job's, whose pid is a node's and stays). Reached twice for one
    cancel (states.cancel, once the worker here had cleared the pid; the worker's _clear_stopped): the step is added
    once (said_resume_step). A run that ended here (`pid`) leaves no checkpoint half written: the folders it cut
    off while saving are removed, and the message says so (tidy_cut_checkpoints)."""
    fields: dict = {"pid": None} if pid is not None else {}
    if status in STOPPED and (job := get(job_id)) is not None and job.status == status:
        message = job.message
        if status == "cancelled" and not resume_step.said_resume_step(job):
            message = with_resume_step(job, {"status": "cancelled", "message": message})["message"]
        if _ended_here(job, pid) and (cut := resume_step.tidy_cut_checkpoints(job)):
            message = f"{message}; {cut}"
        if message != job.message:
            fields["message"] = message
    if fields:
        _transition(job_id, status, _of_pid=pid, **fields)
