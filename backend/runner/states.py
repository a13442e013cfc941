"""A job's way through its states: what it waits for (after, needs, waits) and whether it can still run, and the
changes a user asks for (resume, cancel) with the jobs queued again or cancelled with them."""

from __future__ import annotations

import os
import signal
import time

from sqlmodel import select

from backend.cluster import ray_jobs
from backend.runner.hosts import _runs_job, _stopped_run_ended, host_id, live_hosts
from backend.runner.registered import (_made_by_its_run, _made_in_its_run, _output, export_instead,  # noqa: F401
                                       resume_marks_done, synth_pairs_made)
from backend.runner.rows import STOPPED, UNSUCCESSFUL, _transition, get
from storage import db
from storage.models import Job, utcnow


def _needs(job) -> list[int]:
    """The jobs `job` needs to have succeeded before it runs: its `after` and its `needs` (not its `waits`)."""
    return ([job.after] if job.after is not None else []) + list(job.needs or [])


def _waits_on_a_job(job, by_id: dict) -> bool:
    """Queued behind a job that has not succeeded yet (or, for `waits`, not ended yet): its own message ("waiting
    for job 4") says so."""
    deps = _needs(job)
    return any(getattr(by_id.get(d) or get(d), "status", None) != "succeeded" for d in deps) \
        or any(getattr(by_id.get(d) or get(d), "status", None) in ("queued", "running") for d in job.waits or [])


def _ended_dependency(job, by_id: dict) -> str | None:
    """Why a queued job will not run as things stand: a job it waits for ended without succeeding. Its stored
    "waiting for job 4" read as if job 4 were still to come; the worker cancels it only when it next looks for work
    (_claim_next), which a worker busy with a long training job, or none at all, may not do for hours."""
    if (ended := _ended_need(job, by_id)) is None:
        return None
    dep_id, dep = ended
    if dep is None:
        return f"will not run: job {dep_id} it waits for is gone; cancel it"
    return (f"will not run: job {dep_id} it waits for {dep.status}; resume job {dep_id} (python -m backend "
            f"jobs resume {dep_id}) to run this one after it, or cancel this one")


def never_runs(job, seen: frozenset = frozenset()) -> bool:
    """Whether a queued job can no longer run as things stand: a job it needs (after, needs) ended without
    succeeding or is gone, or, in turn, can no longer run (_claim_next cancels it when a worker next looks; a resume
    of the job that ended queues it again)."""
    if _ended_dependency(job, {}) is not None:
        return True
    return any((dep := get(dep_id)) is not None and dep.status == "queued" and dep_id not in seen
               and never_runs(dep, seen | {job.id})
               for dep_id in _needs(job))


def scores_nothing(job) -> bool:
    """Whether a queued job that waits for others however they end (a recipe's evaluation) has nothing left to wait
    for that will make anything: each of them ended without succeeding, or can no longer run."""
    deps = [get(d) for d in job.waits or []]
    return bool(deps) and all(d is None or d.status in UNSUCCESSFUL
                              or d.status == "queued" and never_runs(d) for d in deps)


def with_dependencies(ids) -> set[int]:
    """`ids` and every job they wait for (after, needs, waits), transitively: what running them here takes."""
    out, todo = set(), list(ids)
    while todo:
        if (job_id := todo.pop()) in out or (job := get(job_id)) is None:
            continue
        out.add(job_id)
        todo += _needs(job) + list(job.waits or [])
    return out


def resume(job_id: int) -> Job:
    """Queue an interrupted, failed or cancelled job again (training restarts from its last checkpoint), and with it
    the jobs that were waiting for it and never ran because it failed (a CPT → SFT → DPO chain goes on)."""
    job = get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}.")
    if job.status not in ("interrupted", "failed", "cancelled"):
        # "Job 4 is succeeded" read badly: a finished state is what it has done
        state = f"has {job.status}" if job.status in ("succeeded", "failed") else f"is {job.status}"
        raise ValueError(f"Job {job_id} {state}; only interrupted, failed or cancelled jobs resume.")
    if (made := _made_by_its_run(job)) is not None:  # nothing to run again: its work is done
        return _mark_done(job, made)
    if blocked := resume_blocked(job):
        raise ValueError(blocked[0])
    _check_name_still_free(job)
    if ray_jobs.is_ray(job.host) and job.status in STOPPED and ray_jobs.still_running(job.host, job.cluster_ref):
        raise ValueError(f"Job {job_id}'s Ray run {job.cluster_ref} is still stopping on the cluster at "
                         f"{job.host[len('ray:'):]} (asked to stop again). Resume it when Ray says it stopped (`python "
                         "-m backend cluster status`); a second run would now run beside it.")
    if host := _still_stopping(job):
        raise ValueError(f"Job {job_id} is still stopping on {host}: its worker there ends the stopped run within "
                         "a few seconds. Resume it when it has stopped; a second run would now run beside it.")
    # conditional: of two resumes racing, one queues it; the other must not turn a run already claimed back to queued
    # its start cleared with its end: cancelled while queued again, the old start and the cancel's time read as a run
    if not _transition(job_id, ("interrupted", "failed", "cancelled"), status="queued", error="", finished=None,
                       started=None, pid=None, host="", progress=0.0, message="queued to resume",  # not the old bar
                       seconds_before=_seconds_so_far(job)):
        raise ValueError(f"Job {job_id} is {get(job_id).status} now: it was resumed meanwhile.")
    _requeue_waiting_on(job_id)
    return get(job_id)


def _mark_done(job: Job, made) -> Job:
    """A job whose run registered its model before its row was stopped: succeeded, as that run would have left it,
    and the jobs that waited for it go on (_requeue_waiting_on), instead of a resume that refused the name its own
    model holds ("queue its spec again with a new name": the work done twice)."""
    said = (f"done: its run registered {made.name} before the job was marked {job.status}; nothing was run again")
    if not _transition(job.id, job.status, status="succeeded", progress=1.0, error="", message=said,
                       finished=job.finished or utcnow()):
        raise ValueError(f"Job {job.id} is {get(job.id).status} now: it was resumed meanwhile.")
    _requeue_waiting_on(job.id)
    return get(job.id)


def _check_name_still_free(job: Job) -> None:
    """A job that makes a model is refused when a model now holds its name: it failed on that ("already
    registered"), or would at its end, its work lost, each time it was resumed. A model of this job's own spec
    registered while its last run ran is most likely its work, its process killed before it recorded that: said so,
    with how to look, rather than "queue it again under a new name"; not marked done, as no row records it."""
    from backend import registry
    from backend.registry import RegistryError, check_name_free

    if not (name := _output(job)):
        return
    try:
        check_name_free(name)
    except RegistryError as exc:
        if (rec := registry.get(name)) is not None and _made_in_its_run(job, rec):
            raise ValueError(
                f"Job {job.id}'s work looks done: the {rec.kind} model {name!r} at {rec.path} was registered during "
                f"this job's last run, from this job's own spec, and the run ended before it recorded that (the "
                f"model's row, made by an older version, does not name its job, so the job stays {job.status}). Its log's end "
                f"says how far it got (python -m backend jobs log {job.id}). Use {name} as it is; to make it again, "
                f"delete it first (python -m backend models delete {name}), then resume the job.") from None
        raise ValueError(f"Job {job.id} would register {name!r} again: {exc} To make it under another name, queue "
                         f"its spec again with a new name (python -m backend jobs show {job.id} prints it).") from None


def _ended_need(job, by_id: dict | None = None) -> tuple[int, Job | None] | None:
    """The first job `job` needs (after, needs) that ended without succeeding or is gone, with its row (None: gone);
    `by_id`: rows already read."""
    for dep_id in _needs(job):
        if (dep := (by_id or {}).get(dep_id) or get(dep_id)) is None or dep.status in UNSUCCESSFUL:
            return dep_id, dep
    return None


def _synth_refused(job) -> str | None:
    """Why a resumed synthetic-math run would be refused at its start (pipeline.check_synth_free: its data set names
    or its folder are taken), said before it is queued: a resume queued it, and the run failed at once ("NAME-pairs
    ... is taken. Nothing was made"), while the button had said it went on from its cached rephrasings."""
    if job.kind != "synth-math":
        return None
    if pairs := synth_pairs_made(job):
        return f"Job {job.id} is not run again: {export_instead(pairs)}."
    from backend.specs import spec_from_dict
    from backend.synth.datasets import DatasetError
    from backend.synth.pipeline import check_synth_free

    try:
        spec = spec_from_dict(job.spec)
    except ValueError:
        return None  # the job says what is wrong with its spec when it runs
    try:
        check_synth_free(spec)
    except DatasetError as exc:
        return f"Job {job.id} would be refused at its start: {exc}"
    return None


def resume_blocked(job) -> tuple[str, int | None] | None:
    """Why a resume of `job` would do nothing, and the job to resume instead (None: none can help). A job that needs
    one that ended without succeeding was queued again by its resume and cancelled again at once by the worker
    ("not run: job 8 it waited for cancelled"), while `jobs resume` said "queued". The job to resume is the first up
    the chain that ended for a reason of its own: its resume queues again the jobs that waited for it unstarted
    (_requeue_waiting_on), this one among them when its own cancel said so. A synthetic-math run that would be
    refused at its start (_synth_refused) has no job to resume instead."""
    if (ended := _ended_need(job)) is None:
        return (said, None) if (said := _synth_refused(job)) else None
    dep_id, dep = ended
    if dep is None:
        return (f"Job {job.id} cannot run: job {dep_id} it waits for is gone. Queue its spec again as a new job "
                f"(Spec on the Jobs page; `python -m backend jobs show {job.id}` prints it).", None)
    path = [job, dep]
    while (up := _ended_need(path[-1])) is not None and up[1] is not None and up[0] not in [j.id for j in path]:
        path.append(up[1])
    root = path[-1]
    if up is not None and up[1] is None:
        return (f"Job {job.id} cannot run: job {dep_id} it waits for {dep.status}, and job {root.id} before it "
                f"waits for job {up[0]}, which is gone. Queue their specs again as new jobs.", None)
    # the chain from `root` down to `job` was cancelled unstarted by the worker, link by link: resuming `root` queues
    # every one of them again (_requeue_waiting_on); a job a user cancelled stays cancelled, and is resumed after
    with_it = all(j.status == "cancelled" and j.started is None and j.message.startswith(f"not run: job {d.id} it "
                                                                                         "waited for ")
                  for j, d in zip(path, path[1:]))
    said = (f"Job {job.id} did not run because job {dep_id} it waits for {dep.status}"
            + (f" (which waits for job {root.id}, {root.status})" if root is not dep else "")
            + f": resumed alone it would be cancelled again at once. Resume job {root.id} (python -m backend jobs "
            f"resume {root.id}, or Resume job {root.id} on the Jobs page)"
            + (": this one is queued again with it." if with_it else ", then this one."))
    return said, root.id


def _still_stopping(job: Job) -> str | None:
    """The machine where a cancelled or interrupted job's process may still run, if any. A cancel on the job's own
    machine kills it at once; one from elsewhere, or another machine giving it up for dead, only marks the row, and
    the owning machine's worker kills the process within a poll, then clears the row's pid (_clear_stopped).
    Resumed before that, the job would be claimed and run again while the old process still writes its progress
    into the same row. A machine none of whose workers beats any longer runs no job process (_watch_parent ends a
    job whose worker is gone)."""
    if job.status not in STOPPED or job.pid is None or ray_jobs.is_ray(job.host):
        return None
    if job.host in ("", host_id()):
        return host_id() if db._group_running(job.pid) else None
    return job.host if job.host in live_hosts() else None


def _requeue_waiting_on(job_id: int) -> None:
    """Jobs _claim_next cancelled, unstarted, because `job_id` (or, in turn, one of them) did not succeed: queued
    again to wait for it. A job a user cancelled says so in its message and stays cancelled."""
    # the evaluations that waited for a job however it ended and left models out: read once, not per job queued again
    # below (a stale row is harmless: _queue_again's transition holds only while the row is still in the state read)
    with db.session() as s:
        skipping = [w for w in s.exec(select(Job).where(Job.status.in_(("succeeded", "failed")),
                                                        Job.kind == "eval")).all() if _left_out(w)]
    todo = [job_id]
    while todo:
        dep = todo.pop()
        with db.session() as s:
            waiting = s.exec(select(Job).where(Job.status == "cancelled", Job.started == None,  # noqa: E711
                                               Job.message.startswith(f"not run: job {dep} it waited for "))).all()
        for w in waiting:
            if _transition(w.id, "cancelled", status="queued", finished=None,
                           message=f"queued again: job {dep} it waits for was queued again"):
                todo.append(w.id)
        # a job that waited for `dep` however it ended (a recipe's evaluation) and ran without what it makes: queued
        # again, it keeps the scores it stored (evaluate.stored_by_job) and scores what `dep` now makes
        for w in skipping:
            if dep in w.waits:
                _queue_again(w.id, dep, w.status)


def _left_out(job: Job) -> bool:
    """An evaluation that waited for jobs however they ended and scored without a model one of them was to make:
    it left it out (skip_missing), or failed because it left out every model (a recipe rerun's evaluation of its
    one changed stage: it stayed failed when that stage was resumed and succeeded)."""
    from backend.evaluate import NONE_MADE

    return job.kind == "eval" and bool(job.waits) and (
        (job.status == "succeeded" and bool((job.result or {}).get("skipped")))
        or (job.status == "failed" and (job.error or "").startswith(NONE_MADE)))


def _seconds_so_far(job: Job) -> float:
    """The seconds of a job's ended runs, kept when it is queued again: its start and end are rewritten by the next
    run, and the Jobs page's "run s" counts every run (resumed twice then cancelled read as its last 44 s)."""
    ran = (job.finished - job.started).total_seconds() if job.started and job.finished else 0.0
    return (job.seconds_before or 0.0) + max(ran, 0.0)


def _queue_again(job_id: int, dep: int, from_status: str = "succeeded") -> None:
    """An evaluation queued again because job `dep` it waits for was: as resume() does, without the pid or host of
    the run before (recover_orphans judged the new claim by them), its run's seconds kept and its start cleared."""
    if (job := get(job_id)) is None:
        return
    _transition(job_id, from_status, status="queued", finished=None, started=None, pid=None, host="", error="",
                seconds_before=_seconds_so_far(job),
                message=f"queued again: job {dep} it waits for was queued again")


def requeue_cancelled(job_id: int, message: str) -> bool:
    """Undo a cancel of a job that had not started (a recipe rerun that replaced it, then was refused): queued
    again with its message as it was."""
    return _transition(job_id, "cancelled", status="queued", finished=None, message=message)


def cancel(job_id: int, message: str = "cancelled before it started") -> Job:
    """Cancel a job; `message`: a queued job's reason (a resume of the job it waited for does not queue it again)."""
    job = get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}.")
    if job.status == "queued" and _transition(job_id, "queued", status="cancelled", finished=utcnow(),
                                              message=message):
        return get(job_id)
    job = get(job_id)  # a worker may have claimed it meanwhile
    if job.status == "running" and _transition(job_id, "running", status="cancelled", finished=utcnow(),
                                               message="cancelled"):
        # A process id means something only on the machine that started it: a job running elsewhere is killed by
        # its own machine's worker, which sees the cancelled row within a poll.
        if job.pid and job.host in ("", host_id()) and _runs_job(job.pid, job_id):
            try:
                os.killpg(job.pid, signal.SIGTERM)  # the child leads its own process group: its children go too
                for _ in range(50):
                    os.killpg(job.pid, 0)
                    time.sleep(0.1)
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):  # SIGKILL lands within moments: its end is what the row then says
                if not db._group_running(job.pid):
                    break
                time.sleep(0.1)
        ray_jobs.stop(job.host, job.cluster_ref)  # on a Ray cluster: Ray ends its process group wherever it runs
        # its row says what a resume then does (with_resume_step), as `jobs cancel` and a killed job's row say it,
        # once its run has ended (a training in its hand-over may have registered its model meanwhile: the button
        # then reads "Mark done"); a process still running (on another machine) is said by the worker that
        # clears its pid when it ends (hosts._clear_stopped). A Ray job's, as Ray is asked to stop it.
        ended = get(job_id)
        # its pid still runs here, though no group of that id does (a job run inside another process, as tests do)
        alive = ended.pid and ended.host in ("", host_id()) and db._pid_alive(ended.pid)
        if ended.status == "cancelled" and _still_stopping(ended) is None and not alive:
            _stopped_run_ended(job_id, "cancelled", None if ray_jobs.is_ray(ended.host) else ended.pid)
    return get(job_id)  # already finished (it won the race): its own final state stands
