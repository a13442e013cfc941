"""The worker: claims queued jobs (at most `slots` at a time on this machine), starts each in a child process or on
a Ray cluster, and watches them end, die or be cancelled from another machine.

    python -m backend worker
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from backend.cluster import ray_jobs
from backend.runner import lanes
from backend.runner.hosts import (BEAT_EVERY, _clear_stopped, _hosts_here, _mine, beat, check_host_id,
                                  check_shared_workspace, claim_host, dead_hosts, heartbeat_path, recover_orphans)
from backend.runner.resume_step import with_resume_step
from backend.runner.rows import UNSUCCESSFUL, _transition, _update, get
from backend.runner.states import _needs
from storage import db
from storage.models import Job, utcnow

REPO_ROOT = Path(__file__).resolve().parents[2]  # where a job process runs: `-m backend` is found there


@db.retrying
def _claim_next(slots: int | None = None, only: set[int] | None = None, light: int = 0) -> Job | None:
    """The oldest queued job whose dependency (if any) succeeded; jobs whose dependency ended otherwise are
    cancelled with the reason. The claim is one conditional update, so two workers never take the same job, and with
    `slots` it only succeeds while fewer than `slots` jobs run on this machine: the cap holds at every instant, not
    only after a losing worker gives its claim back. `light` (lanes.py): with light slots, a light job (an import, a
    merge) is claimed while fewer than `light` light jobs run here, however many device jobs run, and a device job
    counts only device jobs against `slots`; each lane oldest first. `only`: these jobs and no other."""
    notes = db.unit_notes()
    with db.session() as s:
        if db.rerun() and "claim" in notes and (mine := _claimed_before(s, *notes.pop("claim"))):
            return mine
        lanes_open = {False, True} if light else {False}
        full = _full_lanes(s, slots, light) if light else set()  # one lane: found full only after a failed claim
        if full >= lanes_open:
            return None
        queued = select(Job).where(Job.status == "queued")
        if full:  # the other lane's jobs only: a worker busy with a training scanned the queue every 0.2 s
            queued = queued.where(Job.kind.in_(lanes.LIGHT_KINDS) if False in full else
                                  Job.kind.not_in(lanes.LIGHT_KINDS))
        for job in s.exec((queued.where(Job.id.in_(only)) if only is not None else queued).order_by(Job.id)).all():
            try:  # a failed claim's commit expired the rows read: each is read again, and may be gone
                lane = lanes.is_light(job.kind, light)
            except sa.orm.exc.ObjectDeletedError:  # withdrawn meanwhile (queue._withdraw_if_second, a delete)
                continue
            if lane in full or _cancelled_or_waiting(s, job):
                continue
            if _claim(s, job, light if lane else slots, notes, lane if light else None):
                return job
            if (full := _full_lanes(s, slots, light)) >= lanes_open:
                return None  # the machine filled up while we looked
    return None


def _full_lanes(s, slots: int | None, light: int) -> set[bool]:
    """The lanes with no slot free on this machine: False for the device jobs' (every job's, without light slots),
    True for the light jobs'. Only a hint for which jobs to try: the claim's own count is what holds the cap."""
    if slots is None:
        return set()
    if not light:
        return {False} if _busy() >= slots else set()
    kinds = s.exec(select(Job.kind).where(Job.status == "running", _mine())).all()
    n_light = sum(k in lanes.LIGHT_KINDS for k in kinds)
    return {lane for lane, busy, cap in ((False, len(kinds) - n_light, slots), (True, n_light, light)) if busy >= cap}


def _claimed_before(s, claimed_id: int, started) -> Job | None:
    """A rerun (db.retrying) whose first run's claim reached the server just as the connection died: that claim is
    this call's, found by the start time it wrote; claiming another instead left it "running" with no process."""
    return s.exec(select(Job).where(Job.id == claimed_id, Job.status == "running", Job.started == started,
                                    Job.host == claim_host(), Job.pid == None)).first()  # noqa: E711


def _cancelled_or_waiting(s, job: Job) -> bool:
    """Whether the job cannot be claimed now: a job it needs ended without succeeding (or is gone), and it is
    cancelled here with the reason; or a job it needs or waits for has not ended (`waits`: ended however)."""
    waiting = False
    for dep_id in _needs(job):
        dep = s.get(Job, dep_id)
        if dep is None or dep.status in UNSUCCESSFUL:
            job.status, job.finished = "cancelled", utcnow()
            job.message = f"not run: job {dep_id} it waited for {dep.status if dep else 'is gone'}"
            s.add(job)
            s.commit()
            return True
        waiting = waiting or dep.status != "succeeded"
    for dep_id in job.waits or []:  # ended however (a job gone has ended too)
        dep = s.get(Job, dep_id)
        waiting = waiting or (dep is not None and dep.status in ("queued", "running"))
    return waiting


def _claim(s, job: Job, slots: int | None, notes: dict, light: bool | None = None) -> bool:
    """Take the job for this machine in one conditional update: only while it is still queued and (with `slots`)
    fewer than `slots` jobs run here: every job, or with `light` True the light jobs only, False the device jobs
    only (lanes.py). The claim's start time goes into the unit's notes first, so that a rerun finds it
    (_claimed_before)."""
    from sqlalchemy import func, text, update
    from sqlalchemy.orm import aliased

    # Safe with workers on several machines: SQLite holds its write lock for the whole statement, count
    # included; PostgreSQL makes a second UPDATE of the row wait for the first, then re-checks
    # status = 'queued' on the committed row (READ COMMITTED) and updates nothing. The count of running
    # jobs is no row lock, so on PostgreSQL claims from one machine first take a transaction-scoped advisory
    # lock on its name. tests/test_postgres.py races two workers for 20 jobs on both.
    cond = [Job.id == job.id, Job.status == "queued"]
    if slots is not None:
        if s.get_bind().dialect.name == "postgresql":
            s.exec(text("SELECT pg_advisory_xact_lock(hashtext(:k))").bindparams(k=f"dus-claim:{claim_host()}"))
        other = aliased(Job)
        lane = [] if light is None else [other.kind.in_(lanes.LIGHT_KINDS) if light else
                                         other.kind.not_in(lanes.LIGHT_KINDS)]
        cond.append(select(func.count(other.id)).where(other.status == "running", other.host.in_(_hosts_here()),
                                                       *lane).scalar_subquery() < slots)
    notes["claim"] = job.id, utcnow()
    claimed = s.exec(update(Job).where(*cond).values(status="running", message="launching",
                                                     started=notes["claim"][1], host=claim_host(), cluster_ref=""))
    s.commit()
    if claimed.rowcount == 1:
        s.refresh(job)
        return True
    del notes["claim"]
    return False


@db.retrying
def _busy() -> int:
    """Jobs running on this machine (its devices are what the slots share), whichever of its workers runs them."""
    with db.session() as s:
        return len(s.exec(select(Job.id).where(Job.status == "running", _mine())).all())


def job_niceness() -> int:
    """$DUS_JOB_NICE (default 10): the scheduling priority a worker's jobs run at on this machine. A training job
    takes every core; at the dashboard's own priority it slows every page the dashboard draws. bench/job_niceness.py
    times renders of the Jobs page (AppTest) beside a process keeping every core busy, as a CPU training job does:
    0.32 s with that process at nice 10, 0.47–0.48 s with it at nice 0 (about 1.5x slower). A job alone on the
    machine loses nothing."""
    raw = os.environ.get("DUS_JOB_NICE", "10")
    try:
        nice = int(raw)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise ValueError(f"DUS_JOB_NICE={raw!r}: give a niceness from 0 (the dashboard's priority) to 19 (the lowest)")
    return nice


def start_child(job: Job) -> subprocess.Popen | ray_jobs.RayRun:
    if addr := ray_jobs.address():  # a Ray Job on the cluster, whose entrypoint appends to the same log
        run = ray_jobs.submit(job, addr)
        _update(job.id, cluster_ref=run.submission_id, message="submitted to the Ray cluster")
        return run
    log = open(job.log_path or os.devnull, "ab")
    from backend.auth import HASH_ENV, PASSWORD_ENV

    # a job never serves a page, so it gets no login secret: the code it runs (a trainer, a model's remote code,
    # a user's data script) could read it from its environment
    env = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, HASH_ENV)}
    env.update(DUS_WORKSPACE=str(db.workspace()), PYTHONUNBUFFERED="1")
    # no stdin either: a worker started from a terminal handed its own on, and a prompt in a job (transformers'
    # "run the custom code? [y/N]") read the worker's keyboard
    proc = subprocess.Popen([sys.executable, "-m", "backend", "jobs", "exec", str(job.id)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                            cwd=REPO_ROOT)
    try:  # before it starts its own processes (accelerate, the trainer): they inherit it. Never above the worker's:
        os.setpriority(os.PRIO_PROCESS, proc.pid, max(job_niceness(), os.nice(0)))  # raising one needs root
    except ProcessLookupError:
        pass  # it ended already: the loop reads its exit code
    _update(job.id, pid=proc.pid)
    return proc


@db.retrying  # a database server restart must not end the worker, nor the jobs it watches (storage/db.py)
def _not_ours_any_longer(running: dict) -> list[int]:
    """The jobs this worker runs whose rows no longer hold that run: cancelled, or given up for dead by another
    machine (its heartbeat stale: a database outage, a suspended machine) and perhaps resumed and started again
    under another pid. Left running, such a run wrote the same checkpoints as the new one, and its "succeeded" landed
    on the new run's row. A Ray job's pid is a node's: only its row's status says."""
    with db.session() as s:
        rows = s.exec(select(Job.id, Job.status, Job.pid).where(Job.id.in_(list(running)))).all()
    return [i for i, status, pid in rows if status in ("cancelled", "interrupted", "queued") or (
        status == "running" and pid is not None and not isinstance(running[i], ray_jobs.RayRun)
        and pid != running[i].pid)]


def _interrupt_running(running: dict) -> None:
    """A worker stopped by Ctrl-C (a foreground `recipe run` or `worker`): end the jobs it started here and
    mark them interrupted at once. Each job process leads a session of its own (the terminal's Ctrl-C does not reach
    it) and killed itself within 0.5 s of its worker's end (_watch_parent), but its row stayed "running" until a
    worker next started and recovered it (the pages showed "running?" meanwhile). Jobs on a Ray cluster run on:
    a worker's end does not stop them (the next worker watches them again)."""
    for job_id, proc in running.items():
        if isinstance(proc, ray_jobs.RayRun):
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass
        # what a resume does, by its kind and what its run left (it said "from its last checkpoint" to any training)
        _transition(job_id, "running", _of_pid=proc.pid, **with_resume_step(get(job_id), dict(
            status="interrupted", finished=utcnow(), message="interrupted: its worker was stopped (Ctrl-C)")))


def _job_slots() -> int:
    """$DUS_JOB_SLOTS, else 1: 0 or less left every device job queued for ever ("the worker starts it next")."""
    raw = os.environ.get("DUS_JOB_SLOTS", "1")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"DUS_JOB_SLOTS={raw!r}: give how many device jobs (trainings, evaluations, synthetic math) "
                         "this machine runs at a time, 1 or more")
    return int(raw)


def worker(poll: float = 1.0, once: bool = False, slots: int | None = None, only: set[int] | None = None,
           light_slots: int | None = None) -> None:
    """Run queued jobs until stopped, at most `slots` at a time (default $DUS_JOB_SLOTS, else 1), and beside them at
    most `light_slots` light jobs (imports, upscales, merges, pushes: lanes.py; default $DUS_LIGHT_SLOTS, else 1;
    0: they take the device slots too). `once`: run what is runnable now, wait for it, then return (tests,
    scripts). `only`: run these jobs and no other (a foreground `recipe run` ran every job queued in the workspace,
    another machine's included, before its own)."""
    slots = slots or _job_slots()
    if slots < 1:
        raise ValueError(f"--slots {slots}: give how many device jobs this machine runs at a time, 1 or more")
    light = lanes.light_slots(light_slots)  # a bad value stops the worker at start
    addr = _start_checks()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    running = _adopt_cluster_runs(addr)
    last_beat, down = 0.0, None
    try:
        while True:
            try:
                last_beat = _heartbeat(last_beat)
                if running:  # cancelled, or given up for dead, from another machine: only this one can signal it
                    _stop_lost_runs(running)
                _reap_ended(running)
                recover_orphans()  # cheap; also frees the slots of jobs whose process vanished
                _clear_stopped()
                # slots count every job running on this machine, also another worker's here; with light slots,
                # _claim_next finds which lane has room (a count of every job kept an evaluation waiting while a
                # merge and a push ran in a light lane another worker here gave two slots)
                busy = _busy()
                job = _claim_next(slots, only, light) if not stop and (light or busy < slots) else None
            except (db.DatabaseUnavailable, sa.exc.DBAPIError) as exc:
                if not running and once:  # a foreground run (recipe run's worker): fail now, saying why
                    raise
                down = _database_down(exc, down)
                if stop and not running:  # SIGTERM (systemctl stop) while waiting: nothing left to watch
                    return
                time.sleep(max(poll, 1.0))
                continue
            if down is not None:
                logging.getLogger(__name__).warning("the database answers again: the worker goes on")
                down = None
            if job is not None:
                _start_or_give_back(job, running, poll)
                continue
            if not running and (once or stop):
                return
            time.sleep(0.2 if running else poll)
    except KeyboardInterrupt:  # Ctrl-C (a foreground command's worker): its jobs stop now, and say so now
        _interrupt_running(running)
        raise


def _database_down(exc: Exception, down: tuple[float, float] | None) -> tuple[float, float]:
    """The last resort of the worker loop: a database error that db.retrying did not ride out (a server down for
    longer than $DUS_DB_RETRY_SECONDS, an outage outside a retried unit). The worker said nothing and ended with a
    traceback, and every job process it started ended with it (they stop when their worker does): a PostgreSQL
    restart killed the running jobs. Now it says so (the traceback once per outage) and tries again each second;
    its jobs run on meanwhile. Any other database error (_is_outage: a bug, a wrong password, SQLite's) ends it.
    `down`, and what it returns: when the outage began and when it was last said (every 30 s, not every second)."""
    if not _is_outage(exc):
        raise exc
    log, now = logging.getLogger(__name__), time.monotonic()
    if down is None:
        log.warning("the database does not answer (%s); the worker tries again every second, its running jobs go on "
                    "(one that cannot write to it for $DUS_DB_RETRY_SECONDS fails: its row then says what a "
                    "resume of it does)", str(exc).splitlines()[0][:300], exc_info=exc)
        return now, now
    if now - down[1] < 30:
        return down
    log.warning("the database still does not answer after %.0f s (%s); trying again", now - down[0],
                str(exc).splitlines()[0][:200])
    return down[0], now


def _is_outage(exc: Exception) -> bool:
    """Whether a database error is a server away for a while (restarting, the network down), worth waiting out:
    a connection lost or refused, PostgreSQL's connection exceptions (SQLSTATE class 08) and operator intervention
    (57P: admin shutdown, starting up). Not a wrong password after a rotation (28), a database that is gone (3D), nor
    anything on SQLite, which has no server: "no such table", a read-only or full disk are no outage (a lock waits
    in busy_timeout already); waited on, they kept a worker looping for ever on "does not answer"."""
    from sqlalchemy.engine import make_url

    cause = exc.__cause__ if isinstance(exc, db.DatabaseUnavailable) and exc.__cause__ is not None else exc
    if getattr(cause, "connection_invalidated", False):
        return True
    if state := getattr(getattr(cause, "orig", cause), "sqlstate", None):
        return state.startswith(("08", "57P"))
    if isinstance(exc, db.DatabaseUnavailable):  # raised for a server only (storage/db.py's connect, its retries)
        return True
    return make_url(db.database_url()).get_backend_name() != "sqlite" and isinstance(
        cause, (sa.exc.OperationalError, sa.exc.InterfaceError))


def _start_checks() -> str | None:
    """What a worker checks and tidies before its first claim, so that a bad setting stops it at start, not its
    first job. Returns the Ray cluster's address (None: jobs run here)."""
    job_niceness()  # a bad $DUS_JOB_NICE stops the worker at start, not its first job
    if addr := ray_jobs.address():
        ray_jobs.client(addr)  # at start: name the address and what to run if it does not answer (and import Ray now)
    db.init_db()
    check_shared_workspace()
    check_host_id()
    # another machine's builds in the shared workspace go only once its workers are known dead; on a Ray cluster
    # never from here (a job's node beats no heartbeat)
    db.clean_stale_tmp(dead_elsewhere=() if addr else dead_hosts())
    recover_orphans()
    return addr


@db.retrying
def _adopt_cluster_runs(addr: str | None) -> dict[int, subprocess.Popen | ray_jobs.RayRun]:
    """The jobs a previous worker handed to the cluster run on: watched (cancel, end) as if started here."""
    running: dict[int, subprocess.Popen | ray_jobs.RayRun] = {}
    if addr:
        with db.session() as s:
            running.update({j.id: ray_jobs.RayRun(addr, j.cluster_ref) for j in s.exec(
                select(Job).where(Job.status == "running", _mine(), Job.cluster_ref != ""))})
    return running


def _heartbeat(last_beat: float) -> float:
    """This worker's heartbeat file on every turn, the machine's heartbeat row every BEAT_EVERY seconds. Returns
    when the row was last written."""
    heartbeat_path().write_text(json.dumps({"pid": os.getpid(), "time": time.time()}))
    if time.monotonic() - last_beat > BEAT_EVERY:
        beat()
        last_beat = time.monotonic()
    return last_beat


def _stop_lost_runs(running: dict) -> None:
    """End the runs whose rows no longer hold them (_not_ours_any_longer): a Ray job is stopped and forgotten; a
    local process group is killed and reaped by _reap_ended, which reads its exit code."""
    for job_id in _not_ours_any_longer(running):
        if isinstance(running[job_id], ray_jobs.RayRun):
            running.pop(job_id).stop()  # Ray ends the entrypoint's process group on whichever node
            continue
        try:
            os.killpg(running[job_id].pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_ended(running: dict) -> None:
    """Forget the runs that ended; a row still "running" after its run's end gets that end: the cluster's report of
    a Ray job, or "failed" for a process that died without saying why."""
    for job_id, proc in list(running.items()):
        if isinstance(proc, ray_jobs.RayRun):
            if (info := proc.poll()) is not None:  # ended on the cluster; a row still running never got its end
                _transition(job_id, "running", **with_resume_step(get(job_id), ray_jobs.end_fields(info)))
                del running[job_id]  # after its end is written: a database outage leaves it to the next turn
            continue
        if proc.poll() is not None:  # (Popen keeps the exit code: asked again next turn after a database outage)
            if not getattr(proc, "group_killed", False):  # once: its pid is free for reuse once it is reaped
                try:  # its own children (accelerate, the trainer) must not outlive a killed job process
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.group_killed = True
                try:  # a build killed mid-way (kill -9, out of memory) left its folder in .tmp: removed now,
                    db.clean_stale_tmp(pid=proc.pid)  # not at the worker's next start (the job's entries only)
                except OSError as exc:  # tidying only: the worker goes on
                    logging.getLogger(__name__).warning("job %s: its build folder stays in .tmp (%s)", job_id, exc)
            # the child died without saying why (killed, out of memory); its error says what a resume does.
            # Only its own run: after a resume another worker here may run the job again under a new pid.
            _transition(job_id, "running", _of_pid=proc.pid, **with_resume_step(get(job_id), dict(
                status="failed", finished=utcnow(), message="failed",
                error=f"the job process exited with code {proc.returncode} without finishing; see its log")))
            del running[job_id]


def _start_or_give_back(job: Job, running: dict, poll: float) -> None:
    """Start the claimed job (start_child); a Ray cluster that refused it or vanished gets it back to the queue,
    and the worker waits a poll before its next claim."""
    try:
        running[job.id] = start_child(job)
    except (ValueError, RuntimeError, OSError) as exc:  # the cluster refused or vanished: give the job back
        if not ray_jobs.is_ray(job.host):
            raise
        _transition(job.id, "running", status="queued", started=None, host="",
                    message=f"waiting: the Ray cluster did not take it ({exc})"[:500])
        time.sleep(poll)
