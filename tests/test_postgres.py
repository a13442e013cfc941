"""DUS Studio on a shared database server: tables created and upgraded, several processes opening a fresh database,
two workers racing for the same queued jobs, a worker riding out a server restart, and what a wrong DATABASE_URL
says. Tests without a fixed `database` run on SQLite and on a throw-away PostgreSQL cluster (tests/conftest.py).

    .venv/bin/python -m pytest tests/test_postgres.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from backend import registry, runner
from backend.specs import UpscaleSpec
from storage import db
from storage.models import Job

ROOT = Path(__file__).resolve().parent.parent
ON_POSTGRES = pytest.mark.parametrize("database", ["postgresql"], indirect=True)
NO_SERVER = pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the test needs no database of its own
BAD_URL = "postgresql+psycopg://alice:hunter2@127.0.0.1:9/dus"  # nothing listens on port 9 (discard)


def _schema() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    insp = sa.inspect(db.engine())
    tables = insp.get_table_names()
    return ({t: {c["name"] for c in insp.get_columns(t)} for t in tables},
            {t: {i["name"] for i in insp.get_indexes(t)} for t in tables})


def test_an_older_database_is_upgraded_in_place(workspace):
    with db.init_db().begin() as conn:
        # what an older release wrote: no jobs.after (indexed), run_dir, result (JSON); no models.parents (JSON list);
        # no synth_pairs.rejected_by_hand (indexed boolean); no votes table — and one row in jobs and in models
        for stmt in ("DROP INDEX ix_jobs_after", 'ALTER TABLE jobs DROP COLUMN "after"',
                     "ALTER TABLE jobs DROP COLUMN run_dir", "ALTER TABLE jobs DROP COLUMN result",
                     "ALTER TABLE models DROP COLUMN parents", "DROP INDEX ix_synth_pairs_rejected_by_hand",
                     "ALTER TABLE synth_pairs DROP COLUMN rejected_by_hand", "DROP TABLE votes",
                     "INSERT INTO jobs (kind, spec, status, progress, message, error, log_path, created) VALUES "
                     "('upscale', '{\"m\": 8}', 'succeeded', 1.0, 'done', '', '', '2026-11-01 10:00:00')",
                     "INSERT INTO models (name, path, kind, source, architecture, model_type, num_layers, "
                     "hidden_size, num_parameters, dtype, size_bytes, created) VALUES ('old', '/x', 'base', '', "
                     "'LlamaForCausalLM', 'llama', 2, 8, 10, 'float32', 0, '2026-11-01 10:00:00')"):
            conn.exec_driver_sql(stmt)
    columns, _ = _schema()
    assert "after" not in columns["jobs"] and "votes" not in columns
    db._ready.cache_clear()  # a new process opening the old database

    (job,) = runner.list_jobs()
    assert (job.kind, job.spec, job.after, job.run_dir, job.result) == ("upscale", {"m": 8}, None, "", {})
    assert registry.get("old").parents == [] and registry.get("old").num_layers == 2
    columns, indexes = _schema()
    assert {"after", "run_dir", "result"} <= columns["jobs"] and "parents" in columns["models"]
    assert "ix_jobs_after" in indexes["jobs"] and "ix_synth_pairs_rejected_by_hand" in indexes["synth_pairs"]
    assert "votes" in columns
    assert db.upgrade_schema(db.init_db()) == []  # nothing left to add
    with db.session() as s:  # and new rows write as before
        s.add(Job(kind="merge", spec={"t": 0.5}))
        s.commit()
    assert [(j.kind, j.run_dir, j.result) for j in runner.list_jobs()] == [("merge", "", {}), ("upscale", "", {})]


@pytest.mark.fresh_database  # SQLite's too: not the copy tests/conftest.py gives a workspace
def test_a_fresh_database_takes_the_rows_an_older_version_writes():
    """An older worker sharing the database inserts rows without the columns it does not know (here every column
    with a default). A database upgraded in place gave those columns server defaults, a fresh one did not: the older
    worker's insert broke NOT NULL ("null value in column "status""). Both now carry the model's defaults."""
    with db.init_db().begin() as conn:
        conn.exec_driver_sql("INSERT INTO jobs (kind, created) VALUES ('eval', '2026-11-01 10:00:00')")
        conn.exec_driver_sql("INSERT INTO models (name, path, created) VALUES ('old', '/x', '2026-11-01 10:00:00')")
        conn.exec_driver_sql("INSERT INTO worker_beats (host, pid, seen) VALUES ('b', 7, '2026-11-01 10:00:00')")
    (job,) = runner.list_jobs()
    assert (job.status, job.progress, job.message, job.spec, job.needs, job.host) == ("queued", 0.0, "", {}, [], "")
    old = registry.get("old")
    assert (old.kind, old.num_layers, old.parents, old.recipe) == ("base", 0, [], {})
    from storage.models import WorkerBeat

    with db.session() as s:
        assert [b.workspace for b in s.exec(sa.select(WorkerBeat)).scalars()] == [""]


def open_together(n: int) -> list[Exception]:
    """The workspace's database opened (db._ready, uncached) by `n` threads at one instant, each with a connection of
    its own as a separate process would have: the errors they met."""
    url, barrier, errors = db.database_url(), threading.Barrier(n), []

    def open_it():
        barrier.wait()
        try:
            db._ready.__wrapped__(url)
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.fresh_database  # SQLite's too: not the copy tests/conftest.py gives a workspace
def test_a_fresh_database_opened_by_several_processes_at_once():
    """The page and the worker (or workers on several machines) start together on an empty database: one creates the
    tables, the others wait and find them (before the lock: "table models already exists")."""
    assert open_together(4) == []
    assert set(SQLModel.metadata.tables) <= set(_schema()[0]) and db.upgrade_schema(db.engine()) == []


CLAIMER = r"""
import json, os, sys, time
from pathlib import Path
from backend import runner
from storage import db
db.init_db()
Path(sys.argv[1]).touch()  # ready
while not Path(sys.argv[2]).exists():  # both start claiming at the same moment
    time.sleep(0.001)
mine = []
while (job := runner._claim_next()) is not None:
    mine.append(job.id)
    with db.engine().begin() as conn:  # the work: count the runs in the row itself (an atomic increment)...
        conn.exec_driver_sql(f"UPDATE jobs SET progress = progress + 1 WHERE id = {job.id}")
    time.sleep(0.02)  # ...which takes a moment, so the other worker claims meanwhile
    runner._update(job.id, status="succeeded", result={"worker": os.getpid()})
print(json.dumps({"pid": os.getpid(), "claimed": mine}))
"""


def race(script: str, tmp_path: Path, timeout: float) -> list[dict]:
    """Two processes run `script`, both released at the same moment once ready; each one's JSON report."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"ready-{i}"), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    end = time.time() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.time() < end:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    return [json.loads(out) for out, _ in outs]


def test_two_workers_race_for_20_jobs_and_each_runs_once(tmp_path):
    with db.session() as s:
        jobs = [Job(kind="upscale", spec={}, status="queued") for _ in range(20)]
        s.add_all(jobs)
        s.commit()
        ids = sorted(j.id for j in jobs)
    claims = race(CLAIMER, tmp_path, timeout=60)
    every = [i for c in claims for i in c["claimed"]]
    assert sorted(every) == ids  # all 20 claimed, none twice
    assert all(c["claimed"] for c in claims), claims  # both really took part in the race
    by = {i: c["pid"] for c in claims for i in c["claimed"]}
    for i in ids:  # each job ran once, in the worker that claimed it
        job = runner.get(i)
        assert (job.status, job.progress, job.result) == ("succeeded", 1.0, {"worker": by[i]})
    assert runner._claim_next() is None


CAPPED = r"""
import json, sys, time
from pathlib import Path
from sqlmodel import select
from backend import runner
from storage import db
from storage.models import Job
db.init_db()
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
mine, seen = [], 0
while True:
    job = runner._claim_next(1)  # one slot on this machine, shared by both workers
    if job is None:
        with db.session() as s:
            if not s.exec(select(Job.id).where(Job.status == "queued")).first():
                break
        time.sleep(0.002)
        continue
    mine.append(job.id)
    with db.session() as s:  # what anyone looking at the table sees while this job runs
        seen = max(seen, len(s.exec(select(Job.id).where(Job.status == "running")).all()))
    time.sleep(0.01)
    runner._update(job.id, status="succeeded")
    time.sleep(0.01)  # between jobs, as a real worker: the other one's turn (without it one could take all twelve)
print(json.dumps({"claimed": mine, "running_seen": seen}))
"""


def test_two_workers_sharing_one_slot_never_run_two_jobs_at_once(tmp_path):
    """The cap is part of the claim: a second worker on the machine cannot claim while its one slot is taken, even
    for an instant (before, the later of two racing claims was given back, after it had shown as running)."""
    with db.session() as s:
        s.add_all([Job(kind="upscale", spec={}, status="queued") for _ in range(12)])
        s.commit()
    runs = race(CAPPED, tmp_path, timeout=120)
    assert sorted(i for r in runs for i in r["claimed"]) == sorted(j.id for j in runner.list_jobs())
    assert [r["running_seen"] for r in runs] == [1, 1]
    assert all(r["claimed"] for r in runs), runs  # both took turns


@ON_POSTGRES
def test_the_worker_rides_out_a_server_restart(postgres_cluster, tiny_llama, workspace, monkeypatch):
    db.init_db()
    log = open(workspace.parent / "worker.log", "w+")
    worker = subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.2"], cwd=ROOT,
                              env=dict(os.environ, DUS_DB_RETRY_SECONDS="60"), stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.time() + 60
        while not runner.worker_alive() and time.time() < end:
            time.sleep(0.1)
        postgres_cluster.stop()  # the server goes away under the polling worker for a moment...
        time.sleep(1.5)
        postgres_cluster.start()  # ...and comes back: every pooled connection is dead now
        job = runner.submit(UpscaleSpec(base=str(tiny_llama), m=1, name="after-restart"))
        end = time.time() + 120
        while runner.get(job.id).status in ("queued", "running") and time.time() < end:
            assert worker.poll() is None, Path(log.name).read_text()
            time.sleep(0.2)
        assert runner.get(job.id).status == "succeeded", runner.get(job.id).error
        assert registry.get("after-restart").num_layers == 10
        assert worker.poll() is None
        assert "unreachable; retrying for up to 60 s" in Path(log.name).read_text()  # it did meet the outage
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    # the wait is bounded: a server that stays away ends in a clear error
    monkeypatch.setenv("DUS_DB_RETRY_SECONDS", "0.5")
    postgres_cluster.stop()
    try:
        with pytest.raises(db.DatabaseUnavailable, match=r"could not connect to PostgreSQL at .*still unreachable"):
            runner.list_jobs()
    finally:
        postgres_cluster.start()
    assert [j.id for j in runner.list_jobs()] == [job.id]


@NO_SERVER
def test_a_wrong_database_url_names_the_server_not_the_password(monkeypatch, capsys):
    from backend.__main__ import main

    monkeypatch.setenv("DATABASE_URL", BAD_URL)
    assert main(["jobs", "list"]) == 2  # the CLI: a message, exit code 2, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: could not connect to PostgreSQL at 127.0.0.1:9/dus as alice:")
    assert "check DATABASE_URL" in err and "hunter2" not in err
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg//alice:hunter2@host/x")  # a typo: no "://"
    assert main(["jobs", "list"]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL is not a database URL" in err and "hunter2" not in err
    assert db.describe("postgresql+psycopg://bob@/studio?host=/run/postgresql&port=5433") == \
        "/run/postgresql:5433/studio as bob"

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DATABASE_URL", BAD_URL.replace("+psycopg", ""))  # a plain postgresql:// URL: psycopg too
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("could not connect to PostgreSQL at 127.0.0.1:9/dus as alice:")
    assert "hunter2" not in error.value


@ON_POSTGRES
def test_a_wrong_password_is_refused_by_the_server_and_said_so(postgres_cluster, monkeypatch, capsys):
    """A real server's password check (the test cluster asks `alice` for hers): the CLI and the page name the
    server and the role, say the server refused the password, and never print it."""
    from backend.__main__ import main
    from tests.pg_cluster import PASSWORD, PASSWORD_ROLE

    where = f"host={postgres_cluster.dir}&port={postgres_cluster.port}"
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://{PASSWORD_ROLE}:hunter2@/postgres?{where}")
    assert main(["jobs", "list"]) == 2
    err = capsys.readouterr().err
    assert f"as {PASSWORD_ROLE}" in err and "password authentication failed" in err, err
    assert "check DATABASE_URL" in err and "hunter2" not in err
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    (error,) = at.error
    assert "password authentication failed" in error.value and "hunter2" not in error.value
    # the right password opens it: the failure above was the password, not the set-up
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://{PASSWORD_ROLE}:{PASSWORD}@/postgres?{where}")
    db._ready.cache_clear()
    with db.engine().connect() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar() == PASSWORD_ROLE


def test_values_postgresql_refuses_are_stored(workspace):
    """A diverged loss or an infinite perplexity in a result (PostgreSQL's json type refuses NaN and Infinity), a NUL
    character in a generated answer (its text type refuses NUL)."""
    with db.session() as s:
        job = Job(kind="eval", result={"loss": float("nan"), "ppl": [float("inf"), 3.5], "n": 2}, message="a\x00b")
        s.add(job)
        s.commit()
        job_id = job.id
    job = runner.get(job_id)
    assert (job.result["n"], job.result["ppl"][1]) == (2, 3.5)
    if db.engine().dialect.name == "postgresql":
        assert job.result["loss"] is None and job.result["ppl"][0] is None and job.message == "a\ufffdb"
    else:  # SQLite keeps Python's json text and the NUL as they are
        assert job.result["loss"] != job.result["loss"] and job.result["ppl"][0] == float("inf")
        assert job.message == "a\x00b"
