"""Reads of a workspace's job_metrics at scale: the Recipe page's Compare tab (the metric names of the picked jobs,
then one metric's curves) and the Recovery tab (a CPT's held-out losses). Against them, the paths they replaced,
run here on the same database in the same run:
  names     before: every metric row of the jobs read (runner.metrics) to collect their names;
            now: runner.metric_names, one SELECT DISTINCT answered from the (job_id, name, step) index
  curves    before: whole JobMetric objects, with only the job_id index (the composite index dropped in a copy);
            now: backend/recipe/tables.curves, three columns through the composite index
  recovery  tables.recovery_points (eval_loss of one run), without and with the composite index

    .venv/bin/python bench/bench_metric_reads.py                    # 300 jobs, 349,500 rows (one 50,000-step run)
    .venv/bin/python bench/bench_metric_reads.py --big-steps 10000 --rounds 3

Rows go into a fresh SQLite workspace in a temporary folder, interleaved as workers log them (the small jobs'
rows around the big run's). Each read is timed in wall seconds (best of --rounds) and checked to return the same
values both ways; the last column is before ÷ now. Exits 1 if a path's values differ.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAMES = ("loss", "learning_rate", "grad_norm", "eval_loss")
INDEX = "ix_job_metrics_job_id_name_step"


def build(ws: Path, jobs: int, big_steps: int, small_steps: int) -> int:
    from storage import db
    from storage.models import Job

    db.init_db()
    with db.session() as s:
        for i in range(jobs):
            s.add(Job(kind="cpt", spec={"i": i}, status="succeeded"))
        s.commit()
    big, rng, rows = jobs // 2, random.Random(0), []
    for job in range(1, jobs + 1):
        for step in range(1, (big_steps if job == big else small_steps) + 1):
            rows += [(job, step, n, rng.random(), "2026-11-01 10:00:00.000000") for n in NAMES]
    con = sqlite3.connect(ws / "studio.db")
    con.executemany("INSERT INTO job_metrics (job_id, step, name, value, time) VALUES (?,?,?,?,?)", rows)
    con.commit()
    con.close()
    return big


def best(fn, rounds: int):
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def old_curves(job_ids: list[int], metric: str) -> dict[int, list[tuple[int, float]]]:
    """tables.curves as it read before session 26: whole JobMetric objects."""
    from sqlmodel import select

    from storage import db
    from storage.models import JobMetric

    with db.session() as s:
        rows = s.exec(select(JobMetric).where(JobMetric.job_id.in_(job_ids), JobMetric.name == metric)
                      .order_by(JobMetric.step)).all()
    out: dict[int, list[tuple[int, float]]] = {j: [] for j in job_ids}
    for r in rows:
        out[r.job_id].append((r.step, r.value))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--big-steps", type=int, default=50_000, help="logged steps of the one long run")
    ap.add_argument("--small-steps", type=int, default=125, help="logged steps of every other run")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-metric-reads-"))
    try:
        now_ws, before_ws = tmp / "now", tmp / "before"
        os.environ["DUS_WORKSPACE"] = str(now_ws)
        os.environ.pop("DATABASE_URL", None)
        big = build(now_ws, a.jobs, a.big_steps, a.small_steps)
        shutil.copytree(now_ws, before_ws)
        con = sqlite3.connect(before_ws / "studio.db")
        con.execute(f"DROP INDEX {INDEX}")  # the database as it was: the job_id index only
        con.commit()
        con.close()
        rows = a.jobs * a.small_steps * len(NAMES) + (a.big_steps - a.small_steps) * len(NAMES)

        from backend import runner
        from backend.recipe import tables
        from storage import db

        small = [1, 2, 3, a.jobs - 1, a.jobs]  # short runs logged before and after the long one
        cases = [
            ("names, the long run", lambda: sorted({m.name for m in runner.metrics([big])}),
             lambda: runner.metric_names([big])),
            ("names, 5 short runs", lambda: sorted({m.name for m in runner.metrics(small)}),
             lambda: runner.metric_names(small)),
            ("curves 'loss', the long run", lambda: old_curves([big], "loss"), lambda: tables.curves([big], "loss")),
            ("curves 'loss', 5 short runs", lambda: old_curves(small, "loss"), lambda: tables.curves(small, "loss")),
            ("recovery points, the long run", lambda: tables.recovery_points(big),
             lambda: tables.recovery_points(big)),
        ]
        print(f"{rows:,} metric rows, {a.jobs} jobs (one of {a.big_steps:,} logged steps), best of {a.rounds}\n")
        print("| read | before (s) | now (s) | before ÷ now |\n|---|---:|---:|---:|")
        differ = []
        for label, before_fn, now_fn in cases:
            times = {}
            for which, ws, fn in (("before", before_ws, before_fn), ("now", now_ws, now_fn)):
                os.environ["DUS_WORKSPACE"] = str(ws)
                ready = db._ready
                if which == "before":  # its old index set kept: opened without the upgrade that adds the index
                    db._ready = db._engine_for
                try:
                    times[which] = best(fn, a.rounds)
                finally:
                    db._ready = ready
            if times["before"][1] != times["now"][1]:
                differ.append(label)
            (tb, _), (tn, _) = times["before"], times["now"]
            print(f"| {label} | {tb:.4f} | {tn:.4f} | {tb / tn:.1f}x |")
        if differ:
            print(f"\nvalues differ between the two paths: {', '.join(differ)}")
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
