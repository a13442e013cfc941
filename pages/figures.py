"""Plotly figures for the pages (plotly only, no streamlit, so they can be checked without a browser)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

from backend.scoretable import higher_is_better, interval95, zero_error
from backend.specs import CptSpec

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D"]
DROPPED = "#D9D9D9"
IDENTITY = "#2CA02C"
REFERENCE = "#888888"  # a reference line (the base model's loss): grey, as no palette colour may stand for it


# More names than PALETTE has colours: plotly's 24 distinct ones (two names 8 places apart shared a colour).
MANY = qualitative.Dark24


def name_colors(names) -> dict[str, str]:
    """Each name (job label, model name) with its colour, given in the page's order (its selection): every chart of
    a page colours from this, so a job or model looks the same in all of them. Each chart had counted its own
    traces, and one job was orange in one chart and blue, the colour of another job, in the next. Past 8 names the
    24 of MANY: names repeat a colour only past 24."""
    names = list(dict.fromkeys(names))
    palette = PALETTE if len(names) <= len(PALETTE) else MANY
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


# Model names on a chart's category axis. Under vertical bars the names sit side by side and were cut off or ran
# into each other with many models (16 on the compare page); so bars lie down, one row per model, once the names
# do not fit across the chart, and a long name is cut in the middle on the axis, whole in the hover text.
LABEL_CHARS = 28  # longest name shown whole on an axis
ACROSS_CHARS = 56  # characters that fit side by side under a half-page chart (12 px text: about 400 px)
ROW_PX = 26  # height of one model's row when the bars lie down


NAME_CHARS = 56  # what the score tables' pinned model column (400 px at most: name_width) shows of a name


def name_width(names) -> int:
    """Pixels for the pinned model column: its longest name (about 7 px a character in the table's font), at least
    the header's, at most the 400 px NAME_CHARS fill. A fixed 400 px left two short names beside a scrolled-off
    half of the scores."""
    return min(max(7 * max(map(len, names), default=0) + 24, 100), 400)


def short_name(name: str, width: int = LABEL_CHARS) -> str:
    """`name` cut to `width` characters in the middle: models made from one base share the start and differ at the
    end (…-sft, …-dpo-v2), so both ends stay."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def fits_across(names: list[str], chars: int = ACROSS_CHARS) -> bool:
    """Whether the names, cut by short_name, fit side by side (with a gap each) under a chart `chars` wide."""
    return sum(len(short_name(n)) + 2 for n in names) <= chars


def name_labels(names: list[str]) -> list[str]:
    """The names as a chart shows them: cut by short_name, or all whole where two would read alike."""
    labels = [short_name(n) for n in names]
    return labels if len(set(labels)) == len(set(names)) else list(names)


def _name_axis(names: list[str]) -> dict:
    """A category axis of model names in the page's order: the ticks show name_labels and automargin moves the
    plot over for them rather than clip them."""
    return dict(categoryorder="array", categoryarray=list(names), tickmode="array", tickvals=list(names),
                ticktext=name_labels(names), automargin=True)


def _lay_out_names(fig: go.Figure, names: list[str], across: bool, height: int, value_axis: dict) -> None:
    """Place the name axis under the chart (`across`) or down its side (first model on top, the chart growing by
    a row per model), the values on the other axis; hover labels keep names whole (plotly cut them at 15)."""
    axis = _name_axis(names)
    if across:
        fig.update_layout(height=height, xaxis=axis, yaxis=value_axis)
    else:
        fig.update_layout(height=max(height, 110 + ROW_PX * len(names)), yaxis=axis | dict(autorange="reversed"),
                          xaxis=value_axis)
    fig.update_layout(hoverlabel=dict(namelength=-1))


def _cells(fig: go.Figure, row: str, colors: list[str], texts: list[str], hovers: list[str]) -> None:
    n = len(colors)
    texts = texts if n <= 24 else None  # too narrow for two-digit labels: the hover text names every layer
    fig.add_trace(go.Bar(y=[row] * n, x=[1] * n, base=list(range(n)), orientation="h", marker_color=colors,
                         marker_line_color="white", marker_line_width=1, text=texts, textposition="inside",
                         insidetextanchor="middle", textfont_size=9, textangle=0, hovertext=hovers, hoverinfo="text", showlegend=False))


def layer_map_figure(plan) -> go.Figure:
    """Rows: each piece of the stack drawn over its source's layers (kept coloured, dropped grey), then the
    stacked result with every new layer labelled by the source layer it copies. For DUS: copy A, copy B, result."""
    fig = go.Figure()
    pieces = plan.pieces()
    rows: list[str] = []
    if len(pieces) <= 6:
        for k, p in enumerate(pieces):
            n = plan.sources[p["source"]].num_layers
            src = plan.source_names[p["source"]].split("/")[-1]
            name = (f"copy {'AB'[k]}" if plan.spec.method == "dus" else f"piece {k + 1}") + \
                f" · {src} [{p['start']}, {p['end']})"
            colors = [PALETTE[k % len(PALETTE)] if p["start"] <= i < p["end"] else DROPPED for i in range(n)]
            hovers = [f"{src} layer {i}: {'kept' if p['start'] <= i < p['end'] else 'dropped'}" for i in range(n)]
            _cells(fig, name, colors, [str(i) for i in range(n)], hovers)
            rows.append(name)
        piece_of_slot = {i: k for k, p in enumerate(pieces) for i in range(p["first_slot"], p["last_slot"] + 1)}
        colors = [IDENTITY if plan.slots[i].identity else PALETTE[piece_of_slot[i] % len(PALETTE)]
                  for i in range(plan.s)]
    else:  # many pieces (LLaMA Pro): one row per source, then the result
        for k, info in enumerate(plan.sources):
            used = {sl.layer for sl in plan.slots if sl.source == k}
            name = f"source {k} · {plan.source_names[k].split('/')[-1]}"
            colors = [PALETTE[k] if i in used else DROPPED for i in range(info.num_layers)]
            _cells(fig, name, colors, [str(i) for i in range(info.num_layers)],
                   [f"layer {i}" for i in range(info.num_layers)])
            rows.append(name)
        colors = [IDENTITY if sl.identity else PALETTE[sl.source] for sl in plan.slots]
    result = f"result · {plan.s} layers"
    texts = [("+" if sl.identity else "") + str(sl.layer) for sl in plan.slots]
    hovers = [f"new layer {i} ← source {sl.source} layer {sl.layer}" + (" (identity copy)" if sl.identity else "")
              for i, sl in enumerate(plan.slots)]
    _cells(fig, result, colors, texts, hovers)
    rows.append(result)
    # what the colours mean, on the chart: green cells (LLaMA Pro) and grey ones had no legend, and hover is the
    # only way to learn that a green "+5" is a new block that changes nothing until trained
    key = "grey: layers that row leaves out" if DROPPED in {c for t in fig.data for c in t.marker.color} else ""
    if any(sl.identity for sl in plan.slots):
        key += ("; " if key else "") + ("green: added identity block (a copy of the layer before it, o_proj "
                                        "and down_proj zeroed: it changes nothing until trained)")
    fig.update_layout(barmode="overlay", height=90 + 55 * len(rows) + (20 if key else 0),
                      margin=dict(l=10, r=10, t=50 if key else 30, b=30),
                      title=dict(text=f"<sup>{key}</sup>" if key else None, x=0, xanchor="left",
                                 font=dict(size=13)),
                      xaxis=dict(title="layer position", range=[0, max(plan.s, plan.n)], dtick=4),
                      yaxis=dict(categoryorder="array", categoryarray=list(reversed(rows))),
                      uniformtext=dict(minsize=6, mode="show"))
    return fig


# Charts over training steps: the plot area keeps its height however many jobs the legend under it lists.
STEP_PLOT_PX = 220
AXIS_PX = 50  # tick labels and the "step" title under the plot
LEGEND_ROW_PX = 20  # one legend entry, one a row (job labels are long)
TITLE_CHARS = 48  # the longest title line that fits a page-wide chart in a 1000 px window (about 540 px)
MODEBAR_PX = 32  # the band at the top of a chart where plotly's toolbar (modebar) shows on hover


def _step_axis(steps) -> dict:
    """The x axis over training steps: from 0, where the first evaluation is logged (plotly put a lone point at
    step 0 in the middle of a −1…1 axis), in whole steps while they are few (not 1.2, 1.4 between steps 1 and 2)."""
    last = max(steps, default=0)
    return dict(title="step", range=[0, max(last, 1)]) | (dict(dtick=1) if last <= 10 else {})


def _legend_below(fig: go.Figure, rows: int, top: int, plot_px: int = STEP_PLOT_PX) -> None:
    """The legend under the x axis title, one trace a row growing downwards, and room for `rows` of them. Anchored at
    its bottom (plotly's default below the plot) a legend of three jobs grew up into the "step" title."""
    legend_px = LEGEND_ROW_PX * rows + 10
    height = top + plot_px + AXIS_PX + legend_px
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=AXIS_PX + legend_px),
                      legend=dict(orientation="v", yref="container", yanchor="top", y=legend_px / height, x=0))


def metric_figure(series: dict[str, list[tuple[int, float]]], metric: str,
                  order: list[str] | None = None) -> go.Figure:
    """One line per job for one logged metric. `order`: the page's job labels as selected, for name_colors; each
    line is in the legend, also alone (a DPO-only chart drew DPO in blue, unnamed, beside charts where blue was CPT)."""
    colors = name_colors([*(order or []), *series])
    fig = go.Figure()
    for label in colors:
        if series.get(label):
            xs, ys = zip(*series[label])
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 40 else "lines", name=label,
                                     line_color=colors[label], showlegend=True, cliponaxis=False))
    fig.update_layout(title=metric, xaxis=_step_axis(x for trace in fig.data for x in trace.x))
    _legend_below(fig, len(colors), top=40)  # room for every job of the page: the charts side by side line up
    return fig


def recovery_figure(points: list[tuple[int, float]], reference: float, label: str, ref_label: str,
                    order: list[str] | None = None) -> go.Figure:
    """SOLAR's story at small scale: the up-scaled model's held-out loss starts above its base's, then falls. The
    line has the job's colour of the page's other charts (`order`, as in metric_figure); the base model's is grey.
    The title sits under the band of the chart's toolbar, which covered the end of a long title, and is short
    (the job's label cut, whole in the legend)."""
    fig = go.Figure()
    xs, ys = zip(*points) if points else ((), ())
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{label} (held-out loss)",
                             line_color=name_colors([*(order or []), label])[label], showlegend=True,
                             cliponaxis=False))
    fig.add_hline(y=reference, line_dash="dash", line_color=REFERENCE,
                  annotation_text=f"{ref_label}: {reference:.3f}", annotation_position="top left")
    head = "Recovery of "
    top = MODEBAR_PX + 60  # the toolbar's band, then the title's two lines
    fig.update_layout(xaxis=_step_axis(xs), yaxis_title="eval loss")
    _legend_below(fig, 1, top=top, plot_px=260)
    fig.update_layout(title=dict(text=f"{head}{short_name(label, TITLE_CHARS - len(head))}",
                                 subtitle_text=f"held-out loss while training; dashed: {ref_label}",
                                 yref="container", yanchor="top", y=1 - MODEBAR_PX / fig.layout.height))
    return fig


def word_diff_html(old: str, new: str) -> tuple[str, str]:
    """Word-level diff: removed words struck through in red on the left, added words green on the right."""
    import difflib
    import html

    a, b = old.split(), new.split()
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old_part, new_part = html.escape(" ".join(a[i1:i2])), html.escape(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(old_part)
            right.append(new_part)
            continue
        if old_part:
            left.append(f'<span style="background:#fde2e1;text-decoration:line-through">{old_part}</span>')
        if new_part:
            right.append(f'<span style="background:#dcf5dc">{new_part}</span>')
    return " ".join(left), " ".join(right)


def length_histogram_figure(hist: dict[str, list[tuple[int, int]]], pairs: list[tuple[str, str, str]],
                            title: str, bin_words: int) -> go.Figure:
    """Overlaid histograms from (bin start, count) rows of `bin_words`-word bins; `pairs`: (column, label, colour).
    Each bar spans its bin: plotly centres a bar on its x, so a bar drawn at the bin's start sat half a bin to the
    left (questions of 4 words showed as a bar around 0 words)."""
    fig = go.Figure()
    for col, label, color in pairs:
        rows = hist.get(col, [])
        fig.add_trace(go.Bar(x=[x + bin_words / 2 for x, _ in rows], y=[n for _, n in rows], width=bin_words,
                             name=label, marker_color=color, opacity=0.6,
                             customdata=[f"{x}–{x + bin_words - 1}" for x, _ in rows],
                             hovertemplate=f"{label}: %{{customdata}} words, %{{y}} pairs<extra></extra>"))
    fig.update_layout(barmode="overlay", title=title, height=300, margin=dict(l=10, r=10, t=40, b=30),
                      xaxis_title="words", yaxis_title="pairs", legend=dict(orientation="h", y=-0.25))
    return fig


def _titled(title: str, subtitle: str) -> str:
    """A chart title with a smaller second line (what the scores are over, such as only the non-overlapping items)."""
    return f"{title}<br><sup>{subtitle}</sup>" if subtitle else title


LOWER_IS_BETTER = {"perplexity", "hallucination_rate", "cut_off_rate"}


def direction(metric: str | None) -> str:
    """Which way a metric is better, for a chart's second title line: a perplexity's bars stood like an accuracy's,
    and the tallest (the worst model) read as the best."""
    if not metric:
        return ""
    if higher_is_better(metric):
        return "higher is better"
    return "lower is better" if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else ""


def bar_figure(table, task: str, models: list[str] | None = None, subtitle: str = "") -> go.Figure:
    """One task's score per model (`table`: rows with model, value, and optionally stderr and n). `models`: every
    model of the page, in order: bars follow it and a model keeps its colour (name_colors) across charts even where
    another model has no score. Bars lie down when the names do not fit under them (see fits_across). A score with
    a standard error gets a 95 % interval whisker (error_y on upright bars): 0.25 against 0.15 is 5 against 3 of 20
    items, well inside each other's noise, and bars without whiskers read as a real drop. `subtitle`: a second
    title line."""
    colors = name_colors([*(models or []), *(r["model"] for r in table)])
    rank = {m: i for i, m in enumerate(colors)}
    table = sorted(table, key=lambda r: rank.get(r["model"], len(rank)))
    names, values = [r["model"] for r in table], [r["value"] for r in table]
    across = fits_across(names)
    name_ax, value_ax = ("x", "y") if across else ("y", "x")
    fig = go.Figure(go.Bar(**{name_ax: names, value_ax: values}, orientation="v" if across else "h",
                           marker_color=[colors[m] for m in names],
                           text=[f"{v:.3g}" for v in values], textposition="outside", cliponaxis=False,
                           hovertext=names, hovertemplate=f"%{{hovertext}}: %{{{value_ax}:.4g}}<extra></extra>"))
    tops = _interval_whiskers(fig, table, name_ax, value_ax)
    metrics = {r.get("metric") for r in table}
    subtitle = "; ".join(filter(None, [direction(metrics.pop()) if len(metrics) == 1 else "", subtitle]))
    fig.update_layout(title=_titled(task + (" — whiskers: 95 % interval" if tops else ""), subtitle),
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


def length_box_figure(words: dict[str, list[int]], models: list[str] | None = None) -> go.Figure:
    """Answer lengths per model, in the order and colours of `models` (the page's, see name_colors; else in the
    order of `words`, coloured by name as by_bin_figure); boxes lie down when the names do not fit under them (see
    fits_across)."""
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
    fig.update_layout(title="Answer length (words)", margin=dict(l=10, r=10, t=40, b=60 if across else 30),
                      showlegend=False)
    # a length is never negative: with every answer 0 words (a model that abstains throughout) plotly's autorange
    # centred the flat boxes on an axis from -1 to 1 words
    _lay_out_names(fig, names, across, 340, dict(rangemode="nonnegative"))
    return fig


def by_bin_figure(rows: list[dict], metric: str, models: list[str] | None = None) -> go.Figure:
    """`metric` per answer-length bin, a line per model in the order and colours of `models` (the page's, see
    name_colors; else by name); each line is in the legend, also alone."""
    fig = go.Figure()
    colors = name_colors([*(models or []), *sorted({r["model"] for r in rows})])
    models = [m for m in colors if any(r["model"] == m for r in rows)]
    for m, label in zip(models, name_labels(models)):
        pts = sorted((r["bin"], r[metric], r["range"], r["n"]) for r in rows if r["model"] == m)
        fig.add_trace(go.Scatter(x=[p[2] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=label, text=[f"n={p[3]}" for p in pts], hovertext=[m] * len(pts),
                                 hovertemplate="%{hovertext}<br>%{x}: %{y:.3g} (%{text})<extra></extra>",
                                 line_color=colors[m], showlegend=True))
    # The x axis is categorical (the bins' ranges): without an explicit order Plotly orders them as they first
    # appear, so a model missing a short bin pushed that bin after the longer ones.
    order = [rng for _, rng in sorted({(r["bin"], r["range"]) for r in rows})]
    fig.update_layout(title=f"{metric.replace('_', ' ')} by answer length", yaxis=dict(range=[0, 1]),
                      xaxis=dict(categoryorder="array", categoryarray=order, title="answer length (words)"),
                      margin=dict(l=10, r=10, t=40, b=60))
    _legend_by_size(fig, models, 340)
    return fig


def _legend_by_size(fig: go.Figure, entries: list[str], height: int) -> None:
    """A legend of many entries under the chart scrolled and squeezed the plot to a strip: past what fits across,
    it goes to the right, one line per entry, and the chart grows with it."""
    if fits_across(entries):
        fig.update_layout(height=height, legend=dict(orientation="h", y=-0.3))
    else:
        fig.update_layout(height=max(height, 120 + 20 * len(entries)), legend=dict(orientation="v", x=1.02, y=1))


LOG_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


def hallucination_length_figure(curves: dict, rate: str = "hallucination rate",
                                models: list[str] | None = None) -> go.Figure:
    """`rate` (the rate the curves hold: hallucination, or not correct) against answer length per model: observed
    rates in length bins (markers, size by the number of answers) and the logistic model's fitted curve (lines).
    Curves that lie on each other while the markers sit at different lengths mean the gap is length; curves apart
    mean it is the model. `models`: every model of the page, in order, so a model keeps its colour across charts."""
    fig = go.Figure()
    shown = {p["model"] for p in curves["observed"]} | {p["model"] for p in curves["fitted"]}
    colors = name_colors([*(models or []), *sorted(shown)])
    models = [m for m in colors if m in shown]
    entries = []  # the legend's, names cut as every other chart cuts them (two per model: whole, they squeezed it)
    for m, label in zip(models, name_labels(models)):
        color = colors[m]
        obs = [p for p in curves["observed"] if p["model"] == m]
        fit = [p for p in curves["fitted"] if p["model"] == m]
        if fit:
            entries.append(f"{label} (model)")
            fig.add_trace(go.Scatter(x=[p["tokens"] for p in fit], y=[p["rate"] for p in fit], mode="lines",
                                     name=entries[-1], line_color=color, showlegend=True, hovertext=m,
                                     hovertemplate="%{hovertext} (model)<br>%{x:.3g} tokens: %{y:.3g}<extra></extra>"))
        entries.append(f"{label} (observed)")
        fig.add_trace(go.Scatter(x=[p["tokens"] for p in obs], y=[p["rate"] for p in obs], mode="markers",
                                 name=entries[-1], marker=dict(color=color, size=[6 + 2 * p["n"] ** 0.5
                                                                                  for p in obs]),
                                 text=[f"n={p['n']}" for p in obs], hovertext=[m] * len(obs), showlegend=True,
                                 hovertemplate="%{hovertext}<br>%{x:.3g} tokens: %{y:.3g} (%{text})<extra></extra>"))
    fig.update_layout(title=f"{rate[:1].upper()}{rate[1:]} against answer length",
                      yaxis=dict(range=[-0.05, 1.05]),  # rates of 0 and 1 are common: keep their markers whole
                      xaxis=dict(type="log", title="answer length (tokens, log scale)", tickvals=LOG_TICKS,
                                 ticktext=[f"{t:g}" for t in LOG_TICKS]),  # plotly's own read 20, 30 as "2 3"
                      yaxis_title=rate, margin=dict(l=10, r=10, t=40, b=60))
    _legend_by_size(fig, entries, 360)
    return fig


ELO_CENTRE = 1000  # backend/arena.py centres the ratings here (Elo = 400·θ + 1000)


def leaderboard_figure(board: list[dict], title: str) -> go.Figure:
    """Ratings with their 95 % intervals, best first; bars lie down when the names do not fit under them (the chart
    is page-wide: twice the characters of a half-page one). The whiskers are a second trace holding only the models
    with an interval (low and high not None: backend/arena.py's minimum rounds): a bar's own error array would draw a
    missing one at zero width, the false certainty the table's "95 % interval" column avoids, and hiding them all
    while one new model lacked its rounds took every other model's interval off the chart."""
    names = [r["model"] for r in board]
    across = fits_across(names, 2 * ACROSS_CHARS)
    name_ax, value_ax = ("x", "y") if across else ("y", "x")
    # bars from the ratings' centre (ELO_CENTRE), not from 0: an Elo rating has no zero, and bars from 0 drew one
    # vote's 1189 against 811 as a model half as good again; from 1000 they read as above or below the middle
    fig = go.Figure(go.Bar(**{name_ax: names, value_ax: [r["score"] - ELO_CENTRE for r in board]}, base=ELO_CENTRE,
                           orientation="v" if across else "h",
                           marker_color=list(name_colors(names).values()), hovertext=names,
                           customdata=[r["score"] for r in board],
                           hovertemplate="%{hovertext}: %{customdata:.0f}<extra></extra>"))
    (fig.add_hline if across else fig.add_vline)(ELO_CENTRE, line=dict(color=REFERENCE, dash="dash", width=1))
    shown = [r for r in board if r["low"] is not None and r["high"] is not None]
    if shown:
        fig.add_trace(go.Scatter(**{
            name_ax: [r["model"] for r in shown], value_ax: [r["score"] for r in shown], "mode": "markers",
            "marker": dict(size=1, color="rgba(0,0,0,0)"), "showlegend": False, "name": "95 % interval",
            f"error_{value_ax}": dict(type="data", symmetric=False, array=[r["high"] - r["score"] for r in shown],
                                      arrayminus=[r["score"] - r["low"] for r in shown], color="#444"),
            "customdata": [[r["low"], r["high"]] for r in shown],
            "hovertemplate": f"%{{{name_ax}}}: %{{{value_ax}:.0f}} [%{{customdata[0]:.0f}}, "
                             "%{customdata[1]:.0f}]<extra></extra>"}))
    missing = len(board) - len(shown)
    fig.update_layout(title=title if not missing else
                      f"{title} ({'no intervals' if not shown else f'{missing} without an interval'}: see the table)",
                      margin=dict(l=10, r=10, t=40, b=60 if across else 30), showlegend=False)
    _lay_out_names(fig, names, across, 320, dict(title=f"Bradley–Terry (Elo scale; bars from {ELO_CENTRE})"))
    return fig


def position_bias_figure(rows: list[dict]) -> go.Figure:
    """Win rate by screen position with 95 % intervals; the dashed line is no bias (½). Wins / decisive votes are
    written above each interval's top: written 'outside' a bar, a win rate of 0 put its "0/1" on the whisker."""
    fig = go.Figure(go.Bar(x=[r["position"] for r in rows], y=[r["win_rate"] for r in rows],
                           error_y=dict(type="data", symmetric=False, array=[r["high"] - r["win_rate"] for r in rows],
                                        arrayminus=[r["win_rate"] - r["low"] for r in rows]),
                           marker_color=PALETTE[0]))
    for r in rows:
        fig.add_annotation(x=r["position"], y=r["high"], text=f"{r['wins']}/{r['decisive']}", showarrow=False,
                           yanchor="bottom")
    fig.add_hline(y=0.5, line_dash="dash", line_color="#888")
    fig.update_layout(title="Position bias: win rate by position (decisive votes)", height=300,
                      yaxis=dict(range=[0, 1.1], title="win rate"), margin=dict(l=10, r=10, t=40, b=30))
    return fig


# Where to check recovery on text the model never trained on: the Compare page's perplexity task (backend/evaluate.py).
INDEPENDENT = ("Merge & compare → Evaluate, task perplexity (data/heldout-text.txt: facts no built-in training set "
               "mentions), for the model and its base")


def held_out_words(spec: dict) -> tuple[str, str]:
    """(a recovery chart's subtitle, the note under it, on the Monitor and Recipe pages): which set the held-out loss
    is on. By default it is a share split off the training data (backend/data.py split_mix), the same templates the
    model is fitting, so it fell below the base's after 3 steps while independent perplexity barely moved; the
    chart called it only "held-out loss"."""
    given = (spec.get("eval_data") or {}).get("source")
    if given:
        return (f"held-out: {short_name(given, 32)} (the job's eval_data); dashed: base model",
                f"Held-out loss on {given}, the held-out set the job was given: it shows recovery only as far as "
                f"that set is independent of the training data. The same independent text for every model: "
                f"{INDEPENDENT}.")
    share = f"{round(100 * spec.get('eval_fraction', CptSpec.model_fields['eval_fraction'].default), 1):g} %"
    sources = ", ".join(d["source"] for d in spec.get("data") or [])
    return (f"held-out: {share} of the training data ({short_name(sources, 32)}); dashed: base model",
            f"Held-out loss on {share} of {sources}, split off the data this job trains on (the same templates and "
            "topics): it falls as the model fits that data, so dropping below the base is not recovery on its "
            f"own. For the recovery claim, score independent text: {INDEPENDENT}; or give the job a held-out set "
            "(Train → Advanced).")
