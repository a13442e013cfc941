"""Jobs found in a browser walk (walk 12): a stopped training job offered only a restart although its checkpoint was
on disk, a resumed run reported another train loss than the same run unstopped, and the Jobs page's job list kept a
status that its status box below had already left."""

from __future__ import annotations

import shutil

import pytest
import torch

from backend import registry, runner, training
from backend.specs import DataSource, SftSpec
from storage import db
from tests.conftest import load_state
from tests.test_jobs import LONG, start_worker, wait_for
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_a_job_cancelled_after_a_checkpoint_offers_to_resume_from_it(tiny, workspace):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="long", **LONG))
    worker = start_worker()
    try:
        checkpoints = workspace / "runs" / f"job-{job.id}" / "checkpoints"
        ckpt = wait_for(lambda: next(iter(checkpoints.glob("checkpoint-*/trainer_state.json")), None), 300,
                        "a complete checkpoint")
        assert runner.cancel(job.id).status == "cancelled"
    finally:
        worker.terminate()
        worker.wait()
    assert ckpt.exists()
    at = app("jobs.py")
    (button,) = [b for b in at.button if b.key == f"resume_{job.id}"]
    assert button.label == "Resume from the last checkpoint"  # before: "Restart (no checkpoint was saved)"
    assert runner.get(job.id).run_dir == str(checkpoints.parent)  # the job wrote it, not the test
    button.click().run()
    assert runner.get(job.id).status == "queued"


def test_a_resumed_run_reports_the_train_loss_of_the_same_run_unstopped(tiny, monkeypatch):
    def run(name: str) -> dict:
        monkeypatch.setenv("DUS_RUN_NAME", name)
        spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=4,
                       save_steps=2, keep_checkpoints=True, batch_size=2, max_length=32, max_rows=16,
                       eval_fraction=0.0, learning_rate=1e-2)
        return training.run_train(spec)

    whole = run("whole")
    runs = db.workspace() / "runs"
    # stopped after checkpoint-2 (killed before step 3 ended): a run folder holding only that checkpoint
    shutil.copytree(runs / "whole" / "checkpoints" / "checkpoint-2", runs / "part" / "checkpoints" / "checkpoint-2")
    part = run("part")
    assert (whole["resumed_from"], part["resumed_from"], part["global_step"]) == (None, "checkpoint-2", 4)
    a, b = load_state(registry.get("whole").path), load_state(registry.get("part").path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights...
    assert part["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-4)  # ...the same loss (before: steps 3-4)
    card = (db.models_dir() / "part" / "README.md").read_text()
    assert f"train loss {whole['train_loss']}" in card


def test_the_job_list_says_no_status_that_the_status_box_below_contradicts(tiny):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t"))
    at = app("jobs.py")
    runner._update(job.id, status="failed", error="boom")  # the job fails while the page is open
    at.run()
    assert at.selectbox(key="job").options == [f"{job.id} · sft · t"]  # before: "… · queued"
    assert [e.value for e in at.error] == [f"Job {job.id} failed: boom"]
