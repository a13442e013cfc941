"""The command line's words (review s22): an unknown task or model said as unknown (not "evaluate first"), a job
spec given to `recipe run`, `kind: SFT`, a data source written in the CLI's string form inside a spec file,
`jobs list --limit -3`, a closed pipe, a failed job's end line and a cancel of a finished job, and `recipe new
--base` choosing m from the base's depth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from storage.models import EvalScore, Generation, Job, ModelRecord
from tests.test_review_cli import add, cli  # main() as the shell runs it; rows added

ROOT = Path(__file__).resolve().parent.parent


def _answers(model: str, task: str, n: int = 3) -> None:
    add(*[Generation(model=model, task=task, prompt_id=str(i), prompt="q", reference="1", output="1", tokens=2,
                     words=1, answered=True, correct=True, hallucination=False, run="r1", verdict="correct",
                     item_kind="math") for i in range(n)])


# ---------------------------------------------------------------- 1. compare / scores: unknown is not unevaluated

def test_compare_says_an_unknown_task_or_model_is_unknown():
    add(ModelRecord(name="tiny", path="/nowhere/tiny"), ModelRecord(name="fresh", path="/nowhere/fresh"))
    _answers("tiny", "synth-math")
    _answers("other", "synth-math")  # a model deleted since it was evaluated: its answers still compare
    rc, out, err = cli("compare", "tiny", "tiny-b", "--task", "synth-math")
    assert (rc, out) == (2, "")
    assert err == ("error: unknown model tiny-b: neither registered nor evaluated under that name (`python -m backend "
                   "models list` lists the registered models); models with answers: other, tiny.\n")
    rc, out, err = cli("compare", "tiny", "other", "--task", "synth-maths")
    assert rc == 2 and err == ("error: unknown task 'synth-maths': a task is perplexity[:FILE], synth-math, "
                               "qa[:FILE], mc:FILE, gsm8k:FILE, lm-eval:TASK; tasks with stored answers: "
                               "synth-math.\n")
    # a known task no model has answers on yet, and a registered model without answers: "evaluate first" is right
    rc, _, err = cli("compare", "tiny", "other", "--task", "qa")
    assert rc == 2 and err == ("error: no model has answers on qa yet: evaluate with --tasks qa first (tasks with "
                               "stored answers: synth-math).\n")
    rc, _, err = cli("compare", "tiny", "fresh", "--task", "synth-math")
    assert rc == 2 and err.startswith("error: no answers of fresh on synth-math (answers of: other, tiny); evaluate")


def test_scores_says_an_unknown_model_is_unknown():
    add(ModelRecord(name="tiny", path="/nowhere/tiny"), ModelRecord(name="fresh", path="/nowhere/fresh"),
        EvalScore(model="tiny", task="perplexity", metric="perplexity", value=9.0, n=2, run="r1"))
    rc, out, err = cli("scores", "tiny", "tinyy")
    assert (rc, out) == (2, "")
    assert err == ("error: unknown model tinyy: neither registered nor evaluated under that name (`python -m backend "
                   "models list` lists the registered models); models with scores: tiny.\n")
    rc, _, err = cli("scores", "fresh")  # registered, not evaluated
    assert rc == 2 and err == "error: no scores for fresh yet: evaluate first (`python -m backend eval MODEL`).\n"


def test_an_unknown_model_among_many_names_a_dozen_and_counts_the_rest():
    add(*[EvalScore(model=f"m{i:03d}", task="perplexity", metric="perplexity", value=9.0, n=2, run="r1")
          for i in range(150)])
    rc, _, err = cli("scores", "m999")
    assert rc == 2 and err.endswith(f"models with scores: {', '.join(f'm{i:03d}' for i in range(12))} and 138 "
                                    "more.\n")


# ---------------------------------------------------------------- 2. recipe run/plan of a job spec

@pytest.mark.parametrize("action", ["run", "plan"])
def test_recipe_run_of_a_job_spec_points_to_run(tmp_path, action):
    spec = tmp_path / "up scale.yaml"
    spec.write_text("kind: upscale\nbase: tiny\nm: 2\n")
    rc, out, err = cli("recipe", action, str(spec))
    assert (rc, out) == (2, "")
    assert err == (f"error: {spec} is a job spec (kind: upscale), not a recipe: `python -m backend run '{spec}'` runs "
                   "it (--queue hands it to the worker). A recipe has kind: recipe (`python -m backend recipe new "
                   "smoke --base MODEL` prints one).\n")
    spec.write_text("kind: teleport\n")  # no kind of work: the recipe's own words stay
    assert cli("recipe", action, str(spec))[2] == "error: recipe: a recipe is a mapping with kind: recipe.\n"


# ---------------------------------------------------------------- 3. kind: SFT

def test_a_kind_in_the_wrong_case_or_spelling_gets_a_suggestion(tmp_path):
    spec = tmp_path / "s.yaml"
    for kind, said in (("SFT", " (did you mean 'sft'?)"), ("synth_math", " (did you mean 'synth-math'?)"),
                       ("evl", " (did you mean 'eval'?)"), ("teleport", "")):
        spec.write_text(f"kind: {kind}\nmodel: tiny\n")
        rc, _, err = cli("run", str(spec))
        assert rc == 2 and err == (f"error: kind '{kind}' is not a kind of work{said}; choose one of: upscale, "
                                   "import, cpt, sft, dpo, synth-math, merge, eval, push.\n")


# ---------------------------------------------------------------- 4. a data source in the CLI's string form

def test_a_data_source_in_the_cli_string_form_is_shown_in_the_file_form(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: sft\nmodel: tiny\ndata: mix:sft-v1\n")
    rc, _, err = cli("run", str(spec))
    assert rc == 2 and err == ("error: data: 'mix:sft-v1' is the command line's --data form; a spec file writes a "
                               "source as a mapping, in a list (one per source of the mix): `data: [{source: "
                               "'mix:sft-v1'}]`.\n")
    spec.write_text("kind: sft\nmodel: tiny\ndata: [book.txt@0.5, {source: x.jsonl}]\neval_data: held.jsonl\n")
    rc, _, err = cli("run", str(spec))
    assert rc == 2 and err.splitlines() == [
        "error: data.0: 'book.txt@0.5' is the command line's --data form; a spec file writes a source as a mapping: "
        "`- {source: book.txt, weight: 0.5}` under `data:`.",
        "eval_data: 'held.jsonl' is the command line's --eval-data form; a spec file writes a source as a mapping: "
        "`eval_data: {source: held.jsonl}`."]
    # what it shows reads back as the source meant
    assert yaml.safe_load("data: [{source: 'mix:sft-v1'}]") == {"data": [{"source": "mix:sft-v1"}]}
    spec.write_text("kind: sft\nmodel: tiny\ndata: [{source: x.jsonl, weight: -1}]\n")  # other errors: as before
    assert cli("run", str(spec))[2] == "error: data.0.weight: Input should be greater than 0\n"


# ---------------------------------------------------------------- 5. jobs list --limit -3

def test_jobs_list_refuses_a_negative_limit():
    add(Job(kind="upscale", status="succeeded", message="done"), Job(kind="upscale", status="failed", error="boom"))
    rc, out, err = cli("jobs", "list", "--limit", "-3")
    assert (rc, out) == (2, "")  # it listed every job, as --limit 0
    assert err.endswith("python -m backend jobs list: error: argument --limit: '-3': give the number of newest jobs "
                        "to list, or 0 for all.\n")
    rc, out, _ = cli("jobs", "list", "--limit", "1")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == ["2"]
    assert cli("jobs", "list", "--limit", "0")[1].count("upscale") == 2


def test_jobs_list_keeps_a_message_of_several_lines_on_its_row():
    add(Job(kind="eval", status="failed", error="1 validation error for EvalSpec\ntasks\n  Value error, bad",
            message="failed"))
    rc, out, _ = cli("jobs", "list")
    assert rc == 0 and len(out.splitlines()) == 1 and "failed: 1 validation error for EvalSpec tasks Value" in out


# ---------------------------------------------------------------- 6. a closed pipe

def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    add(*[Job(kind="upscale", status="succeeded", message="done: model x" * 5) for _ in range(600)])
    proc = subprocess.Popen([sys.executable, "-m", "backend", "jobs", "list", "--limit", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert first.split()[0] == b"600"
    assert proc.wait(timeout=120) == 141 and err == ""  # no traceback, the shell's code for SIGPIPE


# ---------------------------------------------------------------- 7. a failed job's end, a cancel of a finished job

def test_cancel_of_a_finished_job_says_how_it_ended():
    jobs = add(*[Job(kind="upscale", status=s) for s in ("succeeded", "failed", "cancelled", "interrupted")])
    said = [cli("jobs", "cancel", str(j.id)) for j in jobs]
    assert said == [
        (1, "", "error: job 1 has already succeeded: nothing to cancel.\n"),
        (1, "", "error: job 2 has already failed: nothing to cancel.\n"),
        (1, "", "error: job 3 was already cancelled: nothing to cancel.\n"),
        (1, "", "error: job 4 was already interrupted (python -m backend jobs resume 4 goes on from it): nothing to "
                "cancel.\n")]


def test_jobs_log_follow_of_a_failed_job_says_failed_once(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("Traceback: boom\n")
    failed, done = add(Job(kind="sft", status="failed", error="boom", message="failed", log_path=str(log)),
                       Job(kind="sft", status="succeeded", message="done: model x", log_path=str(log)))
    assert cli("jobs", "log", str(failed.id), "--follow", "--poll", "0.05") == (
        1, "Traceback: boom\n", f"job {failed.id}: failed: boom\n")
    assert cli("jobs", "log", str(done.id), "--follow")[::2] == (0, f"job {done.id}: succeeded: done: model x\n")


# ---------------------------------------------------------------- 8. recipe new --base: m from the base's depth

def _folder(tmp_path: Path, layers: int) -> Path:
    folder = tmp_path / f"base-{layers}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": layers}))
    return folder


def test_recipe_new_takes_m_from_the_base_layer_count(tmp_path):
    add(ModelRecord(name="deep", path="/nowhere/deep", num_layers=30))
    cases = [("deep", "smoke", 8, 30), (str(_folder(tmp_path, 6)), "smoke", 2, 6), (str(_folder(tmp_path, 4)),
                                                                                   "solar-mini", 1, 4)]
    for base, preset, m, n in cases:
        rc, out, err = cli("recipe", "new", preset, "--base", base)
        assert rc == 0, err
        assert yaml.safe_load(out)["upscale"]["m"] == m  # smoke wrote 2 for every base, solar-mini 8 (out of range)
        assert out.startswith(f"# upscale.m: {m}, for {base}'s {n} layers: SOLAR removes a quarter of the layers from "
                              "each copy (m = 8 of 32),\n# so the valid m nearest")
    out = cli("recipe", "new", "smoke", "--base", "deep", "--m", "3")[1]  # --m wins, without a comment
    assert yaml.safe_load(out)["upscale"]["m"] == 3 and not out.startswith("#")
    out = cli("recipe", "new", "smoke", "--base", "owner/name")[1]  # a Hub id: not known here, the preset's own m
    assert yaml.safe_load(out)["upscale"]["m"] == 2
    assert out.startswith("# upscale.m: 2, the preset's own: the layer count of owner/name is not known here")
