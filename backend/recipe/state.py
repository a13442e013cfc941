"""A recipe run's rows read back (its stages, each with its job and state, the runs there are) and cancelled: what
the Recipe page, `recipe runs` / `recipe cancel` and the tables read of a run that plan.submit recorded."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from sqlmodel import select

from backend import registry, runner
from backend.recipe.checks import eval_state, evals_once
from backend.recipe.spec import RecipeError
from backend.words import plural
from storage import db
from storage.models import EvalScore, Job, RecipeRun, RecipeStage, as_utc


# plan.submit writes every stage's row, then queues the jobs one by one, each into its row: a Run cut off between
# (Ctrl-C, the page's process killed) leaves the rest without a job. Running the recipe again plans them as "run"
# again and queues them, the jobs already queued being taken up as in flight.
NOT_QUEUED = "not queued (the run was cut off: run the recipe again to queue it)"


@contextmanager
def read_pass():
    """A pass over a run's rows (the Recipe page's live stages every 2 s, its graph, its tables) that reads the
    models (registry.read_once) and each evaluation job's scores (checks.evals_once) once: read per eval stage, for
    every model of the job, a tick of the live stages made ~1,200 SQL statements with 18 eval stages running, and
    grew as stages x models. For reads only; nested, the outer pass stands."""
    with registry.read_once(), evals_once():
        yield


def stage_state(row: RecipeStage, job: Job | None) -> str:
    """A stage's state as the Recipe page, `recipe run` and `recipe runs` show it: given (the base), reused, its
    job's status, "skipped" for an evaluation whose model was not made (its stage failed; the shared evaluation job
    left it out and scored the others), or NOT_QUEUED for a stage to run that has no job (its Run was cut off
    before queueing it: the state read "")."""
    info = row.info or {}
    if info.get("status") == "given":
        return "given"
    if row.reused:
        return "reused"
    if job is None:
        return NOT_QUEUED if row.job_id is None and info.get("status") == "run" else ""
    if row.kind == "eval" and job.status == "succeeded" and info.get("model") in (job.result or {}).get("skipped", []):
        return "skipped"
    return eval_state(info.get("model"), job) if row.kind == "eval" and job.status == "running" else job.status


def evaluations(rows: list[tuple[RecipeStage, Job | None]]) -> list[dict]:
    """The run's evaluation as the graph and `recipe runs` show it: one entry per evaluation job (the recipe's one
    shared job; one per model on a cluster), with its status and how many of its models are scored, and one for
    scores reused from an earlier run. The graph left the evaluation out and turned all green while it still ran.
    Each: {name, job, status, scored, of, skipped, detail, text}."""
    groups: dict[object, list[str]] = {}
    jobs: dict[object, Job | None] = {}
    for row, job in rows:
        if row.kind != "eval":
            continue
        key = "reused" if row.reused else job.id if job is not None else None
        state = stage_state(row, job)
        if job is not None and state in ("failed", "cancelled", "interrupted"):  # the models it scored before
            state = "succeeded" if eval_state((row.info or {}).get("model"), job) == "succeeded" else state
        groups.setdefault(key, []).append(state)
        jobs[key] = job
    out = []
    for key, states in groups.items():
        job, n = jobs[key], len(states)
        scored, skipped = sum(s in ("succeeded", "reused") for s in states), states.count("skipped")
        status = "reuse" if key == "reused" else job.status if job is not None else (states[0] or "")
        status = "not queued" if status == NOT_QUEUED else status
        what = "scores reused" if key == "reused" else "models scored"
        detail = f"{scored} of {n} {what}" + (f", {skipped} skipped (their model was not made)" if skipped else "")
        numbered = job is not None and key != "reused"
        which = "reused" if key == "reused" else f"job {key}" if key is not None else "not queued"
        out.append({"name": "evaluation" if len(groups) == 1 else f"evaluation ({which})",
                    "job": job.id if job is not None and key != "reused" else None, "status": status,
                    "scored": scored, "of": n, "skipped": skipped,
                    "detail": (f"job {job.id} · " if numbered else "") + detail,
                    "text": f"evaluation{f' job {job.id}' if numbered else ''}: {detail}"})
    return out


def scores_note(evals: list[dict]) -> str:
    """Why the run's tables lack scores (state.evaluations' entries), or "" when its evaluation is done: while the
    job was queued or running `recipe tables` printed Tables 3-7 with only ticks and "Paper H6", no score column and
    no word why. Said once, for the CLI, the tables' notes and the Recipe page alike."""
    from backend import runner
    from backend.runner.messages import resume_action

    parts = []
    for e in evals:
        job, status = e["job"], e["status"]
        what = f"evaluation job {job}" if job is not None else "the evaluation"
        scored = f", {e['scored']} of {plural(e['of'], 'model')} scored" if e["scored"] else ""
        if status == "queued":
            parts.append(f"{what} is queued{scored} (`python -m backend jobs wait {job}`)")
        elif status == "running":
            parts.append(f"{what} is running, {e['scored']} of {plural(e['of'], 'model')} scored "
                         f"(`python -m backend jobs wait {job}`)")
        elif status == "not queued":
            parts.append(f"{what} is {NOT_QUEUED}")
        elif status in ("failed", "cancelled", "interrupted") and e["scored"] + e["skipped"] < e["of"]:
            row = runner.get(job) if job is not None else None
            step = f"; {resume_action(row).step} (`python -m backend jobs resume {job}`)" if row is not None else ""
            parts.append(f"{what} {status}{scored or ', no model scored'}{step}")
    return f"Scores not in yet: {'; '.join(parts)}." if parts else ""


def run_scores_note(run_id: int) -> str:
    with read_pass():
        return scores_note(evaluations(stages(run_id)))


def model_scores(rows: list[tuple[RecipeStage, Job | None]]) -> dict[tuple[int, str], int]:
    """(evaluation job, model) -> the score rows that job stored for that model, of the run's evaluation stages: the
    recipe's one shared job's result ("scores 504") is every model's together, and `recipe runs` printed it on each
    of the 18 rows as if each model had 504."""
    from sqlalchemy import func

    jobs = {job.id for row, job in rows if row.kind == "eval" and job is not None}
    if not jobs:
        return {}
    with db.session() as s:
        counted = s.exec(select(EvalScore.job_id, EvalScore.model, func.count()).where(EvalScore.job_id.in_(jobs))
                         .group_by(EvalScore.job_id, EvalScore.model)).all()
    return {(job_id, model): n for job_id, model, n in counted}


def stages(run_id: int) -> list[tuple[RecipeStage, Job | None]]:
    with db.session() as s:
        rows = s.exec(select(RecipeStage).where(RecipeStage.run_id == run_id).order_by(RecipeStage.id)).all()
        run = s.get(RecipeRun, run_id)
        ids = {r.job_id for r in rows if r.job_id}  # one query: one per stage's job grew with the stages
        jobs = {j.id: j for j in s.exec(select(Job).where(Job.id.in_(ids)))} if ids else {}
        out = [(r, jobs.get(r.job_id) if r.job_id else None) for r in rows]
    if run is not None and (cut := [r for r, j in out if j is None and _unlinked(r)]):
        found = _jobs_making({r.output for r in cut}, run.created)
        out = [(r, found.get(r.output) if j is None and _unlinked(r) else j) for r, j in out]
    return out


def _unlinked(row: RecipeStage) -> bool:  # a stage to run that records no job (plan.submit writes it as it queues)
    return row.job_id is None and not row.reused and (row.info or {}).get("status") == "run" and row.kind != "eval"


def _jobs_making(names: set[str], since) -> dict[str, Job]:
    """The jobs queued since `since` that make the models `names`, by name: a Run cut off between queueing a stage's
    job and writing it into the stage's row left the stage "not queued" for ever, its job queued (and later its
    model made) all the same. Active ones by their spec's name; ended ones by the registered model's job."""
    from backend import registry, runner

    found = {n: job for n, job in runner.makers().items() if n in names and as_utc(job.created) >= as_utc(since)}
    for name in names - set(found):
        if (rec := registry.get(name)) is not None and rec.job_id and (job := runner.get(rec.job_id)) is not None \
                and as_utc(job.created) >= as_utc(since):
            found[name] = job
    return found


def runs(limit: int = 50) -> list[RecipeRun]:
    with db.session() as s:
        return list(s.exec(select(RecipeRun).order_by(RecipeRun.id.desc()).limit(limit)))


def get_run(run_id: int) -> RecipeRun:
    """The run, or an error naming the runs there are: an unknown id would otherwise cancel nothing or print no
    tables, and look like success."""
    with db.session() as s:
        run = s.get(RecipeRun, run_id)
    if run is None:
        known = [str(r.id) for r in runs(10)]
        raise RecipeError(f"no recipe run {run_id}; "
                          + (f"the latest are {', '.join(known)} (the Recipe page lists them)." if known
                             else "no recipe has run yet: `python -m backend recipe run FILE` first."))
    return run


def run_text(run_id: int) -> str:
    """The recipe a run ran, as YAML, ending in a newline: the Recipe page's editor and "Save as YAML" show this
    text for the run, and `recipe show RUN` prints it, so `recipe run` of it plans the same stages (reused)."""
    text = get_run(run_id).text
    if not text.strip():
        raise RecipeError(f"recipe run {run_id} stored no recipe text (a run recorded before runs kept it): open its "
                          "recipe file, or `python -m backend recipe new PRESET` for a preset's.")
    return text if text.endswith("\n") else text + "\n"


def cancellable(run_id: int) -> list[int]:
    """The queued or running jobs this run started, each once (the evaluation rows share one job): reused jobs, and
    the in-flight jobs of an earlier run that this one waits on, belong to those runs. The page offers Cancel run
    only when there is one."""
    out: list[int] = []
    for row, job in stages(run_id):
        started_here = not row.reused and (row.info or {}).get("status") != "in-flight"
        if job is not None and started_here and job.status in ("queued", "running") and job.id not in out:
            out.append(job.id)
    return out


def cancel_run(run_id: int) -> list[int]:
    """Cancel every job cancellable() names: those this run started that are queued or running."""
    get_run(run_id)
    done = cancellable(run_id)
    for job_id in done:
        runner.cancel(job_id)
    return done


def held_out_shortfall(spec: dict, whose: str = "") -> str | None:
    """Why a training job of this spec (CPT, SFT or DPO) will log no held-out loss, as far as its spec and its
    sources' known sizes say (None: it will log one, or no one can tell before the job reads its data): no
    eval_data and a share of 0, or fewer rows in all than data.split_mix holds a share out of
    (data.MIN_HELD_OUT_ROWS), each source counting min(max_rows, its rows) where its rows are known cheaply
    (source_rows). A recipe's budget `max_rows: 8` made a CPT stage that succeeded with no recovery curve, the
    Recovery tab saying "no held-out losses logged yet" for ever; a 5-row file with no budget did the same unwarned.
    `whose`: what set max_rows, said before it ("budget ")."""
    from backend import data
    from backend.spec_train import _TrainSpec

    if spec.get("eval_data"):
        return None
    if not spec.get("eval_fraction", _TrainSpec.model_fields["eval_fraction"].default):  # the spec's own default
        return "nothing held out (eval_fraction 0, no eval_data)"
    cap, given = spec.get("max_rows"), [d for d in spec.get("data") or [] if isinstance(d, dict)]
    items = [(d.get("source", ""), d.get("weight", 1.0), d.get("sample_by") or "line") for d in given]
    try:  # a mix's members are each capped at max_rows, and each counted
        items = data.expand_rows(items)
    except data.DataError:
        pass
    n = len(items)
    if cap and 0 < cap * n < data.MIN_HELD_OUT_ROWS:
        return (f"fewer than {data.MIN_HELD_OUT_ROWS} rows to hold out ({whose}max_rows {cap}"
                + (f" of each of its {n} sources)" if n > 1 else ")"))
    known = [source_rows(src, sample_by) for src, _, sample_by in items]
    if not known or (cap is None and None in known):
        return None
    rows = [cap if k is None or (cap and k > cap) else k for k in known]
    if not 0 < sum(rows) < data.MIN_HELD_OUT_ROWS:
        return None
    said = [f"{r} of {data._shown(src)} ({whose}max_rows {cap})" if r == cap and k != cap else
            f"{r} in {data._shown(src)}" for (src, *_), k, r in zip(items, known, rows)]
    if n == 1:
        return f"fewer than {data.MIN_HELD_OUT_ROWS} rows to hold out ({data._shown(items[0][0])} has " \
               f"{plural(rows[0], 'row')})"
    return f"fewer than {data.MIN_HELD_OUT_ROWS} rows to hold out ({sum(rows)} in all: {', '.join(said)})"


def source_rows(source: str, sample_by: str = "line") -> int | None:
    """A data source's rows where they are known without reading it (counted no further than
    data.MIN_HELD_OUT_ROWS), else None: a registered set's count in the registry, a built-in's or local file's as
    data.counted_rows counts them (JSON Lines, .txt, Parquet). A Hub set, a mix (expand it first) or another file:
    None, left to the job."""
    from backend import data, data_files

    try:
        if source.startswith("dataset:"):
            return data._registered(source.removeprefix("dataset:")).rows or None  # 0: a record that kept none
        path = data.builtin_path(source.removeprefix("builtin:")) if source.startswith("builtin:") else \
            Path(source).expanduser()
    except data.DataError:
        return None
    if source.startswith("mix:") or data.hub_id(source) or not path.is_file():  # a pipe too: never read here
        return None
    try:
        return data_files.counted_rows(path, sample_by, data.MIN_HELD_OUT_ROWS)
    except OSError:  # unreadable: the plan's own read of it says why
        return None


def recovery_note(stage: str, job: Job | None, job_id: int, logged: bool = False) -> str:
    """The Recovery tab's word for a CPT stage without a recovery curve: why, once its job has ended (it said "no
    held-out losses logged yet" under a job that had succeeded and would never log one). `logged`: the job logged
    held-out losses, but no reference loss of the base to draw them against."""
    status = getattr(job, "status", None)
    if logged:
        return (f"{stage}: job {job_id} logged held-out losses but no reference loss of the base model, so no "
                "recovery chart: the job's log on the Jobs page says why.")
    if status not in runner.FINISHED:
        return f"{stage}: no held-out losses logged yet (job {job_id})."
    if why := held_out_shortfall(job.spec or {}):
        return f"{stage}: job {job_id} ended without a held-out loss: {why}; give eval_data or more rows."
    if status == "succeeded":
        return (f"{stage}: job {job_id} succeeded without logging a held-out loss (or its base's reference loss): "
                "its log on the Jobs page says why.")
    return f"{stage}: job {job_id} {status} before logging a held-out loss: its log on the Jobs page says why."
