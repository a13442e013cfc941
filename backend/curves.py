"""Training curves for the Monitor page: a job's metric rows read once, then only the rows logged since, and each
series thinned for drawing.

One long run logs a lot: 50,000 steps of 4 metrics (logging_steps defaults to 1) are 200,000 rows. The page read
them all as JobMetric objects every 2 s (3.4 s of CPU, so the charts were always a refresh behind), and drew every
point (4.5 MB of chart JSON; grad_norm a solid block). Here the rows are read as plain values, only those added
since the last look, and a series longer than THIN_POINTS is drawn as the min and max of each run of points.
"""

from __future__ import annotations

from array import array

import numpy as np
import sqlalchemy as sa
from sqlmodel import select

from storage import db
from storage.models import JobMetric

THIN_POINTS = 2000  # points drawn per line at most (plus the first and last): a chart a few hundred pixels wide


def thin(steps, values, points: int = THIN_POINTS) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, values, every) for drawing `values` over `steps` (sorted by step) in about `points` points: the
    series cut into runs of `every` points, each drawn as its lowest and highest value in step order, plus the
    first and last points of the whole series. A spike stays visible (an average or every Nth point hides it) and
    a noisy series keeps its band. `every` is 1 when the series is short enough to draw whole."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    n = len(values)
    if n <= points:
        return steps, values, 1
    every = -(-n // max(points // 2, 1))  # ceil: two points per run
    runs = -(-n // every)
    padded = np.full(runs * every, np.nan)
    padded[:n] = values
    grid = padded.reshape(runs, every)
    nan = np.isnan(grid)  # NaN (a pad, or a value logged as such) never counts as an extreme
    low = np.where(nan, np.inf, grid).argmin(axis=1)
    high = np.where(nan, -np.inf, grid).argmax(axis=1)
    start = np.arange(runs) * every
    keep = np.unique(np.concatenate(([0, n - 1], start + low, start + high)))
    return steps[keep], values[keep], every


class Curves:
    """Every metric series of some jobs, {name: {job_id: (steps, values)}}, kept current by refresh(): the first
    one reads every row, the next ones only rows with a higher id. When the rows of the jobs changed otherwise (a
    resumed run drops the rows after its checkpoint; on PostgreSQL a row may commit after one with a higher id) the
    count no longer adds up and everything is read again."""

    def __init__(self, job_ids) -> None:
        self.job_ids = tuple(job_ids)
        self.mark = (0, 0)  # (highest row id read, rows held): what refresh compares with the database's
        self._series: dict[str, dict[int, tuple[array, array]]] = {}

    def refresh(self) -> bool:
        """Read the rows logged since the last call; whether anything changed."""
        with db.session() as s:
            top, count = s.exec(select(sa.func.max(JobMetric.id), sa.func.count())
                                .where(JobMetric.job_id.in_(self.job_ids))).one()
            top = top or 0
            if (top, count) == self.mark:
                return False
            new = _rows(s, self.job_ids, self.mark[0], top)
            if self.mark[1] + len(new) != count:  # rows deleted or committed late: read them all again
                self._series = {}
                new = _rows(s, self.job_ids, 0, None)
                top, count = max((r[0] for r in new), default=0), len(new)
        for _, job_id, step, name, value in new:
            steps, values = self._series.setdefault(name, {}).setdefault(job_id, (array("q"), array("d")))
            steps.append(step)
            values.append(value)
        self.mark = (top, count)
        return True

    def names(self) -> list[str]:
        return list(self._series)

    def series(self, name: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{job_id: (steps, values)} of one metric, by step (rows come by id, which is step order for a run's
        rows; a stable sort keeps that order within a step)."""
        out = {}
        for job_id, (steps, values) in self._series.get(name, {}).items():
            s, v = np.frombuffer(steps, dtype=np.int64).copy(), np.frombuffer(values, dtype=np.float64).copy()
            if len(s) > 1 and (np.diff(s) < 0).any():
                order = np.argsort(s, kind="stable")
                s, v = s[order], v[order]
            out[job_id] = (s, v)
        return out


def _rows(s, job_ids: tuple[int, ...], after: int, upto: int | None) -> list:
    """(id, job_id, step, name, value) of the jobs' rows with after < id <= upto, by id."""
    cond = [JobMetric.job_id.in_(job_ids), JobMetric.id > after]
    if upto is not None:
        cond.append(JobMetric.id <= upto)
    return s.exec(select(JobMetric.id, JobMetric.job_id, JobMetric.step, JobMetric.name, JobMetric.value)
                  .where(*cond).order_by(JobMetric.id)).all()
