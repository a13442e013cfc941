"""What a job registers and what its last run registered: the model name a spec registers (output_name, the one
rule the queue, a resume and the CLI go by), and the model or data set a stopped job's own run registered before
its row was stopped (a resume then marks it done, or says to export). Below resume_step.py, which names a dead job's
next step by these rules, and imports nothing of the runner: they lived in states.py and queue.py, which import
hosts, which imports resume_step, a loop that resume_step broke only by importing states inside a function."""

from __future__ import annotations

import os
from pathlib import Path

from backend.specs import TRAIN_KINDS, _Spec, spec_from_dict
from storage.models import Job, as_utc

MAKES_MODELS = ("upscale", "merge", *TRAIN_KINDS)


def output_name(spec: _Spec, derive_import: bool = False) -> str | None:
    """The model name a job of `spec` registers: the one rule the queue's withdraw of a second job under one name,
    the queue's "a job already makes it" (_making), a resume's refusal of a name now taken and the CLI's foreground
    runs go by (they were spelled twice, and disagreed on machine_rank). None for a job that registers none: an
    evaluation, a push, synthetic data, the built-in model's import (imported once under its own name, however
    often it is asked for: check_before_queueing lets the second be queued), and a training's machine_rank > 0
    (machine 0 registers the model; the others train: training.py). An import given no name: None, as submit stores
    the name it derives (registry.import_name) in the spec before anything reads it; with `derive_import`, the name
    the import will derive, through registry.check_import, which also refuses a target that is no model or a name
    taken, as the import would (the CLI's foreground `models import`, which has no queued row)."""
    if spec.kind == "import":
        from backend.registry import BUILTIN_NAME, check_import

        if spec.target.lower() in ("builtin", BUILTIN_NAME.lower()):
            return None
        return check_import(spec.target, spec.name)[1] if derive_import else spec.name or None
    if spec.kind not in MAKES_MODELS or getattr(spec, "machine_rank", 0) > 0:
        return None
    return spec.name or spec.default_name()


def _output(job: Job) -> str | None:
    """The model name `job` registers (output_name), None too for a spec an older version wrote: the job says
    what is wrong with it when it runs."""
    try:
        return output_name(spec_from_dict(job.spec))
    except ValueError:
        return None


def _made_by_its_run(job: Job):
    """The registered model that `job`'s own latest run made and recorded in its row before the row was stopped
    under it: given up for dead by another machine, or cancelled, while its work finished (child.execute keeps the
    stopped state and writes the result: "the work had finished anyway"), or whose model's row names the job (a run
    killed between registering and writing its result). None when neither records it, or the model of that name is
    no longer the one it made (deleted, another model at another folder). A model registered by an older version
    names no job: _check_name_still_free says what is known instead."""
    from backend import registry

    if (name := _output(job)) and (rec := registry.get(name)) is not None and rec.job_id == job.id:
        return rec  # registered by this job's run (its row names the job): complete, whatever stopped the run after
    made = job.result or {}
    if not (name := made.get("model")) or name != _output(job) or job.error:  # a run that failed on its own
        return None  # (its result an older run's) is not done
    rec = registry.get(name)
    if rec is None or not made.get("path") or Path(rec.path).resolve() != Path(made["path"]).resolve() \
            or (job.started is not None and as_utc(rec.created) < as_utc(job.started)) \
            or rec.job_id is not None or not _made_from_its_spec(job, rec):  # another job's, or another spec's
        return None
    return rec


def resume_marks_done(job: Job) -> str | None:
    """The model a resume of `job` finds its own run registered, by resume's rule (_made_by_its_run): the resume
    then marks the job succeeded and runs nothing (_mark_done). None when a resume would run it (or refuse it). The
    Jobs page's button says which it will do: it read "Run again" for a job it marked done."""
    if job.status not in ("interrupted", "failed", "cancelled"):
        return None
    return made.name if (made := _made_by_its_run(job)) is not None else None


def _made_in_its_run(job: Job, rec) -> bool:
    """Whether model row `rec` was registered between the start of `job`'s last run and its end (the time it was
    marked stopped), from the same spec (a build's row keeps the spec it was made from; an import's, its source)."""
    if job.started is None or job.finished is None or not (
            as_utc(job.started) <= as_utc(rec.created) <= as_utc(job.finished)):
        return False
    return _made_from_its_spec(job, rec)


def _made_from_its_spec(job: Job, rec) -> bool:
    """Whether model row `rec` was made from `job`'s spec (a build's row keeps the spec; an import's, its source)."""
    if job.kind == "import":  # its source "folder:/abs/path", "gguf:…", "hub:owner/name" is the job's target
        source, target = str((rec.recipe or {}).get("import", "")).partition(":")[2], job.spec.get("target", "")
        return source == target or (os.path.isabs(source) and Path(source) == Path(target).expanduser().resolve())
    try:
        return rec.recipe == spec_from_dict(job.spec).model_dump(mode="json")
    except ValueError:
        return False


def synth_pairs_made(job) -> str | None:
    """The NAME-pairs data set a synthetic-math job's own last run registered (killed while exporting, or stopped
    after it registered): registered since the run started. None for other kinds, or when it is not registered or
    older than the run (another run's)."""
    if job.kind != "synth-math":
        return None
    from backend.synth.pipeline import get_dataset

    pairs = f"{job.spec.get('name') or 'synth-math'}-pairs"
    rec = get_dataset(pairs)
    if rec is None or job.started is None or as_utc(rec.created) < as_utc(job.started):
        return None
    return pairs


def export_instead(pairs: str) -> str:
    """What to do with a synthetic-math job whose run registered its pairs: export them (a resumed run is refused,
    its names taken)."""
    return (f"its pairs were registered as {pairs}; make the Instruct / Alignment sets from them with "
            f"python -m backend datasets export {pairs} (or the Synthetic math page's Export tab)")
