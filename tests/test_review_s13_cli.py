"""The CLI as a terminal user meets it: relative paths checked here but used from the repository
root, merge options its method ignores, exit codes that did not say whether the work failed, `run RECIPE --after`
dropping the wait, `jobs resume` promising a checkpoint there was not, a foreground failure pointing at a job that
did not exist, missing files reported as Hub failures, and --help without defaults."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from backend import data, registry, runner
from backend.__main__ import build_parser
from backend.specs import MergeSpec, explain
from storage.models import Job
from tests.test_review_cli import add, cli  # main() as the shell runs it; rows added

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A directory that is not the repository root, holding specs/al.jsonl, specs/ppl.txt and specs/acc.yaml, as the
    reviewer's; the command runs from there."""
    home = tmp_path / "user"
    (home / "specs").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "alpaca-mini.jsonl", home / "specs" / "al.jsonl")
    (home / "specs" / "ppl.txt").write_text("The cat sat on the mat and looked at the dog.\n" * 4)
    (home / "specs" / "acc.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    monkeypatch.chdir(home)
    return home


# ---------------------------------------------------------------- 1. local paths absolute in the spec

def test_queued_specs_hold_absolute_paths_from_the_users_directory(elsewhere, tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("train", "sft", "--model", "tiny", "--data", "specs/al.jsonl@0.5", "--eval-data",
                       "specs/al.jsonl", "--out", "rel-out/q4", "--accelerate-config", "specs/acc.yaml",
                       "--max-steps", "2", "--name", "q4", "--queue", "--save-spec", "q4.yaml")
    assert rc == 0, err
    spec = runner.get(1).spec
    al = str(elsewhere / "specs" / "al.jsonl")
    assert spec["data"] == [{"source": al, "weight": 0.5, "sample_by": "line"}] and spec["eval_data"]["source"] == al
    assert spec["out"] == str(elsewhere / "rel-out" / "q4")
    assert spec["accelerate_config"] == str(elsewhere / "specs" / "acc.yaml")
    assert f"source: {al}" in (elsewhere / "q4.yaml").read_text()  # the saved spec reruns from anywhere

    rc, out, err = cli("eval", "tiny", "--tasks", "perplexity:specs/ppl.txt", "synth-math", "--queue")
    assert rc == 0, err
    assert runner.get(2).spec["tasks"] == [f"perplexity:{elsewhere / 'specs' / 'ppl.txt'}", "synth-math"]

    # a model given as a folder, relative; a registered name stays a name
    shutil.copytree(tiny_llama, elsewhere / "tinyfolder")
    rc, out, err = cli("upscale", "--base", "tinyfolder", "--m", "1", "--name", "up", "--queue")
    assert rc == 0, err
    assert runner.get(3).spec["base"] == str(elsewhere / "tinyfolder")
    rc, out, err = cli("merge", "--models", "tiny", "tinyfolder", "--name", "mg", "--queue")
    assert rc == 0, err
    assert runner.get(4).spec["models"] == ["tiny", str(elsewhere / "tinyfolder")]

    # `run SPEC.yaml` with relative paths in it
    (elsewhere / "r.yaml").write_text("kind: sft\nmodel: tiny\ndata:\n- source: specs/al.jsonl\nname: r1\n"
                                      "out: rel-out/r1\n")
    rc, out, err = cli("run", "r.yaml", "--queue")
    assert rc == 0, err
    spec = runner.get(5).spec
    assert spec["data"][0]["source"] == al and spec["out"] == str(elsewhere / "rel-out" / "r1")

    # a Hub id and the prefixed sources are not paths
    from backend.cli.common import _local_source

    assert _local_source("owner/name") == "owner/name"
    assert _local_source("builtin:alpaca-mini") == "builtin:alpaca-mini"
    assert _local_source("nofolder/x.tsv") == str(elsewhere / "nofolder" / "x.tsv")


def test_a_saved_mix_holds_absolute_paths(elsewhere):
    rc, out, err = cli("datasets", "mix", "relmix", "specs/al.jsonl@2")
    assert rc == 0, err
    from backend.synth import pipeline

    rec = pipeline.get_dataset("relmix")
    assert rec.provenance["sources"][0]["source"] == str(elsewhere / "specs" / "al.jsonl")


def test_a_foreground_training_finds_a_relative_data_file(elsewhere, tiny_llama):
    """The trainer runs in the repository root: the relative path made it fail with "Data file specs/al.jsonl does
    not exist" after the model had loaded."""
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("train", "sft", "--model", "tiny", "--data", "specs/al.jsonl", "--max-steps", "1",
                       "--max-rows", "8", "--batch-size", "1", "--max-length", "32", "--save-steps", "5",
                       "--eval-fraction", "0", "--name", "fg2")
    assert rc == 0, err + out[-2000:]
    assert registry.get("fg2") is not None


# ---------------------------------------------------------------- 2. merge options the method does not use

@pytest.mark.parametrize("method, fields, field, flag", [
    ("slerp", {"weights": [0.2, 0.8]}, "weights", "--weights"),
    ("average", {"t": 0.9}, "t", "--t"),
    ("average", {"density": 0.3}, "density", "--density"),
    ("ties", {"base": "c", "seed": 5}, "seed", "--seed"),
    ("average", {"base": "c"}, "base", "--base"),
    ("slerp", {"base": "c"}, "base", "--base"),
    ("task_arithmetic", {"base": "c", "density": 0.3}, "density", "--density"),
])
def test_merge_refuses_an_option_its_method_does_not_use(method, fields, field, flag):
    with pytest.raises(ValidationError) as exc:
        MergeSpec(models=["a", "b"], method=method, **fields)
    said = explain(exc.value)
    assert said.startswith(f"{field} ({flag} on the command line) is for ") and f"method {method!r} does not " \
           "use it" in said


def test_merge_defaults_and_the_pages_specs_still_pass():
    for method in ("average", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"):
        extra = {"base": "c"} if method not in ("average", "slerp") else {}
        spec = MergeSpec(models=["a", "b"], method=method, **extra)
        # a stored job's spec and the page's rename carry every field with its default: still valid
        assert MergeSpec.model_validate(spec.model_dump(mode="json")) == spec
    MergeSpec(models=["a", "b"], method="dare_ties", base="c", density=0.3, seed=4, weights=[1, 1])
    MergeSpec(models=["a", "b"], method="slerp", t=[0, 1])


def test_merge_cli_refuses_weights_for_slerp(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("merge", "--models", "tiny", "tiny", "--method", "slerp", "--weights", "0.2", "0.8",
                       "--name", "m-w", "--queue")
    assert rc == 2 and err.startswith("error: weights (--weights on the command line) is for average / ")
    assert runner.get(1) is None
    rc, out, err = cli("merge", "--models", "tiny", "tiny", "--method", "average", "--density", "0.3", "--name",
                       "m-d", "--queue")
    assert rc == 2 and "density (--density on the command line)" in err


# ---------------------------------------------------------------- 3. exit codes, jobs wait

def test_cancel_of_a_finished_job_fails():
    job, = add(Job(kind="upscale", status="succeeded"))
    rc, out, err = cli("jobs", "cancel", str(job.id))
    assert rc == 1 and err == f"error: job {job.id} has already succeeded: nothing to cancel.\n" and out == ""
    assert runner.get(job.id).status == "succeeded"
    queued, = add(Job(kind="upscale", status="queued"))
    assert cli("jobs", "cancel", str(queued.id))[:2] == (0, f"job {queued.id}: cancelled\n")
    assert cli("jobs", "cancel", "99")[0] == 2


def test_jobs_wait_exits_by_the_outcome():
    ok, bad, waiting = add(Job(kind="upscale", status="succeeded", message="done: model x"),
                           Job(kind="sft", status="failed", error="boom"), Job(kind="eval", status="queued"))
    rc, out, err = cli("jobs", "wait", str(ok.id))
    assert rc == 0 and out.startswith(f"job {ok.id}: succeeded: ")
    rc, out, err = cli("jobs", "wait", str(bad.id))
    assert rc == 1 and out.startswith(f"job {bad.id}: failed: ") and "boom" in out
    rc, out, err = cli("jobs", "wait", str(waiting.id), "--timeout", "0.3", "--poll", "0.1")
    assert rc == 124 and err.startswith(f"job {waiting.id}: still queued after 0.3 s")
    assert cli("jobs", "wait", "99")[0] == 2


def test_compare_refused_for_too_few_items_exits_1(monkeypatch):
    from backend import analysis, answerstats

    monkeypatch.setattr(answerstats, "task_records", lambda task, *a, **k: [SimpleNamespace(model="a"),
                                                                          SimpleNamespace(model="b")])
    monkeypatch.setattr(analysis, "compare", lambda *a, **k: {"ok": False, "sentence": "a and b answered only 4 "
                                                                "of the same items; a comparison needs at least 10."})
    from storage.models import Generation  # compare refuses models with no answers at all as unknown (review s22)

    add(*[Generation(model=m, task="synth-math", prompt_id="1", prompt="q", reference="1", output="1", tokens=1,
                     words=1, answered=True, correct=True, hallucination=False) for m in ("a", "b")])
    rc, out, err = cli("compare", "a", "b", "--task", "synth-math")
    assert rc == 1 and out == "a and b answered only 4 of the same items; a comparison needs at least 10.\n"
    assert err == ""


def test_synth_math_with_nothing_verified_exits_1():
    rc, out, err = cli("synth-math", "--seeds", "2", "--rephraser", "openai:http://127.0.0.1:9/v1", "--api-model",
                       "x", "--name", "s8")
    assert rc == 1, err
    assert "rows: 0" in out and "error: synth-math produced no training data (0 verified, 2 failed)" in err
    assert "datasets delete s8-pairs" in err


def test_a_recipe_run_with_a_failed_stage_exits_1(tmp_path, monkeypatch):
    from backend import recipe

    plan = SimpleNamespace(lines=lambda: ["plan"])
    monkeypatch.setattr(recipe, "plan_text", lambda text: [plan])
    recipe_plan = importlib.import_module("backend.recipe.plan")  # the package exports its function plan()

    monkeypatch.setattr(recipe_plan, "submit", lambda p, text: 4)
    monkeypatch.setattr(runner, "worker", lambda **k: None)
    ok, bad = add(Job(kind="upscale", status="succeeded"),
                  Job(kind="sft", status="failed", error="Data file x.jsonl does not exist."))
    monkeypatch.setattr(recipe_plan, "stages", lambda run_id: [
        (SimpleNamespace(stage="upscaled", kind="upscale", reused=False, output="u", info={}), runner.get(ok.id)),
        (SimpleNamespace(stage="sft-a", kind="sft", reused=False, output="s", info={}), runner.get(bad.id)),
        (SimpleNamespace(stage="base", kind="base", reused=True, output="b", info={}), None)])
    monkeypatch.setattr(recipe, "stages", recipe_plan.stages)
    monkeypatch.setattr("backend.recipe.state.stages", recipe_plan.stages)  # where cancellable reads them
    f = tmp_path / "r.yaml"
    f.write_text("kind: recipe\n")
    rc, out, err = cli("recipe", "run", str(f))
    assert rc == 1 and err == "error: recipe run 4: 1 stage did not succeed: sft-a (failed).\n"
    assert "Data file x.jsonl does not exist." in out  # the reason, not only "failed"


def test_a_failed_foreground_training_exits_1_and_names_no_job(tiny_llama, monkeypatch):
    """Finding 7: "The whole log: the job's log (… jobs show ID)" for a run that had no job, and "exist..". """
    from backend import training

    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(training, "launch_command", lambda spec, run_dir: [
        sys.executable, "-c", "print('backend.data.DataError: Data file specs/al.jsonl does not exist.'); exit(1)"])
    monkeypatch.delenv("DUS_JOB_ID", raising=False)
    rc, out, err = cli("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--max-steps", "1",
                       "--max-rows", "8", "--name", "fgf")
    assert rc == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: sft training failed (exit code 1): backend.data.DataError: Data file "
                           "specs/al.jsonl does not exist. The whole log: the trainer's output above; run folder ")
    assert ".." not in line and "jobs show" not in line


# ---------------------------------------------------------------- 5. run RECIPE --after

def test_run_recipe_refuses_after_rather_than_dropping_it(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("kind: recipe\nname: r\n")
    rc, out, err = cli("run", str(f), "--after", "20")
    assert rc == 2 and err.startswith("error: --after: a recipe cannot take it (") and out == ""
    rc, out, err = cli("run", str(f), "--num-machines", "2")
    assert rc == 2 and err.startswith("error: --num-machines: a recipe cannot take it")


# ---------------------------------------------------------------- 10. jobs resume says what it will do

def test_resume_says_checkpoint_or_start_over(tmp_path):
    empty, saved, ev = tmp_path / "run-a", tmp_path / "run-b", None
    (empty / "checkpoints").mkdir(parents=True)
    for step in (4, 12):
        (saved / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (saved / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (saved / "checkpoints" / "checkpoint-20").mkdir()  # killed while saving: no trainer_state.json
    a, b, ev = add(Job(kind="sft", status="cancelled", run_dir=str(empty)),
                   Job(kind="sft", status="failed", run_dir=str(saved)), Job(kind="eval", status="failed"))
    rc, out, err = cli("jobs", "resume", str(a.id))
    assert rc == 0 and out == (f"job {a.id}: queued (no checkpoint was saved: a running worker starts the training "
                               "over from step 0)\n")
    rc, out, err = cli("jobs", "resume", str(b.id))
    assert out == f"job {b.id}: queued (a running worker resumes it from its last checkpoint, checkpoint-12)\n"
    rc, out, err = cli("jobs", "resume", str(ev.id))
    assert out == f"job {ev.id}: queued (it stored no score: a running worker runs the eval again from the start)\n"


# ---------------------------------------------------------------- 11. missing local files, perplexity hint

def test_a_missing_local_looking_file_is_not_a_hub_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source in ("nofolder/x.tsv", str(tmp_path / "abs" / "x.xlsx"), str(tmp_path / "x"), "./x", "a/b/c"):
        with pytest.raises(data.DataError, match="does not exist") as exc:
            data.load_source(source)
        assert "Hugging Face" not in str(exc.value)
    (tmp_path / "folder").mkdir()
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_source("folder/x")  # a folder that is here: a path, not owner/name
    assert not data.looks_local("owner/name") and not data.looks_local("builtin:alpaca-mini")


def test_compare_on_perplexity_says_it_has_no_answers():
    rc, out, err = cli("compare", "a", "b", "--task", "perplexity")
    assert rc == 2 and err.startswith("error: perplexity stores a score per model, no answers to compare")
    assert "evaluate with --tasks perplexity" not in err


# ---------------------------------------------------------------- 12. --help

def _parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield from _parsers(sp, path + (name,))


def test_every_option_has_help_and_defaults_and_exit_codes_are_shown():
    missing = [(" ".join(path), a.dest) for path, p in _parsers(build_parser()) for a in p._actions
               if not a.help and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    assert missing == []
    helps = {" ".join(path): p.format_help() for path, p in _parsers(build_parser())}
    flat = {k: " ".join(v.split()) for k, v in helps.items()}
    assert "optimizer steps (default: 30)" in flat["train"]
    assert "(default: cpt 5e-05, sft 2e-05, dpo 5e-06)" in flat["train"]
    assert "dataset:NAME" in flat["train"] and "mix:NAME" in flat["train"]
    assert "{sigmoid,hinge,ipo,robust,apo_zero,apo_down,sigmoid_norm}" in flat["train"]
    assert "lm-eval:TASK" in flat["eval"] and "gsm8k:FILE" in flat["eval"] and "(default: 40)" in flat["eval"]
    assert "(default: perplexity synth-math)" in flat["eval"]
    assert "share of each task vector kept (default: 1, mergekit's: every entry kept)" in flat["merge"]
    assert "arithmetic" in flat["synth-math"]  # the generator's categories
    for text in helps.values():
        assert "exit codes:" in text and "(default: None)" not in text
