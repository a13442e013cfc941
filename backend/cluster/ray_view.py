"""What the Ray cluster has and which DUS job runs where: `python -m backend cluster status` and the Jobs page.

    DUS_RAY_ADDRESS=http://HEAD:8265 python -m backend cluster status
    DUS_RAY_ADDRESS=http://HEAD:8265 python -m backend cluster check
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import select

from backend.cluster import ray_jobs
from backend.cluster.ray_jobs import ClusterError, Node
from storage import db
from storage.models import Job, utcnow

# True for both setups: this process has no DUS_RAY_ADDRESS, but the README sets it only for the worker, whose jobs
# then run on the cluster. The Jobs page said "Jobs run on this machine" while they ran on Ray.
HOW = ("Jobs run where the worker that claims them runs: on its own machine, or on a Ray cluster when that worker was "
       "started with `DUS_RAY_ADDRESS=http://HEAD:8265` (README 'A Ray cluster'). This process has no "
       "DUS_RAY_ADDRESS, so it shows no cluster: set it here too to see the cluster's nodes and which job runs on "
       "each.")
RECENT = timedelta(days=1)


def where_jobs_run() -> str:
    """What to say where no Ray address is set here (the Jobs page's Cluster section): the Ray clusters that this
    workspace's running jobs, or those started within RECENT, were handed to, read from their rows (`host` is
    ray:ADDRESS); else HOW."""
    since = utcnow() - RECENT
    with db.session() as s:
        hosts = s.exec(select(Job.host).where(Job.host.startswith("ray:"),
                                              (Job.status == "running") | (Job.started >= since))
                       .order_by(Job.id.desc())).all()
    addrs = list(dict.fromkeys(h[len("ray:"):] for h in hosts))
    if not addrs:
        return HOW
    where = " and ".join(addrs)
    return (f"Jobs run on the Ray cluster at {where}: a worker started with DUS_RAY_ADDRESS hands them there (as the "
            "latest jobs' rows say). This dashboard has no DUS_RAY_ADDRESS, so it shows no cluster here: set "
            f"`DUS_RAY_ADDRESS={addrs[0]}` for it too to see the cluster's nodes and which job runs on each "
            "(README 'A Ray cluster').")


@dataclass
class Placed:
    """A DUS job on the cluster: its row and where Ray put its entrypoint (no node yet while Ray queues it)."""
    job_id: int
    kind: str
    status: str
    submission_id: str
    ray_status: str
    node_id: str | None


@dataclass
class ClusterView:
    address: str
    nodes: list[Node]
    jobs: list[Placed]

    def node_rows(self) -> list[dict]:
        rows = []
        for n in self.nodes:
            t, a = n.total, n.available
            rows.append({
                "node": n.id[:8], "ip": n.ip, "head": n.head, "alive": n.alive,
                "CPUs": f"{a.get('CPU', 0):g} / {t.get('CPU', 0):g}",
                "GPUs": f"{a.get('GPU', 0):g} / {t.get('GPU', 0):g}",
                "memory GiB": f"{a.get('memory', 0) / 2 ** 30:.1f} / {t.get('memory', 0) / 2 ** 30:.1f}",
                "other": ", ".join(f"{k} {a.get(k, 0):g}/{v:g}" for k, v in t.items()
                                   if k not in ("CPU", "GPU", "memory")),
                "DUS jobs": ", ".join(str(j.job_id) for j in self.jobs if j.node_id == n.id),
            })
        return rows

    def job_rows(self) -> list[dict]:
        return [{"job": j.job_id, "kind": j.kind, "status": j.status, "ray": j.ray_status,
                 "node": (j.node_id or "")[:8] or "(queued by Ray)", "submission": j.submission_id} for j in self.jobs]


def status(addr: str | None = None) -> ClusterView:
    """Nodes (alive, CPUs/GPUs/memory total and free, as Ray's autoscaler report last had them: a few seconds old)
    and the running DUS jobs on each (Ray's driver_node_id)."""
    addr = addr or ray_jobs.address()
    if not addr:
        raise ClusterError(HOW)
    found = ray_jobs.nodes(addr)
    with db.session() as s:
        rows = list(s.exec(select(Job).where(Job.status == "running", Job.host == ray_jobs.host_for(addr))))
    infos = {}
    if rows:
        infos = {i.submission_id: i for i in ray_jobs.client(addr).list_jobs() if i.submission_id}
    placed = []
    for j in sorted(rows, key=lambda j: j.id):
        info = infos.get(j.cluster_ref)
        placed.append(Placed(job_id=j.id, kind=j.kind, status=j.status, submission_id=j.cluster_ref,
                             ray_status=info.status.value if info else "(not submitted yet)",
                             node_id=info.driver_node_id if info else None))
    return ClusterView(addr, found, placed)


def check(addr: str | None = None) -> str:
    """The address answers and every alive node sees the workspace and this venv's Python: a line saying so, or a
    ClusterError saying what is wrong."""
    from backend.specs import ImportSpec

    addr = addr or ray_jobs.address()
    if not addr:
        raise ClusterError(HOW)
    found = ray_jobs.nodes(addr)
    alive = [n for n in found if n.alive]
    if not alive:
        raise ClusterError(f"the Ray cluster at {addr} has no alive node.")
    ray_jobs.check_database(found)
    ray_jobs.check_paths(ImportSpec(target="builtin"), addr, found)  # no model folders: the workspace and Python
    return (f"Ray cluster at {addr}: {len(alive)} alive node(s), each sees the workspace and this venv's Python.\n"
            + "\n".join("  " + n.describe() for n in alive))


def table(rows: list[dict]) -> str:
    if not rows:
        return "  (none)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)
