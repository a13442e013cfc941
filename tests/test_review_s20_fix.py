"""Review s20, fixes: a wrapped .jsonl re-read as its rows, weights that multiply through mixes checked where they
are given, a user's model named like the built-in kept, an array around a wrapper, weights said as given, an
object without rows said in words, suffixes in capitals, and default merge names that differ only in weights."""

from __future__ import annotations

import codecs
import json
import shutil

import pytest

from backend import data, data_rows, registry

ROWS = [{"prompt": "q1", "completion": "a", "meta": 1}, {"prompt": "q2", "completion": "b", "meta": "x"}]


# ---------------------------------------------------------------- 1. a wrapped .jsonl whose column mixes types

def test_a_wrapped_jsonl_whose_column_mixes_types_is_checked_as_its_rows(tmp_path):
    """`meta` holds a number and a text: `datasets` makes it its Json type, so the rows are read again from the file
    (data_rows._json_records), which unwrapped only a .json: the wrapper was row 1 ("prompt must be text")."""
    for name in ("ok.jsonl", "ok.JSONL"):
        f = tmp_path / name
        f.write_text(json.dumps({"data": ROWS}) + "\n")
        data.check_source(str(f), "sft")  # was "ok.jsonl, row 1: prompt must be text; got NoneType (null or missing)"
        ds = data.load_source(str(f))
        assert [r["prompt"] for r in data._rows(ds, str(f))] == ["q1", "q2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"data": [{"prompt": "q", "completion": 1}, {"prompt": "q", "completion": "x"}]}))
    with pytest.raises(data.DataError) as refused:
        data.check_source(str(bad), "sft")
    assert str(refused.value) == "bad.jsonl, row 1: completion must be text; got int. Fix or remove that row."


def test_the_wrapper_of_a_utf16_file_is_found(tmp_path):
    f = tmp_path / "w16.json"
    f.write_bytes(json.dumps({"data": ROWS}).encode("utf-16"))
    assert data.file_rows_keys(f) == ["data"]  # was [] (read as UTF-8: no "{" at its start)
    assert [r["prompt"] for r in data_rows._json_records(f)] == ["q1", "q2"]
    data.check_source(str(f), "sft")
    lines = tmp_path / "two.jsonl"  # JSON Lines of several rows is no wrapper, known from its first two lines
    lines.write_text("".join(json.dumps({"data": ROWS}) + "\n" for _ in range(2)))
    assert data.file_rows_keys(lines) == [] and data.file_rows_value(lines) is None


# ---------------------------------------------------------------- 2. weights multiply through mixes

def test_a_mix_used_at_a_weight_its_members_multiply_past_the_cap_is_refused_in_the_weights_given():
    from backend.recipe.inputs import _check_rows
    from backend.recipe.spec import RecipeError
    from backend.synth.datasets import save_mix

    save_mix("b", [("builtin:alpaca-mini", 2)], "sft")
    assert data.expand([("mix:b", 5000)]) == [("builtin:alpaca-mini", 10000.0)]
    said = ("mix:b: builtin:alpaca-mini: weights multiply through mixes: 2 (builtin:alpaca-mini in mix:b) × 10000 "
            "(where mix:b is used) = 20000, which would repeat its rows over 10,000 times; lower them so that their "
            "product is at most 10,000.")
    with pytest.raises(data.DataError) as refused:  # was no error: the job failed with "weight 20000"
        data.expand([("mix:b", 10000)])
    assert str(refused.value) == said
    with pytest.raises(data.DataError) as refused:  # the job's own reading says the same
        data.mix([("mix:b", 10000)], "sft")
    assert str(refused.value) == said
    save_mix("c", [("mix:b", 3), ("builtin:orca-mini", 1)], "sft")  # nested twice: every factor named
    with pytest.raises(data.DataError) as refused:
        data.expand([("mix:c", 2000)])
    assert str(refused.value).startswith("mix:c: builtin:alpaca-mini: weights multiply through mixes: 2 "
                                         "(builtin:alpaca-mini in mix:b) × 3 (mix:b in mix:c) × 2000 (where mix:c is "
                                         "used) = 12000, which")
    with pytest.raises(data.DataError, match=r"^mix:b: weight 1e\+308 would repeat"):  # the use's own: said so
        data.expand([("mix:b", 1e308)])
    # a recipe's plan reads the stage's weight (the runner's queue check: data.expand([(d.source, d.weight)]))
    with pytest.raises(RecipeError) as refused:
        _check_rows("mix:b", "sft", "stage sft.data[0].source", set(), 10000)
    assert str(refused.value) == f"stage sft.data[0].source: {said}"
    _check_rows("mix:b", "sft", "stage sft.data[0].source", set(), 5000)


# ---------------------------------------------------------------- 3. a user's model named like the built-in

@pytest.mark.parametrize("name", ["builtin", registry.BUILTIN_NAME.lower()])
def test_a_users_model_named_like_the_builtin_is_resolved_as_theirs(tiny_llama, tmp_path, monkeypatch, name):
    def no_import(*_a, **_k):
        raise AssertionError("the built-in GGUF was imported")

    monkeypatch.setattr(registry, "gguf_to_folder", no_import)
    copy = shutil.copytree(tiny_llama, tmp_path / name)
    registry.import_folder(copy, name)
    # was: 'builtin' imported the GGUF (17 s); the case twin raised "… differs only in case"
    assert registry.resolve(name) == (copy.resolve(), name)
    assert registry.record(name).name == name


# ---------------------------------------------------------------- 4. an array around a wrapping object

def test_an_array_around_one_wrapping_object_is_a_row_not_a_wrapper(tmp_path):
    f = tmp_path / "k.json"
    f.write_text(json.dumps([{"data": ROWS}]))
    with pytest.raises(data.DataError) as refused:  # was TypeError: list indices must be integers or slices
        data.check_source(str(f), "sft")
    assert str(refused.value).startswith(f"{f}: Columns ['data'] fit no layout usable for sft.")


# ---------------------------------------------------------------- 5. weights said as given

@pytest.mark.parametrize("weight, said", [
    (10**400, "weight 1.000e+400 would repeat its rows over 10,000 times"),  # was OverflowError from math.isfinite
    (10000.0000001, "weight 10000.0000001 would repeat its rows"),  # was "weight 10000 would repeat" (`:g`)
    (1e308, "weight 1e+308 would repeat"), (float("nan"), "weight must be a positive finite number; got nan"),
    (True, "weight must be a positive finite number; got True")],
    ids=["int-1e400", "past-by-1e-7", "1e308", "nan", "bool"])
def test_a_weight_is_said_as_given(weight, said):
    with pytest.raises(data.DataError) as refused:
        data.check_weight("x.jsonl", weight)
    assert str(refused.value).startswith(f"x.jsonl: {said}")
    data.check_weight("x.jsonl", 10_000)


# ---------------------------------------------------------------- 6. an object that holds no rows where looked for

@pytest.mark.parametrize("value, said", [
    ({"data": []}, "e.json holds one JSON object whose data is an empty list: it holds no rows. Add rows to it."),
    ({"data": {"rows": ROWS}}, "e.json holds one JSON object whose rows are nested under data.rows: rows are read "
                               "from a list directly under a key (as `datasets`' field= reads them). Save that list "
                               "alone as a .json array (or JSON Lines).")])
def test_an_object_without_rows_under_a_key_says_why(tmp_path, value, said):
    f = tmp_path / "e.json"
    f.write_text(json.dumps(value))
    with pytest.raises(data.DataError) as refused:  # was "Columns ['data'] fit no layout usable for sft"
        data.check_source(str(f), "sft")
    assert str(refused.value) == said


# ---------------------------------------------------------------- 7. suffixes in capitals

def test_a_benchmark_file_with_its_suffix_in_capitals_is_read_as_records(tmp_path):
    from backend.synth.pipeline import load_benchmark

    f = tmp_path / "bench.JSONL"
    f.write_bytes(codecs.BOM_UTF8 + b'{"question": "What is 2+2?"}\n{"problem": "Name 3."}\n')
    assert load_benchmark(str(f)) == ["What is 2+2?", "Name 3."]  # was the raw JSON lines


def test_a_recipes_missing_data_file_with_its_suffix_in_capitals_is_said_missing():
    from backend.recipe.inputs import _source_fp
    from backend.recipe.spec import RecipeError

    with pytest.raises(RecipeError) as refused:  # was "… is not builtin:NAME, dataset:NAME, … a file or a Hub id"
        _source_fp("missing.JSONL", "stage sft.data[0].source", {})
    assert str(refused.value) == "stage sft.data[0].source: data file missing.JSONL does not exist."


# ---------------------------------------------------------------- 8. default merge names differing in weights

def test_long_default_merge_names_that_differ_only_in_a_weight_differ():
    from backend.specs import MergeSpec

    models = [f"model-number-{i}" for i in range(8)]
    names = {MergeSpec(models=models, method="average", weights=[0.123457] * 7 + [last]).default_name()
             for last in (0.111111, 0.199999)}
    assert len(names) == 2, names  # was one 100-character name: the digest covered the candidates only
    assert all(len(n) == 100 and n.startswith("mode_1_2_3_4_5_6_7-") for n in names)


def test_a_recipe_plans_a_mix_at_the_weight_its_stage_gives(tiny_llama):
    """The plan read a stage's data at weight 1.0: a mix used at 10,000 whose member is weighted 2 passed the plan and
    failed its stage when its turn came."""
    from backend.recipe.spec import RecipeError
    from backend.synth.datasets import save_mix
    from tests.test_review_s13_recipe import plan_of

    save_mix("b", [("builtin:alpaca-mini", 2)], "sft")
    d = {"kind": "recipe", "name": "r", "base": str(tiny_llama), "upscale": None, "eval": None, "stages": [
        {"name": "sft", "kind": "sft", "model": "base", "data": [{"source": "mix:b", "weight": 10000}],
         "max_steps": 1}]}
    with pytest.raises(RecipeError, match=r"stage sft.data\[0\].source: mix:b: builtin:alpaca-mini: weights "
                                          r"multiply through mixes: 2 .* = 20000"):
        plan_of(d)


def test_task_and_seed_files_with_suffixes_in_capitals_are_read_as_their_kind(tmp_path):
    from backend.evaltasks import EvalError, check_task
    from backend.synth.pipeline import load_benchmark

    with pytest.raises(EvalError):  # a missing mc file named in capitals was let through to fail in the job
        check_task(f"mc:{tmp_path / 'missing.JSONL'}", 5)
    f = tmp_path / "bench.JSON"
    f.write_text(json.dumps([{"question": "What is 2+2?"}, {"problem": "Name 3."}]))
    assert load_benchmark(str(f)) == ["What is 2+2?", "Name 3."]  # was read line by line: "no question field"


def test_a_one_row_file_with_an_empty_list_field_is_said_as_a_row_not_as_an_empty_wrapper(tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "a", "tags": []}) + "\n")
    with pytest.raises(data.DataError) as refused:  # was "… whose tags is an empty list: it holds no rows"
        data.check_source(str(f), "sft")
    assert "fit no layout" in str(refused.value) and "empty list" not in str(refused.value)


def test_the_runner_refuses_a_mix_whose_weights_multiply_past_the_cap_before_queueing(tiny_llama):
    from backend import runner
    from backend.specs import DataSource, SftSpec
    from backend.synth.datasets import save_mix

    registry.import_folder(tiny_llama, "tiny")
    save_mix("b", [("builtin:alpaca-mini", 2)], "sft")
    with pytest.raises(data.DataError, match="weights multiply through mixes: 2 .* = 20000"):
        runner.submit(SftSpec(model="tiny", data=[DataSource(source="mix:b", weight=10000)], max_steps=1))
    assert runner.list_jobs() == []


def test_the_upscaled_stage_says_it_is_made_from_the_base(tiny_llama):
    """The Recipe page's "Every model of the run" left "Made from" blank for the up-scaled model."""
    from backend import recipe
    from backend.recipe.tables import _made_from
    from tests.test_recipe import smoke, text

    (plan,) = recipe.plan_text(text(smoke(tiny_llama)))
    assert _made_from(plan.node("upscaled").info) == "base"


def test_a_recipe_whose_in_flight_stage_failed_since_its_plan_is_refused_before_any_row(tiny_llama):
    """The plan adopted a queued stage's job; it failed before Run was clicked: runner.submit refused the stage
    after it halfway through the loop, with some stages queued and the run's row written."""
    from sqlmodel import select

    from backend import recipe, runner
    from backend.recipe.spec import RecipeError
    from storage import db
    from storage.models import RecipeRun
    from tests.test_recipe import smoke, text

    (first,) = recipe.plan_text(text(smoke(tiny_llama)))
    recipe.submit(first)
    (again,) = recipe.plan_text(text(smoke(tiny_llama)))
    flying = [n for n in again.nodes if n.status == "in-flight"]
    assert flying, [n.status for n in again.nodes]
    runner._update(flying[0].job_id, status="failed", error="boom")
    jobs_before = len(runner.list_jobs())
    with db.session() as s:
        runs_before = len(s.exec(select(RecipeRun)).all())
    with pytest.raises(RecipeError, match=f"its job {flying[0].job_id} has failed since the plan was made"):
        recipe.submit(again)
    assert len(runner.list_jobs()) == jobs_before
    with db.session() as s:
        assert len(s.exec(select(RecipeRun)).all()) == runs_before
