"""Queueing a job (submit) and what is refused before its row is written (check_before_queueing), and the reads
the pages and `jobs list` make of the queue: which jobs there are, what each makes, which read a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection

from sqlmodel import select

from backend.cluster import ray_jobs
from backend.runner.hosts import host_id, live_hosts
from backend.runner.registered import MAKES_MODELS, output_name
from backend.runner.rows import get
from backend.specs import TRAIN_KINDS, _Spec, spec_from_dict
from storage import db
from storage.models import Job, JobMetric

WAITING = "waiting for the worker"  # a queued job's message until a worker claims it (pages say more: common.py)


def submit(spec: _Spec, after: int | None = None, needs: list[int] | None = None,
           waits: list[int] | None = None) -> Job:
    """Queue a job; with `after`, it runs only once that job has succeeded (a CPT → SFT → DPO chain); with
    `needs`, once every one of those jobs has (a merge waits for both candidates); with `waits`, once every one of
    those has ended, however it ended (a recipe's evaluation scores what its stages made: one failed stage leaves
    its model out, not every model's scores)."""
    needs = sorted(set(needs or []))
    soft = sorted(set(waits or []) - set(needs) - {after})
    for dep in ([after] if after is not None else []) + needs + soft:
        if (row := get(dep)) is None:
            raise ValueError(f"No job {dep} to wait for.")
        if dep in needs + [after] and row.status in ("failed", "cancelled", "interrupted"):  # queued, it was
            # cancelled at once ("not run: job 11 it waited for failed") after "queued job 12"
            raise ValueError(f"Job {dep} has {row.status}: a job that waits for it to succeed would be cancelled at "
                             f"once. Resume job {dep} first (python -m backend jobs resume {dep}, or on the Jobs "
                             "page), then queue this one after it.")
    if spec.kind == "import" and not spec.name:  # known by the name it will register (_making, the pages' checks):
        from backend.registry import import_name  # two unnamed imports of one folder both queued, and the second

        if name := import_name(spec.target):  # failed; `train --after` it was refused
            spec = spec.model_copy(update={"name": name})
    check_before_queueing(spec)
    needs = sorted(set(needs) | set(_makers_of_inputs(spec)) - {after} - set(soft))  # a soft wait stays soft
    waits = ([after] if after is not None else []) + needs + soft
    if addr := ray_jobs.address():  # refused now, not queued to wait for ever or fail on a node (cluster/ray_jobs.py)
        ray_jobs.check_submission(spec, addr)
    with db.session() as s:
        job = Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status="queued", after=after, needs=needs,
                  waits=soft, message=(f"waiting for job{'s' if len(waits) > 1 else ''} {', '.join(map(str, waits))}"
                                       if waits else WAITING))
        s.add(job)
        s.flush()  # its id, so that its log's path goes in the same commit: a worker that claimed the row between
        # two commits started it with its output thrown away (start_child's os.devnull), its log never written
        job.log_path = str(db.workspace() / "logs" / f"job-{job.id}.log")
        s.commit()
        s.refresh(job)
    _withdraw_if_second(job, spec)
    return job


def _withdraw_if_second(job: Job, spec: _Spec) -> None:
    """Of two jobs queued at once under one model name (two tabs building "twotabs": both passed
    check_before_queueing before either row was written, and the second failed when it ran, "already registered"),
    this one is withdrawn and refused in check_before_queueing's words when another active row makes the name. Each
    of two racing submissions looks after committing its own row, so at least the one that commits last sees the
    other (PostgreSQL hands out ids before the commits, so the older id may be the one committed last: either row may
    be the one withdrawn, and when both look before either is withdrawn both are, which asks the two users to
    choose again rather than run two jobs into one name). A row a worker claimed meanwhile is left to run and fail
    as before."""
    from sqlalchemy import delete

    if (name := output_name(spec)) is None or (first := _making(name, other_than=job.id)) is None:
        return
    with db.session() as s:
        gone = s.exec(delete(Job).where(Job.id == job.id, Job.status == "queued")).rowcount
        s.commit()
    if gone:
        raise ValueError(f"Job {first.id} ({first.kind}, {first.status}) will register a model named {name!r}: "
                         "choose another name.")


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
        if (name := output_name(spec)) is None:  # machine_rank > 0: machine 0 registers the name, its job perhaps
            from backend.registry import check_name_free  # queued already (not a second maker); a name taken fails

            check_name_free(spec.name or spec.default_name())  # machine 0, and this one would wait for it in vain
        else:
            _check_output_name(name)
            from backend import outputs

            # its folder, free (the job refused it late): on disk when the job runs on this machine; else at least
            # not a registered model's (a row: the walk's `--queue` job failed 13 s later on the cluster)
            here = _runs_here_only()
            try:
                folder = outputs.default_folder(spec.out, name)
                if not here:
                    outputs.check_not_a_models_folder(folder, by_name=not spec.out)
                else:  # read-only, or too full for about the trained model (the job checks it again)
                    outputs.check_folder_free(folder, by_name=not spec.out, name=name)
                    outputs.check_destination(folder, outputs.weights_bytes(getattr(spec, "model", None)),
                                              name if spec.out else None)
            except OSError as exc:  # a refusal, as every other one here (the pages show a ValueError)
                raise ValueError(str(exc)) from None
    from backend.outputs import copied_refs

    copied = copied_refs(spec)  # a link out of these folders would be copied into the model it makes
    for ref in _model_refs(spec):
        if ref not in coming:
            _check_model_ref(ref, copies=ref in copied)
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
            check_not_making(name)  # is imported once
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
        for src, _ in data.expand([(d.source, d.weight)]):  # at its weight: nested mixes multiply past the cap
            path = Path(src).expanduser()  # an absolute path that is missing too: it was queued, and failed in turn
            if src.startswith("builtin:") or (src.startswith("dataset:") and get_dataset(src[len("dataset:"):])) \
                    or (_runs_here_only() and (path.is_file() or (path.is_absolute() and not src.startswith(
                        ("builtin:", "dataset:", "mix:"))))):
                data.check_source(src, spec.kind)


def _making(name: str, other_than: int | None = None) -> Job | None:
    """The queued or running job that will register a model under `name`, if any: an import by the name it gives
    (the Models page's), which was not looked at (a second job under that name was queued, and failed when its turn
    came; a job reading the imported model was refused). `other_than`: a job other than that one."""
    return makers([j for j in active_jobs() if j.id != other_than]).get(name)


def makers(jobs: list[Job] | None = None) -> dict[str, Job]:
    """The jobs of `jobs` (else every queued or running one) that will register a model, by its name: the first
    where two would (a machine_rank > 0 makes none: machine 0's job does)."""
    out: dict[str, Job] = {}
    for job in active_jobs() if jobs is None else jobs:
        if job.kind not in (*MAKES_MODELS, "import"):
            continue
        try:
            spec = spec_from_dict(job.spec)
        except ValueError:  # queued by an older version, no longer valid: it fails when it runs, saying why; here
            continue  # it refused every later submission
        if (name := output_name(spec)) is not None:
            out.setdefault(name, job)
    return out


def _check_output_name(name: str) -> None:
    """The name a job would register is free: no model holds it, and no job in the queue will make one under it
    (the second of two such jobs failed when it ended, its work lost)."""
    from backend.registry import check_name_free

    check_name_free(name)
    check_not_making(name)


def check_not_making(name: str) -> None:
    """Refuse `name` while a queued or running job will register a model under it (_making): the CLI's foreground
    runs ask this too (registered there first, that job failed when it ended, its work lost)."""
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


def _makers_of_inputs(spec: _Spec) -> list[int]:
    """The queued or running jobs making a model the job reads (name or folder): it waits for them (light lane)."""
    from backend import registry

    found = (_making(r) or _writing(r) for r in _model_refs(spec) if registry.record(r) is None)
    return [job.id for job in found if job is not None]


def _check_model_ref(ref: str, copies: bool = False) -> None:
    """A model a job reads is registered, the built-in one, the model a queued job will make (a recipe's next
    stage) by its name or by its output folder (_writing: the job that reads it waits for that one, `--after`), or
    a folder; a folder is looked at only when the job runs on this machine. A refusal names the queued job that
    writes a folder of that name or will register a name like it (_made_like): `upscale --out WS/models/t4m1
    --queue`, then `eval WS/models/t4m1 --queue --after 26` was refused, and so was `t4m1`, and no message said the
    name the job derives (tiny4-dus-m1)."""
    from backend import registry

    if registry.record(ref) is not None or ref.lower() in ("builtin", registry.BUILTIN_NAME.lower()) or _making(ref):
        return
    if _is_path(ref):
        if _writing(ref):
            return
        if _runs_here_only() and not Path(ref).expanduser().is_dir():
            raise ValueError(f"{ref!r} is not a folder on this machine: give a model folder, or a registered "
                             f"model's name (python -m backend models list).{_made_like(ref)}")
        if _runs_here_only():  # a tokenizer missing, unreadable or larger than its vocabulary; a link out of it
            registry.check_folder_ref(ref, copies)  # when the job copies its files (a build's tokenizer source)
        return
    raise ValueError(f"{ref!r} is neither a registered model (python -m backend models list), nor a folder, nor the "
                     f"model a queued job will make.{_made_like(ref)}")


_REPO_ROOT = Path(__file__).resolve().parents[2]  # where a job process runs (loop.REPO_ROOT): its relative paths


def _is_path(ref: str) -> bool:
    """A model reference given as a folder, not a name."""
    return os.sep in ref or ref.startswith(("~", "."))


def _output_folder(job: Job) -> tuple[str, Path] | None:
    """(the name it will register, the folder it writes) of a job that makes a model, as check_before_queueing
    resolves them (outputs.default_folder: its `out`, else workspace/models/NAME); None for any other job."""
    from backend import outputs

    if job.kind not in MAKES_MODELS:
        return None
    try:
        spec = spec_from_dict(job.spec)
        if (name := output_name(spec)) is None:
            return None
        return name, outputs.default_folder(getattr(spec, "out", None), name)
    except ValueError:  # a spec of an older version, or a name no folder can hold: it fails when it runs
        return None


def _writing(ref: str, jobs: list[Job] | None = None) -> Job | None:
    """The queued or running job (of `jobs`, else every active one) whose output folder `ref` is, as the job that
    reads it will find it: a relative path from the repository's root, where a job runs. That folder holds the
    model when the job ends, and registry.resolve then reads it by its path (its registered name too)."""
    if not _is_path(ref):
        return None
    folder = (_REPO_ROOT / Path(ref).expanduser()).resolve()
    return next((j for j in (active_jobs() if jobs is None else jobs)
                 if (made := _output_folder(j)) is not None and made[1] == folder), None)


def _made_like(ref: str) -> str:
    """For a refused model reference: the queued or running job that writes a folder of that name, or will register
    a name like it (" Job 26 (upscale, queued) will register 'tiny4-dus-m1' at /ws/models/t4m1: give that name, or
    that folder."), else ""."""
    import difflib

    leaf = Path(ref).expanduser().name
    made = [(j, *m) for j in active_jobs() if (m := _output_folder(j)) is not None]
    hit = next(((j, n, f) for j, n, f in made if f.name == leaf), None)
    if hit is None and (near := difflib.get_close_matches(leaf, [n for _, n, _ in made], n=1, cutoff=0.75)):
        hit = next((j, n, f) for j, n, f in made if n == near[0])
    if hit is None:
        return ""
    job, name, folder = hit
    return (f" Job {job.id} ({job.kind}, {job.status}) will register {name!r} at {folder}: give that name, or that "
            "folder.")


def _check_depths(spec) -> None:
    """The layers an up-scaling asks for exist in its registered sources (m, groups, slices against their depths),
    by the same rules the build applies; a source still to be made is left to the job."""
    from backend import registry
    from backend.upscale import layer_slots

    recs = [registry.record(r) for r in (spec.base, spec.second) if r]
    if all(r is not None and r.num_layers for r in recs):
        layer_slots(spec, [r.num_layers for r in recs])


def made_by(jobs) -> set[str]:
    """The model names these jobs will register (planned_name of those that make models)."""
    return {name for j in jobs if j.kind in (*MAKES_MODELS, "import") and (name := planned_name(j))}


def inputs_gone(job, active: list[Job] | None = None, making: set[str] | None = None) -> str | None:
    """What a queued job reads that is gone since it was queued, said for its message: a model deleted (the Models
    page's delete warns and names the job, and --force deletes it anyway), a registered data set removed, a local
    data file (by its absolute path) removed. The job failed only when its turn came, while its message still said
    "waiting for job 8". Rows first: a path is looked at only when the job runs on this machine; a model or data set
    a queued or running job will make is not gone (`making`: their planned names, made once for a page of jobs:
    each job's call parsed every active job's spec, quadratic in the queue). None when nothing is known gone, or its
    spec cannot be read."""
    from backend import data, registry
    from backend.synth.pipeline import get_dataset

    try:
        spec = spec_from_dict(job.spec)
    except ValueError:  # queued by an older version: it fails when it runs, saying why
        return None
    jobs = active_jobs() if active is None else active
    here: list[bool] = []  # _runs_here_only, asked once and only when a path is to be looked at

    def runs_here() -> bool:
        here[:] = here or [_runs_here_only()]
        return here[0]

    # an evaluation with skip_missing leaves out a model that is not there (a recipe's stage that failed): no failure
    for ref in [] if getattr(spec, "skip_missing", False) else _model_refs(spec):
        if ref.lower() in ("builtin", registry.BUILTIN_NAME.lower()):
            continue
        if (rec := registry.record(ref)) is not None:
            if not Path(rec.path).is_dir() and runs_here():
                return f"the folder of its model {ref} ({rec.path}) is gone"
            continue
        if making is None:
            making = made_by(j for j in jobs if j.id != job.id)
        if ref in making:
            continue
        if os.sep in ref or ref.startswith(("~", ".")):  # not there yet, while a job it waits for writes it: not gone
            if runs_here() and not Path(ref).expanduser().is_dir() \
                    and not _writing(ref, [j for j in jobs if j.id != job.id]):  # (the specs parsed only then)
                return f"its model folder {ref} is gone"
            continue
        return f"its model {ref} is gone (deleted since it was queued)"
    if spec.kind not in TRAIN_KINDS:
        return None
    for d in spec.data + ([spec.eval_data] if spec.eval_data else []):
        src = d.source
        if src.startswith(("dataset:", "mix:")):
            if get_dataset(src.split(":", 1)[1]) is None and not any(j.kind == "synth-math" for j in jobs):
                return f"its data set {src} is gone (removed since it was queued)"
        elif data.looks_local(src) and (path := Path(src).expanduser()).is_absolute() and not path.is_file() \
                and runs_here():
            return f"its data file {src} is gone"
    return None


def _runs_here_only() -> bool:
    """No Ray cluster, and no worker of another machine alive: a queued job runs on this machine."""
    return not ray_jobs.address() and not (live_hosts() - {host_id()})


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
    queued from the CLI or a saved spec without --name holds `name: null`), "" when its spec cannot say or the job
    registers none: a training on a machine_rank > 0 (output_name's rule; the Jobs page and `jobs list` named
    machine 0's model for it). The pages' "a job already makes this name" check, their job labels and `jobs list`
    all use it."""
    return _planned(job.spec)


def _planned(data: dict) -> str:
    """planned_name of a job's spec as stored."""
    if (data.get("machine_rank") or 0) > 0:  # only such a spec is read whole here: the name alone is the common case
        try:
            return output_name(spec_from_dict(data)) or ""
        except ValueError:
            return ""
    if data.get("name"):
        return data["name"]
    try:
        spec = spec_from_dict(data)
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
    if (job.spec.get("machine_rank") or 0) > 0 and not planned_name(job):  # it trains; machine 0's job registers
        return f"nothing: machine 0 registers {_planned({**job.spec, 'machine_rank': 0}) or 'the model'}"
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

    active = active_jobs()  # the queue, then one read of the models (the Models page asked one per reference)
    with registry.read_once():
        return [j for j in active if any(means(r) for r in refs(j))]


def active_jobs() -> list[Job]:
    """Every queued or running job, oldest first: what a queued job's place in the queue depends on, however many
    finished jobs are newer."""
    with db.session() as s:
        return list(s.exec(select(Job).where(Job.status.in_(("queued", "running"))).order_by(Job.id)))


def metrics(job_ids: list[int]) -> list:
    """The jobs' metric rows, by step: (job_id, step, name, value), by those names too. Plain rows, not JobMetric
    objects: one long run's 200,000 rows took 3.4 s of CPU to build as objects, 0.5 s as rows (backend/curves.py
    reads the Monitor's curves, only the rows logged since its last look)."""
    with db.session() as s:
        return list(s.exec(select(JobMetric.job_id, JobMetric.step, JobMetric.name, JobMetric.value)
                           .where(JobMetric.job_id.in_(job_ids)).order_by(JobMetric.step)))


def metric_names(job_ids: list[int]) -> list[str]:
    """The names of the metrics the jobs logged, sorted: one SELECT DISTINCT, read from the (job_id, name, step)
    index, where the names taken from metrics() read every row (1.4 s for one 50,000-step run)."""
    with db.session() as s:
        return list(s.exec(select(JobMetric.name).where(JobMetric.job_id.in_(job_ids)).distinct()
                           .order_by(JobMetric.name)))
