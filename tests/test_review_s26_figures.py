"""Session 26: the Monitor's charts of a metric whose every value is the same."""

from __future__ import annotations

from pages.figures import metric_figure


def test_a_lone_or_constant_value_sits_inside_an_axis_around_it():
    """A one-point learning_rate chart (2e-05 at step 1) got plotly's −1…1 axis: the point sat on the 0 tick."""
    lone = metric_figure({"4 · sft · b": [(1, 2e-5)]}, "learning_rate").layout.yaxis
    assert list(lone.range) == [1e-5, 3.0000000000000004e-5] and lone.exponentformat == "e"
    both = metric_figure({"a": [(1, 4.0), (2, 4.0)], "b": [(1, 4.0)]}, "loss").layout.yaxis  # constant, two jobs
    assert list(both.range) == [2.0, 6.0] and both.exponentformat == "B"
    assert list(metric_figure({"a": [(1, 0.0)]}, "x").layout.yaxis.range) == [-1.0, 1.0]
    # values that differ, a nan among equal values, an empty chart: plotly's own autorange
    assert metric_figure({"a": [(1, 2e-5), (2, 1e-5)]}, "learning_rate").layout.yaxis.range is None
    assert metric_figure({"a": [(1, float("nan"))]}, "loss").layout.yaxis.range is None
    assert metric_figure({}, "loss").layout.yaxis.range is None
