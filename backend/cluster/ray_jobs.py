"""A Ray cluster as the job backend: the worker hands each job it claims to the cluster as a Ray Job (Ray's Jobs API,
served by the head's dashboard) whose entrypoint is the same `python -m backend jobs exec ID` a local worker starts.

    ray start --head --dashboard-host=0.0.0.0                 # the head machine (Jobs API on port 8265)
    ray start --address=HEAD:6379                             # every other machine
    DUS_RAY_ADDRESS=http://HEAD:8265 python -m backend worker

The workspace, the repository and its venv must be at the same paths on every node (a shared file system): the
entrypoint writes status, progress and metrics into the same database rows and appends its output to the job's log
file, as a local job process does (Ray's log API cannot reach a driver on a non-head node). Ray queues an entrypoint
until a node has what the spec's `resources` ask; the worker's slots count the jobs in flight on the cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from backend.specs import TRAIN_KINDS, _Spec, spec_from_dict
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
ACTIVE = ("PENDING", "RUNNING")
SETUP = "README 'A Ray cluster'"


class ClusterError(ValueError):
    """The Ray cluster cannot take this job (unreachable, too small, cannot see a folder): nothing is queued."""


def address() -> str | None:
    """The Jobs API address: DUS_RAY_ADDRESS, else RAY_ADDRESS when it is an http(s) URL (Ray also puts the GCS
    address, ip:6379, in RAY_ADDRESS: inside a Ray job it does, and that one the Jobs API does not answer on)."""
    addr = os.environ.get("DUS_RAY_ADDRESS", "").strip()
    if not addr:
        ray = os.environ.get("RAY_ADDRESS", "").strip()
        addr = ray if ray.startswith(("http://", "https://")) else ""
    if addr and not addr.startswith(("http://", "https://")):
        raise ClusterError(f"DUS_RAY_ADDRESS {addr!r}: give the head's dashboard URL, such as http://HEAD:8265 "
                           "(not the GCS address HEAD:6379).")
    return addr.rstrip("/") or None


def host_for(addr: str) -> str:
    """The `host` of the rows a Ray worker claims: they are judged by Ray's job status, never by local process ids
    or one machine's heartbeats, and the slots count them cluster-wide."""
    return f"ray:{addr}"


def is_ray(host: str | None) -> bool:
    return bool(host) and host.startswith("ray:")


def _get(addr: str, path: str, timeout: float = 5.0) -> dict:
    try:
        with urllib.request.urlopen(addr + path, timeout=timeout) as r:
            return json.load(r)
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, not JSON (not a Ray dashboard)
        reason = getattr(exc, "reason", None) or exc
        raise ClusterError(
            f"The Ray cluster at {addr} (DUS_RAY_ADDRESS) does not answer: {reason}. Start its head with "
            "`ray start --head --dashboard-host=0.0.0.0` (the Jobs API listens on port 8265) and join the other "
            f"machines with `ray start --address=HEAD:6379` ({SETUP}), or unset DUS_RAY_ADDRESS to run jobs on this "
            "machine.") from None


def check_reachable(addr: str) -> None:
    _get(addr, "/api/version")


_clients: dict[str, object] = {}


def client(addr: str):
    """Ray's JobSubmissionClient for `addr`, made once (it checks the server's version over HTTP on creation)."""
    if addr not in _clients:
        check_reachable(addr)  # a quick timeout first: the client's own connect waits much longer on a dead host
        from ray.job_submission import JobSubmissionClient

        _clients[addr] = JobSubmissionClient(addr)
    return _clients[addr]


# ---------------------------------------------------------------- what the cluster has

@dataclass
class Node:
    id: str
    ip: str
    head: bool
    alive: bool
    total: dict[str, float] = field(default_factory=dict)  # CPU, GPU, memory (bytes), custom resources
    available: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        custom = ", ".join(f"{k} {v:g}" for k, v in self.total.items() if k not in ("CPU", "GPU", "memory"))
        return (f"node {self.id[:8]} ({self.ip}{', head' if self.head else ''}): {self.total.get('CPU', 0):g} CPUs, "
                f"{self.total.get('GPU', 0):g} GPUs, {self.total.get('memory', 0) / 2 ** 30:.1f} GiB memory"
                + (f", {custom}" if custom else ""))

    def holds(self, need: dict[str, float]) -> int:
        """How many processes asking `need` this node holds when empty."""
        counts = [math.floor(self.total.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
        return min(counts) if counts else 1_000_000


def _resources(raw: dict) -> dict[str, float]:
    """Ray's resource names as specs use them; the bookkeeping ones (node:IP, object store) left out."""
    out = {}
    for k, v in raw.items():
        if k.startswith(("node:", "accelerator_type:")) or k in ("objectStoreMemory", "object_store_memory"):
            continue
        out[k] = float(v[1] if isinstance(v, list) else v)
    return out


def nodes(addr: str) -> list[Node]:
    """Every node the head knows, with totals and what is free now (the dashboard's node summary and its
    autoscaler report, plain HTTP: no Ray driver is started for a look)."""
    summary = _get(addr, "/nodes?view=summary")["data"]["summary"]
    try:
        usage = _get(addr, "/api/cluster_status?format=0")["data"]["clusterStatus"]["loadMetricsReport"]["usageByNode"]
    except (KeyError, TypeError):
        usage = {}
    out = []
    for n in summary:
        r = n.get("raylet") or {}
        total = _resources(r.get("resourcesTotal") or {})
        used = {k: float(v[0]) for k, v in (usage.get(r.get("nodeId")) or {}).items()}
        out.append(Node(id=r.get("nodeId", ""), ip=r.get("nodeManagerAddress", n.get("ip", "")),
                        head=bool(r.get("isHeadNode")), alive=r.get("state") == "ALIVE", total=total,
                        available={k: v - used.get(k, 0.0) for k, v in total.items()}))
    return sorted(out, key=lambda n: (not n.head, n.id))


def extra_resources() -> dict[str, float]:
    """DUS_RAY_RESOURCES (JSON, e.g. {"gpu-a100": 1}): custom Ray resources every job of this worker asks for, so a
    worker can send its jobs to a group of nodes started with `ray start --resources`."""
    text = os.environ.get("DUS_RAY_RESOURCES", "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, AttributeError, TypeError):
        raise ClusterError(f"DUS_RAY_RESOURCES {text!r}: give a JSON object of custom Ray resources, such as "
                           '{"node2": 1}.') from None


def asks(spec: _Spec) -> dict[str, float]:
    """What one process of the job asks for: the entrypoint, or with ray_workers > 1 each Ray Train worker
    (backend/cluster/ray_train.py asks the same per worker)."""
    r = spec.resources
    need = {"CPU": r.cpus, "GPU": r.gpus, "memory": (r.memory_gb or 0) * 2 ** 30, **r.custom}
    if workers(spec) == 1:
        need.update(extra_resources())
    return {k: v for k, v in need.items() if v}


def entrypoint_asks(spec: _Spec) -> dict[str, float]:
    """What the job's own process asks Ray for. With ray_workers > 1 it only drives Ray Train workers, each asking
    `resources`: it must hold nothing they need; the worker's DUS_RAY_RESOURCES still place it."""
    if workers(spec) > 1:
        return {k: v for k, v in extra_resources().items() if v}
    return asks(spec)


def workers(spec: _Spec) -> int:
    return int(getattr(spec, "ray_workers", 1) or 1)


def check_fits(spec: _Spec, addr: str, found: list[Node]) -> None:
    need, n = asks(spec), workers(spec)
    alive = [x for x in found if x.alive]
    room = sum(x.holds(need) for x in alive)
    if room >= n and any(x.holds(need) for x in alive):
        return
    what = ", ".join(f"{v / 2 ** 30:.1f} GiB memory" if k == "memory" else f"{v:g} {k}" for k, v in need.items())
    per = f" per worker, {n} workers" if n > 1 else ""
    raise ClusterError(f"resources: the job asks for {what}{per}, which the Ray cluster at {addr} cannot hold; it has "
                       + "; ".join(x.describe() for x in alive) + ". Lower resources (or ray_workers), or add a node "
                       "that has them (ray start --address=HEAD:6379 --num-cpus=N --num-gpus=N --resources=JSON).")


# ---------------------------------------------------------------- does every node see the folders?

_CHECK = r'''
import json, os, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(logging_level="ERROR", log_to_driver=False)
paths = json.loads(sys.argv[1])
@ray.remote(num_cpus=0)
def look(paths):
    return [p for p in paths if not os.path.exists(p)]
alive = [n for n in ray.nodes() if n["Alive"]]
refs = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
        for n in alive]
print("DUS-CHECK " + json.dumps({n["NodeID"]: m for n, m in zip(alive, ray.get(refs, timeout=60))}), flush=True)
'''
_seen: dict[tuple, float] = {}  # (address, paths, alive nodes) -> when every node saw them
SEEN_FOR = 60.0


def spec_paths(spec: _Spec) -> dict[str, str]:
    """The folders a job needs on whichever node runs it: path -> what it is (for the error)."""
    from backend import registry

    ws = db.workspace()
    need = {str(workspace_marker()): "the workspace (DUS_WORKSPACE), shared (its marker file)",
            sys.executable: "the Python of this venv"}
    names = [getattr(spec, f, None) for f in ("base", "second", "model", "reference_model")]
    names += list(getattr(spec, "models", None) or [])
    for name in filter(None, names):
        rec = registry.get(name)
        path = rec.path if rec is not None else str(Path(name).expanduser().resolve()) if os.sep in name else None
        # a folder inside the shared workspace is seen wherever the marker is: the set of paths stays the same
        # from job to job, so one check (cached) serves a recipe's many submissions
        if path and not Path(path).resolve().is_relative_to(ws.resolve()):
            need[path] = f"the folder of model {name!r}" if rec is not None else f"the model folder {name}"
    return need


def workspace_marker() -> Path:
    """A file with a name unique to this workspace. A node that sees it reads the same file system: a folder at the
    same path (an empty local `workspace/` in a clone of the repository) is not enough."""
    ws = db.workspace()
    found = sorted(ws.glob(".dus-workspace-*"))
    if found:
        return found[0]
    ws.mkdir(parents=True, exist_ok=True)
    marker = ws / f".dus-workspace-{os.urandom(8).hex()}"
    marker.write_text("DUS Studio checks that every Ray node sees this file (backend/cluster/ray_jobs.py).\n")
    return marker


def missing_paths(addr: str, paths: list[str], timeout: float = 90.0) -> dict[str, list[str]]:
    """node id -> the paths that node cannot see: a small Ray Job (its driver runs on the head, so its log is
    readable) runs one task on every alive node, each pinned there with NodeAffinitySchedulingStrategy."""
    c = client(addr)
    sid = c.submit_job(entrypoint=f"{shlex.quote(sys.executable)} -c {shlex.quote(_CHECK)} "
                                  f"{shlex.quote(json.dumps(paths))}",
                       submission_id=f"dus-check-{os.urandom(6).hex()}")
    end = time.monotonic() + timeout
    while (status := c.get_job_status(sid).value) in ACTIVE:
        if time.monotonic() > end:
            c.stop_job(sid)
            raise ClusterError(f"the Ray cluster at {addr} did not run the folder check within {timeout:.0f} s.")
        time.sleep(0.2)
    logs = c.get_job_logs(sid)
    line = next((ln for ln in logs.splitlines() if ln.startswith("DUS-CHECK ")), None)
    if status != "SUCCEEDED" or line is None:
        raise ClusterError(f"the folder check on the Ray cluster at {addr} failed ({status}): {logs[-800:]}")
    return json.loads(line[len("DUS-CHECK "):])


def check_paths(spec: _Spec, addr: str, found: list[Node]) -> None:
    need = spec_paths(spec)
    key = (addr, tuple(sorted(need)), tuple(sorted(x.id for x in found if x.alive)))
    if time.monotonic() - _seen.get(key, -1e9) < SEEN_FOR:
        return
    blind = {node: miss for node, miss in missing_paths(addr, sorted(need)).items() if miss}
    if blind:
        by_id = {x.id: x for x in found}
        lines = [f"{by_id[n].describe() if n in by_id else 'node ' + n[:8]} cannot see "
                 + ", ".join(f"{p} ({need[p]})" for p in miss) for n, miss in blind.items()]
        raise ClusterError("Not every node of the Ray cluster sees what this job needs: " + "; ".join(lines)
                           + ". Mount the workspace and model folders at the same paths on every node (NFS), and "
                           f"install the repository and its venv at the same path ({SETUP}).")
    _seen[key] = time.monotonic()


def check_database(found: list[Node]) -> None:
    """A job on another machine writes its rows from there: a SQLite file cannot take that. SQLite's write-ahead
    log works only for processes on one computer, never over a network file system (sqlite.org/wal.html), so
    claims, progress and results could be lost or the file corrupted. A cluster all on this machine may keep it."""
    machines = {n.ip for n in found if n.alive}
    if db.database_url().startswith("sqlite") and len(machines) > 1:
        raise ClusterError(f"The Ray cluster spans {len(machines)} machines ({', '.join(sorted(machines))}), and "
                           "the database is a SQLite file, which only processes on one machine may write. Set "
                           "DATABASE_URL to a PostgreSQL server every node reaches (README: A shared database).")


def check_submission(spec: _Spec, addr: str) -> None:
    """Everything a job needs from the cluster, checked before its row is written: the cluster answers, its jobs can
    reach the database, some node has what it asks, and every node sees its folders (a job Ray could place on a node
    that cannot read its model would fail there, or wait for ever)."""
    found = nodes(addr)
    check_database(found)
    check_fits(spec, addr, found)
    check_paths(spec, addr, found)


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


def end_fields(job: Job, info) -> dict:
    """Row fields for a Ray job that ended while its row still says running (its process never wrote its end):
    an entrypoint that exited by itself failed, as a local child that exits does; anything else (the node died, the
    supervisor died, stopped outside DUS) interrupted it. Training jobs resume from their last checkpoint.

    Two ends come before the entrypoint ever ran (Ray's JobSupervisor starts it only from PENDING): Ray fails a job
    still PENDING after RAY_JOB_START_TIMEOUT_SECONDS (15 min) — no node had the resources free, the wait this
    module promises — and that one is queued again, not left "interrupted: node lost" for a hand to resume; a
    runtime_env that could not be set up failed it, with Ray's reason."""
    again = "; resume it to continue from its last checkpoint" if job.kind in TRAIN_KINDS else ""
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
                          f"finishing; see its log{again}")
    if info is None:
        why = "the Ray cluster no longer knows its submission (was the head restarted?)"
    elif info.status.value == "STOPPED":  # Ray stops a job only when asked to; DUS marks its own cancels first
        why = "its Ray job was stopped outside DUS Studio (`ray job stop`, the Ray dashboard)"
    else:
        node = f" {info.driver_node_id[:8]}" if info.driver_node_id else ""
        why = f"the Ray node{node} running it was lost (Ray: {info.status.value}, {said[0][:200]})"
    return dict(status="interrupted", finished=utcnow(), message=f"interrupted: {why}{again}"[:500])


_judged: dict[str, float] = {}
JUDGE_EVERY = 2.0


def lost(rows: list[Job]) -> dict[int, dict]:
    """job id -> row fields, for running rows on a Ray cluster whose Ray job has ended, and for claims whose worker
    stopped before writing the submission id (their submission, when Ray runs it, is written in: it is watched from
    here on, not called interrupted while it runs). A cluster that does not answer judges nothing (its jobs may
    well be running); each cluster is asked at most every JUDGE_EVERY s."""
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
            continue
        for job in jobs:
            if not job.cluster_ref:  # claimed, being submitted; a worker that died right here leaves it so
                started = job.started.replace(tzinfo=job.started.tzinfo or timezone.utc) if job.started else None
                if started is None or (utcnow() - started).total_seconds() > 60:
                    try:
                        sid = _active_attempt(c, job.id)
                    except Exception:  # noqa: BLE001 (a hiccup: judge at the next look)
                        continue
                    out[job.id] = dict(cluster_ref=sid, message="submitted to the Ray cluster") if sid else dict(
                        status="interrupted", finished=utcnow(),
                        message="interrupted: its worker stopped before handing it to the Ray cluster")
                continue
            try:
                info = c.get_job_info(job.cluster_ref)
            except RuntimeError as exc:
                if "does not exist" in str(exc):
                    out[job.id] = end_fields(job, None)
                continue
            except Exception:  # noqa: BLE001 (a hiccup: judge at the next look)
                continue
            if info.status.value not in ACTIVE:
                out[job.id] = end_fields(job, info)
    return out


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
