"""A workspace used for months: hundreds of jobs, ~350k metric rows. One series of some jobs, and their metric names,
are read from the (job_id, name, step) index that an older database gets when it is opened; the names come from one
SELECT DISTINCT, not from every row; the series from three columns, not JobMetric objects.

    .venv/bin/python -m pytest tests/test_review_s26_index.py -q
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from backend import runner
from backend.curves import Curves
from backend.recipe import tables
from storage import db
from storage.models import Job, JobMetric
from tests.test_review_cli import add

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
INDEX = "ix_job_metrics_job_id_name_step"


def _indexes() -> dict[str, list[str]]:
    """{index name: its columns} of job_metrics, as the database itself has them."""
    return {i["name"]: i["column_names"] for i in sa.inspect(db.engine()).get_indexes("job_metrics")}


def _jobs_with_metrics() -> tuple[Job, Job]:
    a, b = add(Job(kind="sft", status="succeeded"), Job(kind="dpo", status="succeeded"))
    add(*(JobMetric(job_id=a.id, step=s, name=n, value=s + (n == "loss") / 2) for s in (3, 1, 2)
          for n in ("loss", "learning_rate")),
        JobMetric(job_id=a.id, step=2, name="eval_loss", value=0.25),
        *(JobMetric(job_id=b.id, step=s, name=n, value=-s) for s in (1, 2) for n in ("loss", "rewards/margins")))
    return a, b


@BOTH
def test_an_older_database_gets_the_metrics_index_when_opened():
    db.init_db()
    with db.engine().begin() as conn:  # what an older release wrote: job_metrics indexed by job_id alone
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
    assert INDEX not in _indexes()
    with db.engine().connect() as conn:
        assert db._missing(conn) == [("add_index", "job_metrics", INDEX)]
    db._ready.cache_clear()  # a new process opening the old database

    a, b = _jobs_with_metrics()  # the first query upgrades it
    assert _indexes()[INDEX] == ["job_id", "name", "step"] and _indexes()["ix_job_metrics_job_id"] == ["job_id"]
    assert db.upgrade_schema(db.init_db()) == []  # nothing left to add: idempotent
    with db.engine().begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {INDEX}")
    assert db.upgrade_schema(db.engine()) == [f"job_metrics index {INDEX}"]  # the public upgrade adds it too
    assert db.upgrade_schema(db.engine()) == [] and INDEX in _indexes()
    assert runner.metric_names([a.id]) == ["eval_loss", "learning_rate", "loss"]


@BOTH
def test_several_processes_opening_an_older_database_at_once_add_the_index_once():
    """Under the schema lock (as for tables), with CREATE INDEX IF NOT EXISTS: none fails with "already exists"."""
    db.init_db()
    with db.engine().begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {INDEX}")
    from tests.test_postgres import open_together

    assert open_together(3) == [] and INDEX in _indexes() and db.upgrade_schema(db.engine()) == []


@BOTH
def test_metric_names_and_curves_of_some_jobs():
    a, b = _jobs_with_metrics()
    assert runner.metric_names([a.id]) == ["eval_loss", "learning_rate", "loss"]
    assert runner.metric_names([a.id, b.id]) == ["eval_loss", "learning_rate", "loss", "rewards/margins"]
    assert runner.metric_names([b.id]) == ["loss", "rewards/margins"] and runner.metric_names([999]) == []
    assert tables.curves([a.id, b.id, 999], "loss") == {a.id: [(1, 1.5), (2, 2.5), (3, 3.5)],
                                                        b.id: [(1, -1.0), (2, -2.0)], 999: []}
    assert tables.recovery_points(a.id) == ([(2, 0.25)], None)


def _queries(read) -> list[tuple[str, tuple]]:
    """(SQL, parameters) of each job_metrics query that `read()` makes."""
    seen: list[tuple[str, tuple]] = []

    def note(_conn, _cursor, statement, parameters, _context, _many):
        if "job_metrics" in statement:
            seen.append((statement, parameters))

    eng = db.engine()
    event.listen(eng, "before_cursor_execute", note)
    try:
        read()
    finally:
        event.remove(eng, "before_cursor_execute", note)
    return seen


def _plans(read) -> list[tuple[str, str]]:
    """(SQL, SQLite's query plan) of each job_metrics query that `read()` makes."""
    with db.engine().connect() as conn:
        return [(sql, " / ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)))
                for sql, params in _queries(read)]


def test_sqlite_reads_a_series_and_the_names_from_the_index():
    a, b = _jobs_with_metrics()
    [(_, curve)] = _plans(lambda: tables.curves([a.id, b.id], "loss"))  # the Compare tab, the recovery view
    assert f"USING INDEX {INDEX} (job_id=? AND name=?)" in curve, curve  # was ix_job_metrics_job_id (job_id=?)
    [(sql, names)] = _plans(lambda: runner.metric_names([a.id, b.id]))
    assert "DISTINCT" in sql and f"USING COVERING INDEX {INDEX}" in names, names  # never the table's rows
    # the Monitor's reads by row id (backend/curves.py): job_id's index, with the row id it holds, seeks the new rows
    monitor = _plans(lambda: Curves([a.id]).refresh())
    assert len(monitor) == 2 and all("SEARCH job_metrics USING" in p and "SCAN" not in p for _, p in monitor), monitor
    assert "rowid>?" in monitor[1][1], monitor


def test_the_compare_tab_lists_the_names_without_reading_every_row():
    """pages/recipe.py took the metric names from runner.metrics: every row of the picked jobs (1.4 s for one
    50,000-step run). Now its reads of job_metrics are the DISTINCT names and the one series drawn."""
    from tests.recipe_rows import two_candidate_run
    from tests.test_review_s23_recipe import _recipe_page

    a, b = _jobs_with_metrics()
    at = _recipe_page(two_candidate_run({}, {})).run()
    reads = _queries(lambda: at.multiselect(key="compare_jobs").set_value([a.id, b.id]).run())
    assert not at.exception, at.exception
    pick = at.selectbox(key="compare_metric")
    assert (pick.options, pick.value) == (["eval_loss", "learning_rate", "loss", "rewards/margins"], "loss")
    assert len(reads) == 2 and "SELECT DISTINCT job_metrics.name" in reads[0][0], reads
    assert "job_metrics.name = " in reads[1][0] and "loss" in reads[1][1], reads  # the series of the metric shown
