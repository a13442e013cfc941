"""The job runner: pages write a queued row; a worker process runs each job in a child process of its own.

    python -m backend worker          # the dashboard's run command starts one for you

A job never runs in the Streamlit script thread (a rerun would start it twice or kill it). The child process runs
`run_<kind>(spec, out_dir, progress)`, the same function the CLI calls in the foreground, and writes progress and
the final status into its row. The worker only launches children, notices ones that died, and marks jobs whose
worker vanished as interrupted when it starts again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from datetime import timedelta, timezone
from pathlib import Path
from typing import Callable, Collection

import sqlalchemy as sa
from sqlmodel import func, select

from backend.cluster import ray_jobs
from backend.specs import TRAIN_KINDS, _Spec, spec_from_dict
from storage import db
from storage.models import Job, JobMetric, WorkerBeat, utcnow

FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
UNSUCCESSFUL = FINISHED[1:]  # ended without succeeding: a job that needs it will not run
BEAT_EVERY = 5.0  # seconds between a worker's heartbeat rows
BEAT_STALE = 60.0  # a machine none of whose workers beat for this long is taken for dead
ALIVE_WITHIN = 15.0  # a worker that beat this recently runs (the pages' "no job worker" banner, job_message)
WAITING = "waiting for the worker"  # a queued job's message until a worker claims it (pages say more: common.py)
# result fields said in words in a job's "done:" message, and left out when 0 ("kept 0" read as jargon)
IN_WORDS = {"kept": "{} scores kept from its earlier run"}


host_id = db.host_id  # this machine's name in job rows (DUS_HOST_ID overrides it: two workers on one machine play two)


def claim_host() -> str:
    """The `host` this worker writes into the jobs it claims: this machine, or with a Ray cluster configured
    (DUS_RAY_ADDRESS) the cluster, whose rows Ray's job status judges and whose in-flight jobs the slots count."""
    addr = ray_jobs.address()
    return ray_jobs.host_for(addr) if addr else host_id()


def _hosts_here() -> tuple[str, ...]:
    """The `host` values of the jobs this worker's slots share: rows from before jobs recorded a machine ("") belong
    to a local worker, never to a cluster."""
    here = claim_host()
    return (here,) if ray_jobs.is_ray(here) else ("", here)


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


def submit(spec: _Spec, after: int | None = None, needs: list[int] | None = None,
           waits: list[int] | None = None) -> Job:
    """Queue a job; with `after`, it runs only once that job has succeeded (a CPT → SFT → DPO chain); with
    `needs`, once every one of those jobs has (a merge waits for both candidates); with `waits`, once every one of
    those has ended, however it ended (a recipe's evaluation scores what its stages made: one failed stage leaves
    its model out, not every model's scores)."""
    needs = sorted(set(needs or []))
    soft = sorted(set(waits or []) - set(needs) - {after})
    for dep in ([after] if after is not None else []) + needs + soft:
        if get(dep) is None:
            raise ValueError(f"No job {dep} to wait for.")
    waits = ([after] if after is not None else []) + needs + soft
    if spec.kind == "import" and not spec.name:  # known by the name it will register (_making, the pages' checks):
        from backend.registry import import_name  # two unnamed imports of one folder both queued, and the second

        if name := import_name(spec.target):  # failed; `train --after` it was refused
            spec = spec.model_copy(update={"name": name})
    check_before_queueing(spec)
    if addr := ray_jobs.address():  # refused now, not queued to wait for ever or fail on a node (cluster/ray_jobs.py)
        ray_jobs.check_submission(spec, addr)
    with db.session() as s:
        job = Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status="queued", after=after, needs=needs,
                  waits=soft,
                  message=f"waiting for job{'s' if len(waits) > 1 else ''} {', '.join(map(str, waits))}" if waits
                  else WAITING)
        s.add(job)
        s.flush()  # its id, so that its log's path goes in the same commit: a worker that claimed the row between
        # two commits started it with its output thrown away (start_child's os.devnull), its log never written
        job.log_path = str(db.workspace() / "logs" / f"job-{job.id}.log")
        s.commit()
        s.refresh(job)
        return job


def check_before_queueing(spec: _Spec, coming: Collection[str] = ()) -> None:
    """Refuse what the registry already shows the job would fail on, before its row is written (the pages and
    `--queue` both queue through submit): a merge of models of another depth, width or dtype; an import of a path
    that is no model, or under a name another model holds; an evaluation's malformed task file or a training job's
    malformed data file (read as the job reads them). Rows, paths and data files only: no weights are read. A path is
    looked at only when the job will run on this machine: with a Ray cluster or a worker on another machine beating
    in the shared database, a folder this machine lacks may be where the job runs (the job says so if not).
    `coming`: the models jobs queued together with this one will make (a recipe's stages, checked before any is
    queued)."""
    if spec.kind in MAKES_MODELS:
        _check_output_name(spec.name or spec.default_name())
        if _runs_here_only() and getattr(spec, "machine_rank", 0) == 0:  # its folder, free (the job refused it late)
            from backend import outputs

            try:
                outputs.check_folder_free(outputs.default_folder(spec.out, spec.name or spec.default_name()),
                                          by_name=not spec.out)
            except FileExistsError as exc:  # a refusal, as every other one here (the pages show a ValueError)
                raise ValueError(str(exc)) from None
    for ref in _model_refs(spec):
        if ref not in coming:
            _check_model_ref(ref)
    if spec.kind == "upscale":
        _check_depths(spec)
    elif spec.kind == "merge":
        from backend.merge.plan import check_registered

        check_registered(spec)
    elif spec.kind == "synth-math":  # its data set names and folder are free (a rerun replaced them silently)
        from backend.synth.pipeline import check_synth_free

        check_synth_free(spec)
        _check_no_synth_run(spec)
    elif spec.kind == "import":
        from backend.registry import BUILTIN_NAME, check_import, check_name_free

        name = spec.name
        if _runs_here_only():
            name = check_import(spec.target, spec.name)[1]
        elif spec.name:
            check_name_free(spec.name)
        if name and spec.target.lower() not in ("builtin", BUILTIN_NAME.lower()):  # the built-in, asked for twice,
            _check_not_making(name)  # is imported once
    elif spec.kind == "push":  # a model that is not there, or that a Hub user could not load: refused now
        from backend.hubpush import check_pushable

        if spec.model not in coming and not _making(spec.model):  # else the job it waits for makes it
            check_pushable(spec.model, spec.license_name, spec.license_link)
    elif spec.kind == "eval" and _runs_here_only():  # its task files, read as the job reads them (a malformed one
        from backend.evaluate import check_task  # failed it much later, behind a busy queue)

        for task in spec.tasks:
            check_task(task, spec.limit)
    elif spec.kind in TRAIN_KINDS:
        _check_train_files(spec)


def _check_train_files(spec) -> None:
    """A training job's built-in and registered sets (a mix's sources too) and local files, read as the job reads
    them (data.expand, data.check_source): a malformed file or one of the wrong layout was queued by `train --queue`
    and `run --queue` (the Train page previews it) and failed the job when its turn came. Hub sets are left to the
    job; local files only when the job runs on this machine (registered sets live in the shared workspace); a set
    not registered yet, as the job that makes it may be queued before this one (a recipe's synth-math stage)."""
    from backend import data
    from backend.synth.pipeline import get_dataset

    for d in spec.data + ([spec.eval_data] if spec.eval_data else []):
        for src, _ in data.expand([(d.source, 1.0)]):
            if src.startswith("builtin:") or (src.startswith("dataset:") and get_dataset(src[len("dataset:"):])) \
                    or (_runs_here_only() and Path(src).expanduser().is_file()):
                data.check_source(src, spec.kind)


MAKES_MODELS = ("upscale", "merge", *TRAIN_KINDS)


def _making(name: str) -> Job | None:
    """The queued or running job that will register a model under `name`, if any: an import by the name it gives
    (the Models page's), which was not looked at (a second job under that name was queued, and failed when its turn
    came; a job reading the imported model was refused)."""
    for job in active_jobs():
        if job.kind == "import" and job.spec.get("name") == name:
            return job
        if job.kind not in MAKES_MODELS:
            continue
        try:
            spec = spec_from_dict(job.spec)
        except ValueError:  # queued by an older version, no longer valid: it fails when it runs, saying why; here
            continue  # it refused every later submission
        if (spec.name or spec.default_name()) == name:
            return job
    return None


def _check_output_name(name: str) -> None:
    """The name a job would register is free: no model holds it, and no job in the queue will make one under it
    (the second of two such jobs failed when it ended, its work lost)."""
    from backend.registry import check_name_free

    check_name_free(name)
    _check_not_making(name)


def _check_not_making(name: str) -> None:
    if job := _making(name):
        raise ValueError(f"Job {job.id} ({job.kind}, {job.status}) will register a model named {name!r}: choose "
                         "another name.")


def _check_no_synth_run(spec) -> None:
    """No queued or running synthetic-math job makes data sets of this name or writes this folder (its `out`, or the
    default one of its name, as check_synth_free finds it): two were both queued, ran side by side in one folder,
    and the registered pairs' file held the other run's pairs."""
    from backend.names import inside

    def folder(s: dict) -> Path:
        return Path(s.get("out") or inside(db.workspace() / "datasets", s.get("name") or "")).expanduser().resolve()

    mine = folder({"out": spec.out, "name": spec.name})
    for job in active_jobs():
        if job.kind != "synth-math":
            continue
        if job.spec.get("name") == spec.name or folder(job.spec) == mine:
            what = f"data sets named {spec.name}-…" if job.spec.get("name") == spec.name else f"into {mine}"
            raise ValueError(f"Job {job.id} (synth-math, {job.status}) will write {what}: choose another name "
                             f"(or output folder), or wait until it ends.")


def _model_refs(spec: _Spec) -> list[str]:
    """The models a job reads, by the names or folders its spec gives."""
    refs = [getattr(spec, f, None) for f in ("base", "second", "model", "reference_model")]
    return [r for r in refs + list(getattr(spec, "models", None) or []) if r]


def _check_model_ref(ref: str) -> None:
    """A model a job reads is registered, the built-in one, the model a queued job will make (a recipe's next
    stage), or a folder; a folder is looked at only when the job runs on this machine."""
    from backend import registry

    if registry.record(ref) is not None or ref.lower() in ("builtin", registry.BUILTIN_NAME.lower()) or _making(ref):
        return
    if os.sep in ref or ref.startswith(("~", ".")):
        if _runs_here_only() and not Path(ref).expanduser().is_dir():
            raise ValueError(f"{ref!r} is not a folder on this machine: give a model folder, or a registered "
                             "model's name (python -m backend models list).")
        if _runs_here_only() and (problem := registry.missing_tokenizer(Path(ref).expanduser())):
            raise ValueError(problem[0])
        return
    raise ValueError(f"{ref!r} is neither a registered model (python -m backend models list), nor a folder, nor the "
                     "model a queued job will make.")


def _check_depths(spec) -> None:
    """The layers an up-scaling asks for exist in its registered sources (m, groups, slices against their depths),
    by the same rules the build applies; a source still to be made is left to the job."""
    from backend import registry
    from backend.upscale import layer_slots

    recs = [registry.record(r) for r in (spec.base, spec.second) if r]
    if all(r is not None and r.num_layers for r in recs):
        layer_slots(spec, [r.num_layers for r in recs])


def _runs_here_only() -> bool:
    """No Ray cluster, and no worker of another machine alive: a queued job runs on this machine."""
    return not ray_jobs.address() and not (live_hosts() - {host_id()})


@db.retrying  # a database server restart must not fail the worker loop or a job (storage/db.py)
def get(job_id: int) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def list_jobs(limit: int | None = 100, *, kinds=None, statuses=None) -> list[Job]:
    """The newest `limit` jobs (None: all), of `kinds` and `statuses` when given, newest first, and every queued or
    running one among them however old: a days-long training behind 100 newer jobs could not be opened, cancelled
    or waited for on the pages, nor seen in `jobs list`."""
    with db.session() as s:
        q = select(Job).where(Job.kind.in_(kinds)) if kinds else select(Job)
        q = q.where(Job.status.in_(statuses)) if statuses else q
        rows = list(s.exec(q.order_by(Job.id.desc()).limit(limit)))
        if limit is not None and len(rows) == limit:
            older = q.where(Job.status.in_(("queued", "running")), Job.id < rows[-1].id)
            rows += list(s.exec(older.order_by(Job.id.desc())))
    return rows


def planned_name(job) -> str:
    """The name a job will register: its spec's name, or the name the spec derives when it gives none (a job
    queued from the CLI or a saved spec without --name holds `name: null`), "" when its spec cannot say. The pages'
    "a job already makes this name" check, their job labels and `jobs list` all use it."""
    if job.spec.get("name"):
        return job.spec["name"]
    try:
        spec = spec_from_dict(job.spec)
    except ValueError:  # a spec written by an older version
        return ""
    return spec.default_name() if hasattr(spec, "default_name") else ""


def job_output(job) -> str:
    """What a job makes, as the Jobs page and `jobs list` show it, so that two merges of the same pair tell apart:
    the registered name once it succeeded, else the spec's name (or the name the job will derive), the scored models
    for an evaluation, the repo a push uploads to, the source of an import that derives its name on the way."""
    made = (job.result or {}).get("model") or (job.result or {}).get("pairs")
    if made:
        return made
    if job.kind == "eval":
        return "scores of " + ", ".join(job.spec.get("models", []))
    if job.kind == "push":
        return f"{job.spec.get('model')} → hub:{job.spec.get('repo')}"
    return planned_name(job) or (f"from {job.spec['target']}" if job.spec.get("target") else "")


def jobs_using(name: str) -> list[Job]:
    """The queued or running jobs whose spec reads the model `name` (a training's model or reference, an up-scale's
    base or second, a merge's candidates or base, an evaluation's models, a synth-math job's `model:` rephraser), by
    its name or by its folder's path (what the CLI stores for a folder): a delete refuses them (registry.delete, the
    Models page's warning)."""
    from backend import registry

    def refs(j: Job) -> list[str]:
        out = [j.spec.get(f) for f in ("model", "base", "second", "reference_model")] + list(j.spec.get("models") or [])
        if j.kind == "synth-math" and str(j.spec.get("rephraser") or "").startswith("model:"):
            out.append(j.spec["rephraser"].removeprefix("model:"))
        return [r for r in out if isinstance(r, str) and r]

    def means(ref: str) -> bool:
        if ref == name:
            return True
        rec = registry.record(ref)  # a registered folder's path, or "builtin", names the model too
        return rec is not None and rec.name == name

    return [j for j in active_jobs() if any(means(r) for r in refs(j))]


def active_jobs() -> list[Job]:
    """Every queued or running job, oldest first: what a queued job's place in the queue depends on, however many
    finished jobs are newer."""
    with db.session() as s:
        return list(s.exec(select(Job).where(Job.status.in_(("queued", "running"))).order_by(Job.id)))


def _waits_on_a_job(job, by_id: dict) -> bool:
    """Queued behind a job that has not succeeded yet (or, for `waits`, not ended yet): its own message ("waiting
    for job 4") says so."""
    deps = _needs(job)
    return any(getattr(by_id.get(d) or get(d), "status", None) != "succeeded" for d in deps) \
        or any(getattr(by_id.get(d) or get(d), "status", None) in ("queued", "running") for d in job.waits or [])


def _needs(job) -> list[int]:
    """The jobs `job` needs to have succeeded before it runs: its `after` and its `needs` (not its `waits`)."""
    return ([job.after] if job.after is not None else []) + list(job.needs or [])


def _ended_dependency(job, by_id: dict) -> str | None:
    """Why a queued job will not run as things stand: a job it waits for ended without succeeding. Its stored
    "waiting for job 4" read as if job 4 were still to come; the worker cancels it only when it next looks for work
    (_claim_next), which a worker busy with a long training job, or none at all, may not do for hours."""
    for dep_id in _needs(job):
        dep = by_id.get(dep_id) or get(dep_id)
        if dep is None:
            return f"will not run: job {dep_id} it waits for is gone; cancel it"
        if dep.status in UNSUCCESSFUL:
            return (f"will not run: job {dep_id} it waits for {dep.status}; resume job {dep_id} (python -m backend "
                    f"jobs resume {dep_id}) to run this one after it, or cancel this one")
    return None


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


def job_message(job, active: list | None = None, alive: bool | None = None) -> str:
    """A job's message as the pages and `jobs list` show it. A queued job's stored "waiting for the worker" read as
    if no worker ran while one was busy with another job: with a worker alive it says which jobs run and which go
    first; with none it stays "waiting for the worker" (the pages' worker_banner says how to start one). A failed
    job's error takes its "failed". A running job whose worker and process are gone (a worker killed with -9) stays
    "running" in its row until a worker starts again and marks it interrupted: with no worker alive the message says
    so rather than show it running, and leaves the row to that worker (a look at the jobs repairs nothing; a worker
    alive anywhere repairs it within BEAT_STALE: recover_orphans). `active`: active_jobs() (queued and running only:
    a status box asks every second), and `alive`: worker_alive(), when the caller has them already."""
    if job.status == "failed" and job.error:
        return f"failed: {job.error}"
    if job.status == "running" and not (worker_alive() if alive is None else alive) and (doubt := _unwatched(job)):
        return (f"running? — {doubt}; start a worker (python -m backend worker) to mark it interrupted, then resume "
                f"it (python -m backend jobs resume {job.id})")
    # "waiting: the Ray cluster did not take it (…)" is the runner's own reason: it stands
    if job.status != "queued" or job.message.startswith("waiting: "):
        return job.message
    jobs = active_jobs() if active is None else active
    by_id = {j.id: j for j in jobs}
    if said := _ended_dependency(job, by_id):
        return said
    if _waits_on_a_job(job, by_id):
        return job.message
    if not (worker_alive() if alive is None else alive):
        return WAITING
    busy = [f"{j.id} ({j.kind})" for j in sorted(jobs, key=lambda j: j.id) if j.status == "running"]
    ahead = [str(j.id) for j in sorted(jobs, key=lambda j: j.id)
             if j.status == "queued" and j.id < job.id and not _waits_on_a_job(j, by_id)]
    said = (f"queued: the worker is busy with job{'s' if len(busy) > 1 else ''} {', '.join(busy)}" if busy
            else "queued: the worker starts it next" if not ahead else "queued")
    return said + (f"; job{'s' if len(ahead) > 1 else ''} {', '.join(ahead)} go{'' if len(ahead) > 1 else 'es'} "
                   "first" if ahead else "")


def _unwatched(job) -> str | None:
    """Why a running job, with no worker alive to repair its row, has no process left, by the rules recover_orphans
    gives it up by: on this machine, its process is gone; on another, none of its workers beat within BEAT_STALE
    (its process there is not ours to see; a job ends with its worker: _watch_parent). None for a job on a Ray
    cluster (Ray's status judges it, cluster/ray_jobs.py; it runs on when its worker dies) or one that still runs."""
    if ray_jobs.is_ray(job.host):
        return None
    here = job.host in ("", host_id())
    age = _beat_ages().get(host_id() if here else job.host, float("inf"))
    if here:
        return None if _local_run_alive(job) else f"its worker {_silence(age)} and its process is gone"
    return f"the workers of {job.host} {_silence(age)}" if age >= BEAT_STALE else None


def _silence(age: float) -> str:
    """How long a machine's workers have been silent."""
    return "sent no heartbeat in the last day" if age == float("inf") else f"stopped beating {ago(age)}"


def _what_resume_does(job: Job) -> str:
    """The next step after a job process died without a word (killed, out of memory), by what its kind left: a
    killed build's row said only "see its log", though nothing was registered and a resume runs it again."""
    again = f"(python -m backend jobs resume {job.id}, or Resume on the Jobs page)"
    if job.kind in TRAIN_KINDS:
        return f"resume it to continue from its last checkpoint {again}"
    if job.kind == "eval":
        return f"the scores it stored are kept; resume it to score the rest {again}"
    if job.kind == "synth-math":
        from backend.synth.pipeline import get_dataset

        pairs = f"{job.spec.get('name') or 'synth-math'}-pairs"
        rec = get_dataset(pairs)  # registered by this run (killed while exporting: a resume is refused), not another
        if rec is not None and job.started is not None and _age(job.started, now=_utc(rec.created)) >= 0:
            return (f"its pairs were registered as {pairs}; make the Instruct / Alignment sets from them with "
                    f"python -m backend datasets export {pairs} (or the Synthetic math page's Export tab)")
        return f"nothing was registered; resume it to go on from the rephrasings it cached {again}"
    return f"nothing was registered (a worker removes its partial files); resume it to run it again {again}"


def resume_point(job) -> Path | None:
    """The checkpoint a resume of `job` continues from: the newest complete one (trainer_state.json is written last)
    in its run folder; None when it starts over (not a training job, or stopped before its first checkpoint). A job
    stopped before its row recorded its folder (older versions never did) trained in runs/job-ID. The Jobs page's
    Resume button and `jobs resume` say what it will do by this one rule."""
    from backend.training import resumable_checkpoints

    if job.kind not in TRAIN_KINDS:
        return None
    saved = resumable_checkpoints(Path(job.run_dir or db.workspace() / "runs" / f"job-{job.id}"))
    return saved[-1] if saved else None


def log_tail(path: Path, lines: int, chunk: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a log, read from its end (as `tail` does), widening until they are there: the
    Jobs and Monitor pages redraw a running job's log every 2 s, and reading a tqdm-heavy log whole took 0.25 s and
    140 MiB at 33 MB, growing with the run."""
    with open(path, "rb") as f:
        start = end = f.seek(0, 2)
        data = b""
        # one line more than asked (the first may be cut in the middle); tqdm's \r counts as a break, as below
        while start > 0 and len(data.splitlines()) <= lines:
            start = max(0, start - chunk)
            f.seek(start)
            data = f.read(end - start)
            chunk *= 2
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def ago(seconds: float) -> str:
    """A time span back from now in the unit a reader takes in at a glance."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.0f} h ago"


def metrics(job_ids: list[int]) -> list[JobMetric]:
    with db.session() as s:
        return list(s.exec(select(JobMetric).where(JobMetric.job_id.in_(job_ids)).order_by(JobMetric.step)))


def resume(job_id: int) -> Job:
    """Queue an interrupted, failed or cancelled job again (training restarts from its last checkpoint), and with it
    the jobs that were waiting for it and never ran because it failed (a CPT → SFT → DPO chain goes on)."""
    job = get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}.")
    if job.status not in ("interrupted", "failed", "cancelled"):
        raise ValueError(f"Job {job_id} is {job.status}; only interrupted, failed or cancelled jobs resume.")
    if ray_jobs.is_ray(job.host) and job.status in STOPPED and ray_jobs.still_running(job.host, job.cluster_ref):
        raise ValueError(f"Job {job_id}'s Ray run {job.cluster_ref} is still stopping on the cluster at "
                         f"{job.host[len('ray:'):]} (asked to stop again). Resume it when Ray says it stopped (`python "
                         "-m backend cluster status`); a second run would now run beside it.")
    if host := _still_stopping(job):
        raise ValueError(f"Job {job_id} is still stopping on {host}: its worker there ends the stopped run within "
                         "a few seconds. Resume it when it has stopped; a second run would now run beside it.")
    # conditional: of two resumes racing, one queues it; the other must not turn a run already claimed back to queued
    if not _transition(job_id, ("interrupted", "failed", "cancelled"), status="queued", error="", finished=None,
                       pid=None, host="", message="queued to resume"):
        raise ValueError(f"Job {job_id} is {get(job_id).status} now: it was resumed meanwhile.")
    _requeue_waiting_on(job_id)
    return get(job_id)


STOPPED = ("cancelled", "interrupted")  # ended by a row's change, not by its process: which may still be stopping


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


def _queue_again(job_id: int, dep: int, from_status: str = "succeeded") -> None:
    """An evaluation queued again because job `dep` it waits for was: as resume() does, without the pid or host of
    the run before (recover_orphans judged the new claim by them)."""
    _transition(job_id, from_status, status="queued", finished=None, pid=None, host="", error="",
                message=f"queued again: job {dep} it waits for was queued again")


@db.retrying
def record_run_dir(job_id: int, run_dir: str) -> None:
    """The run folder a training job uses (backend/training.py), where the pages look for its checkpoints; a row
    that is gone (a command started with an inherited DUS_JOB_ID) is left alone."""
    with db.session() as s:
        if (job := s.get(Job, job_id)) is not None:
            job.run_dir = run_dir
            s.add(job)
            s.commit()


@db.retrying
def _update(job_id: int, **fields) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)
        s.commit()


@db.retrying
def _transition(job_id: int, from_status: str | tuple[str, ...], *, _of_pid: int | None = None, **fields) -> bool:
    """Set `fields` only while the job is still in `from_status`: one conditional UPDATE, so of two racing final
    transitions (cancel against success, a dead-child check against the child's own report) exactly one wins.
    `_of_pid`: only while the row is still that process's run (not a resumed run another worker started).
    Run again after a lost connection (db.retrying), the first run's commit may have landed: a row that then holds
    exactly what this transition sets counts as applied (a resume is not "resumed meanwhile", a success exits 0).
    Another writer that set that very state meanwhile (a second resume) counts too: the row ends as asked either way."""
    from sqlalchemy import update

    states = (from_status,) if isinstance(from_status, str) else from_status
    cond = [Job.id == job_id, Job.status.in_(states)] + ([Job.pid == _of_pid] if _of_pid is not None else [])
    with db.session() as s:
        done = s.exec(update(Job).where(*cond).values(**fields))
        s.commit()
        return done.rowcount == 1 or (db.rerun() and _holds(s, job_id, states, _of_pid, fields))


def _holds(s, job_id: int, states: tuple[str, ...], of_pid: int | None, fields: dict) -> bool:
    """Whether job `job_id`'s row holds what the transition from `states` (of `of_pid`'s run) to `fields` leaves.
    Compared by the database, so values come back as they were written (a time without its zone, a NUL written as
    U+FFFD); JSON columns here (PostgreSQL's json has no '='), as JSON."""
    cols = Job.__table__.c
    as_json = {k for k in fields if isinstance(cols[k].type, sa.JSON)}
    cond = [cols.id == job_id] + [cols[k].is_(None) if v is None else cols[k] == v
                                  for k, v in fields.items() if k not in as_json]
    if "status" not in fields:
        cond.append(cols.status.in_(states))
    if of_pid is not None and "pid" not in fields:
        cond.append(cols.pid == of_pid)
    row = s.connection().execute(sa.select(cols.id, *(cols[k] for k in as_json)).where(*cond)).first()
    return row is not None and all(_as_json(row._mapping[k]) == _as_json(fields[k]) for k in as_json)


def _as_json(value) -> str:
    """`value` as a JSON column keeps it: tuples as lists, keys as strings, NaN and infinities as null."""
    return json.dumps(db._finite(value), sort_keys=True, default=str)


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
        ray_jobs.stop(job.host, job.cluster_ref)  # on a Ray cluster: Ray ends its process group wherever it runs
    return get(job_id)  # already finished (it won the race): its own final state stands


# ---------------------------------------------------------------- the child: one job

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
    delay = float(os.environ.get("DUS_TEST_PROGRESS_DELAY", "0"))  # tests: slow a job down to kill it mid-way

    def progress(frac: float, message: str) -> None:
        print(f"[{frac:6.1%}] {message}", flush=True)
        now = time.monotonic()
        if now - last[0] > 0.5 or frac >= 1.0:
            last[0] = now
            _transition(job_id, "running", _of_pid=os.getpid(), progress=float(frac), message=message[:500])
        if delay and frac < 1.0:
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
    # scalars only: a nested block (a training run's perf choices) printed as a raw dict in every status box
    summary = ", ".join(IN_WORDS[k].format(v) if k in IN_WORDS else f"{k} {v}" for k, v in result.items()
                        if k not in ("path", "run_dir") and v is not None and not isinstance(v, (dict, list))
                        and not (k in IN_WORDS and not v))
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


# ---------------------------------------------------------------- the worker

def heartbeat_path() -> Path:
    return db.workspace() / "worker.json"


def worker_alive() -> bool:
    """A worker beat within ALIVE_WITHIN: in the shared database (any machine), else this workspace's heartbeat
    file."""
    try:
        if live_hosts(ALIVE_WITHIN):
            return True
    except Exception:  # noqa: BLE001 (the banner must not fail on a database hiccup; the file still answers)
        pass
    try:
        info = json.loads(heartbeat_path().read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, json.JSONDecodeError):
        return False
    except PermissionError:
        return True
    return time.time() - info.get("time", 0) < ALIVE_WITHIN


@db.retrying
def beat() -> None:
    """Record that this worker is alive (one row per worker process, updated in place)."""
    with db.session() as s:
        row = s.exec(select(WorkerBeat).where(WorkerBeat.host == host_id(), WorkerBeat.pid == os.getpid())).first()
        row = row or WorkerBeat(host=host_id(), pid=os.getpid())
        row.seen, row.workspace, row.space = _db_now(s), ray_jobs.workspace_marker().name, db.process_space()
        s.add(row)
        for old in s.exec(select(WorkerBeat).where(WorkerBeat.seen < utcnow() - timedelta(days=1))):
            s.delete(old)  # workers long gone
        s.commit()


def check_shared_workspace() -> None:
    """Refuse to start a worker whose workspace is not the one the other machines' workers use with this database:
    it would claim their jobs, build into a folder they cannot read and register paths only it sees (or fail each
    job on a log path it lacks). A workspace is known by its marker file, a name unique to it, which every machine
    mounting the same folder sees."""
    mine = ray_jobs.workspace_marker().name
    with db.session() as s:
        others = s.exec(select(WorkerBeat).where(WorkerBeat.host != host_id(), WorkerBeat.workspace != "",
                                                 WorkerBeat.workspace != mine)).all()
    if others:
        raise RuntimeError(
            f"This machine's workspace {db.workspace()} is not the one the workers of "
            f"{', '.join(sorted({b.host for b in others}))} share through this database (theirs holds "
            f"{others[0].workspace}, this one does not). Mount the shared workspace on this machine and set "
            "DUS_WORKSPACE to it (README: A shared database).")


def check_host_id() -> None:
    """Refuse to start a worker when a live worker under the same host id runs in another kernel or process-id
    namespace: two containers sharing a host name (docker --network host) or two machines given one DUS_HOST_ID.
    Each would take the other's jobs for its own, judge them dead by pids it cannot see, and mark them interrupted
    (or signal an unrelated process of its own with their pid)."""
    mine = db.process_space()
    with db.session() as s:
        beats, now = s.exec(select(WorkerBeat).where(WorkerBeat.host == host_id())).all(), _db_now(s)
    other = [b for b in beats if b.space not in ("", mine) and _age(b.seen, now) < BEAT_STALE]
    if mine and other:
        raise RuntimeError(
            f"Another worker (pid {other[0].pid} there) beat as host {host_id()!r} {_age(other[0].seen, now):.0f} s "
            "ago from another machine or container (another kernel or process-id namespace): the two would take "
            "each other's jobs for their own and judge them by process ids they cannot see. Give each machine or "
            "container its own DUS_HOST_ID (README: A shared database), then start this worker again.")


def seconds_run(job) -> float | None:
    """How long a job ran, or has run so far while it runs (the Jobs page's "seconds"); None before it started, and
    for a resumed job queued again (its first run's start would count the wait)."""
    if job.started is None or job.status == "queued":
        return None
    return (job.finished - job.started).total_seconds() if job.finished else _age(job.started)


def _utc(when):
    """`when` with its UTC zone (SQLite hands datetimes back without it)."""
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _age(when, now=None) -> float:
    """Seconds from `when` to `now` (default this machine's clock; SQLite hands datetimes back without their UTC
    zone)."""
    return ((now or utcnow()) - _utc(when)).total_seconds()


def _db_now(s):
    """The time by the database server's clock on PostgreSQL, whose heartbeats machines read of each other: written
    and read by each machine's own clock, a machine 60 s behind the others looked dead to them, and they
    interrupted its jobs. SQLite is one machine's file: its clock."""
    if s.get_bind().dialect.name != "postgresql":
        return utcnow()
    return s.exec(select(func.now())).one()


@db.retrying
def _beat_ages() -> dict[str, float]:
    """Each machine's seconds since its youngest worker beat (beats are kept a day)."""
    with db.session() as s:
        beats, now = s.exec(select(WorkerBeat)).all(), _db_now(s)
    ages: dict[str, float] = {}
    for b in beats:
        ages[b.host] = min(ages.get(b.host, float("inf")), _age(b.seen, now))
    return ages


def live_hosts(within: float = BEAT_STALE) -> set[str]:
    """Machines with a worker that beat within the last `within` seconds."""
    return {host for host, age in _beat_ages().items() if age < within}


def dead_hosts() -> set[str]:
    """Other machines whose workers have all stopped beating (within the day beats are kept): known dead. A machine
    that never ran a worker here is not among them."""
    return {host for host, age in _beat_ages().items() if age >= BEAT_STALE} - {host_id()}


@db.retrying
def recover_orphans() -> list[int]:
    """Running jobs whose process is gone (worker or machine died) become interrupted: this machine's by their
    process ids, another machine's only when none of its workers has beaten for BEAT_STALE seconds."""
    orphans = []
    here = host_id()
    with db.session() as s:
        running = list(s.exec(select(Job).where(Job.status == "running")))
    # jobs on a Ray cluster: judged by Ray's status of their submission, not by local pids or machines' heartbeats
    on_ray = ray_jobs.lost([j for j in running if ray_jobs.is_ray(j.host)])
    running = [j for j in running if not ray_jobs.is_ray(j.host)]
    live = live_hosts() if any(j.host not in ("", here) for j in running) else set()
    for job in running:
        if job.host not in ("", here):
            if job.host not in live:
                orphans.append(job)
            continue
        if not _local_run_alive(job):
            orphans.append(job)
    # conditional, so a job that finished while we looked keeps the state its own process wrote, and one resumed
    # and started again meanwhile (another pid) its new run
    return [j.id for j in orphans if _transition(
        j.id, "running", _of_pid=j.pid, status="interrupted", finished=utcnow(),
        message="interrupted: its process ended without finishing (worker or machine stopped); resume it to go on "
                f"(Jobs page, or python -m backend jobs resume {j.id})")] + [
        i for i, fields in on_ray.items() if _transition(i, "running", **fields)]


def _local_run_alive(job: Job) -> bool:
    """Whether this machine's running job still has its process: its own, or, just claimed, one being started."""
    if job.pid:
        return _runs_job(job.pid, job.id)
    return job.started is not None and _age(job.started) < 30


def _runs_job(pid: int, job_id: int) -> bool:
    """Whether process `pid` here is job `job_id`'s own (`python -m backend jobs exec ID`). A bare os.kill(pid, 0)
    took, after a reboot, an unrelated process that got the same pid for the job: the job stayed running for ever,
    held its slot, and a cancel killed that process's group. An ended process not reaped yet (a zombie) still runs
    only while a worker is its parent: that worker reaps it on its next poll and records its exit code; with no
    worker to reap it (reparented), it has ended for good."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours to signal: it runs
        return True
    try:
        state, ppid = db._stat_fields(Path(f"/proc/{pid}"))[:2]
    except FileNotFoundError:  # ended since, or no /proc (macOS): os.kill's answer stands
        return not Path("/proc/self").exists()
    except OSError:
        return True
    # ended (a zombie), or ending: a killed process's command line is gone before it is a zombie, and a check in
    # that instant called a job killed by SIGKILL "interrupted" before its worker recorded it failed with the code
    try:
        ending = _cmdline(pid) == [b""]
    except OSError:  # not ours to read: judged by its command line below, as before
        ending = False
    if state == "Z" or ending:
        return _command_holds(int(ppid), [b"backend", b"worker"])
    return _command_holds(pid, [b"jobs", b"exec", str(job_id).encode()])


def _cmdline(pid: int) -> list[bytes] | None:
    """Process `pid`'s command line, split (an ending process's: [b""]); None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None


def _command_holds(pid: int, words: list[bytes]) -> bool:
    """Whether process `pid`'s command line holds `words` in a row."""
    try:
        args = _cmdline(pid)
    except OSError:  # not ours to read
        return True
    if args is None:
        return False
    return any(args[i:i + len(words)] == words for i in range(len(args) - len(words) + 1))


@db.retrying
def _clear_stopped() -> None:
    """Clear the pid of this machine's stopped jobs (cancelled, or interrupted: given up for dead by another
    machine) whose processes have all ended (the job's whole process group: accelerate's workers may outlive their
    launcher by a moment): the sign _still_stopping reads, on any machine, that a resume can no longer run beside
    the old run."""
    here = tuple(h for h in _hosts_here() if not ray_jobs.is_ray(h))
    if not here:  # a Ray cluster's jobs: cancel() has Ray stop them, wherever they run
        return
    with db.session() as s:
        rows = s.exec(select(Job.id, Job.status, Job.pid).where(Job.status.in_(STOPPED), Job.pid != None,  # noqa: E711
                                                                Job.host.in_(here))).all()
    for job_id, status, pid in rows:
        if not db._group_running(pid):
            _transition(job_id, status, _of_pid=pid, pid=None)


def _mine():
    """Running on this machine (or cluster): rows it claimed, and rows from before jobs recorded a machine."""
    return Job.host.in_(_hosts_here())


def with_dependencies(ids) -> set[int]:
    """`ids` and every job they wait for (after, needs, waits), transitively: what running them here takes."""
    out, todo = set(), list(ids)
    while todo:
        if (job_id := todo.pop()) in out or (job := get(job_id)) is None:
            continue
        out.add(job_id)
        todo += _needs(job) + list(job.waits or [])
    return out


@db.retrying
def _claim_next(slots: int | None = None, only: set[int] | None = None) -> Job | None:
    """The oldest queued job whose dependency (if any) succeeded; jobs whose dependency ended otherwise are
    cancelled with the reason. The claim is one conditional update, so two workers never take the same job, and with
    `slots` it only succeeds while fewer than `slots` jobs run on this machine: the cap holds at every instant, not
    only after a losing worker gives its claim back. `only`: these jobs and no other."""
    from sqlalchemy import func, text, update
    from sqlalchemy.orm import aliased

    # A rerun (db.retrying) whose first run's claim reached the server just as the connection died: that claim is
    # this call's, found by the start time it wrote; claiming another instead left it "running" with no process.
    notes = db.unit_notes()
    with db.session() as s:
        if db.rerun() and "claim" in notes:
            claimed_id, started = notes.pop("claim")
            if (mine := s.exec(select(Job).where(Job.id == claimed_id, Job.status == "running", Job.started == started,
                                                 Job.host == claim_host(), Job.pid == None)).first()):  # noqa: E711
                return mine
        queued = select(Job).where(Job.status == "queued")
        for job in s.exec((queued.where(Job.id.in_(only)) if only is not None else queued).order_by(Job.id)):
            deps = _needs(job)
            blocked = waiting = False
            for dep_id in deps:
                dep = s.get(Job, dep_id)
                if dep is None or dep.status in UNSUCCESSFUL:
                    job.status, job.finished = "cancelled", utcnow()
                    job.message = f"not run: job {dep_id} it waited for {dep.status if dep else 'is gone'}"
                    s.add(job)
                    s.commit()
                    blocked = True
                    break
                waiting = waiting or dep.status != "succeeded"
            for dep_id in job.waits or []:  # ended however (a job gone has ended too)
                dep = s.get(Job, dep_id)
                waiting = waiting or (dep is not None and dep.status in ("queued", "running"))
            if blocked or waiting:
                continue
            # Safe with workers on several machines: SQLite holds its write lock for the whole statement, count
            # included; PostgreSQL makes a second UPDATE of the row wait for the first, then re-checks
            # status = 'queued' on the committed row (READ COMMITTED) and updates nothing. The count of running
            # jobs is no row lock, so on PostgreSQL claims from one machine first take a transaction-scoped advisory
            # lock on its name. tests/test_postgres.py races two workers for 20 jobs on both.
            cond = [Job.id == job.id, Job.status == "queued"]
            if slots is not None:
                if s.get_bind().dialect.name == "postgresql":
                    s.exec(text("SELECT pg_advisory_xact_lock(hashtext(:k))").bindparams(k=f"dus-claim:{claim_host()}"))
                other = aliased(Job)
                cond.append(select(func.count(other.id)).where(other.status == "running",
                                                               other.host.in_(_hosts_here()))
                            .scalar_subquery() < slots)
            notes["claim"] = job.id, utcnow()
            claimed = s.exec(update(Job).where(*cond).values(status="running", message="launching",
                                                             started=notes["claim"][1], host=claim_host(),
                                                             cluster_ref=""))
            s.commit()
            if claimed.rowcount == 1:
                s.refresh(job)
                return job
            del notes["claim"]
            if slots is not None and _busy() >= slots:
                return None  # the machine filled up while we looked
    return None


@db.retrying
def _busy() -> int:
    """Jobs running on this machine (its devices are what the slots share), whichever of its workers runs them."""
    with db.session() as s:
        return len(s.exec(select(Job.id).where(Job.status == "running", _mine())).all())


def job_niceness() -> int:
    """$DUS_JOB_NICE (default 10): the scheduling priority a worker's jobs run at on this machine. A training job
    takes every core; at the dashboard's own priority it slows every page the dashboard draws. bench/job_niceness.py
    times renders of the Jobs page (AppTest) beside a process keeping every core busy, as a CPU training job does:
    0.32 s with that process at nice 10, 0.47–0.48 s with it at nice 0 (about 1.5x slower). A job alone on the
    machine loses nothing."""
    raw = os.environ.get("DUS_JOB_NICE", "10")
    try:
        nice = int(raw)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise ValueError(f"DUS_JOB_NICE={raw!r}: give a niceness from 0 (the dashboard's priority) to 19 (the lowest)")
    return nice


def start_child(job: Job) -> subprocess.Popen | ray_jobs.RayRun:
    if addr := ray_jobs.address():  # a Ray Job on the cluster, whose entrypoint appends to the same log
        run = ray_jobs.submit(job, addr)
        _update(job.id, cluster_ref=run.submission_id, message="submitted to the Ray cluster")
        return run
    log = open(job.log_path or os.devnull, "ab")
    from backend.auth import HASH_ENV, PASSWORD_ENV

    # a job never serves a page, so it gets no login secret: the code it runs (a trainer, a model's remote code,
    # a user's data script) could read it from its environment
    env = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, HASH_ENV)}
    env.update(DUS_WORKSPACE=str(db.workspace()), PYTHONUNBUFFERED="1")
    # no stdin either: a worker started from a terminal handed its own on, and a prompt in a job (transformers'
    # "run the custom code? [y/N]") read the worker's keyboard
    proc = subprocess.Popen([sys.executable, "-m", "backend", "jobs", "exec", str(job.id)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    try:  # before it starts its own processes (accelerate, the trainer): they inherit it. Never above the worker's:
        os.setpriority(os.PRIO_PROCESS, proc.pid, max(job_niceness(), os.nice(0)))  # raising one needs root
    except ProcessLookupError:
        pass  # it ended already: the loop reads its exit code
    _update(job.id, pid=proc.pid)
    return proc


def _not_ours_any_longer(running: dict) -> list[int]:
    """The jobs this worker runs whose rows no longer hold that run: cancelled, or given up for dead by another
    machine (its heartbeat stale: a database outage, a suspended machine) and perhaps resumed and started again
    under another pid. Left running, such a run wrote the same checkpoints as the new one, and its "succeeded" landed
    on the new run's row. A Ray job's pid is a node's: only its row's status says."""
    with db.session() as s:
        rows = s.exec(select(Job.id, Job.status, Job.pid).where(Job.id.in_(list(running)))).all()
    return [i for i, status, pid in rows if status in ("cancelled", "interrupted", "queued") or (
        status == "running" and pid is not None and not isinstance(running[i], ray_jobs.RayRun)
        and pid != running[i].pid)]


def _interrupt_running(running: dict) -> None:
    """A worker stopped by Ctrl-C (a foreground `recipe run` or `worker`): end the jobs it started here and
    mark them interrupted at once. Each job process leads a session of its own (the terminal's Ctrl-C does not reach
    it) and killed itself within 0.5 s of its worker's end (_watch_parent), but its row stayed "running" until a
    worker next started and recovered it (the pages showed "running?" meanwhile). Jobs on a Ray cluster run on:
    a worker's end does not stop them (the next worker watches them again)."""
    for job_id, proc in running.items():
        if isinstance(proc, ray_jobs.RayRun):
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass
        resume = get(job_id) is not None and get(job_id).kind in TRAIN_KINDS
        _transition(job_id, "running", _of_pid=proc.pid, status="interrupted", finished=utcnow(),
                    message="interrupted: its worker was stopped (Ctrl-C); resume it to go on"
                            + (" from its last checkpoint" if resume else "")
                            + f" (Jobs page, or python -m backend jobs resume {job_id})")


def worker(poll: float = 1.0, once: bool = False, slots: int | None = None, only: set[int] | None = None) -> None:
    """Run queued jobs until stopped, at most `slots` at a time (default $DUS_JOB_SLOTS, else 1). `once`: run what is
    runnable now, wait for it, then return (tests, scripts). `only`: run these jobs and no other (a foreground
    `recipe run` ran every job queued in the workspace, another machine's included, before its own)."""
    slots = slots or int(os.environ.get("DUS_JOB_SLOTS", "1"))
    job_niceness()  # a bad $DUS_JOB_NICE stops the worker at start, not its first job
    if addr := ray_jobs.address():
        ray_jobs.client(addr)  # at start: name the address and what to run if it does not answer (and import Ray now)
    db.init_db()
    check_shared_workspace()
    check_host_id()
    # another machine's builds in the shared workspace go only once its workers are known dead; on a Ray cluster
    # never from here (a job's node beats no heartbeat)
    db.clean_stale_tmp(dead_elsewhere=() if addr else dead_hosts())
    recover_orphans()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    running: dict[int, subprocess.Popen | ray_jobs.RayRun] = {}
    if addr:  # jobs a previous worker handed to the cluster run on: watch them (cancel, end) as if started here
        with db.session() as s:
            running.update({j.id: ray_jobs.RayRun(addr, j.cluster_ref) for j in s.exec(
                select(Job).where(Job.status == "running", _mine(), Job.cluster_ref != ""))})
    last_beat = 0.0
    try:
        while True:
            heartbeat_path().write_text(json.dumps({"pid": os.getpid(), "time": time.time()}))
            if time.monotonic() - last_beat > BEAT_EVERY:
                beat()
                last_beat = time.monotonic()
            if running:  # cancelled, or given up for dead, from another machine: only this one can signal the process
                for job_id in _not_ours_any_longer(running):
                    if isinstance(running[job_id], ray_jobs.RayRun):
                        running.pop(job_id).stop()  # Ray ends the entrypoint's process group on whichever node
                        continue
                    try:
                        os.killpg(running[job_id].pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            for job_id, proc in list(running.items()):
                if isinstance(proc, ray_jobs.RayRun):
                    if (info := proc.poll()) is not None:  # ended on the cluster; a row still running never got its end
                        del running[job_id]
                        _transition(job_id, "running", **ray_jobs.end_fields(get(job_id), info))
                    continue
                if proc.poll() is not None:
                    del running[job_id]
                    try:  # its own children (accelerate, the trainer) must not outlive a killed job process
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    # the child died without saying why (killed, out of memory); training jobs resume from a checkpoint.
                    # Only its own run: after a resume another worker here may run the job again under a new pid.
                    _transition(job_id, "running", _of_pid=proc.pid, status="failed", finished=utcnow(),
                                message="failed",
                                error=f"the job process exited with code {proc.returncode} without finishing; see "
                                      f"its log; {_what_resume_does(get(job_id))}")
            recover_orphans()  # cheap; also frees the slots of jobs whose process vanished
            _clear_stopped()
            busy = _busy()  # slots count every job running on this machine, also those another worker here started
            job = _claim_next(slots, only) if not stop and busy < slots else None
            if job is not None:
                try:
                    running[job.id] = start_child(job)
                except (ValueError, RuntimeError, OSError) as exc:  # the cluster refused or vanished: give the job back
                    if not ray_jobs.is_ray(job.host):
                        raise
                    _transition(job.id, "running", status="queued", started=None, host="",
                                message=f"waiting: the Ray cluster did not take it ({exc})"[:500])
                    time.sleep(poll)
                continue
            if not running and (once or stop):
                return
            time.sleep(0.2 if running else poll)
    except KeyboardInterrupt:  # Ctrl-C (a foreground command's worker): its jobs stop now, and say so now
        _interrupt_running(running)
        raise
