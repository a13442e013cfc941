"""Plotly figures for the pages (plotly only, no streamlit, so they can be checked without a browser).

The charts' shared style (palette, names on axes) is in figure_style.py and the Compare page's score charts in
figure_scores.py; every name is imported from here."""

from __future__ import annotations

import plotly.graph_objects as go

from backend.curves import THIN_POINTS, thin
from backend.specs import CptSpec
from pages.figure_scores import (LOG_TICKS, LOWER_IS_BETTER, bin_coincide_note, box_stats, by_bin_figure,  # noqa: F401
                                 curves_coincide_note, direction, bar_figure, hallucination_length_figure,
                                 length_box_figure, radar_figure)
from pages.figure_style import (ACROSS_CHARS, DROPPED, IDENTITY, LABEL_CHARS, MANY, NAME_CHARS,  # noqa: F401
                                PALETTE, REFERENCE, ROW_PX, _cells, _lay_out_names, _name_axis, _titled,
                                fits_across, name_colors, name_labels, name_width, short_name)


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


def _value_axis(values) -> dict:
    """The y axis of a chart whose every value is the same (a lone first point, a constant learning rate): around
    that value, ±50 %. Left to plotly such a chart got a −1…1 axis, on which a learning rate of 2e-05 sat on 0."""
    found = {float(v) for v in values if v is not None}
    if len(found) != 1:
        return {}
    (v,) = found
    if v != v or v in (float("inf"), float("-inf")):  # nan / ±inf: nothing to centre on
        return {}
    pad = abs(v) / 2 or 1.0
    return dict(range=[v - pad, v + pad], exponentformat="e" if 0 < abs(v) < 1e-3 else "B")


def _legend_below(fig: go.Figure, rows: int, top: int, plot_px: int = STEP_PLOT_PX) -> None:
    """The legend under the x axis title, one trace a row growing downwards, and room for `rows` of them. Anchored at
    its bottom (plotly's default below the plot) a legend of three jobs grew up into the "step" title."""
    legend_px = LEGEND_ROW_PX * rows + 10
    height = top + plot_px + AXIS_PX + legend_px
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=AXIS_PX + legend_px),
                      legend=dict(orientation="v", yref="container", yanchor="top", y=legend_px / height, x=0))


def metric_figure(series: dict[str, list[tuple[int, float]] | tuple], metric: str,
                  order: list[str] | None = None) -> go.Figure:
    """One line per job for one logged metric. `order`: the page's job labels as selected, for name_colors; each
    line is in the legend, also alone (a DPO-only chart drew DPO in blue, unnamed, beside charts where blue was CPT).
    A line is given as (step, value) pairs, or as a (steps, values) tuple of arrays (backend/curves.py)."""
    colors = name_colors([*(order or []), *series])
    fig = go.Figure()
    longest = (0, 1)  # (points, every) of the longest line drawn thinned
    for label in colors:
        if series.get(label):
            xs, ys = series[label] if isinstance(series[label], tuple) else zip(*series[label])
            if len(xs) > THIN_POINTS:  # a long run: each run of `every` points as its min and max (backend/curves.py)
                n, (xs, ys, every) = len(xs), thin(xs, ys)
                longest = max(longest, (n, every))
            elif hasattr(xs, "tolist"):  # short arrays: as plain numbers in the chart's JSON, as pairs are
                xs, ys = xs.tolist(), ys.tolist()
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 40 else "lines", name=label,
                                     line_color=colors[label], showlegend=True, cliponaxis=False))
    # said on the title's line: a thinned chart keeps the height of its neighbour in the page's other column
    note = (f" <span style='font-size:11px;font-weight:normal;color:grey'>min/max of every {longest[1]} of "
            f"{longest[0]:,} points</span>" if longest[0] else "")
    fig.update_layout(title=metric + note, xaxis=_step_axis(x for trace in fig.data for x in trace.x),
                      yaxis=_value_axis(y for trace in fig.data for y in trace.y))
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
    thinned = ""
    if len(xs) > THIN_POINTS:  # evaluated at every step of a long run: drawn as metric_figure draws it
        n, (xs, ys, every) = len(xs), thin(xs, ys)
        thinned = f"; min/max of every {every} of {n:,} points"
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines" if thinned else "lines+markers",
                             name=f"{label} (held-out loss{thinned})",
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
