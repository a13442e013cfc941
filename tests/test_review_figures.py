"""Defects a user's walk found in the charts (pages/figures.py, pages/monitor.py): one job or model had a different
colour in each chart of a page, a chart of one job drew it without a legend, the recovery chart's long title ran
under the chart's toolbar, a lone point at step 0 sat on a −1…1 axis, and legends grew into the "step" title —
each pinned by a test that fails without its fix. The tests read the figures' layout and traces, not pixels."""

from __future__ import annotations

import json

import pytest

from backend import registry, runner
from pages import figures
from pages.figures import (AXIS_PX, LEGEND_ROW_PX, MODEBAR_PX, PALETTE, REFERENCE, STEP_PLOT_PX, TITLE_CHARS,
                           bar_figure, by_bin_figure, length_box_figure, metric_figure, radar_figure, recovery_figure)
from storage import db
from storage.models import JobMetric
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def colours(fig: dict) -> dict[str, str]:
    """Trace name -> line or marker colour of a figure's JSON (as st.plotly_chart hands it to the browser)."""
    return {t["name"]: (t.get("line") or {}).get("color") or t["marker"]["color"] for t in fig["data"]}


# ---- 1. a name has one colour in every chart of a page ------------------------------------------------------------

def test_monitor_gives_each_job_its_colour_of_the_selection_in_every_chart(tiny):
    from backend.specs import CptSpec, DataSource

    cpt, sft, dpo = (runner.submit(CptSpec(model="tiny", name=n, data=[DataSource(source="builtin:facts-corpus")]))
                     for n in ("up-cpt", "up-sft", "up-dpo"))
    rows = [(cpt, 0, "reference_eval_loss", 4.0), (cpt, 0, "eval_loss", 6.0), (cpt, 3, "eval_loss", 4.5)]
    rows += [(job, step, "loss", 5.0 - step) for job in (cpt, sft, dpo) for step in (1, 2, 3)]
    rows += [(dpo, step, "rewards/chosen", 0.1 * step) for step in (1, 2)]  # a metric only DPO logs
    with db.session() as s:
        s.add_all(JobMetric(job_id=job.id, step=step, name=name, value=value) for job, step, name, value in rows)
        s.commit()
    at = app("monitor.py")
    at.multiselect(key="monitor_jobs").set_value([dpo.id, sft.id, cpt.id]).run()  # DPO chosen first
    assert not at.exception, at.exception
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    label = {j.id: f"{j.id} · cpt · {j.spec['name']}" for j in (cpt, sft, dpo)}
    want = {label[dpo.id]: PALETTE[0], label[sft.id]: PALETTE[1], label[cpt.id]: PALETTE[2]}  # selection order
    recovery = next(c for k, c in charts.items() if "recovery" in k)
    assert colours(recovery) == {f"{label[cpt.id]} (held-out loss)": PALETTE[2]}  # was PALETTE[1] for any job
    assert recovery["layout"]["shapes"][0]["line"]["color"] == REFERENCE  # the base model: no job's colour
    loss = next(c for k, c in charts.items() if "metric_loss" in k)
    assert colours(loss) == want and [t["name"] for t in loss["data"]] == list(want)  # legend in selection order
    rewards = next(c for k, c in charts.items() if "metric_rewards/chosen" in k)
    assert colours(rewards) == {label[dpo.id]: PALETTE[0]}
    assert rewards["data"][0]["showlegend"] is True  # one trace, still named (plotly hides a one-trace legend)


def test_compare_charts_give_a_model_the_colour_of_its_place_on_the_page():
    page = ["base", "up-cpt", "up-sft", "merge"]  # the page's order
    box = length_box_figure({"merge": [5, 9], "up-cpt": [3, 4], "base": [7, 8]}, models=page)  # not every model
    bins = by_bin_figure([{"model": m, "bin": 0, "range": "1–9 words", "accuracy": 0.5, "n": 2}
                          for m in ("up-sft", "merge")], "accuracy", models=page)
    bars = bar_figure([{"model": "merge", "value": 0.4}, {"model": "up-sft", "value": 0.2}], "gsm8k", models=page)
    radar = radar_figure({"up-cpt": {"a": 0.1, "b": 0.2, "c": 0.3}}, models=page)
    want = dict(zip(page, PALETTE))
    assert {t.name: t.marker.color for t in box.data} == {m: want[m] for m in ("base", "up-cpt", "merge")}
    assert [t.name for t in box.data] == ["base", "up-cpt", "merge"]  # boxes in the page's order
    assert {t.name: t.line.color for t in bins.data} == {m: want[m] for m in ("up-sft", "merge")}
    assert dict(zip(bars.data[0].y if bars.data[0].orientation == "h" else bars.data[0].x,
                    bars.data[0].marker.color)) == {m: want[m] for m in ("up-sft", "merge")}
    assert {t.name: t.line.color for t in radar.data} == {"up-cpt": want["up-cpt"]}
    assert radar.data[0].showlegend and bins.data[0].showlegend  # a lone line keeps its legend entry


def test_length_charts_without_the_page_order_still_agree_by_name():
    """The box plot followed its dict's order (the order answers were stored), the by-length chart the names'."""
    box = length_box_figure({"zeta": [5], "alpha": [3], "mid": [4]})
    bins = by_bin_figure([{"model": m, "bin": 0, "range": "1–9", "accuracy": 0.5, "n": 1} for m in ("mid", "zeta")],
                         "accuracy")
    box_colour = {t.name: t.marker.color for t in box.data}
    assert list(box_colour) == ["zeta", "alpha", "mid"]  # the boxes keep the order they were given in
    assert box_colour == {"alpha": PALETTE[0], "mid": PALETTE[1], "zeta": PALETTE[2]}
    assert {t.name: t.line.color for t in bins.data} == {"mid": PALETTE[0], "zeta": PALETTE[1]}  # its own two


# ---- 2. the Monitor's charts: axis from step 0, title clear of the toolbar, legend clear of the axis title --------

def test_a_lone_point_at_step_0_shows_on_an_axis_from_0():
    fig = metric_figure({"1 · cpt · up": [(0, 2.0)]}, "eval_loss")
    assert list(fig.layout.xaxis.range) == [0, 1] and fig.layout.xaxis.dtick == 1  # was autorange: −1 … 1
    assert "markers" in fig.data[0].mode and fig.data[0].cliponaxis is False  # the marker on the edge kept whole
    rec = recovery_figure([(0, 6.0)], 4.0, "1 · cpt · up", "base model")
    assert list(rec.layout.xaxis.range) == [0, 1]
    steps = metric_figure({"a": [(1, 3.0), (2, 2.5)], "b": [(1, 1.0), (6, 0.5)]}, "loss").layout.xaxis
    assert list(steps.range) == [0, 6] and steps.dtick == 1  # whole steps, not 1.2, 1.4 …
    assert metric_figure({"a": [(s, 1.0) for s in range(0, 500, 10)]}, "loss").layout.xaxis.dtick is None


def test_recovery_title_sits_under_the_toolbar_band_and_stays_short():
    label = "12 · cpt · SmolLM2-135M-Instruct-dus-m8-cpt-from-the-long-run-of-december"
    fig = recovery_figure([(0, 6.0), (10, 4.5)], 4.0, label, "base model")
    title = fig.layout.title
    assert title.yref == "container" and title.yanchor == "top"
    assert (1 - title.y) * fig.layout.height == pytest.approx(MODEBAR_PX)  # was at the top, under the toolbar
    assert len(title.text) <= TITLE_CHARS and title.text.startswith("Recovery of 12 · cpt") \
        and title.text.endswith("december")
    assert "base model" in title.subtitle.text
    assert fig.layout.margin.t >= MODEBAR_PX + 50  # room for the title and its subtitle below the band
    assert fig.data[0].name == f"{label} (held-out loss)" and fig.data[0].showlegend  # the whole label, named


@pytest.mark.parametrize("jobs", [1, 3, 6])
def test_the_legend_hangs_under_the_step_title_and_the_plot_keeps_its_height(jobs):
    fig = metric_figure({f"{k} · sft · job-{k}": [(1, 1.0), (2, 0.5)] for k in range(jobs)}, "loss")
    lay = fig.layout
    legend_top = round(lay.legend.y * lay.height, 6)  # px from the figure's foot
    assert lay.legend.yref == "container" and lay.legend.yanchor == "top"  # grows down, not up into the title
    assert legend_top <= lay.margin.b - AXIS_PX  # below the tick labels and the "step" title
    assert legend_top >= LEGEND_ROW_PX * jobs  # every entry, one a row, inside the figure
    assert lay.height - lay.margin.t - lay.margin.b == STEP_PLOT_PX  # more jobs: a taller figure, same plot
    alone = metric_figure({"0 · sft · job-0": [(1, 1.0)]}, "rewards/chosen", order=[f"{k} · sft · job-{k}"
                                                                                  for k in range(jobs)])
    assert alone.layout.height == lay.height  # a chart of fewer jobs lines up with its neighbour


def test_one_colour_helper_keeps_order_and_cycles():
    assert figures.name_colors(["b", "a", "b", "c"]) == {"b": PALETTE[0], "a": PALETTE[1], "c": PALETTE[2]}
    many = figures.name_colors(f"m{i}" for i in range(len(figures.MANY) + 1))
    assert many[f"m{len(figures.MANY)}"] == figures.MANY[0]  # past 24 names the colours come round again


def test_more_names_than_the_palette_still_get_distinct_colours():
    """Two of nine models, eight places apart, shared a colour in every chart of the page (review finding)."""
    names = [f"m{i}" for i in range(24)]
    assert len(set(figures.name_colors(names).values())) == 24
    assert list(figures.name_colors(names[:8]).values()) == PALETTE  # up to 8 names: the page's own palette
