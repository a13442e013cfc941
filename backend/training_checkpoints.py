"""A training run's folder as a resume sees it: its complete checkpoints, whether a spec may resume them
(check_resume), and how a stopped run goes on, in words. Split from backend/training.py, which still gives these
names to its callers; the Jobs page's Resume button (runner.resume_point) and the launched trainer (train_entry)
read the checkpoints here without importing the training job, and with it the runner. (backend/train_job/resume.py
is the trainer's side: no step past max_steps, the loss and token count carried on.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from backend.specs import _TrainSpec, spec_from_dict


class TrainingError(RuntimeError):
    pass


# raised through backend/training.py, which its callers import it from: a failure line still reads
# "backend.training.TrainingError: …", as before this module was split off
TrainingError.__module__ = "backend.training"

# Fields that only place one machine in a multi-machine run: equal runs differ in these, so the run folder's
# name leaves them out (a Slurm resubmission gets other hosts, hence another main_process_ip).
PLACEMENT_FIELDS = {"machine_rank", "main_process_ip", "main_process_port"}


def _state_readable(checkpoint: Path) -> bool:
    """Whether the checkpoint's trainer_state.json (written last) is there and whole: a machine that went down
    while saving can leave it empty or cut, and transformers' resume then fails on it at every retry."""
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _checkpoints(run_dir: Path) -> list[Path]:
    """The trainer's checkpoint-N folders of a run, in step order (other folders are not the trainer's)."""
    found = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resumable_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a resume can continue from, in step order, touching nothing: what the Jobs page's Resume
    button and `jobs resume` promise (runner.resume_point) is what the resumed run then takes."""
    return [p for p in _checkpoints(run_dir) if _state_readable(p)]


def remove_cut_checkpoints(run_dir: Path) -> list[str]:
    """Remove the checkpoint folders a process killed while saving left without a readable trainer_state.json
    (transformers' Trainer._save_checkpoint writes it last, after the model, optimizer, scheduler and RNG states),
    which cannot be resumed from; their names, in step order. Only once the run's processes have ended: a folder
    being saved has no trainer_state.json yet. Complete checkpoints and other folders are left alone."""
    cut = [p for p in _checkpoints(run_dir) if not _state_readable(p)]
    for p in cut:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in cut]


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """resumable_checkpoints, and the others removed (remove_cut_checkpoints): the resume starts from the checkpoint
    before a cut one."""
    remove_cut_checkpoints(run_dir)
    return resumable_checkpoints(run_dir)


# What a run resumed from a checkpoint may change: how far it goes (max_steps: the schedule then ends there, and the
# start says so), its name and output, trackers, checks, logging and saving intervals, and where and with which
# kernels it runs (the same numbers, sooner or in less memory). Anything else is refused: the Trainer restores the
# checkpoint's optimizer and scheduler, whose saved base learning rate overrides the spec's, and skips as many
# batches of the NEW data order as the old run consumed, so a changed spec trained as neither, without a word.
# How many processes train: a run resumed on other hardware (a node lost, a smaller allocation) may change them, and
# the start line says that each step then sees another number of rows (batch_size x accumulation x processes)
WORLD_FIELDS = ("num_processes", "num_machines", "ray_workers", "accelerate_config")
RESUME_MAY_CHANGE = {"max_steps", "name", "out", "keep_checkpoints", "report_to", "memory_check", "logging_steps",
                     "eval_steps", "save_steps", "resources", "accelerate_config", "gradient_checkpointing",
                     "precompute_ref_log_probs", *PLACEMENT_FIELDS, *WORLD_FIELDS}
PERF_MAY_CHANGE = {"compile", "liger", "attention"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k == "perf":  # its fields one by one: perf.optimizer
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def check_resume(spec: _TrainSpec, run_dir: Path) -> str:
    """Before a run folder's spec.json is replaced: a folder holding checkpoints resumes them, so its spec must be
    the one they were trained with (but RESUME_MAY_CHANGE). Returns a note for the start line ("" when none)."""
    checkpoints = resumable_checkpoints(run_dir)
    try:
        old = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError, TypeError):  # a folder from before spec.json: nothing to compare with
        return ""
    if not checkpoints or not isinstance(old, dict):
        return ""
    last, step = checkpoints[-1], int(checkpoints[-1].name.split("-")[1])
    try:  # with the defaults of fields added since it was written, so that only a real change counts
        old = spec_from_dict(old).model_dump(mode="json")
    except ValueError:  # (a field since removed: compared as written)
        pass
    new = _flat(spec.model_dump(mode="json"))
    old = _flat(old)
    changed = [k for k in sorted(set(new) | set(old)) if k in new and k in old and new[k] != old[k]
               and k not in RESUME_MAY_CHANGE and not (k.startswith("perf.") and k[5:] in PERF_MAY_CHANGE)]
    again = (f"Run the spec it was started with to resume it; to train this one, start it in another run folder "
             f"(--run-name / DUS_RUN_NAME), or remove {run_dir / 'checkpoints'} to start over here.")
    if changed:
        said = "; ".join(f"{k} {json.dumps(old[k])} -> {json.dumps(new[k])}" for k in changed)
        raise TrainingError(f"run folder {run_dir} holds {last.name} of a run with another spec ({said}): a resume "
                            "continues that run's optimizer, learning-rate schedule and data order, so it would "
                            f"train as neither. {again}")
    world = [k for k in WORLD_FIELDS if k in new and k in old and new[k] != old[k]]
    said_world = (f"; {', '.join(f'{k} {json.dumps(old[k])} -> {json.dumps(new[k])}' for k in world)}: each step now "
                  "sees the rows of the new number of processes (batch_size x gradient accumulation x processes)"
                  if world else "")
    if spec.max_steps < step:
        raise TrainingError(f"max_steps {spec.max_steps}, but run folder {run_dir} holds {last.name}, already "
                            f"past it. {again}")
    if old.get("max_steps") not in (None, spec.max_steps):
        return (f" to max_steps {spec.max_steps} (was {old['max_steps']}: its learning-rate schedule now ends at "
                f"step {spec.max_steps}{said_world})")
    return f" ({said_world[2:]})" if world else ""


def resume_words(run_dir: Path, job: str | None) -> str:
    """How a stopped run goes on: from its newest checkpoint, or over from step 0 when none was saved. A job keeps
    its run folder (runs/job-ID); a foreground run's is timestamped, found again only by --run-name."""
    saved = resumable_checkpoints(run_dir)
    button = "Resume from the last checkpoint" if saved else "Restart (no checkpoint was saved)"  # its label
    again = (f"resumed as it is (python -m backend jobs resume {job}, or \"{button}\" on the Jobs page), it" if job
             else f"the same command with --run-name {run_dir.name}" if saved else "the same command run again")
    return f"{again} continues from {saved[-1].name}" if saved else f"no checkpoint was saved: {again} starts over"
