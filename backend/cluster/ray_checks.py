"""What a Ray cluster has, and whether it can take a job before its row is written: the nodes and their
resources, what a job asks for, whether every node sees its folders and can reach the database
(`check_submission`; backend/cluster/ray_jobs.py submits)."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.cluster.ray_client import ACTIVE, SETUP, ClusterError, _get, client
from backend.specs import _Spec
from storage import db

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
