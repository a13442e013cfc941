"""A workspace written by an older DUS Studio opens in this one: missing tables and columns are added, old rows get
the model's defaults, nothing else changes."""

from __future__ import annotations

import sqlite3

from storage import db


def test_database_of_an_older_version_is_upgraded_in_place(workspace):
    path = workspace / "studio.db"
    db.init_db()
    con = sqlite3.connect(path)
    # what the first release wrote: no jobs.after (indexed), no jobs.run_dir, no jobs.result, no votes table
    con.executescript("""
        DROP INDEX ix_jobs_after;
        ALTER TABLE jobs DROP COLUMN "after";
        ALTER TABLE jobs DROP COLUMN run_dir;
        ALTER TABLE jobs DROP COLUMN result;
        DROP TABLE votes;
        INSERT INTO jobs (kind, spec, status, progress, message, error, log_path, created)
            VALUES ('upscale', '{"m": 8}', 'succeeded', 1.0, 'done', '', '', '2026-11-01 10:00:00.000000');
    """)
    con.commit()
    con.close()
    db._ready.cache_clear()  # a new process opening the old workspace

    from backend import runner

    (job,) = runner.list_jobs()  # failed with "no such column: jobs.after" before the upgrade existed
    assert (job.kind, job.spec, job.after, job.run_dir, job.result) == ("upscale", {"m": 8}, None, "", {})
    con = sqlite3.connect(path)
    columns = {row[1] for row in con.execute("PRAGMA table_info(jobs)")}
    indexes = {row[1] for row in con.execute("PRAGMA index_list(jobs)")}
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert {"after", "run_dir", "result"} <= columns and "ix_jobs_after" in indexes and "votes" in tables
    assert db.upgrade_schema(db.init_db()) == []  # nothing left to add
    from storage.models import Job

    with db.session() as s:  # and new rows write as before
        s.add(Job(kind="merge", spec={"t": 0.5}))
        s.commit()
    assert [(j.kind, j.run_dir, j.result) for j in runner.list_jobs()] == [("merge", "", {}), ("upscale", "", {})]
