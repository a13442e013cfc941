"""Plan-time checks of a recipe's models (plan.py calls them; every name is imported there).

A merge is checked as the Merge page checks one (runner.check_before_queueing → merge.plan.check_registered: model
type, width, depth; dtypes may differ, the merge casts), for what is known before any stage runs: an outside model's registry row (or its
folder's config and headers), and for a stage the shape of the model it reads (depth up-scaling changes the depth
only). Checked by depth alone, a TIES merge with `base: base` (6 layers, candidates up-scaled to 8) or with a
registered model of another width planned, then failed after every SFT stage had trained.

A registered model that a stage would reuse must still hold its weights: one whose model.safetensors was deleted
was reused, so a rerun changed nothing and every job that read it failed "No safetensors weights…".
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

from backend import registry
from backend.recipe.spec import RecipeError
from backend.specs import TRAIN_KINDS


@dataclass
class Shape:
    """What a merge compares of two models (the fields of their registry rows check_registered reads); "" or 0:
    not known before the model is made (a stage's dtype: its job chooses it), and so not compared."""
    name: str
    model_type: str = ""
    hidden_size: int = 0
    num_layers: int = 0
    dtype: str = ""


def folder_shape(ref: str, folder: Path | None) -> Shape:
    """An outside model's shape: its registry row, else its folder's config and weight headers."""
    rec = registry.record(ref)
    if rec is not None:
        return Shape(ref, rec.model_type, rec.hidden_size, rec.num_layers, rec.dtype)
    from backend.modelinfo import inspect_model

    info = inspect_model(Path(folder if folder is not None else ref).expanduser())
    return Shape(ref, info.model_type, info.hidden_size, info.num_layers, info.dtype)


def config_shape(ref: str, cfg: dict) -> Shape:
    """A Hub model's shape from its config.json (imported by a job: its weights are not here)."""
    return Shape(ref, cfg.get("model_type", ""), int(cfg.get("hidden_size") or 0),
                 int(cfg.get("num_hidden_layers") or 0))


def made_shape(source: Shape, name: str, depth: int | None) -> Shape:
    """The shape of a model a stage makes from `source`: the same type and width, at `depth` layers; its dtype is
    the job's to choose."""
    return replace(source, name=name, num_layers=depth or source.num_layers, dtype="")


def stage_shape(st: dict, shapes: dict[str, Shape]) -> Shape | None:
    """The shape of the model a stage makes (a training stage: its model's; a merge: its models' one shape, checked
    as check_registered checks a merge, its base included), or None (evaluation, synthetic data)."""
    name, kind = st["name"], st["kind"]
    if kind in TRAIN_KINDS:  # a model not known (no stage makes one by that name: refused elsewhere) is not compared
        return made_shape(shapes.get(st["model"]) or Shape(st["model"]), name, None)
    if kind != "merge":
        return None
    from backend.merge.executor import MergeError
    from backend.merge.plan import _check_rows

    shapes = {r: shapes.get(r) or Shape(r) for r in list(st["models"]) + [st.get("base") or st["models"][0]]}
    ds = {m: shapes[m].num_layers for m in st["models"] if shapes[m].num_layers}  # the candidates' depths first, in the plan's own words
    if len(set(ds.values())) > 1:
        detail = ", ".join(f"{m} has {v}" for m, v in ds.items())
        raise RecipeError(f"stage {name}.models: {detail} layers; a merge needs models of the same depth.")
    refs = list(st["models"]) + ([st["base"]] if st.get("base") else [])
    known = [replace(shapes[r], name=r) for r in refs]  # named as the recipe names them (a stage, base, a model)
    for other in known[1:]:
        try:
            _check_rows(known[0], other)
        except MergeError as exc:
            field = "base" if other.name == st.get("base") and other.name not in st["models"] else "models"
            raise RecipeError(f"stage {name}.{field}: {exc}") from None
    return made_shape(known[0], name, None)


def weights_missing(stage: str, name: str, path: str) -> RecipeError | None:
    """The refusal of a registered model this stage would reuse whose folder lacks its weights, or None."""
    from backend.safetensors_stream import CheckpointError, weight_files

    try:
        weight_files(Path(path))
    except (CheckpointError, OSError) as exc:
        return RecipeError(f"stage {stage}: its model {name!r} is registered, but {exc} Reusing it would fail every "
                           f"job that reads it: delete it (Models page, or `python -m backend models delete {name}`), "
                           "then plan the recipe again to make it anew.")
    return None


# evals_once's cache: an evaluation job's id -> its models (stored names, in the job's order), those not yet fully
# scored, and those left out (not made); None: read each call from the database
_EVALS: ContextVar[dict[int, tuple[list[str], list[str], set[str]]] | None] = ContextVar("recipe_evals", default=None)


@contextmanager
def evals_once():
    """Inside it, eval_state reads each evaluation job's stored scores and models once, not once per stage: a pass
    over a run (the Recipe page's live stages every 2 s, its tables) read them again for each of the 18 eval stages
    that share the job, and each of those looked up every model of it (~1,200 SQL statements a tick). For reads
    only; per context (a thread: each Streamlit session's own), never shared; nested, the outer cache stands."""
    if _EVALS.get() is not None:
        yield
        return
    token = _EVALS.set({})
    try:
        yield
    finally:
        _EVALS.reset(token)


def _eval_progress(job) -> tuple[list[str], list[str], set[str]]:
    """(the job's models as stored, those with a task not stored yet, those of them left out as not made)."""
    from backend.evaljob import missing_models, stored_by_job, stored_name

    cache = _EVALS.get()
    if cache is not None and job.id in cache:
        return cache[job.id]
    models, tasks = [stored_name(m) for m in job.spec.get("models") or []], len(job.spec.get("tasks") or [])
    done: dict[str, int] = {}
    for (m, _), _n in stored_by_job(job.id).items():
        done[m] = done.get(m, 0) + 1
    left = [m for m in models if done.get(m, 0) < tasks]
    gone = set(missing_models(left)) if job.spec.get("skip_missing") else set()  # left out: their stage failed
    if cache is not None:
        cache[job.id] = (models, left, gone)
    return models, left, gone


def eval_state(model: str | None, job) -> str:
    """The state of one model's evaluation inside the recipe's one running evaluation job (`job`), from the scores
    that job stored: "succeeded" once every task of it is stored, "running" for the model being scored (the first
    one, in the job's order, not done), "queued" for those after it. Every eval stage read "running" while the job
    ran, though some models' scores were already stored. Models run in the job's order (evaljob.run_eval)."""
    from backend.evaljob import stored_name

    if model is None:
        return job.status
    models, left, gone = _eval_progress(job)
    if (me := stored_name(model)) not in models:
        return job.status
    if me not in left:
        return "succeeded"
    if me in gone:
        return "skipped"
    return "running" if me == next((m for m in left if m not in gone), None) else "queued"
