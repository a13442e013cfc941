"""A throw-away PostgreSQL cluster for the tests, and the fixtures that give each test its database.

The cluster: initdb in a temporary folder, served on a Unix socket only, started on first use and stopped at the
end of the session. The server binaries come from Debian's `postgresql` package (`scripts/setup.sh --postgres`);
without them the PostgreSQL variants skip, saying so. PostgreSQL refuses to run as root, so under root the cluster
belongs to the `postgres` user and its commands run through `runuser`. Each test gets a database of its own,
dropped again afterwards. tests/conftest.py imports the fixtures; its `workspace` sets DATABASE_URL from `database`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.needs import missing, need_module


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: $DUS_PG_BIN, Debian's /usr/lib/postgresql/N/bin, or the PATH."""
    if os.environ.get("DUS_PG_BIN"):
        return Path(os.environ["DUS_PG_BIN"])
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


PASSWORD_ROLE, PASSWORD = "alice", "right-password"  # a role with password authentication


class Cluster:
    def __init__(self, bin_dir: Path, port: int = 5432):
        self.bin, self.port = bin_dir, port
        # our own folder, world-traversable: pytest's tmp folders may be 0700 and the server runs as `postgres`
        self.dir = Path(tempfile.mkdtemp(prefix="dus-pg-"))
        self.dir.chmod(0o755)
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER") or "postgres"
        if self.as_root:
            shutil.chown(self.dir, "postgres")

    def _run(self, *args: str, timeout: float = 60) -> str:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}\n{log[-2000:]}")
        return done.stdout

    def init(self) -> None:
        # fsync off: a test cluster that nobody needs after a crash may skip the disk flushes
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        # one role that must give its password (first matching line wins), for the wrong-password test
        hba = self.dir / "data" / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
        self.start()
        with self._admin() as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def start(self) -> None:
        opts = (f"-k {self.dir} -p {self.port} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.dir}&port={self.port}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:  # FORCE: a worker a test left behind must not keep it alive
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped (or never started): nothing to end
        shutil.rmtree(self.dir, ignore_errors=True)


# Tests that run twice, on SQLite and on a real PostgreSQL server: module -> test names (None: all of them). The
# minute-long training-job tests stay on SQLite to keep the suite short. A test may choose for itself with
# @pytest.mark.parametrize("database", ["postgresql"], indirect=True).
BOTH_DATABASES = {
    "test_postgres": None,
    "test_cli_runner": {"test_cli_upscale_writes_registers_and_saves_a_spec_that_reruns",
                        "test_runner_runs_a_queued_build_in_a_child_process_and_a_failed_job_keeps_its_reason",
                        "test_orphaned_running_job_becomes_interrupted", "test_cancel_a_queued_job"},
    "test_jobs": {"test_cancel_stops_the_whole_process_tree"},
    "test_review_machines": {"test_a_reused_pid_is_recovered_and_spared_by_cancel",
                             "test_of_two_resumes_racing_a_claim_the_claimed_run_stays_running"},
}


def pytest_generate_tests(metafunc):
    chosen = any("database" in m.args[0] for m in metafunc.definition.iter_markers("parametrize"))
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "database" in metafunc.fixturenames and not chosen and module in BOTH_DATABASES:
        names = BOTH_DATABASES[module]
        if names is None or metafunc.function.__name__ in names:
            metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throw-away PostgreSQL cluster for the whole session (started on first use, stopped at the end)."""
    bin_dir = find_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        missing("PostgreSQL server binaries, which the PostgreSQL variants need, not found (install Debian's "
                "postgresql: scripts/setup.sh --postgres, or set DUS_PG_BIN)")
    need_module("psycopg", "the psycopg driver is not installed (requirements.txt)")
    cluster = Cluster(bin_dir)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def database(request):
    """The DATABASE_URL of this test: none (the workspace's SQLite file) or a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    cluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    url = cluster.url(name)
    yield url
    from storage import db

    db._engine_for(url).dispose()  # close this process's pooled connections before the drop
    cluster.drop_database(name)
