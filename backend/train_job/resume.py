"""Resuming a training run from its run folder's last checkpoint (backend/train_entry.py): no step past max_steps,
the spec's logging, save and eval intervals rather than the checkpoint's, the run's loss over every session's
steps, and trl's token count carried on."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

class RunComplete(Exception):
    """Raised before a step that would go past max_steps (see CompleteAtCheckpoint)."""


class CompleteAtCheckpoint(TrainerCallback):
    """A run resumed from a checkpoint saved at its last step (killed after the trainer's final save, before the
    model was handed over) must train no further. transformers 5.24 checks `global_step >= max_steps` only after a
    step, so such a resume ran one step more (step 5 of 4, at learning rate 0). The checkpoint's weights and state
    are loaded before the first step begins, so stopping there leaves the model as the checkpoint holds it."""

    def on_step_begin(self, args, state, control, **kw):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise RunComplete


class StepsFromSpec(TrainerCallback):
    """A resume may change logging_steps, save_steps and eval_steps (training_checkpoints.RESUME_MAY_CHANGE), but
    transformers 5.24 (Trainer._init_training_state) sets them from the new arguments and then replaces its state
    with the checkpoint's, values included: a run saved logging every 3 steps and resumed with logging_steps 1 went
    on logging every 3. They are set again from the arguments before the first step, resolved as transformers
    resolves them (TrainerState.compute_steps: a value under 1 is that share of max_steps). A fresh run gets the
    values it already has."""

    def on_train_begin(self, args, state, control, **kw):
        state.compute_steps(args, state.max_steps)


def train_or_finish(trainer, checkpoint: Path | None):
    """trainer.train from the checkpoint; a checkpoint that already holds every step gives its result untrained."""
    from transformers.trainer_utils import TrainOutput

    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except RunComplete:  # no step in this session: its loss, as transformers gives it for no step, is 0
        return TrainOutput(trainer.state.global_step, 0.0, {"train_runtime": 0.0})


def run_train_loss(result, log_history: list[dict], checkpoint: Path | None) -> float:
    """The mean loss over the run's steps, as an uninterrupted run reports it. transformers' TrainOutput.training_loss
    is the mean over the steps of this train() call only (5.24 Trainer._finalize_training divides by
    global_step minus the step it resumed at), so a resumed run reported another number than the same run
    unstopped, for the same weights. The steps before the checkpoint come from its logged losses, each the mean
    over the steps since the previous log; MetricsCallback logs at every checkpoint, so none is left out."""
    start = int(checkpoint.name.split("-")[1]) if checkpoint else 0
    session = result.global_step - start
    total, steps, last = result.training_loss * session, session, 0
    for h in log_history:
        if "loss" in h and h["step"] <= start:  # the checkpoint's history: the sessions before this one
            span = h["step"] - last
            total, steps, last = total + h["loss"] * span, steps + span, h["step"]
    return total / steps if steps else float("nan")


def resume_token_count(trainer, checkpoint: Path) -> None:
    """trl (1.16) logs `num_tokens` from trainer._total_train_tokens, set to 0 in every SFTTrainer and DPOTrainer
    and not saved in the checkpoint (transformers' num_input_tokens_seen is, in its trainer state): a resumed run
    counted from 0 again. It goes on from the count logged at the checkpoint's step (MetricsCallback logs at every
    save)."""
    if not hasattr(trainer, "_total_train_tokens"):
        return
    history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("log_history", [])
    counts = [h["num_tokens"] for h in history if "num_tokens" in h]
    if counts:
        trainer._total_train_tokens = int(counts[-1])
