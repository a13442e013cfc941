"""What the pages and `jobs list` say about a job: its message read against the queue and the workers alive, and
its log's last lines. What a resume of it does lives in resume_step.py (hosts.recover_orphans says it too, and this
module reads hosts), read from here as before."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from backend.cluster import ray_jobs
from backend.runner import lanes
from backend.runner.hosts import (BEAT_STALE, _age, _beat_ages, _local_run_alive, beats_once, host_id,
                                  worker_alive)
from backend.runner.queue import WAITING, active_jobs, inputs_gone
from backend.runner.resume_step import (ResumeAction, _what_resume_does, resume_action,  # noqa: F401 (read from here)
                                        resume_point, what_resume_does, with_resume_step)
from backend.runner.rows import known_once
from backend.runner.states import _ended_dependency, _needs, _waits_on_a_job


# one_pass's queue: (the active jobs, them by id, the ids of the queued ones a worker may take in the order it takes
# them, the running ones as job_message names them)
_PASS: ContextVar[tuple[list, dict, list[int], list[str]] | None] = ContextVar("jobs_pass", default=None)


@contextmanager
def one_pass(jobs: list = ()) -> Iterator[tuple[list, bool]]:
    """A pass over many jobs' messages and warnings (the Jobs page's table every 2 s, `jobs list`) that reads each
    thing once: the queue (active_jobs) and whether a worker is alive, yielded to pass to job_message and will_fail;
    the models (registry.read_once), the heartbeats (hosts.beats_once), the rows the queued jobs wait on
    (rows.known_once); and the order of the queue, which job_message's "jobs 4, 5 go first" recomputed for every
    queued job (quadratic: 19,659 dependency checks a refresh with 197 queued). The words are job_message's and
    will_fail's own; only the reads are shared. `jobs`: the rows shown, known to get() too. For reads only."""
    from backend import registry
    from backend.synth.datasets import datasets_once

    # the queue first, then the models: a job registers its model before it leaves the queue, so a model read after
    # the queue is there for every job that was making it (read before, a producer that ended in between was
    # neither: its consumer "will fail", its model "gone")
    active = active_jobs()
    with registry.read_once(), beats_once(), datasets_once():  # a data set read per queued job that names one
        alive = worker_alive()
        waited = {d for j in [*jobs, *active] if j.status == "queued" for d in _needs(j) + list(j.waits or [])}
        # the rows waited on read now (fresh), not taken from `jobs`, read before the pass: a dependency that failed
        # since read as still queued ("waiting for job 7", not "will not run")
        with known_once(active, waited):
            by_id = {j.id: j for j in active}
            token = _PASS.set((active, by_id, *_queue_order(active, by_id)))
            try:
                yield active, alive
            finally:
                _PASS.reset(token)


def _queue_order(jobs: list, by_id: dict) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    """The queued jobs a worker may take (waiting on no job), as (id, kind), the order it takes them in; the running
    ones, as (kind, "7 (sft)")."""
    order = sorted(jobs, key=lambda j: j.id)
    return ([(j.id, j.kind) for j in order if j.status == "queued" and not _waits_on_a_job(j, by_id)],
            [(j.kind, f"{j.id} ({j.kind})") for j in order if j.status == "running"])


def _light_slots() -> int:
    """$DUS_LIGHT_SLOTS as the worker reads it; a bad value (the worker refuses to start on it) reads as 0."""
    try:
        return lanes.light_slots()
    except ValueError:
        return 0


def job_message(job, active: list | None = None, alive: bool | None = None) -> str:
    """A job's message as the pages and `jobs list` show it. A queued job's stored "waiting for the worker" read as
    if no worker ran while one was busy with another job: with a worker alive it says which jobs run and which go
    first; with none it stays "waiting for the worker" (the pages' worker_banner says how to start one). A failed
    job's error takes its "failed". A running job whose worker and process are gone (a worker killed with -9) stays
    "running" in its row until a worker starts again and marks it interrupted: with no worker alive the message says
    so rather than show it running, and leaves the row to that worker (a look at the jobs repairs nothing; a worker
    alive anywhere repairs it within BEAT_STALE: recover_orphans). `active`: active_jobs() (queued and running only:
    a status box asks every second), and `alive`: worker_alive(), when the caller has them already."""
    if job.status == "failed" and job.error:
        return f"failed: {job.error}"
    if job.status == "running" and not (worker_alive() if alive is None else alive) and (doubt := _unwatched(job)):
        return (f"running? — {doubt}; start a worker (python -m backend worker) to mark it interrupted, then resume "
                f"it (python -m backend jobs resume {job.id})")
    # "waiting: the Ray cluster did not take it (…)" is the runner's own reason: it stands
    if job.status != "queued" or job.message.startswith("waiting: "):
        return job.message
    jobs = active_jobs() if active is None else active
    # inside one_pass, given its queue: the queue's order read once for every job's message
    shared = (p := _PASS.get()) is not None and p[0] is jobs
    by_id = p[1] if shared else {j.id: j for j in jobs}
    if said := _ended_dependency(job, by_id):
        return said
    if _waits_on_a_job(job, by_id):
        return job.message
    if not (worker_alive() if alive is None else alive):
        return WAITING
    ready, running = p[2:] if shared else _queue_order(
        [j for j in jobs if j.id < job.id or j.status == "running"], by_id)
    # its lane's jobs only (lanes.py): a light job (an import, a merge) waits for no training, and none waits for it
    light = _light_slots()
    lane = lanes.is_light(job.kind, light)
    ahead = [str(i) for i, kind in ready if i < job.id and lanes.is_light(kind, light) == lane]
    busy = [said for kind, said in running if lanes.is_light(kind, light) == lane]
    beside = [said for kind, said in running if lanes.is_light(kind, light) != lane] if lane else []
    said = (f"queued: the worker is busy with job{'s' if len(busy) > 1 else ''} {', '.join(busy)}" if busy
            else "queued: the worker starts it next" if not ahead else "queued")
    said += (f"; job{'s' if len(ahead) > 1 else ''} {', '.join(ahead)} go{'' if len(ahead) > 1 else 'es'} "
             "first" if ahead else "")
    if beside and not (busy or ahead):
        return f"{said}, beside job{'s' if len(beside) > 1 else ''} {', '.join(beside)}"
    if beside:
        return (f"{said}; it runs beside job{'s' if len(beside) > 1 else ''} {', '.join(beside)} (light jobs: "
                f"{light} at a time)")
    return said


def will_fail(job, active: list | None = None, making: set[str] | None = None) -> str | None:
    """The warning for a queued job whose model or data is gone since it was queued (queue.inputs_gone), in the words
    the Jobs page and `jobs list` both print: the CLI listed such a job as "waiting for job 8" until it failed when
    its turn came. None for any other job."""
    if job.status != "queued" or not (gone := inputs_gone(job, active, making)):
        return None
    return f"Job {job.id} will fail when it runs: {gone}. Cancel it, or make it again before it runs."


def _unwatched(job) -> str | None:
    """Why a running job, with no worker alive to repair its row, has no process left, by the rules recover_orphans
    gives it up by: on this machine, its process is gone; on another, none of its workers beat within BEAT_STALE
    (its process there is not ours to see; a job ends with its worker: _watch_parent). None for a job on a Ray
    cluster (Ray's status judges it, cluster/ray_jobs.py; it runs on when its worker dies) or one that still runs."""
    if ray_jobs.is_ray(job.host):
        return None
    here = job.host in ("", host_id())
    age = _beat_ages().get(host_id() if here else job.host, float("inf"))
    if here:
        return None if _local_run_alive(job) else f"its worker {_silence(age)} and its process is gone"
    return f"the workers of {job.host} {_silence(age)}" if age >= BEAT_STALE else None


def _silence(age: float) -> str:
    """How long a machine's workers have been silent."""
    return "sent no heartbeat in the last day" if age == float("inf") else f"stopped beating {ago(age)}"


def log_tail(path: Path, lines: int, chunk: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a log, read from its end (as `tail` does), widening until they are there: the
    Jobs and Monitor pages redraw a running job's log every 2 s, and reading a tqdm-heavy log whole took 0.25 s and
    140 MiB at 33 MB, growing with the run."""
    with open(path, "rb") as f:
        start = end = f.seek(0, 2)
        data = b""
        # one line more than asked (the first may be cut in the middle); tqdm's \r counts as a break, as below
        while start > 0 and len(data.splitlines()) <= lines:
            start = max(0, start - chunk)
            f.seek(start)
            data = f.read(end - start)
            chunk *= 2
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def ago(seconds: float) -> str:
    """A time span back from now in the unit a reader takes in at a glance."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.0f} h ago"


def seconds_run(job) -> float | None:
    """How long a job's latest run ran, or has run so far while it runs; None before it started, and for a resumed
    job queued again (its first run's start would count the wait). Its row keeps one start and one end, rewritten by
    each run: the earlier runs are in seconds_before (seconds_all)."""
    if job.started is None or job.status == "queued":
        return None
    return (job.finished - job.started).total_seconds() if job.finished else _age(job.started)


def seconds_all(job) -> float | None:
    """The seconds of all of a job's runs, this one so far while it runs (the Jobs page's "run s"): a job resumed
    twice, then cancelled, read as its last run's 44 s of hours in all. None before its first run."""
    before, run = job.seconds_before or 0.0, seconds_run(job)
    return (before or None) if run is None else before + run
