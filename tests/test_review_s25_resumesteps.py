"""A resume may change logging_steps, save_steps and eval_steps (training_checkpoints.RESUME_MAY_CHANGE), yet the
resumed run kept the checkpoint's: transformers 5.24 sets them from the new arguments, then loads the checkpoint's
TrainerState over them. Resumed with logging_steps 1, a run saved logging every 3 steps logged steps [3, 4, 6] past
its checkpoint-2 (3: the 3rd step, 4 and 6: saves), not each step. backend/train_job/resume.py StepsFromSpec sets
them again before the first step."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from backend import registry, training
from backend.train_job.resume import StepsFromSpec
from storage import db
from tests.test_review_s17_train import _sft


@pytest.fixture
def tiny(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    return "tiny"


def test_the_spec_intervals_replace_the_checkpoints_resolved_as_transformers_resolves_them(tmp_path):
    """The checkpoint's state (every 5 steps) takes the arguments' values; a share under 1 is that share of
    max_steps, rounded up (TrainerState.compute_steps)."""
    saved = TrainerState(global_step=2, max_steps=10, logging_steps=5, save_steps=5, eval_steps=5)
    args = TrainingArguments(str(tmp_path), logging_steps=1, save_steps=0.25, eval_strategy="steps", eval_steps=4,
                             report_to=[])
    StepsFromSpec().on_train_begin(args, saved, TrainerControl())
    assert (saved.logging_steps, saved.save_steps, saved.eval_steps) == (1, 3, 4)  # 3: ceil(10 * 0.25)


def test_a_run_resumed_with_logging_steps_1_logs_every_step_after_its_checkpoint(tiny, monkeypatch):
    """A 4-step run logged every 3 steps (checkpoint every 2), resumed from its checkpoint-2 to step 6 logging every
    step: steps 3, 4, 5 and 6 each logged. Before: [3, 4, 6], the checkpoint's logging_steps 3 kept."""
    monkeypatch.setenv("DUS_RUN_NAME", "every3")
    training.run_train(_sft("every3", logging_steps=3))
    runs = db.workspace() / "runs"
    shutil.copytree(runs / "every3" / "checkpoints" / "checkpoint-2", runs / "every1" / "checkpoints" / "checkpoint-2")
    for f in ("spec.json", "metrics.jsonl"):  # as the run killed after its checkpoint-2 left them
        shutil.copy(runs / "every3" / f, runs / "every1" / f)
    monkeypatch.setenv("DUS_RUN_NAME", "every1")
    out = training.run_train(_sft("every1", max_steps=6, logging_steps=1))
    assert (out["resumed_from"], out["global_step"]) == ("checkpoint-2", 6)
    rows = [json.loads(x) for x in (runs / "every1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
