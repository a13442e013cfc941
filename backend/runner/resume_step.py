"""What resuming a job does, said one way everywhere: the Jobs page's button, the sentence `jobs resume` prints, and
the next step that every end the worker writes into a job's row names (a dead process, Ctrl-C, an orphan, a Ray
cluster's end). A module of its own, below hosts.py (recover_orphans writes such ends): it lived in messages.py,
which imports hosts, so hosts imported it inside recover_orphans, a loop. The rules it reads sit below it
(registered.py: what a job's run registered; backend/training_checkpoints.py: a run folder's checkpoints), and
import nothing of the runner: they lived in states.py and training.py, which import it back (states imports hosts,
training the runner), and were imported inside its functions; evaljob, read for one kind, still is."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from backend import training_checkpoints
from backend.runner.registered import export_instead, resume_marks_done, synth_pairs_made
from backend.specs import TRAIN_KINDS
from backend.training_checkpoints import resumable_checkpoints
from storage import db
from storage.models import Job


def what_resume_does(job: Job) -> str:
    """The next step after a job process died without a word (killed, out of memory), by what its kind left: a
    killed build's row said only "see its log", though nothing was registered and a resume runs it again. Said by
    resume_action's rule (its `step`), as the button and `jobs resume` say it: a training killed before its first
    checkpoint was told a resume continued "from its last checkpoint", while the button said it started over. The
    button is named by its label ("Resume from the last checkpoint"): "or Resume on the Jobs page" named none."""
    action = resume_action(job)
    if not action.runs:
        return action.step
    return f"{action.step} (python -m backend jobs resume {job.id}, or \"{action.label}\" on the Jobs page)"


_what_resume_does = what_resume_does  # its name before `jobs cancel` said it too (the runner's modules, tests)


def with_resume_step(job: Job | None, fields: dict) -> dict:
    """`fields` that end `job`'s run, with its next step (_what_resume_does) added to the sentence its row then
    shows: a failed job's error, an interrupted or cancelled job's message (states.cancel of a running job: its row
    said just "cancelled"); any other end (queued again) as it is. Every end the
    worker writes says it so (a process that died, a worker's Ctrl-C, recover_orphans, a Ray cluster's end:
    ray_jobs.end_fields said "resume it to continue from its last checkpoint" to a training that saved none). Read
    from the row as `fields` leave it, not as it reads while they are written: resume_marks_done reads only ended
    rows, so a killed job whose model was registered was told a resume ran it again, and the resume marked it done."""
    status = fields.get("status")
    if job is None or status not in ("failed", "interrupted", "cancelled"):
        return fields
    key = "error" if status == "failed" else "message"
    step = _what_resume_does(Job(**{**job.model_dump(), **fields}))
    return fields | {key: f"{fields[key]}; {step}"}


def said_resume_step(job: Job) -> bool:
    """Whether `job`'s message already names what a resume does (with_resume_step added it): a cancelled run's end
    is reached twice, by states.cancel and by the worker that clears its pid (hosts._stopped_run_ended), and the
    message read the step twice."""
    said = job.message or ""
    return f"; {what_resume_does(job)}" in said or f"python -m backend jobs resume {job.id}, or \"" in said


_CUT_BY = {"cancelled": "by the cancel", "interrupted": "when it was interrupted", "failed": "when it failed"}


def tidy_cut_checkpoints(job: Job) -> str:
    """A training job whose run has ended: its checkpoint folders cut off while being saved (no readable
    trainer_state.json, which a resume skips) are removed, so they neither look like checkpoints nor keep their
    gigabytes; what was removed, in words ("" when nothing). Never while the run may still save one."""
    if job.kind not in TRAIN_KINDS:
        return ""
    cut = training_checkpoints.remove_cut_checkpoints(run_folder(job))
    if not cut:
        return ""
    cut_by = _CUT_BY.get(job.status, "when its run ended")
    if len(cut) == 1:
        return f"a checkpoint cut off {cut_by} was removed: {cut[0]}"
    return f"{len(cut)} checkpoints cut off {cut_by} were removed: {', '.join(cut)}"


class ResumeAction(NamedTuple):
    label: str  # the Jobs page's button
    says: str  # the sentence `jobs resume` prints, and the button's help
    marks_done: bool = False  # its run registered its model: nothing runs again
    step: str = ""  # the next step in a dead job's row (_what_resume_does)
    runs: bool = True  # whether a resume is the next step (False: export instead)


def resume_action(job) -> ResumeAction:
    """What resuming `job` will do, by the rules runner.resume follows: the Jobs page's button, the sentence
    `jobs resume` prints and the next step a dead job's row names (they were written apart and disagreed: the CLI
    said a stopped evaluation ran again from the start, the button that its stored scores were kept, which run_eval
    does)."""
    if made := resume_marks_done(job):
        return ResumeAction(f"Mark done ({made} is registered)",
                            f"its last run registered {made} before the job was marked {job.status}: resuming marks "
                            "the job succeeded and runs nothing again; the jobs waiting for it go on", True,
                            f"its last run registered {made}; resume it to mark it succeeded, nothing runs again")
    if job.kind in TRAIN_KINDS:
        if (point := resume_point(job)) is not None:
            return ResumeAction("Resume from the last checkpoint",
                                f"a running worker resumes it from its last checkpoint, {point.name}",
                                step=f"resume it to continue from its last checkpoint, {point.name}")
        return ResumeAction("Restart (no checkpoint was saved)",
                            "no checkpoint was saved: a running worker starts the training over from step 0",
                            step="no checkpoint was saved; resume it to start the training over from step 0")
    if job.kind == "eval":
        from backend.evaljob import stored_by_job

        if kept := stored_by_job(job.id):
            return ResumeAction("Resume (the scores it stored are kept)",
                                f"a running worker scores the rest; the scores it stored for {len(kept)} model and "
                                f"task pair{'s' if len(kept) != 1 else ''} are kept",
                                step="the scores it stored are kept; resume it to score the rest")
        return ResumeAction("Run again", "it stored no score: a running worker runs the eval again from the start",
                            step="it stored no score; resume it to run it again")
    if job.kind == "synth-math":
        if pairs := synth_pairs_made(job):  # a resumed run is refused (its names taken): runner.resume says so
            return ResumeAction(f"Export instead ({pairs} is registered)",
                                f"{export_instead(pairs)}; a resumed run would be refused, its names taken",
                                step=export_instead(pairs), runs=False)
        return ResumeAction("Resume (its cached rephrasings are kept)",
                            "a running worker goes on from the rephrasings it cached",
                            step="nothing was registered; resume it to go on from the rephrasings it cached")
    return ResumeAction("Run again", f"a running worker runs the {job.kind} again from the start",
                        step="nothing was registered (a worker removes its partial files); resume it to run it again")


def run_folder(job) -> Path:
    """A training job's run folder: the one its row recorded, else runs/job-ID, where a job stopped before its row
    recorded it (older versions never did) trained."""
    return Path(job.run_dir or db.workspace() / "runs" / f"job-{job.id}")


def resume_point(job) -> Path | None:
    """The checkpoint a resume of `job` continues from: the newest complete one (trainer_state.json is written last)
    in its run folder (run_folder); None when it starts over (not a training job, or stopped before its first
    checkpoint). The Jobs page's Resume button and `jobs resume` say what it will do by this one rule."""
    if job.kind not in TRAIN_KINDS:
        return None
    saved = resumable_checkpoints(run_folder(job))
    return saved[-1] if saved else None
