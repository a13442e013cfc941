"""Training's hand-over to the registry and its metric rows across a restart (found in a backend review): the
parent is recorded by registered name, a kill between the model's move and its row leaves nothing that blocks the
name, and a run that starts over logs each value once."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from backend import registry, runner, training
from backend.specs import DataSource, SftSpec
from storage import db
from storage.models import JobMetric


class Killed(BaseException):
    """Stands in for the process dying: nothing below the raise runs, no handler of ours catches it."""


def test_a_run_killed_before_its_row_reruns_under_the_same_name_logs_each_value_once_and_adds_no_step(
        tiny_llama, workspace, monkeypatch):
    tiny = registry.import_folder(tiny_llama, "tiny")
    spec = SftSpec(model=tiny.path, data=[DataSource(source="builtin:alpaca-mini")], name="t", max_steps=4,
                   save_steps=100, eval_steps=2, batch_size=2, max_length=48, max_rows=40, learning_rate=1e-3)
    job = runner.submit(spec)  # the rows a job's callback writes are keyed by its id
    monkeypatch.setenv("DUS_JOB_ID", str(job.id))
    monkeypatch.setenv("DUS_RUN_NAME", "restart")
    run_dir = db.workspace() / "runs" / "restart"
    left = db.models_dir() / "t"
    real = training.register_output
    marked = []

    def killed(out_dir, name, kind, **fields):
        marked.append((Path(out_dir) / db.UNREGISTERED_MARK).is_file())
        raise Killed

    def rows() -> Counter:
        with db.session() as s:
            return Counter((m.step, m.name) for m in s.exec(select(JobMetric).where(JobMetric.job_id == job.id)))

    monkeypatch.setattr(training, "register_output", killed)
    with pytest.raises(Killed):
        training.run_train(spec)
    assert marked == [True] and (left / "config.json").exists() and registry.get("t") is None
    first = rows()
    assert first[(0, "eval_loss")] == 1 and first[(4, "loss")] == 1 and max(s for s, _ in first) == 4

    # stopped before any checkpoint: the run starts over, and the folder left behind does not block its name
    shutil.rmtree(run_dir / "checkpoints")
    with pytest.raises(Killed):
        training.run_train(spec)
    assert marked == [True, True] and rows() == first  # each value once, not twice

    # the trainer's last save is a checkpoint at step 4: resumed from it, nothing more is trained
    monkeypatch.setattr(training, "register_output", real)
    result = training.run_train(spec)
    rec = registry.get("t")
    assert rec.path == str(left) and not (left / db.UNREGISTERED_MARK).exists()
    assert rec.parents == ["tiny"]  # given by folder, recorded by name: the lineage and held-out check follow it
    assert result["global_step"] == 4 and result["resumed_from"] == "checkpoint-4"  # before: 5 (of 4)
    assert math.isfinite(result["train_loss"]) and rows() == first
