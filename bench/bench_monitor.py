"""The Monitor page's charts behind one long run: its fragment reran every 2 s and read every metric row of the
chosen jobs as JobMetric objects, then drew every point. Against that (the "before" path, rebuilt here), the page's
path now: backend/curves.py reads the rows as plain values once, then only the rows logged since, and
pages/figures.metric_figure draws a long series thinned to about 2,000 points (min and max of each run of points).

    .venv/bin/python bench/bench_monitor.py                 # one job, 50,000 steps x 4 metrics (200,000 rows)
    .venv/bin/python bench/bench_monitor.py --steps 10000 --rounds 3

Rows go into a fresh SQLite workspace in a temporary folder, as the training callback writes them (one row per
metric per logged step; logging_steps defaults to 1). Each path is timed in CPU seconds (median of --rounds):
  first draw      every row read and every chart made (opening the page)
  tick, nothing   a refresh with no new rows (a queued job; a run between two logged steps)
  tick, one step  a refresh after one more step of 4 metrics was logged
and the chart JSON the browser is sent per refresh. The last column is before ÷ now. The charts' lines are checked
to end at the same last point and to hold the same lowest and highest values first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAMES = ("loss", "learning_rate", "grad_norm", "tokens_per_s")


def seed(steps: int) -> int:
    import random

    from storage import db
    from storage.models import Job, JobMetric, utcnow

    rng, now = random.Random(0), utcnow()
    with db.session() as s:
        job = Job(kind="sft", spec={"kind": "sft", "model": "builtin", "name": "long"}, status="running")
        s.add(job)
        s.commit()
        job_id = job.id
    rows = [{"job_id": job_id, "step": step, "name": name, "time": now,
             "value": {"loss": 3 / (1 + step / 1000) + rng.random() / 10, "learning_rate": 5e-5,
                       "grad_norm": 1 + rng.random() + (40 if step % 9973 == 0 else 0),
                       "tokens_per_s": 12000 + rng.random() * 100}[name]}
            for step in range(1, steps + 1) for name in NAMES]
    with db.engine().begin() as c:
        c.execute(JobMetric.__table__.insert(), rows)
    return job_id


def log_step(job_id: int, step: int) -> None:
    from storage import db
    from storage.models import JobMetric

    with db.session() as s:
        s.add_all(JobMetric(job_id=job_id, step=step, name=n, value=1.0) for n in NAMES)
        s.commit()


def before(job_id: int) -> list:
    """The page's charts as they were: ORM objects by step, every point drawn."""
    import plotly.graph_objects as go
    from sqlmodel import select

    from storage import db
    from storage.models import JobMetric

    with db.session() as s:
        rows = list(s.exec(select(JobMetric).where(JobMetric.job_id.in_([job_id])).order_by(JobMetric.step)))
    series = defaultdict(list)
    for m in rows:
        series[m.name].append((m.step, m.value))
    figs = []
    for name in NAMES:
        xs, ys = zip(*sorted(series[name]))
        figs.append(go.Figure(go.Scatter(x=xs, y=ys, mode="lines", name="job")).update_layout(title=name))
    return figs


class Now:
    """The page's charts now: one Curves per session, figures made again only when rows were added."""

    def __init__(self, job_id: int) -> None:
        from backend.curves import Curves

        self.job_id, self.curves, self.figs = job_id, Curves([job_id]), None

    def __call__(self) -> list:
        from pages.figures import metric_figure

        if self.curves.refresh() or self.figs is None:
            self.figs = [metric_figure({"job": self.curves.series(n)[self.job_id]}, n, ["job"]) for n in NAMES]
        return self.figs


def cpu(fn) -> tuple[float, list]:
    import plotly.io

    c0 = time.process_time()
    figs = fn()
    sent = sum(len(plotly.io.to_json(f, validate=False)) for f in figs)  # st.plotly_chart's work, every refresh
    return time.process_time() - c0, [figs, sent]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.environ.pop("DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as ws:
        os.environ["DUS_WORKSPACE"] = ws
        run(a)


def run(a) -> None:
    job_id = seed(a.steps)
    step = a.steps
    table = []
    for what in ("first draw", "tick, nothing", "tick, one step"):
        old_t, new_t = [], []
        for _ in range(a.rounds):
            if what == "first draw":
                now = Now(job_id)
            elif what == "tick, one step":
                step += 1
                log_step(job_id, step)
            t, (old_figs, old_sent) = cpu(lambda: before(job_id))
            old_t.append(t)
            t, (new_figs, new_sent) = cpu(now)
            new_t.append(t)
        for o, n in zip(old_figs, new_figs):  # the same curve: its last point, its extremes
            ox, oy, nx, ny = o.data[0].x, o.data[0].y, n.data[0].x, n.data[0].y
            assert (ox[-1], oy[-1]) == (nx[-1], ny[-1]) and (min(oy), max(oy)) == (min(ny), max(ny)), o.layout.title
        table.append((what, statistics.median(old_t), statistics.median(new_t), old_sent, new_sent))
    print(f"{a.steps:,} steps x {len(NAMES)} metrics, {a.rounds} rounds, CPU seconds (median); chart JSON per refresh")
    print(f"{'path':16s} {'before s':>9s} {'now s':>8s} {'ratio':>7s} {'before MB':>10s} {'now MB':>7s}")
    for what, o, n, os_, ns in table:
        print(f"{what:16s} {o:9.3f} {n:8.3f} {o / max(n, 1e-6):7.1f} {os_ / 1e6:10.2f} {ns / 1e6:7.2f}")


if __name__ == "__main__":
    main()
