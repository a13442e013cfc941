"""What every chart of the pages shares (pages/figures.py draws them): the palette, one colour per model name,
names shortened to fit an axis, and laying out a chart whose bars stand or lie down by how long the names are."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

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


def _titled(title: str, subtitle: str) -> str:
    """A chart title with a smaller second line (what the scores are over, such as only the non-overlapping items)."""
    return f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
