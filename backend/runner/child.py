"""The child: one job, run in a process of its own (`python -m backend jobs exec ID`), which writes its progress
and its end into the job's row."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable, NamedTuple

from backend.runner.queue import planned_name
from backend.runner.rows import _transition, get
from backend.runner.states import _left_out, _queue_again
from backend.specs import TRAIN_KINDS, spec_from_dict
from backend.words import plural
from storage.models import Job, utcnow


class _Counted(NamedTuple):
    """A count and the words after it, read as a str template is (IN_WORDS[k].format(n)) with the noun fitted to the
    count (words.plural): "1 scores kept" was said of an evaluation that had stored one score."""
    noun: str
    rest: str

    def format(self, n) -> str:
        return f"{plural(n, self.noun)} {self.rest}"


# result fields said in words in a job's "done:" message (and the pages', `jobs show`'s), left out when 0 ("kept 0"
# read as jargon)
IN_WORDS = {"kept": _Counted("score", "kept from its earlier run"),
            "already": "already registered: nothing imported"}  # an import of the built-in, imported before


def shown_fields(result: dict) -> list[tuple[str, object]]:
    """The result fields a job's "done:" message says (the pages say the same ones in units): scalars only (a nested
    block, a training run's perf choices, printed as a raw dict in every status box), no paths, none empty, and an
    IN_WORDS count left out when 0."""
    return [(k, v) for k, v in result.items() if k not in ("path", "run_dir") and v is not None
            and not isinstance(v, (dict, list)) and not (k in IN_WORDS and not v)]


def work_function(kind: str) -> Callable[..., dict]:
    if kind == "upscale":
        from backend.upscale import run_upscale

        return run_upscale
    if kind == "import":
        from backend.registry import run_import

        return run_import
    if kind == "eval":
        from backend.evaluate import run_eval

        return run_eval
    if kind == "merge":
        from backend.merge import run_merge

        return run_merge
    if kind == "synth-math":
        from backend.synth.pipeline import run_synth_math

        return run_synth_math
    if kind in TRAIN_KINDS:
        from backend.training import run_train

        return run_train
    if kind == "push":
        from backend.hubpush import run_push

        return run_push
    raise ValueError(f"No runner for job kind {kind!r}.")


def execute(job_id: int) -> int:
    """Run one job in this process (the worker starts `python -m backend jobs exec ID`). Returns an exit code."""
    job = get(job_id)
    if job is None or job.status not in ("queued", "running"):
        return 1
    if not _transition(job_id, ("queued", "running"), status="running", started=job.started or utcnow(),
                       pid=os.getpid(), message="starting"):
        return 1  # cancelled between the claim and this start
    print(f"job {job_id} ({job.kind}) started in process {os.getpid()}", flush=True)  # one line per run
    os.environ["DUS_JOB_ID"] = str(job_id)  # training processes write metrics rows for this job…
    os.environ["DUS_JOB_PID"] = str(os.getpid())  # …and its progress while the row is still this run's
    _watch_parent()
    last = [0.0]
    delay = float(os.environ.get("DUS_TEST_PROGRESS_DELAY", "0"))  # tests: slow a job down to kill it mid-way,
    release = os.environ.get("DUS_TEST_PROGRESS_RELEASE", "")  # and at full speed again once this file exists

    def progress(frac: float, message: str) -> None:
        print(f"[{frac:6.1%}] {message}", flush=True)
        now = time.monotonic()
        if now - last[0] > 0.5 or frac >= 1.0:
            last[0] = now
            _transition(job_id, "running", _of_pid=os.getpid(), progress=float(frac), message=message[:500])
        if delay and frac < 1.0 and not (release and os.path.exists(release)):
            time.sleep(delay)

    try:
        spec = spec_from_dict(job.spec)
        result = work_function(job.kind)(spec, None, progress)
    except Exception as exc:
        _log_failure(exc)
        _transition(job_id, "running", _of_pid=os.getpid(), status="failed", finished=utcnow(),
                    error=str(exc) or type(exc).__name__, message="failed")
        if (row := get(job_id)) is not None and row.status == "failed" and _left_out(row):  # every model left out,
            _requeue_if_waiting(row)  # one of them perhaps resumed while it started
        return 1
    summary = ", ".join(IN_WORDS[k].format(v) if k in IN_WORDS else f"{k} {v}" for k, v in shown_fields(result))
    # only while the row is still this run's: a job given up for dead by another machine and resumed meanwhile
    # belongs to its new run, whose row an old run's "succeeded" overwrote
    if not _transition(job_id, "running", _of_pid=os.getpid(), status="succeeded", finished=utcnow(), progress=1.0,
                       result=result, message=("done: " + summary)[:400]):
        # cancelled (or marked dead) while the work was finishing: that state stands, but say what was made
        _transition(job_id, ("cancelled", "failed", "interrupted"), _of_pid=os.getpid(), result=result,
                    message=f"{get(job_id).message}; the work had finished anyway: {summary}"[:500])
        return 1
    if result.get("skipped") and (row := get(job_id)).kind == "eval":  # it left models out: one of the jobs it
        _requeue_if_waiting(row)  # waits for may have been resumed while it ran
    return 0


def _log_failure(exc: Exception) -> None:
    """A refusal of our own (an error class of backend/ or storage/ raised with its message, no cause behind it: no
    token, a taken name, a malformed file) goes into the log as its message; anything else as its traceback. The log
    of a push refused for want of a token held a page of runner and hubpush frames under the one line that said
    what to do."""
    behind = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if type(exc).__module__.startswith(("backend.", "storage.")) and behind is None and str(exc):
        print(f"error: {exc}", file=sys.stderr, flush=True)
    else:
        traceback.print_exc()


def _requeue_if_waiting(job: Job) -> None:
    """An evaluation that left out models (skip_missing) while a job it waits for was queued again (resumed as it
    ran): queued again now, as _requeue_waiting_on queues one that had already ended; either order of the resume
    and this job's end is covered. So is a resumed job another worker finished before this one ended: it made a
    model left out here, now registered (it stayed unscored, the stage "skipped"). It keeps the scores it stored
    (evaluate.stored_by_job)."""
    from backend import registry

    # a failed one (_left_out: none of its models was there) left out every model
    skipped = (job.result or {}).get("skipped") or (job.spec.get("models", []) if job.status == "failed" else [])
    for dep in job.waits or []:
        if (d := get(dep)) is None:
            continue
        made = d.status == "succeeded" and (name := planned_name(d)) in skipped \
            and registry.record(name) is not None  # not left out again when it runs again: it queues no loop
        if d.status in ("queued", "running") or made:
            _queue_again(job.id, dep, job.status)
            return


def _watch_parent() -> None:
    """If the worker dies (even by kill -9), end this job's whole process group: the job is then 'interrupted'
    by the next worker and can resume from its last checkpoint, instead of running on unwatched. A Ray entrypoint
    `exec`s this process (cluster/ray_jobs.py), so its parent is Ray's JobSupervisor, alive as long as the Ray job:
    a worker that dies leaves it running, and only a lost node (the supervisor with it) ends it here, since the
    entrypoint leads a session of its own that a dying node would not take down."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
