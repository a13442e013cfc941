"""A real two-node Ray cluster on this machine, for the tests and the benches.

`ray start --head` plus a second `ray start --address` with resources of its own (`node2`), both run with `--block` in
process groups of their own, so one node can be killed alone (a node lost mid-job) and the end of the session stops
everything Ray started, without touching another Ray on the machine (no `ray stop`, which stops every cluster).
Each cluster gets its own temp folder and free ports. The Jobs API is the head's dashboard: `cluster.address`
(http://127.0.0.1:PORT), what DUS_RAY_ADDRESS takes.

    with RayCluster(cpus=(2, 1)) as cluster:   # head with 2 CPUs, a second node with 1
        ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.needs import missing

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, cpus: tuple[int, ...] = (1, 1), object_store_mb: int = 100):
        self.cpus, self.store = cpus, object_store_mb * 1024 * 1024
        # short: Ray puts Unix sockets under it (107-character limit)
        self.temp = Path(tempfile.mkdtemp(prefix="dusray-", dir="/tmp"))
        self.gcs_port, self.dash_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dash_port}"
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        # a lost node is declared dead after ~2 s, not Ray's default ~30 s, so node-loss tests stay short
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_health_check_period_ms="500",
                   RAY_health_check_timeout_ms="500", RAY_health_check_failure_threshold="4")
        for var in ("RAY_ADDRESS", "DUS_RAY_ADDRESS"):
            env.pop(var, None)
        out = open(self.temp / log, "ab")
        return subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats",
                                 f"--object-store-memory={self.store}", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "RayCluster":
        self.nodes.append(self._start(
            ["--head", f"--port={self.gcs_port}", f"--num-cpus={self.cpus[0]}", "--num-gpus=0",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash_port}", f"--temp-dir={self.temp}",
             f"--dashboard-agent-listen-port={_free_port()}", "--resources", json.dumps({"head": 1})], "head.log"))
        self._wait(1)
        for i, n in enumerate(self.cpus[1:], start=2):
            self.add_node(n, {f"node{i}": 1})
        return self

    def add_node(self, cpus: int, resources: dict[str, float]) -> subprocess.Popen:
        proc = self._start([f"--address={self.gcs_address}", f"--num-cpus={cpus}", "--num-gpus=0",
                            f"--dashboard-agent-listen-port={_free_port()}", "--resources", json.dumps(resources)],
                           f"node{len(self.nodes) + 1}.log")
        self.nodes.append(proc)
        self._wait(len(self.nodes))
        return proc

    @property
    def gcs_address(self) -> str:
        return f"{socket.gethostbyname(socket.gethostname())}:{self.gcs_port}"

    def alive_nodes(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.address}/nodes?view=summary", timeout=5) as r:
            summary = json.load(r)["data"]["summary"]
        return [n for n in summary if n["raylet"]["state"] == "ALIVE"]

    def _wait(self, n: int, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in self.nodes):
                raise RuntimeError(f"a Ray node exited while starting; logs in {self.temp}:\n"
                                   + "\n".join(f.read_text()[-2000:] for f in self.temp.glob("*.log")))
            try:
                if len(self.alive_nodes()) >= n:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Ray cluster did not reach {n} live nodes in {timeout:.0f} s; logs in {self.temp}")

    def kill_node(self, index: int) -> None:
        """Lose a node as a machine is lost: every process it started, at once."""
        proc = self.nodes[index]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def begin_stop(self) -> None:
        """SIGTERM every node and return at once: `ray start --block` then stops what it started while the caller
        goes on (the session's cluster, once its last test has run; stop() reaps it later)."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        self.begin_stop()  # SIGTERM first: `ray start --block` then stops what it started
        for proc in reversed(self.nodes):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def ray_installed() -> bool:
    return RAY.exists()


# The session's cluster while it runs: tests/conftest.py begins its stop after the last test that uses it, so the
# rest of the suite does not share the 2 cores with an idle cluster (~6 % of a core: raylets, GCS, dashboard agents)
# nor wait at the end for it to stop (5 s a node).
SESSION: list[RayCluster] = []


@pytest.fixture(scope="session")
def ray_cluster():
    """Two nodes, 1 CPU each (this machine has 2 cores): the head (resource `head`) and `node2`."""
    if not ray_installed():
        missing("ray is not installed in this environment (requirements.txt pins ray[default])")
    with RayCluster(cpus=(1, 1)) as cluster:
        SESSION.append(cluster)
        try:
            yield cluster
        finally:
            SESSION.remove(cluster)
