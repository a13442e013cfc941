"""A Ray cluster as the job backend: the worker hands each job it claims to the cluster as a Ray Job (Ray's Jobs API,
served by the head's dashboard) whose entrypoint is the same `python -m backend jobs exec ID` a local worker starts.

    ray start --head --dashboard-host=0.0.0.0                 # the head machine (Jobs API on port 8265)
    ray start --address=HEAD:6379                             # every other machine
    DUS_RAY_ADDRESS=http://HEAD:8265 python -m backend worker

The workspace, the repository and its venv must be at the same paths on every node (a shared file system): the
entrypoint writes status, progress and metrics into the same database rows and appends its output to the job's log
file, as a local job process does (Ray's log API cannot reach a driver on a non-head node). Ray queues an entrypoint
until a node has what the spec's `resources` ask; the worker's slots count the jobs in flight on the cluster.

The module is in three parts: ray_client.py reaches the Jobs API, ray_checks.py looks at what the cluster has before
a job is queued, and this one hands a job over and judges its end. Every name is imported from here.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from datetime import timezone
from pathlib import Path

from backend.cluster.ray_checks import (Node, asks, check_database, check_fits, check_paths,  # noqa: F401
                                        check_submission, entrypoint_asks, extra_resources, missing_paths, nodes,
                                        spec_paths, workers, workspace_marker)
from backend.cluster.ray_client import (ACTIVE, SETUP, ClusterError, address, check_reachable, client,  # noqa: F401
                                        host_for, is_ray)
from backend.specs import spec_from_dict
from storage import db
from storage.models import Job, utcnow

ROOT = Path(__file__).resolve().parent.parent.parent
# what a job process reads from its environment besides DUS_WORKSPACE and DATABASE_URL (always set explicitly)
FORWARD = ("DUS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "ACCELERATE_", "PYTORCH_", "OMP_NUM_THREADS")
# The dashboard's login is no job's business, and Ray shows a job's runtime_env to anyone who reaches its
# dashboard (`ray job list`, /api/jobs/): a worker started with DUS_PASSWORD (not through run.sh) sent it there in
# plain text, and run.sh's workers sent DUS_PASSWORD_HASH, enough to guess the password offline.
NOT_FORWARDED = ("DUS_RAY_ADDRESS", "DUS_RAY_RESOURCES", "DUS_HOST_ID", "DUS_WORKSPACE", "DUS_PASSWORD",
                 "DUS_PASSWORD_HASH")


# ---------------------------------------------------------------- a job on the cluster

def workspace_tag() -> str:
    """Submission ids must be unique on the cluster, which several workspaces (databases) may share."""
    return hashlib.sha1(db.database_url().encode()).hexdigest()[:8]


class RayRun:
    """A job handed to Ray, watched by the worker loop as it watches a child process: `poll()` is None while Ray
    runs or queues it, else Ray's JobDetails of its end."""

    def __init__(self, addr: str, submission_id: str):
        self.addr, self.submission_id = addr, submission_id
        self._next = 0.0

    def poll(self):
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + 1.0  # one HTTP request a second per job, not one per worker tick
        try:
            info = client(self.addr).get_job_info(self.submission_id)
        except Exception:  # noqa: BLE001 (a dashboard hiccup: ask again; recover_orphans judges a cluster gone)
            return None
        return None if info.status.value in ACTIVE else info

    def stop(self) -> None:
        """Ray stops the entrypoint's whole process group (SIGTERM, then SIGKILL): trainers it started go too."""
        try:
            client(self.addr).stop_job(self.submission_id)
        except Exception:  # noqa: BLE001 (already ended, or the cluster is gone with it)
            pass


def submit(job: Job, addr: str) -> RayRun:
    """Hand one claimed job to the cluster. Its submission id is dus-WORKSPACE-JOB-ATTEMPT (a resumed job is a new
    attempt: Ray keeps the ids of ended jobs)."""
    need = entrypoint_asks(spec_from_dict(job.spec))
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD) and k not in NOT_FORWARDED}
    env.update(DUS_WORKSPACE=str(db.workspace()), DATABASE_URL=db.database_url(), PYTHONUNBUFFERED="1")
    log = job.log_path or os.devnull
    entry = (f"cd {shlex.quote(str(ROOT))} && exec {shlex.quote(sys.executable)} -m backend jobs exec {job.id} "
             f">> {shlex.quote(log)} 2>&1")
    custom = {k: v for k, v in need.items() if k not in ("CPU", "GPU", "memory")}
    asked = dict(entrypoint_num_cpus=need.get("CPU", 0), entrypoint_num_gpus=need.get("GPU", 0),
                 entrypoint_memory=int(need.get("memory", 0)), entrypoint_resources=custom or None)
    c = client(addr)
    for attempt in range(1, 1000):
        sid = f"dus-{workspace_tag()}-{job.id}-{attempt}"
        try:
            c.submit_job(entrypoint=entry, submission_id=sid,
                         runtime_env={"env_vars": {**env, "DUS_RAY_SUBMISSION": sid}},
                         metadata={"dus_job": str(job.id), "kind": job.kind}, **asked)
            return RayRun(addr, sid)
        except Exception as exc:
            if isinstance(exc, RuntimeError) and "already exists" in str(exc):
                if _running(c, sid):  # an earlier claim's lost submission is on the cluster: watch it (a
                    return RayRun(addr, sid)  # cancelled run still stopping is not resumed: runner.resume)
                continue  # an earlier attempt's id (Ray keeps ended jobs)
            if _holds(c, sid):
                return RayRun(addr, sid)  # its answer was lost, the submission was not
            raise
    raise ClusterError(f"job {job.id}: no free submission id on the Ray cluster at {addr}.")


def _holds(c, sid: str) -> bool:
    """Whether Ray holds submission `sid` after a submit that raised: a timeout or a dropped connection can lose the
    answer of a submission that landed, and the job handed back to the queue then ran twice (the next claim submits
    the next attempt). A cluster that cannot say either way counts as not holding it (the job waits in the queue)."""
    try:
        c.get_job_info(sid)
        return True
    except Exception:  # noqa: BLE001 ("does not exist", or the cluster is unreachable)
        return False


def _running(c, sid: str) -> bool:
    """Whether submission `sid` is pending or running on the cluster. A submit whose answer was lost while the
    cluster was also unreachable cannot be asked about (`_holds`), so the job went back to the queue; the next claim
    finds that attempt's id taken and, skipping to the next attempt, ran the job twice at once. An ended attempt is
    skipped; a cluster that cannot say counts as not running. A job's own cancelled run cannot be running here:
    runner.resume refuses while it is (`still_running`)."""
    try:
        status = getattr(c.get_job_info(sid), "status", None)
    except Exception:  # noqa: BLE001 (the cluster is unreachable again: the next attempt's submit says so)
        return False
    return status is not None and not status.is_terminal()


def still_running(host: str, submission_id: str) -> bool:
    """Whether a cancelled or interrupted job's Ray run is still pending or running (Ray stops a job's process group
    in a few seconds; a cancel sent while the cluster was unreachable never arrived), asking Ray to stop it again if
    so. A cluster that does not answer cannot say: False (the claim's submit then says the cluster is unreachable)."""
    if not submission_id:
        return False
    try:
        running = _running(client(host[len("ray:"):]), submission_id)
    except ClusterError:
        return False
    if running:
        stop(host, submission_id)
    return running


def end_fields(info) -> dict:
    """Row fields for a Ray job that ended while its row still says running (its process never wrote its end):
    an entrypoint that exited by itself failed, as a local child that exits does; anything else (the node died, the
    supervisor died, stopped outside DUS) interrupted it. The runner adds what a resume of it does
    (runner.resume_step.with_resume_step), as to a local job's end.

    Two ends come before the entrypoint ever ran (Ray's JobSupervisor starts it only from PENDING): Ray fails a job
    still PENDING after RAY_JOB_START_TIMEOUT_SECONDS (15 min) — no node had the resources free, the wait this
    module promises — and that one is queued again, not left "interrupted: node lost" for a hand to resume; a
    runtime_env that could not be set up failed it, with Ray's reason."""
    error_type = getattr(info, "error_type", None) or ""
    error_type = str(getattr(error_type, "value", error_type))  # a JobErrorType, or its value as the Jobs API sends it
    said = (getattr(info, "message", None) or "").strip().splitlines()[:1] or [""]
    if error_type == "JOB_SUPERVISOR_ACTOR_START_TIMEOUT":
        return dict(status="queued", started=None, host="", pid=None,
                    message=f"waiting: the Ray cluster had no room for it within Ray's start timeout "
                            f"(RAY_JOB_START_TIMEOUT_SECONDS); submitted again when a slot is free ({said[0][:200]})"
                            [:500])
    if error_type == "RUNTIME_ENV_SETUP_FAILURE":
        return dict(status="failed", finished=utcnow(), message="failed",
                    error=f"the Ray cluster could not set up the job's environment, so it never started: "
                          f"{(info.message or '').strip()[:2000]}")
    if "ENTRYPOINT" in error_type:
        return dict(status="failed", finished=utcnow(), message="failed",
                    error=f"the job process on the Ray cluster exited with code {info.driver_exit_code} without "
                          f"finishing; see its log")
    if info is None:
        why = "the Ray cluster no longer knows its submission (was the head restarted?)"
    elif info.status.value == "STOPPED":  # Ray stops a job only when asked to; DUS marks its own cancels first
        why = "its Ray job was stopped outside DUS Studio (`ray job stop`, the Ray dashboard)"
    else:
        node = f" {info.driver_node_id[:8]}" if info.driver_node_id else ""
        why = f"the Ray node{node} running it was lost (Ray: {info.status.value}, {said[0][:200]})"
    return dict(status="interrupted", finished=utcnow(), message=f"interrupted: {why}"[:500])


_judged: dict[str, float] = {}
JUDGE_EVERY = 2.0
# A cluster silent for this long gets its running jobs' rows a message saying so. The walk stopped the Ray head
# mid-job: its row read "running 62.8 % · ETA 0:28" for as long as the head was down (for ever, had it never come
# back), as the job's last progress said before it went quiet.
SILENT_AFTER = 30.0
SILENT = "Ray cluster at "  # how that message begins: the rows that say it get a word again when the cluster answers
_silent: dict[str, tuple[float, float]] = {}  # address -> (monotonic, wall clock) of its first unanswered question


def silent_fields(addr: str, since_wall: float) -> dict:
    """Row fields (a message only: the job stays running) for a job on a cluster that has not answered since
    `since_wall`. It is not judged lost: a head that comes back may still run it (Ray keeps the job table of a
    restarted head only with GCS fault tolerance), and a job that was lost is then marked interrupted."""
    since = time.strftime("%H:%M UTC", time.gmtime(since_wall))
    return dict(message=f"{SILENT}{addr} not answering since {since}: the job's state is unknown; it is marked "
                        "interrupted when the cluster answers again and no longer runs it, or cancel it to give it "
                        "up (its run is stopped if the cluster comes back)"[:500])


def _judge_silence(addr: str, jobs: list[Job], answered: bool, out: dict[int, dict]) -> None:
    """After a look at cluster `addr`: a cluster silent for SILENT_AFTER s gets its jobs' rows told so (once each);
    one that answers again gets back the word of those still running there (their own next progress says more)."""
    if answered:
        _silent.pop(addr, None)
        for job in jobs:
            if job.id not in out and (job.message or "").startswith(SILENT):
                out[job.id] = dict(message="the Ray cluster answers again and runs the job")
        return
    first = _silent.setdefault(addr, (time.monotonic(), time.time()))
    if time.monotonic() - first[0] < SILENT_AFTER:
        return
    for job in jobs:
        if not (job.message or "").startswith(SILENT):
            out[job.id] = silent_fields(addr, first[1])


def lost(rows: list[Job]) -> dict[int, dict]:
    """job id -> row fields, for running rows on a Ray cluster whose Ray job has ended, and for claims whose worker
    stopped before writing the submission id (their submission, when Ray runs it, is written in: it is watched from
    here on, not called interrupted while it runs). A cluster that does not answer judges nothing (its jobs may
    well be running), but after SILENT_AFTER s its jobs' messages say so (silent_fields); each cluster is asked at
    most every JUDGE_EVERY s."""
    out: dict[int, dict] = {}
    by_addr: dict[str, list[Job]] = {}
    for job in rows:
        by_addr.setdefault(job.host[len("ray:"):], []).append(job)
    for addr, jobs in by_addr.items():
        if time.monotonic() - _judged.get(addr, -1e9) < JUDGE_EVERY:
            continue
        _judged[addr] = time.monotonic()
        try:
            c = client(addr)
        except ClusterError:  # ask again in a minute: a dead host costs a connect timeout each time
            _judged[addr] = time.monotonic() + 60 - JUDGE_EVERY
            _judge_silence(addr, jobs, False, out)
            continue
        _judge_silence(addr, jobs, _judge(c, jobs, out), out)
    return out


def _judge(c, jobs: list[Job], out: dict[int, dict]) -> bool:
    """Judge each job of one cluster into `out`; whether the cluster answered at all (a job it does not know is an
    answer; a question that raised is none: the client made once keeps asking a head that has stopped)."""
    answered = asked = False
    for job in jobs:
        if not job.cluster_ref:  # claimed, being submitted; a worker that died right here leaves it so
            started = job.started.replace(tzinfo=job.started.tzinfo or timezone.utc) if job.started else None
            if started is None or (utcnow() - started).total_seconds() > 60:
                asked = True
                try:
                    sid = _active_attempt(c, job.id)
                except Exception:  # noqa: BLE001 (a hiccup: judge at the next look)
                    continue
                answered = True
                out[job.id] = dict(cluster_ref=sid, message="submitted to the Ray cluster") if sid else dict(
                    status="interrupted", finished=utcnow(),
                    message="interrupted: its worker stopped before handing it to the Ray cluster")
            continue
        asked = True
        try:
            info = c.get_job_info(job.cluster_ref)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                answered = True
                out[job.id] = end_fields(None)
            continue
        except Exception:  # noqa: BLE001 (a hiccup: judge at the next look)
            continue
        answered = True
        if info.status.value not in ACTIVE:
            out[job.id] = end_fields(info)
    return answered or not asked


def _active_attempt(c, job_id: int) -> str | None:
    """The pending or running submission of job `job_id` on the cluster, if any: its newest attempt (submit numbers
    them from 1; Ray keeps ended ones). A worker that died between Ray's answer to its submit and writing the id left
    the row without one while Ray ran the job; called interrupted, the run's end could no longer be written, and a
    resume ran the finished job again. An older attempt cannot still be running: a resume waits for it to stop."""
    newest = None
    for attempt in range(1, 1000):
        sid = f"dus-{workspace_tag()}-{job_id}-{attempt}"
        try:
            newest = (sid, c.get_job_info(sid))
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                raise
            break
    if newest is None or newest[1].status.value not in ACTIVE:
        return None
    return newest[0]


def stop(host: str, submission_id: str) -> None:
    if is_ray(host) and submission_id:
        RayRun(host[len("ray:"):], submission_id).stop()
