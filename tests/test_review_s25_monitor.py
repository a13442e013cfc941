"""The Monitor page behind one long run (a scale walk: 50,000 steps x 4 metrics, 201,510 rows): every row was built
as a JobMetric object on each 2-second refresh (3.5 s of CPU, so the charts were always a refresh behind), every
point drawn (4.5 MB of chart JSON, grad_norm a solid block). Now rows are read as plain values, only those logged
since the last look (backend/curves.py), and a long series is drawn thinned, with its spikes, and says so."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sqlmodel import delete, select

from backend import curves, registry, runner
from pages import figures
from storage import db
from storage.models import JobMetric
from tests.test_pages import app


def add(job_id: int, rows) -> None:
    with db.session() as s:
        s.add_all(JobMetric(job_id=job_id, step=step, name=name, value=value) for step, name, value in rows)
        s.commit()


def test_thinning_keeps_the_first_and_last_points_and_each_runs_min_and_max_exactly():
    rng = random.Random(0)
    steps = np.arange(1, 50_001)
    values = np.array([1 + rng.random() for _ in steps])
    values[12_344] = 40.0  # a spike: every 50th point (or an average) loses it
    values[30_000] = -3.0
    xs, ys, every = curves.thin(steps, values)
    assert every == 50 and len(xs) <= curves.THIN_POINTS + 2
    assert (xs[0], ys[0]) == (1, values[0]) and (xs[-1], ys[-1]) == (50_000, values[-1])
    assert list(np.diff(xs) > 0) == [True] * (len(xs) - 1)  # in step order, no point twice
    kept = dict(zip(xs.tolist(), ys.tolist()))
    assert kept[12_345] == 40.0 and kept[30_001] == -3.0
    for start in range(0, 50_000, every):  # each run's lowest and highest value, at its own step, exactly
        run = values[start:start + every]
        assert kept[start + 1 + int(run.argmin())] == run.min()
        assert kept[start + 1 + int(run.argmax())] == run.max()
    assert kept == {int(steps[i]): values[i] for i in np.searchsorted(steps, xs)}  # every point drawn is a real one
    short = curves.thin(steps[:2000], values[:2000])  # short enough: drawn whole
    assert short[2] == 1 and short[0].tolist() == steps[:2000].tolist() and short[1].tolist() == values[:2000].tolist()


def test_metrics_reads_the_same_values_as_the_rows_hold_as_plain_rows(tiny_llama):
    from backend.specs import CptSpec, DataSource

    registry.import_folder(tiny_llama, "tiny")
    a, b = (runner.submit(CptSpec(model="tiny", name=n, data=[DataSource(source="builtin:facts-corpus")]))
            for n in ("a", "b"))
    add(b.id, [(3, "loss", 2.5), (1, "loss", 3.0)])
    add(a.id, [(2, "loss", 1.5), (2, "learning_rate", 1e-4), (1, "loss", 2.0), (0, "reference_eval_loss", 4.0)])
    with db.session() as s:  # what the ORM objects held
        want = sorted((m.job_id, m.step, m.name, m.value) for m in s.exec(select(JobMetric)))
    rows = runner.metrics([a.id, b.id])
    assert sorted(tuple(r) for r in rows) == want  # plain (job_id, step, name, value) rows: JobMetric is no tuple
    assert [r.step for r in rows] == sorted(r.step for r in rows)  # by step, as before
    assert {(r.job_id, r.name, r.value) for r in rows if r.step == 2} == {(a.id, "loss", 1.5),
                                                                         (a.id, "learning_rate", 1e-4)}
    assert [tuple(r) for r in runner.metrics([b.id])] == [(b.id, 1, "loss", 3.0), (b.id, 3, "loss", 2.5)]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_curves_read_only_new_rows_and_read_all_again_when_rows_were_dropped(tiny_llama, monkeypatch):
    from backend.specs import CptSpec, DataSource

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(CptSpec(model="tiny", name="c", data=[DataSource(source="builtin:facts-corpus")]))
    other = runner.submit(CptSpec(model="tiny", name="d", data=[DataSource(source="builtin:facts-corpus")]))
    add(job.id, [(s, n, s * (1.0 if n == "loss" else 0.5)) for s in (1, 2, 3) for n in ("loss", "grad_norm")])
    c = curves.Curves([job.id])
    assert c.refresh() is True and c.mark[1] == 6 and c.refresh() is False  # nothing new: nothing read
    reads, real = [], curves._rows
    monkeypatch.setattr(curves, "_rows", lambda s, ids, after, upto: reads.append(after) or real(s, ids, after, upto))
    last = c.mark[0]
    add(other.id, [(1, "loss", 9.0)])  # another job's row: not this chart's
    add(job.id, [(4, "loss", 4.0)])
    assert c.refresh() is True and reads == [last]  # only the rows after the last one read
    steps, values = c.series("loss")[job.id]
    assert steps.tolist() == [1, 2, 3, 4] and values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert set(c.names()) == {"loss", "grad_norm"} and other.id not in c.series("loss")
    # a resumed run drops the rows after its checkpoint (train_job/metrics.py) and logs those steps again
    with db.session() as s:
        s.exec(delete(JobMetric).where(JobMetric.job_id == job.id, JobMetric.step > 2))
        s.commit()
    add(job.id, [(3, "loss", 3.5), (3, "grad_norm", 0.25)])
    reads.clear()
    assert c.refresh() is True and reads[-1] == 0  # the count did not add up: all read again
    assert c.series("loss")[job.id][1].tolist() == [1.0, 2.0, 3.5]
    assert c.series("grad_norm")[job.id][1].tolist() == [0.5, 1.0, 0.25]
    assert c.mark == (max_id(job.id), 6)


def max_id(job_id: int) -> int:
    with db.session() as s:
        return max(s.exec(select(JobMetric.id).where(JobMetric.job_id == job_id)).all())


def test_monitor_draws_a_long_run_thinned_says_so_and_draws_again_only_when_rows_arrive(tiny_llama, monkeypatch):
    from backend.specs import CptSpec, DataSource

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(CptSpec(model="tiny", name="long", data=[DataSource(source="builtin:facts-corpus")]))
    values = [2.0 + (s % 7) / 10 for s in range(1, 6001)]
    values[4321] = 50.0  # a spike in grad_norm
    add(job.id, [(s, "grad_norm", v) for s, v in enumerate(values, 1)] + [(10, "eval_loss", 1.0)])
    made = []  # the long lines thinned: once each time the grad_norm chart is made
    real = figures.thin
    monkeypatch.setattr(figures, "thin", lambda xs, ys: made.append(len(xs)) or real(xs, ys))
    at = app("monitor.py")
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    grad = next(c for k, c in charts.items() if "metric_grad_norm" in k)
    assert "min/max of every 6 of 6,000 points" in grad["layout"]["title"]["text"]
    ys = grad["data"][0]["y"]
    ys = np.frombuffer(__import__("base64").b64decode(ys["bdata"]), dtype=ys["dtype"]) if isinstance(ys, dict) else ys
    assert 1000 < len(ys) <= curves.THIN_POINTS + 2 and max(ys) == 50.0 and min(ys) == 2.0  # the spike is drawn
    evals = next(c for k, c in charts.items() if "metric_eval_loss" in k)
    assert evals["layout"]["title"]["text"] == "eval_loss" and evals["data"][0]["y"] == [1.0]  # short: as before
    assert made == [6000]
    at.run()  # a refresh with no new rows: the figures drawn before
    assert made == [6000] and len(at.get("plotly_chart")) == 2
    add(job.id, [(6001, "grad_norm", 60.0)])
    at.run()
    assert made == [6000, 6001]
    grad = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "metric_grad_norm" in c.proto.id)
    assert "of 6,001 points" in grad["layout"]["title"]["text"]


def test_a_recovery_chart_of_an_evaluation_at_every_step_is_thinned_and_says_so():
    points = [(s, 3.0 - s / 5000) for s in range(5000)] + [(5000, 9.0)]  # a last spike
    fig = figures.recovery_figure(points, 2.0, "7 · cpt · up", "base model")
    assert fig.data[0].name == "7 · cpt · up (held-out loss; min/max of every 6 of 5,001 points)"
    assert len(fig.data[0].x) <= curves.THIN_POINTS + 2 and fig.data[0].mode == "lines"
    assert (fig.data[0].x[0], fig.data[0].y[0]) == (0, 3.0) and (fig.data[0].x[-1], fig.data[0].y[-1]) == (5000, 9.0)
    short = figures.recovery_figure(points[:30], 2.0, "7 · cpt · up", "base model")
    assert short.data[0].name == "7 · cpt · up (held-out loss)" and len(short.data[0].x) == 30  # as before
