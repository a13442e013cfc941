"""Session 26 (the lead's own fixes): the Monitor's charts of a constant metric; the Evaluate form's defaults; the
metric-reads bench; a third walk's findings (a shrinking stack drawn as growth, messages naming the fix and option)."""

from __future__ import annotations

import pytest

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


def test_the_metric_reads_bench_prints_its_table_and_fails_on_a_difference(monkeypatch, capsys):
    """bench/bench_metric_reads.py times the reads before and after the (job_id, name, step) index in one run; a path
    whose values differ from the other's makes it exit 1."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_metric_reads.py"
    spec = importlib.util.spec_from_file_location("bench_metric_reads", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["bench_metric_reads.py", "--jobs", "6", "--big-steps", "40", "--small-steps", "5", "--rounds", "1"]
    monkeypatch.setattr(sys, "argv", args)
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("260 metric rows, 6 jobs (one of 40 logged steps), best of 1")
    assert [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| names") or
            line.startswith("| curves") or line.startswith("| recovery")] == [
        "| names, the long run", "| names, 5 short runs", "| curves 'loss', the long run",
        "| curves 'loss', 5 short runs", "| recovery points, the long run"]
    real = bench.old_curves
    monkeypatch.setattr(bench, "old_curves", lambda ids, metric: {**real(ids, metric), ids[0]: []})
    assert bench.main() == 1
    assert "values differ between the two paths: curves 'loss', the long run, curves 'loss', 5 short runs" in \
        capsys.readouterr().out


def test_a_stack_smaller_than_its_base_is_drawn_as_a_decrease(tiny, monkeypatch):
    """Slices may stack fewer layers than the base ([0, 2) + [5, 6) of a 6-layer model: 3): the page showed "+-3"
    and "×0.62" with Streamlit's green up arrows (the arrow follows the delta's sign)."""
    import pandas as pd
    import streamlit as st

    from tests.test_pages import app  # noqa: F811

    def shrunk(rows, **kw):  # what a user typed into the slices table (AppTest cannot edit a data editor)
        return pd.DataFrame([{"source": 0, "start": 0, "end": 2}, {"source": 0, "start": 5, "end": 6}])

    at = app()
    grown = {m.label: m.proto.delta for m in at.metric}
    assert grown["Layers n → s"] == "+2" and grown["Parameters after"].startswith("+")
    monkeypatch.setattr(st, "data_editor", shrunk)
    at.radio(key="method").set_value("slices").run()
    shown = {m.label: (m.value, m.proto.delta) for m in at.metric}
    assert shown["Layers n → s"] == ("6 → 3", "-3")
    assert shown["Parameters after"][1].startswith("-") and shown["Parameters after"][1].endswith(")")


def test_bad_inputs_name_the_fix_and_the_option(tiny_llama, tmp_path):
    """A GGUF file given as a base said only "neither a registered model nor a model folder"; `--groups 0` said
    llama-pro "needs groups" though it was given; synth-math's range errors named spec fields (num_seeds) that no
    option of the command has."""
    from backend.specs import UpscaleSpec
    from tests.test_cli_runner import here

    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    r = here("upscale", "--base", str(gguf), "--m", "1")
    assert r.returncode == 2 and f"{str(gguf)!r} is a file, not a model folder: import it first (python -m backend " \
        "models import FILE.gguf, or the Models page), then give the registered name." in r.stderr
    with pytest.raises(ValueError, match=r"groups=0: groups must be at least 1\."):
        UpscaleSpec(base=str(tiny_llama), method="llama-pro", groups=0)
    with pytest.raises(ValueError, match=r"method 'llama-pro' needs groups \(--groups"):
        UpscaleSpec(base=str(tiny_llama), method="llama-pro")
    r = here("synth-math", "--seeds", "0", "--batch-size", "0")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: --seeds: Input should be greater than or equal to 1",
        "--batch-size: Input should be greater than or equal to 1"]
