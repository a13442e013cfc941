"""The command line's words (review s24): `compare` on multiple choice or an lm-eval task sent the user to evaluate
it first, though those store no answers; a foreground job's result printed as Python's repr (`resumed_from: None`,
`perf: {'compile': 'off'}`, `kept: 0`, `notes: []`); messages named the page's fields (Max new tokens, base) where a
CLI user has flags; `jobs cancel` of a running training did not say what a resume then does."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend import analysis, answerstats, evalscore, registry, runner
from backend.specs import EVAL_TASK_KINDS, EvalSpec, MergeSpec, SftSpec, UpscaleSpec, explain
from storage.models import Job
from tests.test_review_cli import add, cli

# ---------------------------------------------------------------- 1. compare: tasks that store no answers


@pytest.mark.parametrize("task, why", [("mc:{dir}/mc.jsonl", "multiple choice is scored by the log-likelihood of "
                                                             "each choice"),
                                       ("lm-eval:h6", "lm-evaluation-harness tasks store their scores only")])
def test_compare_on_a_scores_only_task_says_so_not_evaluate_first(tmp_path, task, why):
    """`compare A B --task mc:FILE` after `eval A B --tasks mc:FILE` said "no model has answers on mc:… yet: evaluate
    with --tasks mc:… first", advice that could never help: mc and lm-eval are scored by log-likelihood."""
    task = task.format(dir=tmp_path)
    rc, out, err = cli("compare", "a", "b", "--task", task)
    assert (rc, out) == (2, "")
    assert err == (f"error: {task} stores a score per model, no answers to compare ({why}): compare needs a task "
                   f"with answers (synth-math, qa[:FILE], gsm8k:FILE); `scores` shows {task}'s scores.\n")


def test_compare_on_perplexity_no_longer_offers_mc():
    rc, out, err = cli("compare", "a", "b", "--task", "perplexity")
    assert rc == 2 and "(synth-math, qa[:FILE], gsm8k:FILE)" in err and "mc:FILE" not in err


def test_the_kinds_with_answers_are_the_ones_score_task_stores_answers_for(monkeypatch):
    """One list (specs.EVAL_ANSWER_KINDS) says which kinds store answers: score_task decides by it, and `compare`'s
    refusal and help, and the Compare page, name it. Every other kind says why it has none."""
    from backend.specs import EVAL_ANSWER_HELP, EVAL_ANSWER_KINDS, SCORES_ONLY

    assert set(EVAL_ANSWER_KINDS) | set(SCORES_ONLY) == set(EVAL_TASK_KINDS)
    assert not set(EVAL_ANSWER_KINDS) & set(SCORES_ONLY)
    assert EVAL_ANSWER_HELP == "synth-math, qa[:FILE], gsm8k:FILE"
    gen = object()
    monkeypatch.setattr(evalscore, "answer_task", lambda *a, **k: ({"accuracy": 1.0}, [gen]))
    monkeypatch.setattr(evalscore, "qa_task", lambda *a, **k: ({"accuracy": 1.0}, [gen], {}))
    monkeypatch.setattr(evalscore, "perplexity_items", lambda *a, **k: [(1.0, 2)])
    monkeypatch.setattr(evalscore, "mc_items", lambda *a, **k: [(0, 0)])
    monkeypatch.setattr(evalscore, "_mc", lambda per: {"accuracy": 1.0})
    monkeypatch.setattr(registry, "resolve", lambda name: (None, name))
    monkeypatch.setattr(evalscore, "run_lm_eval", lambda *a, **k: type("R", (), {"scores": {"acc": 1.0}, "n": 1,
                                                                                   "details": {}})())

    class Plan:
        batch_size = scoring_batch_size = 1

    for kind in EVAL_TASK_KINDS:
        ts = type("TS", (), {"kind": kind, "items": ["x"], "task": kind, "arg": "t"})()
        gens = evalscore.score_task(ts, None, None, EvalSpec(models=["m"], tasks=["synth-math"]), "m", None, Plan(),
                                    None)[1]
        assert (gens == [gen]) == (kind in EVAL_ANSWER_KINDS), kind


def test_the_compare_help_names_the_tasks_with_answers():
    rc, out, err = cli("compare", "--help")
    assert rc == 0 and "synth-math, qa[:FILE], gsm8k:FILE (perplexity, mc and lm-eval store scores only)" in \
        " ".join(out.split())


# ---------------------------------------------------------------- 2. a foreground result, readable


def test_a_foreground_result_prints_as_key_value_lines_without_empty_fields(monkeypatch):
    """`eval` printed `kept: 0`, `notes: []`, `skipped: []` and `device: {'sft3': 'CPU: float32, batch 8'}`; `train`
    `resumed_from: None` and `perf: {'compile': 'off', …}`."""
    result = {"scores": 4, "kept": 0, "notes": [], "skipped": [], "seconds": 1.5,
              "device": {"sft3": "CPU: float32, batch 8"}, "resumed_from": None,
              "perf": {"compile": "off", "packing": "bfd"}}
    def work_function(kind):
        return lambda spec, out, progress: dict(result)

    monkeypatch.setattr(runner, "work_function", work_function)  # the CLI's look-up
    monkeypatch.setattr(runner.child, "work_function", work_function)  # and the runner's own (the guard's rule)
    rc, out, err = cli("eval", "sft3", "--tasks", "perplexity")
    assert rc == 0, err
    assert out == ("scores: 4\nseconds: 1.5\ndevice:\n  sft3: CPU: float32, batch 8\nperf:\n  compile: off\n"
                   "  packing: bfd\n")
    result.update(kept=3, notes=["left out, not registered: x", "resumed: kept the 3 scores"], skipped=["x"])
    rc, out, err = cli("eval", "sft3", "--tasks", "perplexity")
    assert out.splitlines()[:6] == ["scores: 4", "3 scores kept from its earlier run", "notes:",
                                    "  - left out, not registered: x", "  - resumed: kept the 3 scores", "skipped:"]


# ---------------------------------------------------------------- 3. flags beside the page's field names

DATA = [{"source": "builtin:alpaca-mini"}]


def test_the_token_cap_advice_names_the_flag_too():
    """"evaluate again with a higher Max new tokens": a CLI user's option is --max-new-tokens."""
    from tests.test_review_cutoff import base_model, rambler

    res = analysis.compare(base_model() + rambler("dus", 20), "base", "dus")
    assert res["sentence"].endswith("evaluate again with a higher Max new tokens (eval --max-new-tokens).")
    few = analysis.compare([r for r in base_model() if int(r.prompt_id) < 6] + rambler("dus", 0)[:6], "base", "dus")
    assert few["sentence"].endswith("evaluate again with more Items per task (eval --limit).")
    assert answerstats.cut_off_summary({"m": [48]}) == (
        "1 model cut off on every reply, at 48 tokens: evaluate it again with a higher Max new tokens (eval "
        "--max-new-tokens), and if it is cut off there too it does not end its replies and needs training (what each "
        "needs: the table below).")


def test_a_merge_relative_to_a_base_names_the_base_flag():
    rc, out, err = cli("merge", "--method", "ties", "--models", "a", "b")
    assert (rc, out) == (2, "")
    assert err == ("error: ties is relative to a base: give base (--base on the command line), the model the "
                   "candidates started from.\n")


@pytest.mark.parametrize("make, said", [
    (lambda: UpscaleSpec(base="x", method="dus"), "method 'dus' needs m (--m on the command line)"),
    (lambda: UpscaleSpec(base="x", method="llama-pro"), "needs groups (--groups on the command line)"),
    (lambda: UpscaleSpec(base="x", method="slices", slices=[{"source": 1, "start": 0, "end": 2}]),
     "give second (--second on the command line)"),
    (lambda: MergeSpec(models=["a", "b"], weights=[1]), "weights (--weights on the command line): give one per"),
    (lambda: MergeSpec(models=["a", "b"], tokenizer_source="c"), "tokenizer_source (--tokenizer-source on the "),
    (lambda: SftSpec(model="x", data=DATA, num_machines=2), "--main-process-ip on the command line"),
    (lambda: SftSpec(model="x", data=DATA, num_machines=2, machine_rank=2, main_process_ip="h"),
     "--machine-rank on the command"),
    (lambda: EvalSpec(models=["x"], judge_url="http://h:1/v1"), "(--judge-model on the command line)"),
])
def test_spec_refusals_a_cli_user_meets_name_the_flag(make, said):
    with pytest.raises(ValidationError) as exc:
        make()
    assert said in explain(exc.value)


# ---------------------------------------------------------------- 4. jobs cancel: what a resume then does


def test_cancelling_a_running_training_says_a_resume_continues_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    job, = add(Job(kind="sft", spec={"kind": "sft"}, status="running", run_dir=str(tmp_path / "run")))
    rc, out, err = cli("jobs", "cancel", str(job.id))
    assert (rc, err) == (0, "")
    assert out == (f"job {job.id}: cancelled; resume it to continue from its last checkpoint, checkpoint-20 (python "
                   f"-m backend jobs resume {job.id}, or \"Resume from the last checkpoint\" on the Jobs page)\n")
    assert runner.get(job.id).status == "cancelled"
    fresh, = add(Job(kind="sft", spec={"kind": "sft"}, status="running", run_dir=str(tmp_path / "none")))
    assert cli("jobs", "cancel", str(fresh.id))[1] == (
        f"job {fresh.id}: cancelled; no checkpoint was saved; resume it to start the training over from step 0 "
        f"(python -m backend jobs resume {fresh.id}, or \"Restart (no checkpoint was saved)\" on the Jobs page)\n")
    queued, = add(Job(kind="sft", spec={"kind": "sft"}, status="queued"))  # it ran nothing: nothing to add
    assert cli("jobs", "cancel", str(queued.id))[1] == f"job {queued.id}: cancelled\n"


def test_the_compare_page_without_answers_names_the_tasks_that_store_them():
    """It said "evaluate on synth-math or a gsm8k file", leaving qa out."""
    from streamlit.testing.v1 import AppTest

    def page():
        from pages import compare_length

        compare_length.show([], {}, {}, [])

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert [i.value for i in at.info] == ["No answers stored yet: evaluate on a task with answers (synth-math, "
                                          "qa[:FILE], gsm8k:FILE); perplexity, mc and lm-eval store scores only."]
