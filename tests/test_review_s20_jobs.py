"""Session 20's walk of the Jobs page and `jobs`: a resume that does nothing is refused with the job to resume
instead; a trainer killed by a signal is said in words; a queued job whose model or data is gone says it will fail;
the seconds column says it is the latest run's."""

from __future__ import annotations

import json
import signal
import sys
from datetime import timedelta

import pytest

from backend import registry, runner, training
from backend.specs import EvalSpec, SftSpec, UpscaleSpec
from storage.models import Job, utcnow
from tests.test_pages import app
from tests.test_review_cli import add, cli


def _ended(status: str, **kw) -> Job:
    now = utcnow()
    return Job(kind=kw.pop("kind", "sft"), spec={"kind": "sft"}, status=status, started=kw.pop("started", now),
               finished=now, **kw)


def _chain():
    """8 cancelled by a user while it ran; 11 and 12 after it, cancelled unstarted by the worker, link by link."""
    (a,) = add(_ended("cancelled", kind="cpt", message="cancelled"))
    (b,) = add(_ended("cancelled", started=None, after=a.id, message=f"not run: job {a.id} it waited for cancelled"))
    (c,) = add(_ended("cancelled", kind="dpo", started=None, after=b.id,
                      message=f"not run: job {b.id} it waited for cancelled"))
    return a, b, c


# ---------------------------------------------------------------- 1. a resume that the worker would undo at once

def test_resume_of_a_job_whose_dependency_ended_is_refused_naming_the_job_to_resume():
    a, b, c = _chain()
    with pytest.raises(ValueError) as e:
        runner.resume(b.id)  # old code: queued, and cancelled again by the worker's next look
    assert str(e.value) == (
        f"Job {b.id} did not run because job {a.id} it waits for cancelled: resumed alone it would be cancelled "
        f"again at once. Resume job {a.id} (python -m backend jobs resume {a.id}, or Resume job {a.id} on the Jobs "
        "page): this one is queued again with it.")
    assert runner.get(b.id).status == "cancelled"
    assert runner.resume_blocked(runner.get(c.id))[1] == a.id  # up the chain, to the job that ended of itself
    assert f"(which waits for job {a.id}, cancelled)" in runner.resume_blocked(runner.get(c.id))[0]
    rc, out, err = cli("jobs", "resume", str(c.id))
    assert rc != 0 and out == "" and f"Resume job {a.id} (python -m backend jobs resume {a.id}" in err
    runner.resume(a.id)  # what the refusal says to do: the chain is queued again with it
    assert [runner.get(j.id).status for j in (a, b, c)] == ["queued", "queued", "queued"]


def test_a_job_a_user_cancelled_behind_a_failed_one_is_told_to_resume_after_it_and_a_gone_one_to_queue_anew():
    (a,) = add(_ended("failed", error="boom"))
    (b,) = add(_ended("cancelled", started=None, after=a.id, message="cancelled before it started"))
    (c,) = add(_ended("cancelled", started=None, needs=[999], message="not run: job 999 it waited for is gone"))
    with pytest.raises(ValueError, match=f"^Job {b.id} did not run because job {a.id} it waits for failed: "):
        runner.resume(b.id)  # old code: queued, and cancelled again by the worker
    with pytest.raises(ValueError, match=f"^Job {c.id} cannot run: job 999 it waits for is gone"):
        runner.resume(c.id)
    said, root = runner.resume_blocked(runner.get(b.id))
    assert root == a.id and said.endswith(f"Resume job {a.id} (python -m backend jobs resume {a.id}, or Resume job "
                                          f"{a.id} on the Jobs page), then this one.")
    said, root = runner.resume_blocked(runner.get(c.id))
    assert root is None and said.startswith(f"Job {c.id} cannot run: job 999 it waits for is gone.")
    runner.resume(a.id)  # a user's cancel stays: b is not queued with it, but may now be resumed to wait for it
    assert runner.get(b.id).status == "cancelled" and runner.resume_blocked(runner.get(b.id)) is None
    assert runner.resume(b.id).status == "queued"


def test_the_jobs_page_offers_the_job_to_resume_instead_of_a_restart_that_does_nothing():
    a, b, c = _chain()
    at = app("jobs.py")
    at.selectbox(key="job").set_value(b.id).run()
    labels = [x.label for x in at.button]
    assert "Restart (no checkpoint was saved)" not in labels and f"Resume job {a.id}" in labels  # old: the restart
    assert any(f"Resume job {a.id} (python -m backend jobs resume {a.id}" in x.value for x in at.caption)
    next(x for x in at.button if x.label == f"Resume job {a.id}").click().run()
    assert not at.exception
    assert [runner.get(j.id).status for j in (a, b, c)] == ["queued", "queued", "queued"]


# ---------------------------------------------------------------- 2. a trainer killed by a signal, in words

LAUNCHER_SAID = [  # only backend.train_entry killed: accelerate's simple launcher re-raises, exits 1
    "{'loss': '5.511', 'grad_norm': '3.204', 'learning_rate': '1e-05', 'epoch': '0.12'}",
    "Traceback (most recent call last):",
    '  File "accelerate/commands/launch.py", line 1168, in launch_command',
    "subprocess.CalledProcessError: Command '['/venv/bin/python', '-m', 'backend.train_entry', '/ws/runs/job-7']' "
    "died with <Signals.SIGKILL: 9>."]
TORCHRUN_SAID = [  # several processes: torchrun's report of the child it lost
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    "  exitcode  : -9 (pid: 4242)", "  traceback : Signal 9 (SIGKILL) received by PID 4242"]
OOM = ("the trainer was killed (SIGKILL — most often the system ran out of memory and the kernel's OOM killer ended "
       "it; `dmesg` or `journalctl -k` says \"Out of memory\" if so). To need less memory, train anew with a smaller "
       "batch_size or max_length, or gradient_checkpointing on; ")


@pytest.mark.parametrize(("rc", "tail"), [(1, LAUNCHER_SAID), (-9, LAUNCHER_SAID[:1]), (1, TORCHRUN_SAID)],
                         ids=["trainer-killed", "launcher-killed", "torchrun"])
def test_a_trainer_killed_by_sigkill_is_said_in_words_with_its_checkpoint(tmp_path, rc, tail):
    for step in (4, 8):
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert training.failure_reason(rc, tail, tmp_path, "7") == (
        ": " + OOM + "resumed as it is (python -m backend jobs resume 7, or \"Resume from the last checkpoint\" on the Jobs page), "
        "it continues "
        "from checkpoint-8")
    assert training.failure_reason(rc, tail, tmp_path, None).endswith(
        f"; the same command with --run-name {tmp_path.name} continues from checkpoint-8")
    assert training.failure_reason(rc, tail, tmp_path / "none", None) == (
        ": " + OOM + "no checkpoint was saved: the same command run again starts over")


def test_other_signals_in_words_and_never_a_metrics_line_as_the_cause(tmp_path):
    assert training.failure_reason(-11, [], tmp_path, None).startswith(": the trainer crashed (SIGSEGV, a "
                                                                        "segmentation fault in native code")
    assert training.failure_reason(-15, [], tmp_path, None).startswith(
        ": the trainer was stopped (SIGTERM, not from a cancel in DUS")
    bars = ["{'loss': '5.511', 'grad_norm': '3.2'}", " 12%|█▏        | 7/60 [00:03<00:24,  2.1it/s]"]
    assert training.failure_reason(1, ["loading model", *bars], tmp_path, None) == " (exit code 1): loading model"
    assert training.failure_reason(1, bars, tmp_path, None) == " (exit code 1): no error line in its output"


@pytest.mark.parametrize("script", [
    "import os, signal; print(\"{'loss': '5.511', 'grad_norm': '3.204'}\", flush=True); "
    "os.kill(os.getpid(), signal.SIGKILL)",  # the launcher and its child killed: exit code -9
    f"print({chr(10).join(LAUNCHER_SAID)!r}); exit(1)"],  # only the trainer killed: the launcher says so, exits 1
    ids=["launcher-killed", "trainer-killed"])
def test_a_foreground_training_whose_trainer_is_killed_says_so(tiny_llama, monkeypatch, script):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(training, "launch_command", lambda spec, run_dir: [sys.executable, "-c", script])
    monkeypatch.delenv("DUS_JOB_ID", raising=False)
    rc, out, err = cli("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--max-steps", "1",
                       "--max-rows", "8", "--name", "killed")
    line = err.strip().splitlines()[-1]
    assert rc == 1 and line.startswith("error: sft training failed: " + OOM + "no checkpoint was saved: the same "
                                       "command run again starts over. The whole log: the trainer's output above")
    # old code: "(exit code -9): {'loss': '5.511', …}", "(exit code 1): subprocess.CalledProcessError: Command …"
    assert "'loss'" not in line and "CalledProcessError" not in line


# ---------------------------------------------------------------- 3. a queued job whose input is gone

def test_a_queued_job_whose_model_or_data_file_was_deleted_says_it_will_fail(tiny_llama, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"say {i}", "output": str(i)}) + "\n" for i in range(4)))
    first = runner.submit(UpscaleSpec(base="tiny", m=1, name="first"))
    train = runner.submit(SftSpec(model="tiny", data=[{"source": str(rows)}], max_steps=1, name="t-sft"),
                          after=first.id)
    on_made = runner.submit(SftSpec(model="first", data=[{"source": "builtin:alpaca-mini"}], max_steps=1,
                                    name="f-sft"), after=first.id)
    scores = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"], skip_missing=True), waits=[first.id])
    registry.delete("tiny", delete_files=False, force=True)
    at = app("jobs.py")  # old code: "waiting for job N", and nothing else, until it failed
    assert [w.value for w in at.warning if w.value.startswith("Job ")] == [
        f"Job {j.id} will fail when it runs: its model tiny is gone (deleted since it was queued). Cancel it, or "
        "make it again before it runs." for j in (train, first)]  # not the evaluation, nor f-sft
    at.selectbox(key="job").set_value(train.id).run()  # its status box too
    assert (f"Job {train.id} will fail when it runs: its model tiny is gone (deleted since it was queued). Cancel it, "
            "or make it again before it runs.") in [w.value for w in at.warning]
    assert runner.inputs_gone(runner.get(scores.id)) is None  # it leaves a missing model out
    assert runner.inputs_gone(runner.get(on_made.id)) is None  # a queued job makes its model
    assert runner.inputs_gone(runner.get(train.id)) == "its model tiny is gone (deleted since it was queued)"
    registry.import_folder(tiny_llama, "tiny")
    rows.unlink()
    assert runner.inputs_gone(runner.get(train.id)) == f"its data file {rows} is gone"


# ---------------------------------------------------------------- 4. the seconds of the latest run, said so

def test_the_seconds_column_says_it_is_the_latest_run(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="again"))
    now = utcnow()
    runner._update(job.id, status="cancelled", started=now - timedelta(seconds=44.4), finished=now,
                   message="cancelled")
    at = app("jobs.py")
    table = at.dataframe[0]
    assert table.value.set_index("id").loc[job.id, "seconds"] == 44.4
    shown = json.loads(table.proto.columns)["seconds"]
    assert shown["label"] == "run s" and "earlier runs are counted" in shown["help"]


def test_queueing_after_a_job_that_already_failed_is_refused_naming_the_job_to_resume(tiny_llama):
    """`train … --after 11` with job 11 failed printed "queued job 12", and the worker cancelled it at once."""
    from backend.specs import DataSource

    registry.import_folder(tiny_llama, "tiny")
    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], max_steps=1)
    first = runner.submit(spec.model_copy(update={"name": "a"}))
    runner._update(first.id, status="failed", error="boom")
    with pytest.raises(ValueError, match=rf"Job {first.id} has failed: .* Resume job {first.id} first"):
        runner.submit(spec.model_copy(update={"name": "b"}), after=first.id)
    assert [j.id for j in runner.list_jobs()] == [first.id]
    ended_too = runner.submit(spec.model_copy(update={"name": "c"}), waits=[first.id])  # however it ended: queued
    assert runner.get(ended_too.id).status == "queued"


def test_a_missing_data_file_given_by_its_absolute_path_is_refused_before_queueing(tiny_llama, tmp_path):
    """`train sft --data /abs/missing.jsonl --queue` was queued and failed only when its turn came."""
    from backend import data
    from backend.specs import DataSource

    registry.import_folder(tiny_llama, "tiny")
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(data.DataError, match="missing.jsonl"):
        runner.submit(SftSpec(model="tiny", data=[DataSource(source=str(missing))], max_steps=1))
    assert runner.list_jobs() == []


def test_the_jobs_pages_check_of_gone_inputs_reads_the_active_jobs_once(tiny_llama, monkeypatch):
    """Each queued job's check parsed every active job's spec: 400 queued jobs took 3 s a render."""
    from backend.runner import queue

    registry.import_folder(tiny_llama, "tiny")
    jobs = [runner.submit(UpscaleSpec(base="tiny", m=1, name=f"up{i}")) for i in range(5)]
    active = runner.active_jobs()
    making = runner.made_by(active)
    assert making == {f"up{i}" for i in range(5)}
    calls = []
    monkeypatch.setattr(queue, "planned_name", lambda j: calls.append(j.id))
    assert [runner.inputs_gone(j, active, making) for j in jobs] == [None] * 5 and calls == []


def test_a_peer_rank_stopped_by_the_first_failure_is_not_its_cause():
    """torchrun lists every failed rank: the one NCCL's abort stopped (-15) was said as the cause, while the root
    cause, rank 0, raised (exit code 1)."""
    report = ["torch.OutOfMemoryError: CUDA out of memory.", "Failures:", "[1]:", "  rank      : 1 (local_rank: 1)",
              "  exitcode  : -15 (pid: 812)", "Root Cause (first observed failure):", "[0]:",
              "  rank      : 0 (local_rank: 0)", "  exitcode  : 1 (pid: 811)"]
    assert training.killed_by(1, report) is None
    killed = report[:-1] + ["  exitcode  : -9 (pid: 811)"]  # the root cause itself killed: said
    assert training.killed_by(1, killed) == signal.SIGKILL
