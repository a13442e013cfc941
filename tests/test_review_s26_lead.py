"""Session 26 (the lead's own fixes): the Monitor's charts of a constant metric; the Evaluate form's defaults."""

from __future__ import annotations

from pages.figures import metric_figure
from tests.test_pages import tiny  # noqa: F401 (fixture)


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


def test_the_evaluate_form_starts_at_the_specs_defaults(tiny):
    """The page offered 20 items per task where `eval` and a recipe's evaluation take EvalSpec's 40: "the same
    evaluation" from the page and the command line scored other items, with another n."""
    from backend.specs import EvalSpec
    from tests.test_pages import app  # noqa: F811

    at = app("compare.py")
    fields = EvalSpec.model_fields
    assert at.number_input(key="eval_limit").value == fields["limit"].default == 40
    assert at.number_input(key="eval_max_new").value == fields["max_new_tokens"].default
    assert at.number_input(key="eval_samples").value == fields["samples"].default
