"""The score charts of the Compare page (pages/figures.py re-exports them): bars with 95 % intervals, radar,
length boxes, scores by length bin and the hallucination-by-length curves."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from backend.scoretable import higher_is_better, interval95, zero_error
from pages.figure_style import MANY as COLORS_MANY
from pages.figure_style import _lay_out_names, _titled, fits_across, name_colors, name_labels

LOWER_IS_BETTER = {"perplexity", "byte_perplexity", "word_perplexity", "bits_per_byte", "hallucination_rate",
                   "cut_off_rate", "empty_rate"}


def direction(metric: str | None) -> str:
    """Which way a metric is better, for a chart's second title line: a perplexity's bars stood like an accuracy's,
    and the tallest (the worst model) read as the best."""
    if not metric:
        return ""
    if higher_is_better(metric):
        return "higher is better"
    return "lower is better" if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else ""


def bar_figure(table, task: str, models: list[str] | None = None, subtitle: str = "", source: str = "") -> go.Figure:
    """One task's score per model (`table`: rows with model, value, and optionally stderr and n). `models`: every
    model of the page, in order: bars follow it and a model keeps its colour (name_colors) across charts even where
    another model has no score. Bars lie down when the names do not fit under them (see fits_across). A score with
    a standard error gets a 95 % interval whisker (error_y on upright bars): 0.25 against 0.15 is 5 against 3 of 20
    items, well inside each other's noise, and bars without whiskers read as a real drop. `subtitle`: a second
    title line; `source`: the task's whole name, on hover, where the title names it short (tasknames)."""
    colors = name_colors([*(models or []), *(r["model"] for r in table)])
    rank = {m: i for i, m in enumerate(colors)}
    table = sorted(table, key=lambda r: rank.get(r["model"], len(rank)))
    names, values = [r["model"] for r in table], [r["value"] for r in table]
    across = fits_across(names)
    name_ax, value_ax = ("x", "y") if across else ("y", "x")
    fig = go.Figure(go.Bar(**{name_ax: names, value_ax: values}, orientation="v" if across else "h",
                           marker_color=[colors[m] for m in names],
                           text=[f"{v:.3g}" for v in values], textposition="outside", cliponaxis=False,
                           hovertext=names, hovertemplate=f"%{{hovertext}}: %{{{value_ax}:.4g}}"
                           + (f"<br>{html.escape(source)}" if source and source != task else "") + "<extra></extra>"))
    tops = _interval_whiskers(fig, table, name_ax, value_ax)
    metrics = {r.get("metric") for r in table}
    # what the whiskers are on the second line: after a task's name on the first, it cut the name off in a half-page
    # chart ("gsm8k:gsm8k_test_sample_v2 (accuracy) — whiskers: 95 % interv")
    subtitle = "; ".join(filter(None, [direction(metrics.pop()) if len(metrics) == 1 else "", subtitle,
                                       "whiskers: 95 % interval" if tops else ""]))
    fig.update_layout(title=_titled(task, subtitle),
                      showlegend=False, margin=dict(l=10, r=10 if across else 40, t=60 if subtitle else 40,
                                                    b=80 if across else 30))
    known = [v for v in values if v is not None]
    # scores are not negative: no axis below zero (all-zero bars showed −1…1); headroom for the value labels
    value_axis = dict(range=[0, (max(known + tops) or 1) * 1.15]) if known and min(known) >= 0 else {}
    _lay_out_names(fig, names, across, 320, value_axis)
    return fig


def _interval_whiskers(fig: go.Figure, table: list[dict], name_ax: str, value_ax: str) -> list[float]:
    """A second trace with the 95 % interval (scoretable.interval95: value ± 1.96 stderr, cut at 0, or the rule of
    three's where that error is 0 at a score of 0 or 1) of the scores that have a standard error; returns the
    intervals' tops. A second trace, as leaderboard_figure's: a bar's own error array drew a perplexity's missing
    error as a certain zero."""
    shown = [(r, iv) for r in table
             if (iv := interval95(r["value"], r.get("stderr"), r.get("n") or 0, r.get("metric")))]
    if not shown:
        return []
    how = ["rule of three: ± is 0 at a score of 0 or 1"
           if zero_error(r["value"], r["stderr"], r.get("n") or 0, r.get("metric")) else "± 1.96 standard errors"
           for r, _ in shown]
    fig.add_trace(go.Scatter(**{
        name_ax: [r["model"] for r, _ in shown], value_ax: [r["value"] for r, _ in shown], "mode": "markers",
        "marker": dict(size=1, color="rgba(0,0,0,0)"), "name": "95 % interval",
        f"error_{value_ax}": dict(type="data", symmetric=False, color="#444",
                                  array=[high - r["value"] for r, (_, high) in shown],
                                  arrayminus=[r["value"] - low for r, (low, _) in shown]),
        "customdata": [[low, high, r.get("n") or "?", h] for (r, (low, high)), h in zip(shown, how)],
        "hovertemplate": f"%{{{name_ax}}}: %{{{value_ax}:.4g}}, 95 % interval [%{{customdata[0]:.3g}}, "
                         "%{customdata[1]:.3g}] over %{customdata[2]} items (%{customdata[3]})<extra></extra>"}))
    return [high for _, (_, high) in shown]


def radar_figure(scores: dict[str, dict[str, float]], models: list[str] | None = None,
                 subtitle: str = "") -> go.Figure:
    """models -> {task: accuracy-like score in [0, 1]}; `models`: the page's models in order, for name_colors;
    `subtitle`: what the scores are over, as a title (none when empty)."""
    fig = go.Figure()
    colors = name_colors([*(models or []), *scores])
    for model in (m for m in colors if m in scores):
        by_task = scores[model]
        tasks = list(by_task)
        fig.add_trace(go.Scatterpolar(r=[by_task[t] for t in tasks] + [by_task[tasks[0]]], theta=tasks + [tasks[0]],
                                      name=model, line_color=colors[model], showlegend=True))
    fig.update_layout(polar=dict(radialaxis=dict(range=[0, 1])), height=380, margin=dict(l=30, r=30, t=30, b=30))
    if subtitle:
        fig.update_layout(title=_titled("Accuracy-like tasks", subtitle), margin_t=70)
    return fig


def box_stats(values) -> dict:
    """The statistics plotly.js (box/calc.js; v4.1.1 bundled with plotly 7.1) computes for a box from its sample,
    so a box drawn from them is the box it drew from the raw values: quartilemethod "linear" (the default)
    interpolates at p·n − 0.5 (Lib.interp; numpy's "hazen", not its default), the whiskers end at the last value
    within 1.5 IQR of the box (at the quartile when none is), and the points beyond them are the outliers that
    boxpoints "outliers" (the default for a raw sample) shows. Checked against plotly.js's own calcdata in Chromium."""
    import numpy as np

    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75], method="hazen")
    tol = 1e-9 * ((v[-1] - v[0]) / (n - 1) if n > 1 else 1.0)  # Lib.findBin's tolerance at a value on the fence
    inside_low = v[v >= q1 - 1.5 * (q3 - q1) - tol]
    inside_high = v[v <= q3 + 1.5 * (q3 - q1) + tol]
    lf = min(q1, inside_low[0]) if len(inside_low) else q1
    uf = max(q3, inside_high[-1]) if len(inside_high) else q3
    return {"q1": float(q1), "median": float(med), "q3": float(q3), "lowerfence": float(lf), "upperfence": float(uf),
            "mean": float(v.mean()), "outliers": [float(x) for x in v if x < lf or x > uf]}


def length_box_figure(words: dict[str, list[int]], models: list[str] | None = None,
                      unit: str = "words") -> go.Figure:
    """Answer lengths (in `unit`, as the page's other length charts) per model, in the order and colours of
    `models` (the page's, see name_colors; else in the order of `words`, coloured by name as by_bin_figure); boxes
    lie down when the names do not fit under them (see fits_across)."""
    colors = name_colors([*(models or []), *sorted(words)])
    names = [m for m in dict.fromkeys([*(models or []), *words]) if m in words]
    across = fits_across(names)
    val, pos = ("y", "x") if across else ("x", "y")
    fig = go.Figure()
    for model in names:  # the statistics, not every answer's length: 150 models sent 66,000 values on every rerun
        st = box_stats(words[model])
        sample = {val: [st["outliers"]]} if st["outliers"] else {}  # a 2-D sample: the points beside the box
        fig.add_trace(go.Box(**{pos: [model]}, **sample, q1=[st["q1"]], median=[st["median"]], q3=[st["q3"]],
                             lowerfence=[st["lowerfence"]], upperfence=[st["upperfence"]], mean=[st["mean"]],
                             name=model, orientation="v" if across else "h", marker_color=colors[model],
                             boxmean=True, boxpoints="outliers"))  # precomputed stats default to "all" points
    fig.update_layout(title=f"Answer length ({unit})", margin=dict(l=10, r=10, t=40, b=60 if across else 30),
                      showlegend=False)
    # a length is never negative: with every answer 0 words (a model that abstains throughout) plotly's autorange
    # centred the flat boxes on an axis from -1 to 1 words
    _lay_out_names(fig, names, across, 340, dict(rangemode="nonnegative"))
    return fig


# Lines of two models with the same points lie on each other, and the one drawn last hid the other (two models that
# gave the same answers read as one): each model's markers have a symbol of their own, open so that one inside
# another shows, a line that retraces an earlier one is dashed so the earlier colour shows through, and the caption
# names the models whose points coincide (coinciding, coincide_note).
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "triangle-down", "star", "pentagon",
           "hexagon", "star-square", "bowtie"]
DASHES = ["dash", "dot", "dashdot", "longdash"]


def symbol(i: int, open_: bool = True) -> str:
    return SYMBOLS[i % len(SYMBOLS)] + ("-open" if open_ else "")


def coinciding(points: dict[str, list]) -> list[list[str]]:
    """The groups of models (each in the order of `points`) whose points are all the same, at 3 significant
    digits: drawn, each group reads as one line. `points`: model -> its (x, y, …) points."""
    same: dict[tuple, list[str]] = {}
    for model, pts in points.items():
        if pts:
            key = tuple(tuple(f"{v:.3g}" if isinstance(v, float) else v for v in p) for p in sorted(pts))
            same.setdefault(key, []).append(model)
    return [ms for ms in same.values() if len(ms) > 1]


def coincide_note(groups: list[list[str]]) -> str:
    """The caption's words for coinciding's groups ("" when none)."""
    if not groups:
        return ""
    said = "; ".join(" and ".join(g) if len(g) == 2 else ", ".join(g[:-1]) + " and " + g[-1] for g in groups)
    return (f"Same points, drawn on top of each other: {said} (each model's own marker symbol; a retraced line "
            "dashed).")


def _dash_of(models: list[str], groups: list[list[str]]) -> dict[str, str]:
    """A dash for every model that retraces an earlier one of its group; the first keeps a solid line."""
    return {m: DASHES[(k - 1) % len(DASHES)] for g in groups for k, m in enumerate(g) if k}


def by_bin_figure(rows: list[dict], metric: str, models: list[str] | None = None,
                  unit: str = "words") -> go.Figure:
    """`metric` per answer-length bin (lengths in `unit`, as the bins' ranges), a line per model in the order and
    colours of `models` (the page's, see name_colors; else by name); each line is in the legend, also alone. Each
    model has its own marker symbol, and a line on another's points is dashed (see SYMBOLS)."""
    fig = go.Figure()
    colors = name_colors([*(models or []), *sorted({r["model"] for r in rows})])
    models = [m for m in colors if any(r["model"] == m for r in rows)]
    pts = {m: sorted((r["bin"], r[metric], r["range"], r["n"]) for r in rows if r["model"] == m) for m in models}
    dash = _dash_of(models, coinciding({m: [p[:2] for p in v] for m, v in pts.items()}))
    for i, (m, label) in enumerate(zip(models, name_labels(models))):
        fig.add_trace(go.Scatter(x=[p[2] for p in pts[m]], y=[p[1] for p in pts[m]], mode="lines+markers",
                                 name=label, text=[f"n={p[3]}" for p in pts[m]], hovertext=[m] * len(pts[m]),
                                 hovertemplate="%{hovertext}<br>%{x}: %{y:.3g} (%{text})<extra></extra>",
                                 line=dict(color=colors[m], dash=dash.get(m, "solid")),
                                 marker=dict(symbol=symbol(i), size=10, color=colors[m],
                                             line=dict(width=2, color=colors[m])),
                                 showlegend=True))
    # The x axis is categorical (the bins' ranges): without an explicit order Plotly orders them as they first
    # appear, so a model missing a short bin pushed that bin after the longer ones.
    order = [rng for _, rng in sorted({(r["bin"], r["range"]) for r in rows})]
    fig.update_layout(title=f"{metric.replace('_', ' ')} by answer length", yaxis=dict(range=[0, 1]),
                      xaxis=dict(categoryorder="array", categoryarray=order, title=f"answer length ({unit})"),
                      margin=dict(l=10, r=10, t=40, b=60))
    _legend_by_size(fig, name_labels(models), 340)
    return fig


def bin_coincide_note(rows: list[dict], metric: str) -> str:
    """coincide_note for by_bin_figure's lines."""
    by_model: dict[str, list] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append((r["bin"], r[metric]))
    return coincide_note(coinciding(by_model))


SIDE_ENTRIES = 16  # a legend at the right, one entry a line, up to this many; past it, below the plot in rows
LEGEND_ROW_PX = 20
HALF_WIDTH_PX = 460  # a chart in one of the Compare page's two columns (1400 px window)
PAGE_WIDTH_PX = 940  # a page-wide one
ENTRY_CHAR_PX = 7  # a legend character at plotly's 12 px font, rounded up; 5 more for the entry's symbol


def _legend_by_size(fig: go.Figure, entries: list[str], height: int, side: int = SIDE_ENTRIES,
                    width: int = HALF_WIDTH_PX, colours: int | None = None) -> None:
    """A legend of many entries under the chart scrolled and squeezed the plot to a strip: past what fits across,
    it goes to the right, one line per entry, and the chart grows with it; past SIDE_ENTRIES (79 models: the right
    legend took three quarters of a half-page column and left the plot a 140 px strip) it goes under the plot in
    rows of as many as fit across, and the chart grows by those rows, the plot keeping its height; past the 24
    colours (name_colors) a colour names no one entry, and the legend gives way to the hover text. `side`: the
    entries a legend at the right may hold; `width`: the chart's, in pixels; `colours`: the models (a colour each)
    the entries are of, where not one an entry."""
    if fits_across(entries):
        fig.update_layout(height=height, legend=dict(orientation="h", y=-0.3))
    elif len(entries) <= side:
        fig.update_layout(height=max(height, 120 + LEGEND_ROW_PX * len(entries)),
                          legend=dict(orientation="v", x=1.02, y=1))
    elif (colours or len(entries)) > len(COLORS_MANY):
        fig.update_layout(height=height, showlegend=False)
        fig.add_annotation(text=f"{colours or len(entries)} models, colours repeat: hover a line for its name",
                           showarrow=False, xref="paper", yref="paper", x=0, y=1, xanchor="left", yanchor="bottom",
                           font=dict(size=11, color="#666"))
    else:  # entries of one width (the longest name as the axes cut it), as many a row as fit across
        entry_px = (max(map(len, entries)) + 5) * ENTRY_CHAR_PX
        legend_px = LEGEND_ROW_PX * -(-len(entries) // max(1, width // entry_px))
        fig.update_layout(height=height + legend_px, margin_b=80 + legend_px,
                          legend=dict(orientation="h", x=0, xanchor="left", y=-80 / (height - 100), yanchor="top",
                                      entrywidth=entry_px, maxheight=legend_px + LEGEND_ROW_PX))


LOG_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


def hallucination_length_figure(curves: dict, rate: str = "hallucination rate",
                                models: list[str] | None = None) -> go.Figure:
    """`rate` (the rate the curves hold: hallucination, or not correct) against answer length per model: observed
    rates in length bins (markers, size by the number of answers) and the logistic model's fitted curve (lines).
    Curves that lie on each other while the markers sit at different lengths mean the gap is length; curves apart
    mean it is the model. `models`: every model of the page, in order, so a model keeps its colour across charts.
    Each model's markers have a symbol of their own, and a fitted curve on another's is dashed (see SYMBOLS)."""
    fig = go.Figure()
    shown = {p["model"] for p in curves["observed"]} | {p["model"] for p in curves["fitted"]}
    colors = name_colors([*(models or []), *sorted(shown)])
    models = [m for m in colors if m in shown]
    dash = _dash_of(models, coinciding({m: [(p["tokens"], p["rate"]) for p in curves["fitted"] if p["model"] == m]
                                        for m in models}))
    entries = []  # the legend's, names cut as every other chart cuts them (two per model: whole, they squeezed it)
    for i, (m, label) in enumerate(zip(models, name_labels(models))):
        color = colors[m]
        obs = [p for p in curves["observed"] if p["model"] == m]
        fit = [p for p in curves["fitted"] if p["model"] == m]
        if fit:
            entries.append(f"{label} (model)")
            fig.add_trace(go.Scatter(x=[p["tokens"] for p in fit], y=[p["rate"] for p in fit], mode="lines",
                                     name=entries[-1], line=dict(color=color, dash=dash.get(m, "solid")),
                                     showlegend=True, hovertext=m,
                                     hovertemplate="%{hovertext} (model)<br>%{x:.3g} tokens: %{y:.3g}<extra></extra>"))
        entries.append(f"{label} (observed)")
        fig.add_trace(go.Scatter(x=[p["tokens"] for p in obs], y=[p["rate"] for p in obs], mode="markers",
                                 name=entries[-1], marker=dict(color=color, symbol=symbol(i), line=dict(width=2),
                                                               size=[6 + 2 * p["n"] ** 0.5 for p in obs]),
                                 text=[f"n={p['n']}" for p in obs], hovertext=[m] * len(obs), showlegend=True,
                                 hovertemplate="%{hovertext}<br>%{x:.3g} tokens: %{y:.3g} (%{text})<extra></extra>"))
    fig.update_layout(title=f"{rate[:1].upper()}{rate[1:]} against answer length",
                      yaxis=dict(range=[-0.05, 1.05]),  # rates of 0 and 1 are common: keep their markers whole
                      xaxis=dict(type="log", title="answer length (tokens, log scale)", tickvals=LOG_TICKS,
                                 ticktext=[f"{t:g}" for t in LOG_TICKS]),  # plotly's own read 20, 30 as "2 3"
                      yaxis_title=rate, margin=dict(l=10, r=10, t=40, b=60))
    # page-wide, two entries a model: at the right for up to SIDE_ENTRIES models
    _legend_by_size(fig, entries, 360, side=2 * SIDE_ENTRIES, width=PAGE_WIDTH_PX, colours=len(models))
    return fig


def curves_coincide_note(curves: dict) -> str:
    """coincide_note for hallucination_length_figure: the models whose observed points and fitted curve are alike."""
    by_model: dict[str, list] = {}
    for kind in ("observed", "fitted"):
        for p in curves[kind]:
            by_model.setdefault(p["model"], []).append((kind, p["tokens"], p["rate"]))
    return coincide_note(coinciding(by_model))
