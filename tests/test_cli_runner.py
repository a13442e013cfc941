"""The CLI and the runner drive the same specs and work functions as the pages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from backend import registry, runner
from backend.__main__ import main
from backend.specs import UpscaleSpec, load_spec
from tests.conftest import load_state

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def here(*args: str) -> subprocess.CompletedProcess:
    """The same command in this process, main() as the shell runs it (argparse's usage errors exit 2): for the calls
    beside one that goes through a process of its own, each of which paid 1-7 s of CPU for the interpreter's start
    and its imports. An exception past main() fails the test here as its traceback would fail the check there."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as stop:
            rc = stop.code
    return subprocess.CompletedProcess(["python -m backend", *args], rc, out.getvalue(), err.getvalue())


def test_cli_upscale_writes_registers_and_saves_a_spec_that_reruns(tiny_llama, tmp_path):
    out = tmp_path / "cli-dus"
    spec_file = tmp_path / "spec.yaml"
    r = cli("upscale", "--base", str(tiny_llama), "--m", "2", "--out", str(out), "--name", "cli-dus",
            "--save-spec", str(spec_file))
    assert r.returncode == 0, r.stderr
    assert "layers: 8" in r.stdout
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 8
    assert registry.get("cli-dus").path == str(out)
    # the saved spec reruns unchanged apart from where it writes
    data = yaml.safe_load(spec_file.read_text())
    assert data["kind"] == "upscale" and data["m"] == 2
    data.update(name="cli-dus-again", out=str(tmp_path / "again"))
    spec_file.write_text(yaml.safe_dump(data))
    r = cli("run", str(spec_file))
    assert r.returncode == 0, r.stderr
    a, b = load_state(out), load_state(tmp_path / "again")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    listing = here("models", "list").stdout
    assert "cli-dus-again" in listing and "upscaled" in listing


def test_cli_reports_bad_m_without_a_traceback(tiny_llama):
    r = cli("upscale", "--base", str(tiny_llama), "--m", "0")
    assert r.returncode == 2 and "m=0: m must be at least 1" in r.stderr and "Traceback" not in r.stderr
    r = here("upscale", "--base", str(tiny_llama), "--m", "5")  # reads the base (torch, transformers: ~7 s a process)
    assert r.returncode == 2
    assert "choose 1 <= m <= 2" in r.stderr and "Traceback" not in r.stderr


def test_cli_hub_import_offline_gives_a_clear_message():
    r = cli("models", "import", "someone/some-model", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert "offline" in r.stderr and "import the folder instead" in r.stderr and "Traceback" not in r.stderr
    assert registry.list_models() == []


def test_spec_yaml_round_trip(tmp_path):
    spec = UpscaleSpec(base="SmolLM2-135M-Instruct", m=8, name="x")
    path = tmp_path / "s.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec


def test_runner_runs_a_queued_build_in_a_child_process_and_a_failed_job_keeps_its_reason(tiny_llama, workspace):
    """One worker pass for both (two tests until session 25: one build process more, on both databases)."""
    failing = runner.submit(UpscaleSpec(base=str(tiny_llama), m=4, name="bad"))
    job = runner.submit(UpscaleSpec(base=str(tiny_llama), m=1, name="queued"))
    assert runner.get(job.id).status == "queued"
    runner.worker(once=True)
    bad = runner.get(failing.id)
    assert bad.status == "failed" and "choose 1 <= m <= 2" in bad.error
    done = runner.get(job.id)
    assert done.status == "succeeded", done.error  # a failure does not stop the queue
    assert done.progress == 1.0 and done.result["layers"] == 10
    assert done.pid and done.pid != os.getpid()
    assert registry.get("queued").num_layers == 10
    assert "registered queued" in Path(done.log_path).read_text()
    assert [r.name for r in registry.list_models()] == ["queued"]  # nothing of the failed job


def test_orphaned_running_job_becomes_interrupted(tiny_llama):
    from storage import db
    from storage.models import Job

    with db.session() as s:
        job = Job(kind="upscale", spec={}, status="running", pid=999999)
        s.add(job)
        s.commit()
        s.refresh(job)
    assert runner.recover_orphans() == [job.id]
    assert runner.get(job.id).status == "interrupted"


def test_cancel_a_queued_job(tiny_llama):
    job = runner.submit(UpscaleSpec(base=str(tiny_llama), m=1))
    assert runner.cancel(job.id).status == "cancelled"
    runner.worker(once=True)
    assert runner.get(job.id).status == "cancelled" and registry.list_models() == []


def test_cli_train_report_to_is_saved_in_the_spec_and_queued(tiny_llama, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    spec_file = tmp_path / "sft.yaml"
    r = cli("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--report-to", "tensorboard",
            "--save-spec", str(spec_file), "--queue")
    assert r.returncode == 0, r.stderr
    assert load_spec(spec_file).report_to == ["tensorboard"]
    (job,) = runner.list_jobs()
    assert job.kind == "sft" and job.spec["report_to"] == ["tensorboard"]


def test_workspace_default_trackers_come_from_dus_report_to(tiny_llama, tmp_path, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    base = ["train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--queue"]
    monkeypatch.setenv("DUS_REPORT_TO", "tensorboard, mlflow")
    # each under its own name: a second queued job making the same model is refused (runner.check_before_queueing)
    assert cli(*base, "--name", "t1").returncode == 0  # read from the environment the process starts with
    assert here(*base, "--name", "t2", "--report-to", "none").returncode == 0  # an explicit choice wins
    assert here(*base, "--name", "t3", "--report-to", "wandb").returncode == 0
    jobs = sorted(runner.list_jobs(), key=lambda j: j.id)
    assert [j.spec["report_to"] for j in jobs] == [["tensorboard", "mlflow"], [], ["wandb"]]
    monkeypatch.setenv("DUS_REPORT_TO", "tensorbored")
    r = here(*base)
    assert r.returncode == 2 and "DUS_REPORT_TO='tensorbored': unknown tracker tensorbored" in r.stderr
    assert "Traceback" not in r.stderr and len(runner.list_jobs()) == 3  # nothing queued
    monkeypatch.delenv("DUS_REPORT_TO")
    assert here(*base, "--name", "t4").returncode == 0
    assert max(runner.list_jobs(), key=lambda j: j.id).spec["report_to"] == []  # off by default


def test_cli_eval_fan_out_queues_one_job_per_model(tiny_llama, tokenizer_dir, tmp_path):
    from tests.conftest import make_llama

    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=3), "tiny-2")
    r = cli("eval", "tiny", "tiny-2", "--tasks", "perplexity", "--limit", "2", "--fan-out")
    assert r.returncode != 0 and "add --queue" in r.stderr  # nothing ran, nothing queued
    assert runner.list_jobs() == []
    r = cli("eval", "tiny", "tiny-2", "--tasks", "perplexity", "--limit", "2", "--fan-out", "--queue")
    assert r.returncode == 0, r.stderr
    jobs = sorted(runner.list_jobs(), key=lambda j: j.id)
    assert [(j.kind, j.spec["models"], j.spec["limit"]) for j in jobs] == [("eval", ["tiny"], 2),
                                                                           ("eval", ["tiny-2"], 2)]
