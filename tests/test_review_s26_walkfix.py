"""Session 26's walk: a training job's ETA left out its evaluations ("step 2/2 · ETA 0:00" while the final evaluation
ran 98 s, and nothing said an evaluation was running); the arena's style note said "no difference between the
answers in any vote" after one vote with answers of 96 and 12 tokens; the models × tasks table showed an "average
(accuracy tasks)" column of "—" in every row when only perplexity was evaluated. Each test fails without its fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from backend import arena, scoretable
from backend.train_job import metrics
from storage import db
from storage.models import EvalScore, Vote
from tests.test_review_cli import cli

# ---- 1. the training ETA counts the evaluations to come ---------------------------------------------------------


def test_evaluations_to_come_are_counted_from_the_interval_and_the_last_step():
    assert metrics.evals_to_come(0, 10, 4, True) == 3  # steps 4, 8 and the last (10)
    assert metrics.evals_to_come(4, 10, 4, False) == 3  # step 4's training line comes before its evaluation
    assert metrics.evals_to_come(4, 10, 4, True) == 2
    assert metrics.evals_to_come(2, 2, 10, False) == 1  # the walk's run: the last step's evaluation still to run
    assert metrics.evals_to_come(2, 2, 10, True) == 0
    assert metrics.evals_to_come(3, 8, 4, False) == 2  # 4 and 8: the last step a multiple, evaluated once
    assert metrics.evals_to_come(3, 8, None, False) == 0  # nothing held out


def test_eta_adds_the_evaluations_at_the_last_measured_runtime():
    assert metrics.eta_seconds(2, 0, 4.0, 1, 98.0) == 98.0  # the walk: was 0:00 with 98 s of evaluation to run
    assert metrics.eta_seconds(2, 8, 4.0, 2, 10.0) == 2.0 * 8 + 20.0
    assert metrics.eta_seconds(0, 8, 4.0, 2, 10.0) is None
    assert metrics.eta_seconds(2, 8, 4.0, 2, None) == 16.0  # no evaluation measured yet


def _callback(tmp_path, monkeypatch, clock, max_steps=4, eval_steps=2):
    monkeypatch.setattr(metrics.time, "time", lambda: clock.now)
    cb = metrics.MetricsCallback(tmp_path, max_steps, None)
    args = SimpleNamespace(eval_strategy="steps", eval_steps=eval_steps)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, is_world_process_zero=True)
    return cb, args, state


def test_the_progress_line_leaves_evaluation_time_out_of_the_step_rate_and_counts_evaluations_to_come(
        tmp_path, monkeypatch, capsys):
    """4 steps of 1 s, an evaluation of 30 s every 2 steps (and one at step 0, before training)."""
    clock = SimpleNamespace(now=0.0)
    cb, args, state = _callback(tmp_path, monkeypatch, clock)
    cb.on_log(args, state, None, logs={"eval_loss": 2.0, "eval_runtime": 30.0})  # step 0, before train()
    cb.on_train_begin(args, state, None)
    lines = []
    for step in (1, 2, 3, 4):
        clock.now += 1.0
        state.global_step = step
        cb.on_log(args, state, None, logs={"loss": 1.0})
        lines.append(capsys.readouterr().out.strip())
        if step % 2 == 0:
            clock.now += 30.0
            cb.on_log(args, state, None, logs={"eval_loss": 1.5, "eval_runtime": 30.0})
            cb.on_evaluate(args, state, None)
            lines.append(capsys.readouterr().out.strip())
    # step 1: 3 steps of 1 s, evaluations at 2 and 4 of 30 s: 1:03 (was 0:03)
    assert lines[0].endswith("step 1/4 · loss 1.0000 · ETA 1:03")
    assert lines[1].endswith("step 2/4 · loss 1.0000 · ETA 1:02")  # step 2's evaluation still to run
    # after it: 2 steps and one evaluation; the 30 s of evaluation not in the rate (was 32 s / 2 steps · 2 = 0:32)
    assert lines[2].endswith("step 2/4 · eval loss 1.5000 · ETA 0:32")
    assert lines[4].endswith("step 4/4 · loss 1.0000 · ETA 0:30")  # the walk: was ETA 0:00 before the evaluation
    assert lines[5].endswith("step 4/4 · eval loss 1.5000 · ETA 0:00")


def test_an_evaluation_running_says_so_in_the_log_and_the_job_message(tmp_path, monkeypatch, capsys):
    from storage.models import Job

    with db.session() as s:
        job = Job(kind="sft", status="running")
        s.add(job)
        s.commit()
        s.refresh(job)
    clock = SimpleNamespace(now=0.0)
    cb, args, state = _callback(tmp_path, monkeypatch, clock, max_steps=2, eval_steps=10)
    cb.job_id, cb.eval_rows = job.id, 40
    cb.on_log(args, state, None, logs={"eval_loss": 2.0, "eval_runtime": 90.0})
    cb.on_train_begin(args, state, None)
    for step in (1, 2):
        clock.now += 1.0
        state.global_step = step
        cb.on_log(args, state, None, logs={"loss": 1.0})
    capsys.readouterr()
    cb.on_prediction_step(args, state, None)
    cb.on_prediction_step(args, state, None)  # said once per evaluation
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith("step 2/2 · evaluating 40 held-out rows… · ETA 1:30")
    with db.session() as s:
        assert s.get(Job, job.id).message == "step 2/2 · evaluating 40 held-out rows… · ETA 1:30"
    cb.on_log(args, state, None, logs={"eval_loss": 1.5, "eval_runtime": 90.0})
    cb.on_evaluate(args, state, None)
    cb.on_prediction_step(args, state, None)  # a later evaluation says it again
    assert "evaluating 40 held-out rows…" in capsys.readouterr().out


# ---- 2. the arena's style note -------------------------------------------------------------------------------------


def _vote(i: int, tokens_a: int, tokens_b: int) -> Vote:
    return Vote(transcript_id=i, model_a="m1", model_b="m2", outcome="a", position_a=0, position_b=1, blind=True,
                tokens_a=tokens_a, tokens_b=tokens_b)


def test_a_style_difference_the_same_in_every_vote_is_not_called_no_difference():
    fit = arena.fit([_vote(0, 96, 12)], style_control=True)  # the walk: one vote, 96 against 12 tokens
    assert fit["style"] == {}
    assert fit["notes"] == [
        "headers, lists, bold: no difference between the answers in any vote, so left out",
        "tokens: the same difference between the answers in every vote (1 vote), nothing to fit it from, so left out"]
    two = arena.fit([_vote(0, 96, 12), _vote(1, 96, 12)], style_control=True)
    assert two["notes"][1].startswith("tokens: the same difference between the answers in every vote (2 votes)")
    assert arena.fit([_vote(0, 96, 12), _vote(1, 12, 96)], style_control=True)["notes"] == [
        "headers, lists, bold: no difference between the answers in any vote, so left out"]  # tokens fitted


# ---- 3. no average column where no model has an average -----------------------------------------------------------


def _scores(*rows: tuple) -> None:
    with db.session() as s:
        for model, task, metric, v in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=v, n=20, run="r1", details={}))
        s.commit()


def test_perplexity_alone_gives_no_average_column_in_the_table_its_csv_or_the_cli():
    _scores(("a", "perplexity", "perplexity", 41.0), ("b", "perplexity", "perplexity", 30.5))
    rows = scoretable.table_rows(scoretable.latest_scores(), {})
    assert list(rows[0]) == ["model", "perplexity", "kind", "layers", "made from"]
    assert scoretable.export_table(rows).columns == ["model", "perplexity", "kind", "layers", "made from"]
    rc, out, err = cli("scores", "--format", "csv")
    assert rc == 0, err
    assert out.splitlines()[0] == "model,perplexity,kind,layers,made from"
    rc, out, err = cli("scores")
    assert rc == 0 and "average" not in out, (out, err)


def test_the_average_column_stays_when_a_model_has_one():
    _scores(("a", "perplexity", "perplexity", 41.0), ("a", "qa", "accuracy", 0.25),
            ("b", "perplexity", "perplexity", 30.5), ("b", "qa", "accuracy", 0.5))
    rows = {r["model"]: r for r in scoretable.table_rows(scoretable.latest_scores(), {})}
    assert list(rows["a"])[:3] == ["model", "average (accuracy tasks)", "perplexity"]
    assert (rows["a"]["average (accuracy tasks)"], rows["b"]["average (accuracy tasks)"]) == (0.25, 0.5)


@pytest.mark.parametrize("clean", [False, True])
def test_no_shared_accuracy_task_leaves_the_column_out_and_the_note_says_so(clean):
    _scores(("a", "qa", "accuracy", 0.25), ("b", "synth-math", "accuracy", 0.5))
    rows = scoretable.table_rows(scoretable.latest_scores(), {}, clean=clean)
    assert all("average (accuracy tasks)" not in r for r in rows)
    assert scoretable.average_note(scoretable.headline(scoretable.latest_scores()), clean).startswith(
        "average (accuracy tasks): left out — no accuracy-like task has a score for every model")


def test_a_resumed_run_counts_its_evaluations_at_the_runtime_logged_before_the_stop(tmp_path, monkeypatch, capsys):
    clock = SimpleNamespace(now=0.0)
    cb, args, state = _callback(tmp_path, monkeypatch, clock)
    cb.record(0, {"eval_loss": 2.0, "eval_runtime": 30.0})
    cb.record(2, {"loss": 1.0})
    cb.record(2, {"eval_loss": 1.5, "eval_runtime": 20.0})
    resumed, _, _ = _callback(tmp_path, monkeypatch, clock)
    state.global_step = 2
    resumed.on_train_begin(args, state, None)
    clock.now += 1.0
    state.global_step = 3
    capsys.readouterr()
    resumed.on_log(args, state, None, logs={"loss": 1.0})
    assert capsys.readouterr().out.strip().endswith("step 3/4 · loss 1.0000 · ETA 0:21")  # 1 step, step 4's 20 s
