"""Session 26's CLI items: `scores` had no task filter (15 tasks made a 47-column table), --json printed NaN and
Infinity (not JSON: jq and JavaScript's JSON.parse refuse the whole output) for a diverged loss or an infinite
perplexity, and `run SPEC.yaml` and `synth-math` had no --json while train, eval, merge and upscale had."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import pytest
import yaml

from backend import data, registry, runner
from backend.cli import common
from backend.synth import pipeline
from storage.models import EvalScore, Job, RecipeRun, RecipeStage
from tests.test_cli_runner import here
from tests.test_review_cli import add

NAN, INF = float("nan"), float("inf")


def strict(out: str):
    """`out` read as strict JSON: NaN, Infinity and -Infinity fail the test (jq and JSON.parse refuse them)."""
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))


# ---------------------------------------------------------------- 1. scores --tasks

ARC = "/data/bench/arc.jsonl"


def scored() -> None:
    """Two models on qa, synth-math, a file task and perplexity, with standard errors."""
    for model, qa, sm, arc in (("a", 0.5, 0.25, 0.75), ("b", 0.25, 0.5, 0.125)):
        add(EvalScore(model=model, task="qa", metric="accuracy", value=qa, n=20),
            EvalScore(model=model, task="qa", metric="accuracy_stderr", value=0.1, n=20),
            EvalScore(model=model, task="synth-math", metric="accuracy", value=sm, n=20),
            EvalScore(model=model, task=f"mc:{ARC}", metric="accuracy", value=arc, n=20),
            EvalScore(model=model, task="perplexity", metric="perplexity", value=12.5, n=20))


def table(out: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(out)))


def test_scores_tasks_keeps_those_columns_and_averages_over_them():
    scored()
    r = here("scores", "--tasks", "qa", "mc:arc", "--format", "csv")  # the file task by its short name
    assert r.returncode == 0, r.stderr
    rows = {row["model"]: row for row in table(r.stdout)}
    columns = list(table(r.stdout)[0])
    assert not [c for c in columns if "synth-math" in c or "perplexity" in c], columns
    assert "qa (accuracy)" in columns and f"mc:{ARC} (accuracy)" in columns
    # the average over the shown accuracy tasks alone: (0.5 + 0.75) / 2, not with synth-math's 0.25
    assert float(rows["a"]["average (accuracy tasks)"]) == pytest.approx(0.625)
    assert float(rows["b"]["average (accuracy tasks)"]) == pytest.approx(0.1875)
    full = table(here("scores", "--format", "csv").stdout)  # without --tasks: every task, as before
    assert float(full[0]["average (accuracy tasks)"]) == pytest.approx(0.5)
    assert any("synth-math" in c for c in full[0])


def test_scores_tasks_filters_the_markdown_notes_and_json():
    scored()
    r = here("scores", "--tasks", "synth-math")
    assert r.returncode == 0, r.stderr
    head = next(line for line in r.stdout.splitlines() if line.startswith("| model"))
    assert "synth-math (accuracy)" in head and "qa" not in head and "perplexity" not in head
    notes = [line for line in r.stdout.splitlines() if line.startswith("note:")]
    assert notes and not [n for n in notes if "qa" in n or ARC in n], notes  # the notes are the shown tasks'
    assert any("synth-math" in n for n in notes if "average" in n)  # the average's note names its task
    r = here("scores", "--tasks", "synth-math", f"mc:{ARC}", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted((s["model"], s["task"]) for s in strict(r.stdout)) == [
        ("a", f"mc:{ARC}"), ("a", "synth-math"), ("b", f"mc:{ARC}"), ("b", "synth-math")]


def test_scores_tasks_takes_a_file_task_as_eval_was_given_it(tmp_path, monkeypatch):
    """A relative mc:FILE, made absolute as eval stored it."""
    (tmp_path / "bench").mkdir()
    add(EvalScore(model="a", task=f"mc:{tmp_path}/bench/arc.jsonl", metric="accuracy", value=0.5, n=4),
        EvalScore(model="a", task="qa", metric="accuracy", value=0.25, n=4))
    monkeypatch.chdir(tmp_path)
    r = here("scores", "--tasks", "mc:bench/arc.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    assert [s["task"] for s in strict(r.stdout)] == [f"mc:{tmp_path}/bench/arc.jsonl"]


def test_scores_tasks_without_scores_is_refused_with_the_tasks_that_have_them():
    scored()
    r = here("scores", "--tasks", "qa", "gsm8k:x.jsonl")
    assert (r.returncode, r.stdout) == (2, "")
    assert "no scores on gsm8k:x.jsonl" in r.stderr and "evaluate first" in r.stderr
    assert f"tasks with scores: mc:arc (mc:{ARC}), perplexity, qa, synth-math." in r.stderr
    add(EvalScore(model="c", task="perplexity", metric="perplexity", value=9.0, n=4))
    r = here("scores", "c", "--tasks", "qa", "--json")  # of the models asked for
    assert r.returncode == 2 and "no scores of c on qa" in r.stderr
    assert "tasks with scores of c: perplexity." in r.stderr


def test_scores_tasks_says_which_model_asked_for_has_none_of_them():
    scored()
    add(EvalScore(model="c", task="perplexity", metric="perplexity", value=9.0, n=4))
    r = here("scores", "a", "c", "--tasks", "qa", "perplexity")
    assert r.returncode == 0, r.stderr
    assert "| c " in r.stdout and "not in the table" not in r.stdout
    r = here("scores", "a", "c", "--tasks", "qa")
    assert r.returncode == 0 and "| c " not in r.stdout
    assert "note: not in the table: c (no score on qa)." in r.stdout


# ---------------------------------------------------------------- 2. --json is strict JSON

def test_json_text_writes_what_is_not_finite_as_null():
    import numpy as np  # a requirement (torch, pandas): always there
    value = {"loss": NAN, "ppl": INF, "low": -INF, "ok": 1.5, "deep": [{"x": (NAN, 2.0)}], "n32": np.float32("nan"),
             "arr": np.array([1.0, np.inf])}
    assert strict(common.json_text(value)) == {"loss": None, "ppl": None, "low": None, "ok": 1.5,
                                               "deep": [{"x": [None, 2.0]}], "n32": None, "arr": [1.0, None]}


def test_a_foreground_results_json_is_strict(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    work = lambda spec, out_dir, progress: {"model": "x", "path": "/p", "loss": NAN,  # noqa: E731
                                            "perf": {"ppl": INF}, "losses": [1.0, -INF]}
    monkeypatch.setattr(runner, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    r = here("upscale", "--base", "tiny", "--m", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout) == {"model": "x", "path": "/p", "loss": None, "perf": {"ppl": None}, "losses": [1.0, None]}


def test_scores_and_eval_rows_json_are_strict():
    add(EvalScore(model="a", task="perplexity", metric="perplexity", value=INF, n=4),
        EvalScore(model="a", task="qa", metric="accuracy", value=0.5, n=4, details={"mean": NAN}))
    r = here("scores", "--json")
    assert r.returncode == 0, r.stderr
    got = {s["task"]: s for s in strict(r.stdout)}
    assert got["perplexity"]["value"] is None and got["qa"]["value"] == 0.5
    from backend.cli import evaluate

    rows = [SimpleNamespace(model="a", task="t", metric="m", value=NAN, n=1, overlap_share=0.0, run="r",
                            details={"x": INF})]
    assert strict(common.json_text(evaluate.rows_json(rows)))["rows"][0] | {} == {
        "model": "a", "task": "t", "metric": "m", "value": None, "n": 1, "overlap_share": 0.0, "run": "r",
        "details": {"x": None}}


def test_the_listings_json_is_strict(monkeypatch):
    add(Job(kind="sft", status="succeeded", result={"train_loss": NAN, "eval_perplexity": INF}))
    r = here("jobs", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout)[0]["result"] == {"train_loss": None, "eval_perplexity": None}

    monkeypatch.setattr(pipeline, "list_datasets", lambda: [SimpleNamespace(
        name="d", kind="sft", rows=3, path="/d.jsonl", provenance={"weight": NAN}, created=None)])
    r = here("datasets", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout)[0]["provenance"] == {"weight": None}

    monkeypatch.setattr(data, "preview", lambda source, purpose, n=3, sample_by=None: {
        "layout": "text", "rows": 1, "columns": ["text"], "examples": [{"text": "x", "score": INF}]})
    r = here("datasets", "preview", "x.jsonl", "--for", "cpt", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout)["examples"] == [{"text": "x", "score": None}]

    monkeypatch.setattr(registry, "list_models", lambda: [SimpleNamespace(
        name="m", kind="import", num_layers=2, num_parameters=NAN, dtype="float32", path="/m", parents=[],
        source="", created=None)])
    monkeypatch.setattr(registry, "arch_and_vocab", lambda r: ("LlamaForCausalLM", INF))
    r = here("models", "list", "--json")
    assert r.returncode == 0, r.stderr
    said = strict(r.stdout)[0]
    assert (said["parameters"], said["vocab_size"]) == (None, None)


def test_recipe_runs_and_pairs_json_are_strict(monkeypatch):
    from backend.cli import data as data_cli
    from backend.recipe import state

    (run,) = add(RecipeRun(name="r"))
    add(RecipeStage(run_id=run.id, recipe="r", stage="s", kind="sft", output="m", hash="h"))
    monkeypatch.setattr(state, "evaluations", lambda rows: [{"job": None, "share": NAN, "scored": INF}])
    r = here("recipe", "runs", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout)[0]["evaluation"] == [{"job": None, "share": None, "scored": None}]

    monkeypatch.setattr(data_cli, "_pairs_set", lambda name: SimpleNamespace(id=1))
    pair = SimpleNamespace(id=1, status="verified", rejected_by_hand=False, reason="", category="c", level=NAN,
                           question="q", solution="s", answer=INF, new_question="", new_solution="", new_answer="")
    monkeypatch.setattr(pipeline, "query_pairs", lambda *a, **k: (1, [pair]))
    r = here("datasets", "pairs", "p-pairs", "--json")
    assert r.returncode == 0, r.stderr
    assert (strict(r.stdout)[0]["level"], strict(r.stdout)[0]["answer"]) == (None, None)


def test_every_json_help_says_null_is_not_a_finite_number():
    for argv in (["upscale"], ["merge"], ["eval"], ["train"], ["run"], ["synth-math"], ["scores"],
                 ["jobs", "list"], ["models"], ["recipe", "runs"], ["datasets", "list"], ["datasets", "preview"],
                 ["datasets", "pairs"]):
        r = here(*argv, "--help")
        assert r.returncode == 0 and common.JSON_NULL in " ".join(r.stdout.split()), argv


def test_no_cli_module_prints_json_but_through_json_text():
    """One printer for every --json: a json.dumps elsewhere in the CLI would write NaN again."""
    from pathlib import Path

    import backend.cli

    for path in Path(backend.cli.__file__).parent.glob("*.py"):
        text = path.read_text()
        dumps = text.count("json.dumps(")
        # common.json_text's; data.py's human preview of a row (not --json)
        assert dumps == {"common.py": 1, "data.py": 1}.get(path.name, 0), path.name


# ---------------------------------------------------------------- 3. run SPEC.yaml and synth-math --json

def fake_synth(spec, out_dir, progress):
    print("rephrasing …")  # the work's own prints: stderr with --json
    return {"pairs": f"{spec.name}-pairs", "instruct": f"{spec.name}-instruct", "alignment": f"{spec.name}-alignment",
            "rows": 3, "verified": 3, "failed": 1, "flagged": 0, "seconds": NAN}


def test_synth_math_json_foreground_and_queued(monkeypatch):
    monkeypatch.setattr(runner, "work_function", lambda kind: fake_synth)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: fake_synth)
    r = here("synth-math", "--seeds", "4", "--name", "sm", "--json")
    assert r.returncode == 0, r.stderr
    assert strict(r.stdout) == {"pairs": "sm-pairs", "instruct": "sm-instruct", "alignment": "sm-alignment",
                                "rows": 3, "verified": 3, "failed": 1, "flagged": 0, "seconds": None}
    assert "rephrasing" in r.stderr
    r = here("synth-math", "--seeds", "4", "--name", "sm2", "--json", "--queue")
    assert r.returncode == 0, r.stderr
    (job,) = runner.list_jobs()
    assert strict(r.stdout) == {"job": job.id, "kind": "synth-math", "status": "queued", "after": None,
                                "model": None, "datasets": ["sm2-pairs", "sm2-instruct", "sm2-alignment"]}


def test_synth_math_json_with_no_verified_pair_prints_it_and_exits_1(monkeypatch):
    empty = lambda spec, out_dir, progress: {"pairs": "sm-pairs", "rows": 0, "instruct": None,  # noqa: E731
                                             "alignment": None, "verified": 0, "failed": 4}
    monkeypatch.setattr(runner, "work_function", lambda kind: empty)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: empty)
    r = here("synth-math", "--seeds", "4", "--name", "sm", "--json")
    assert r.returncode == 1 and strict(r.stdout)["rows"] == 0 and "produced no training data" in r.stderr


def test_run_spec_json_foreground_and_queued(tiny_llama, tmp_path, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    spec = tmp_path / "up.yaml"
    spec.write_text(yaml.safe_dump({"kind": "upscale", "base": "tiny", "m": 1, "name": "tiny-dus"}))
    r = here("run", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    said = strict(r.stdout)
    assert said["model"] == "tiny-dus" and said["path"] == registry.get("tiny-dus").path
    r = here("run", str(spec), "--name", "tiny-dus2", "--json", "--queue")
    assert r.returncode == 0, r.stderr
    (job,) = runner.list_jobs()
    assert strict(r.stdout) == {"job": job.id, "kind": "upscale", "status": "queued", "after": None,
                                "model": "tiny-dus2"}
    r = here("run", str(spec), "--name", "tiny-dus3")  # without --json: the lines, as before
    assert r.returncode == 0 and "model: tiny-dus3" in r.stdout


def test_run_eval_spec_json_holds_the_rows_it_stored(monkeypatch, tmp_path):
    def work(spec, out_dir, progress):
        add(EvalScore(model="a", task="qa", metric="accuracy", value=0.5, n=4),
            EvalScore(model="a", task="perplexity", metric="perplexity", value=INF, n=4))
        return {"scores": 2}
    monkeypatch.setattr(runner, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    add(EvalScore(model="a", task="qa", metric="accuracy", value=0.1, n=4))  # an earlier run's: not this run's
    monkeypatch.setattr(registry, "record", lambda name: SimpleNamespace(name=name) if name == "a" else None)
    monkeypatch.setattr(common, "_check_model_folders", lambda spec: None)
    spec = tmp_path / "ev.yaml"
    spec.write_text(yaml.safe_dump({"kind": "eval", "models": ["a"], "tasks": ["qa", "perplexity"]}))
    r = here("run", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    said = strict(r.stdout)
    assert said["scores"] == 2
    assert sorted((x["task"], x["value"]) for x in said["rows"]) == [("perplexity", None), ("qa", 0.5)]


def test_run_of_a_recipe_refuses_json(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: recipe\nname: r\nstages: {}\n")
    r = here("run", str(recipe), "--json")
    assert (r.returncode, r.stdout) == (2, "") and "recipe runs --json" in r.stderr
