"""Session 21's walk of the command line: a Ctrl-C during a foreground training names its run folder and the
--run-name that continues it; a foreground run refuses a name a queued job will register; `jobs resume` refuses a
job whose name a model now holds; an unknown --kind is refused; a spec or --save-spec path that is missing or a
folder is said in words; `jobs wait` says a failure once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import pytest

from backend import registry, runner, training
from backend.__main__ import main
from backend.specs import SftSpec
from storage.models import Job, utcnow
from tests.test_review_cli import add, cli

SFT = ("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--max-steps", "1", "--max-rows", "8")


# ---------------------------------------------------------------- 1. Ctrl-C in a foreground training

class _CtrlCAt(io.StringIO):
    """Standard error that raises KeyboardInterrupt once, as Ctrl-C would, when the trainer's output says `mark`."""

    def __init__(self, mark: str):
        super().__init__()
        self.mark = mark

    def write(self, text: str) -> int:
        if self.mark and self.mark in text:
            self.mark = ""
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_in_a_foreground_training_names_its_run_folder_and_the_run_name_that_continues_it(
        tiny_llama, monkeypatch, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    pid_file = tmp_path / "trainer.pid"

    def launch(spec, run_dir):  # a trainer that saved checkpoint-10, says so, and would go on for a minute
        script = (f"import json, os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); "
                  f"c = pathlib.Path({str(run_dir)!r}) / 'checkpoints' / 'checkpoint-10'; c.mkdir(parents=True); "
                  "(c / 'trainer_state.json').write_text(json.dumps({'global_step': 10})); "
                  "print('saved checkpoint-10', flush=True); time.sleep(60)")
        return [sys.executable, "-c", script]

    monkeypatch.setattr(training, "launch_command", launch)
    monkeypatch.delenv("DUS_JOB_ID", raising=False)
    monkeypatch.delenv("DUS_RUN_NAME", raising=False)
    out, err = io.StringIO(), _CtrlCAt("saved checkpoint-10")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*SFT, "--name", "ctrlc"])
    (run_dir,) = (training.db.workspace() / "runs").glob("ctrlc-*")
    # old code: "…it ran here, not as a job, so there is nothing to resume: run the command again (…)", and a rerun
    # started from step 0 in a new stamped folder
    assert rc == 130 and err.getvalue().strip().splitlines()[-1] == (
        f"interrupted: the sft stopped before it finished; it ran here, not as a job: run folder {run_dir}; the same "
        f"command with --run-name {run_dir.name} continues from checkpoint-10 (with --queue the worker runs it, and "
        "closing the terminal does not stop it)")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the trainer was stopped, not left writing into the folder
        os.kill(pid, 0)
    assert registry.get("ctrlc") is None


# ---------------------------------------------------------------- 2. a foreground run takes a queued job's name

def test_a_foreground_run_refuses_a_name_a_queued_job_will_register(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(SftSpec(model="tiny", data=[{"source": "builtin:alpaca-mini"}], max_steps=1, name="tinyQ"))
    said = f"error: Job {job.id} (sft, queued) will register a model named 'tinyQ': choose another name.\n"
    rc, out, err = cli(*SFT, "--name", "tinyQ")  # old code: trained, registered tinyQ; job then failed
    assert (rc, out, err) == (2, "", said)
    rc, out, err = cli("upscale", "--base", "tiny", "--m", "1", "--name", "tinyQ")
    assert (rc, out, err) == (2, "", said)
    rc, out, err = cli("models", "import", str(tiny_llama), "--name", "tinyQ")
    assert (rc, out, err) == (2, "", said)
    assert registry.get("tinyQ") is None and runner.get(job.id).status == "queued"


# ---------------------------------------------------------------- 3. a resume that fails on the name again

def test_resume_of_a_job_whose_name_is_now_registered_is_refused(tiny_llama):
    registry.import_folder(tiny_llama, "taken")
    spec = SftSpec(model="taken", data=[{"source": "builtin:alpaca-mini"}], max_steps=1, name="taken")
    (job,) = add(Job(kind="sft", spec=spec.model_dump(mode="json"), status="failed", started=utcnow(),
                     finished=utcnow(), error="A model named 'taken' is already registered"))
    rc, out, err = cli("jobs", "resume", str(job.id))  # old code: 0, "queued", and failed the same again
    assert rc == 2 and out == "" and err.startswith(
        f"error: Job {job.id} would register 'taken' again: A model named 'taken' is already registered: the ")
    assert err.rstrip().endswith(f"queue its spec again with a new name (python -m backend jobs show {job.id} "
                                 "prints it).")
    assert runner.get(job.id).status == "failed"
    registry.delete("taken", delete_files=False, force=True)  # the name free again: it resumes
    assert runner.resume(job.id).status == "queued"


# ---------------------------------------------------------------- 4. an unknown kind

def test_jobs_list_refuses_an_unknown_kind():
    rc, out, err = cli("jobs", "list", "--kind", "sftt")  # old code: nothing, exit 0
    assert rc == 2 and out == "" and "argument --kind: invalid choice: 'sftt'" in err
    assert cli("jobs", "list", "--kind", "sft", "synth-math")[0] == 0


# ---------------------------------------------------------------- 5. paths in words

def test_a_missing_or_folder_spec_and_save_spec_are_said_in_words(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli("run", "nothere.yaml")  # old code: "error: [Errno 2] No such file or directory: …"
    assert (rc, out) == (2, "") and err == (f"error: nothere.yaml: no such file (from {tmp_path}); check the path, "
                                            "or write a spec with a job command's --save-spec FILE.\n")
    rc, out, err = cli("run", str(tmp_path))  # old code: "[Errno 21] Is a directory"
    assert (rc, out) == (2, "") and err == (f"error: {tmp_path} is a folder: give the spec's YAML file (e.g. "
                                            f"{tmp_path / 'spec.yaml'}).\n")
    assert cli("slurm", "nothere.yaml")[2].startswith("error: nothere.yaml: no such file")
    registry.import_folder(tiny_llama, "tiny")
    up = ("upscale", "--base", "tiny", "--m", "1", "--name", "up", "--queue", "--save-spec")
    rc, out, err = cli(*up, str(tmp_path))
    assert (rc, out) == (2, "") and err == (f"error: --save-spec {tmp_path}: is a folder; give a file path in it, "
                                            f"e.g. {tmp_path}/upscale.yaml.\n")
    rc, out, err = cli(*up, "nodir/x.yaml")
    assert (rc, out) == (2, "") and err == (f"error: --save-spec nodir/x.yaml: its folder {tmp_path / 'nodir'} is "
                                            "not there (No such file or directory): create it first (mkdir -p "
                                            f"{tmp_path / 'nodir'}), or give a path in a folder that is there.\n")
    assert runner.list_jobs(None) == []  # nothing queued for a spec that could not be saved


# ---------------------------------------------------------------- 6. words of jobs wait and jobs resume

def test_jobs_wait_says_a_failure_once_and_resume_of_a_finished_job_reads_right():
    (failed,) = add(Job(kind="sft", spec={"kind": "sft"}, status="failed", started=utcnow(), finished=utcnow(),
                        error="A model named 'tinyQ' is already registered"))
    rc, out, err = cli("jobs", "wait", str(failed.id))  # old code: "job N: failed: failed: A model named …"
    assert rc == 1 and out == f"job {failed.id}: failed: A model named 'tinyQ' is already registered\n"
    (done,) = add(Job(kind="eval", spec={"kind": "eval"}, status="succeeded", started=utcnow(), finished=utcnow()))
    assert cli("jobs", "wait", str(done.id))[:2] == (0, f"job {done.id}: succeeded: {runner.job_message(done)}\n")
    rc, out, err = cli("jobs", "resume", str(done.id))  # old code: "Job N is succeeded; …"
    assert (rc, err) == (2, f"error: Job {done.id} has succeeded; only interrupted, failed or cancelled jobs "
                            "resume.\n")
