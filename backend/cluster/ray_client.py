"""How DUS reaches a Ray cluster's Jobs API (backend/cluster/ray_jobs.py hands jobs to it): its address, the
client made once per address, and the error that says the cluster cannot take a job."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

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
