"""Where every kind of work puts a new model: checked up front, built in a temporary folder on the destination's
filesystem, renamed into place only when complete, and registered — or removed if registration fails.

Depth up-scaling, merging and training share these steps, so nothing half-written is ever registered whichever
work made it.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from backend import registry
from backend.names import human_bytes, inside
from backend.safetensors_stream import open_checkpoint
from storage import db
from storage.models import ModelRecord

# What a built model takes from its source folder besides the weights, config and card it writes itself: what its
# users load with it (tokenizer, chat template, generation config) and its licence. A list of what to keep, not of
# what to leave: a trained folder also holds adapter_config.json (with it transformers and peft load the new full
# model as a LoRA adapter), trainer_state.json, training_args.bin, optimizer and scheduler states, and whatever a
# later library adds; none of it describes the new model.
COMPANIONS = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "*.tiktoken",
    "chat_template.jinja", "chat_template.json", "generation_config.json", "preprocessor_config.json",
    "LICENSE*", "NOTICE*", "USE_POLICY*",
)


def check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed * 1.02 + (50 << 20):
        raise OSError(f"Not enough disk space in {path}: the new model needs {human_bytes(needed)} (and 50 MiB to "
                      f"spare), {human_bytes(free)} is free. Free some space or choose another output folder.")


def output_dir(out_dir: Path | str | None, spec_out: str | None, name: str, needed: int | None = None) -> Path:
    """The folder a new model goes to (default workspace/models/NAME), refused when it already holds something;
    its parent is checked writable (check_destination) and created and, when `needed` bytes are known, checked for
    space."""
    registry.check_name_free(name)
    out = Path(out_dir or spec_out or inside(db.models_dir(), name)).expanduser().resolve()
    if (out / db.UNREGISTERED_MARK).is_file():  # left by a build killed before its row: a resume may reuse the name
        db.clean_unregistered_builds([out])
    check_folder_free(out, by_name=not (out_dir or spec_out), name=name)
    check_destination(out, needed, name if (out_dir or spec_out) else None)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only mount above it: "[Errno 30] Read-only file system: '/mnt/ro/x'"
        raise cannot_write(out.parent, exc) from None
    return out


def check_destination(out: Path, needed: int | None = None, name: str | None = None) -> None:
    """Before any work: the folder `out` goes in (its nearest existing parent, when that is still to be made) can be
    written, and has room for `needed` bytes when known. A training whose --out sat on a read-only or full disk
    trained to the end and failed only when it handed its model over; a build failed with a bare "[Errno 30]".
    `out` is the model's own folder (--out), put in place of an empty folder there: an empty mount point given as
    --out (meant as where the model goes) was refused "cannot write to /mnt" without a word of where it could go;
    `name`, the model's when the user gave --out (not a folder made from the name), makes the folder suggested."""
    out = Path(out)
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    mount = out.is_dir() and os.path.ismount(out)  # a build's rename cannot replace it: "Device or resource busy"
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK) or mount:  # (a read-only mount refuses root)
        raise _not_there(out, parent, name, mount)
    if needed is not None and parent.is_dir():
        check_disk(parent, needed)


def weights_bytes(model: str | Path | None) -> int | None:
    """About what a model trained from `model` (a registered name, without importing the built-in, or a folder)
    takes on disk: its parameters times the bytes of the dtype a training saves them in (train_job.weights_dtype:
    bf16 on CUDA, float32 on a CPU; save_pretrained keeps the dtype the model was loaded in), not its files' size:
    an F32 base trained in bf16 was estimated twice too large, and refused on a disk that could take it (a bf16 base
    trained on a CPU, half too small). Tensors a loader does not cast (integers) keep their size. The tensors are
    those a loader reads (a consolidated.safetensors beside an index is no part of the model). None when it is
    neither yet (a model a queued job makes), or its weights cannot be read (the job's own checks say why)."""
    rec = registry.record(str(model)) if model else None
    folder = Path(rec.path if rec else model or "").expanduser()
    if not model or not folder.is_dir():
        return None
    try:
        tensors = open_checkpoint(folder).values()
    except (OSError, ValueError):  # (CheckpointError is one)
        return None
    from backend.train_job import weights_dtype  # torch: imported only when a training's space is checked

    size = weights_dtype().itemsize
    return sum(math.prod(t.shape) * size if t.dtype in CAST_DTYPES else t.nbytes for t in tensors) or None


# safetensors dtypes that from_pretrained(dtype=...) casts to the training's dtype
CAST_DTYPES = ("F64", "F32", "F16", "BF16")


def _not_there(out: Path, parent: Path, name: str | None, mount: bool) -> OSError:
    """The refusal of an output folder the model cannot be put in place of (check_destination), saying where it can
    go when `out`, given as --out, is an empty folder (or a mount point) this process may write into: inside it."""
    inside = name and out.is_dir() and os.access(out, os.W_OK | os.X_OK) and (mount or not any(out.iterdir()))
    hint = (f" --out names the model's own folder, not the folder it goes in: to put the model inside {out}, give "
            f"--out {out / name}." if inside else "")
    if mount and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return OSError(f"{out} is a mount point, which the model's folder cannot replace (a build renames its "
                       f"folder into place).{hint or ' Choose another output folder.'} Nothing was registered.")
    if not hint:
        return cannot_write(parent)
    return OSError(f"cannot write to {parent} ({_why(parent)}), where the model's folder {out} would replace the "
                   f"empty folder of that name.{hint} Nothing was registered.")


def cannot_write(folder: Path, exc: BaseException | None = None) -> OSError:
    """The refusal of a destination this process may not write: a read-only filesystem, or no permission."""
    if exc is None:  # os.access said no
        why = _why(folder)
    else:
        code = write_refused(exc, folder)
        why = ("a read-only filesystem" if code == errno.EROFS else "no permission" if code
               else f"{type(exc).__name__}: {exc}")
    return OSError(f"cannot write to {folder} ({why}): choose another output folder. Nothing was registered.")


def _why(folder: Path) -> str:
    """Why os.access refused to let this process write `folder`."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:  # (a filesystem without statvfs)
        read_only = False
    return "a read-only filesystem" if read_only else "no permission"


def default_folder(spec_out: str | None, name: str) -> Path:
    """Where a job will write the model named `name`: the spec's `out`, else workspace/models/NAME."""
    return Path(spec_out or inside(db.models_dir(), name)).expanduser().resolve()


def check_folder_free(out: Path, by_name: bool, name: str | None = None) -> None:
    """Refuse a folder that already holds files (not those of a build killed before its row, which a resume
    reuses). `by_name`: the folder comes from the model's name (the pages have only a name field), so the message
    asks for another name, not another output folder; else it says where the model (`name`) could go inside it:
    a disk's mount point given as --out holds lost+found."""
    if out.exists() and not out.is_dir():  # iterdir said "[Errno 20] Not a directory"
        raise FileExistsError(f"{out} is a file, not a folder: choose another output folder. Nothing was changed.")
    check_not_a_models_folder(out, by_name)
    if not out.exists() or not any(out.iterdir()) or (out / db.UNREGISTERED_MARK).is_file():
        return
    if by_name:
        raise FileExistsError(f"A folder named {out.name!r} already holds files in the models folder ({out}), though "
                              "no model is registered under that name: choose another name, or move that folder "
                              "away. Nothing was changed.")
    raise FileExistsError(f"{out} already exists and is not empty: choose another output folder (--out names the "
                          "model's own folder, not the folder it goes in: to put the model inside it, give --out "
                          f"{out / (name or 'NAME')}).")


def check_not_a_models_folder(out: Path, by_name: bool) -> None:
    """Refuse the folder of a registered model, saying whose. A model trained with `--out models/k9-a` is registered
    as its spec's default name (tiny-llama-sft) in folder k9-a; a later job named k9-a was told that folder held
    files "though no model is registered under that name: ... or move that folder away", which would have broken the
    registered model. A row, not a look at the disk: checked before a job is queued wherever it will run."""
    if (rec := registry.by_path(out)) is None:
        return
    if not out.exists():  # a row left pointing at a folder removed by hand: the new model would become its files
        raise FileExistsError(f"{out} is the folder of the registered {rec.kind} model {rec.name!r}, though the "
                              f"folder is gone: remove that entry first (python -m backend models delete {rec.name}, "
                              "or the Models page), or choose another name. Nothing was changed.")
    whose = f"the registered {rec.kind} model {rec.name!r}"
    if by_name:
        made = " (made with an output folder of that name)" if rec.name != out.name else ""
        raise FileExistsError(f"A folder named {out.name!r} in the models folder ({out}) holds {whose}{made}: "
                              "choose another name. Nothing was changed.")
    raise FileExistsError(f"{out} holds {whose}: choose another output folder. Nothing was changed.")


@contextmanager
def building(out_dir: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder that becomes `out_dir` when the block completes and is removed if it fails. It sits in
    workspace/.tmp (cleaned at the next start if the process is killed) when that is on the same filesystem, so
    the final rename is atomic; otherwise beside the destination, with a note in workspace/.tmp naming it, so the
    next start removes it there too (db.clean_stale_tmp) if this process is killed mid-way."""
    note = tmp = None
    try:  # the folder made inside it: a read-only destination left the note behind until the next worker start
        if os.stat(out_dir.parent).st_dev == os.stat(db.tmp_dir()).st_dev:
            tmp = db.new_tmp(prefix)
        else:
            tag = db.tmp_tag()  # process and machine: a worker of another machine sharing the workspace leaves it
            tmp = out_dir.parent / f".tmp-{prefix}-{tag}"
            note = db.tmp_dir() / f"external-{tag}{db.EXTERNAL_TMP_SUFFIX}"
            note.write_text(str(tmp))  # written first: a kill right after mkdir still leaves the note
            tmp.mkdir()
        yield tmp
        # until register_output removes it, this marks the folder as not registered yet: a kill between the
        # rename and the registration leaves a folder the next start can tell from one a user put there
        db.mark_unregistered(tmp)
        if out_dir.exists():
            _check_still_free(out_dir)
            out_dir.rmdir()  # empty: output_dir() refused a non-empty one
        tmp.rename(out_dir)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):
            raise OSError(errno.ENOSPC, f"Disk full while writing the model to {out_dir.parent}: the partial "
                                        "files were removed and nothing was registered. Free some space or choose "
                                        "another output folder.") from exc
        # the paths this build writes: an unreadable source model in the same models folder is not its fault
        if write_refused(exc, out_dir, *([tmp] if tmp else [])):
            raise cannot_write(out_dir.parent, exc) from exc
        raise
    finally:
        if note is not None:
            note.unlink(missing_ok=True)


def _check_still_free(out_dir: Path) -> None:
    """The destination was free when the job started (output_dir); another job of the same name that finished first
    (a CLI build beside a queued one: the queue refuses only its own duplicates) may have filled it since. That failed
    here with a bare "[Errno 39] Directory not empty"; the other model is named now, and this build's files go."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    rec = registry.by_path(out_dir)
    who = f"the {rec.kind} model {rec.name!r}" if rec else "another job's files"
    raise FileExistsError(f"{out_dir} was taken while this job ran: it now holds {who} (a job of the same name "
                          "finished first). This job's files were removed and nothing was registered: run it again "
                          "under another name or output folder.")


def disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain (a shard-writer thread's error may arrive wrapped; shutil.copytree's
    shutil.Error holds each file's error as text only)."""
    return bool(_errnos(exc) & {errno.ENOSPC, errno.EDQUOT})


def write_refused(exc: BaseException, *folders: Path) -> int | None:
    """EROFS, EACCES or EPERM on a path inside one of `folders` (a model file the build could not read, a read-only
    cache elsewhere, is no fault of its destination; an EROFS naming no path, or in a copy's shutil.Error text,
    counts): that errno, else None."""
    for e in _chain(exc):
        if isinstance(e, shutil.Error) and errno.EROFS in _errnos(e):
            return errno.EROFS
        if isinstance(e, OSError) and e.errno == errno.EROFS and e.filename is None and e.filename2 is None:
            return errno.EROFS
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and any(
                Path(os.path.abspath(name)).is_relative_to(os.path.abspath(f))
                for name in (e.filename, e.filename2) if isinstance(name, (str, os.PathLike)) for f in folders):
            return e.errno  # (a rename's destination is its filename2)
    return None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errnos(exc: BaseException) -> set[int]:
    """The error numbers in an exception's chain, a shutil.Error's "[Errno 28] …" texts too."""
    found = set()
    for e in _chain(exc):
        if isinstance(e, shutil.Error):  # args: ([(src, dst, "[Errno 28] No space left on device: …"), …],)
            found |= {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(e.args))}
        elif isinstance(e, OSError) and e.errno is not None:
            found.add(e.errno)
    return found


def move_output(src: Path, out_dir: Path) -> None:
    """Move a finished folder (a training run's final/) to out_dir: a rename on the same filesystem, else a copy and
    the source's removal. A copy that fails (disk full, read-only) removes what it wrote of out_dir (0-byte and
    truncated files, the unregistered mark) and keeps `src` whole, raising OSError in words."""
    out_dir = Path(out_dir)
    _check_still_free(out_dir)  # another job of the name may have filled it while this one trained
    try:
        if out_dir.exists():
            out_dir.rmdir()  # empty: output_dir() refused a non-empty one
        os.rename(src, out_dir)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise _not_moved(out_dir, exc) from None
    try:  # marked before the first file lands: a kill mid-copy leaves a folder a resume may replace
        out_dir.mkdir(parents=True, exist_ok=True)
        db.mark_unregistered(out_dir)
        shutil.copytree(src, out_dir, symlinks=True, dirs_exist_ok=True)
    except OSError as exc:  # (shutil.Error is one: a failed file does not stop the others')
        shutil.rmtree(out_dir, ignore_errors=True)
        raise _not_moved(out_dir, exc) from None
    shutil.rmtree(src, ignore_errors=True)


def _not_moved(out_dir: Path, exc: OSError) -> OSError:
    if disk_full(exc):
        return OSError(f"Disk full while writing the model to {out_dir.parent}: the partial files were removed and "
                       "nothing was registered. Free some space or choose another output folder.")
    if write_refused(exc, out_dir):
        return cannot_write(out_dir.parent, exc)
    first = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else str(exc)
    return OSError(f"could not write the model to {out_dir} ({first}): the partial files were removed and nothing "
                   "was registered.")


def copied_refs(spec) -> list[str]:
    """The models (as the spec names them) whose files a job copies into the model it makes (copy_companions): an
    upscale's base; a merge's donor (its base, else its first model) and its tokenizer_source. A link out of one of
    them would put its target (someone's key) into a registered model. A training's model too: it re-saves the
    tokenizer files it loaded (a chat_template.jinja linked to ~/.ssh/id_rsa came out as a plain file in the trained
    model, which no push check could see). The other models a job reads are only read: an evaluation's, a chat's, a
    slices upscale's second model (its layers, none of its files)."""
    if spec.kind in ("cpt", "sft", "dpo"):
        return [spec.model]
    if spec.kind == "upscale":
        return [spec.base]
    if spec.kind == "merge":
        donor = [spec.base or spec.models[0]] if (spec.base or spec.models) else []
        return donor + ([spec.tokenizer_source] if spec.tokenizer_source not in (None, "base") else [])
    return []


def _companions(src: Path, config_src: Path | None) -> list[Path]:
    """What copy_companions copies, in its order."""
    files = [f for f in sorted(Path(src).iterdir())
             if f.is_file() and any(fnmatch.fnmatchcase(f.name, pattern) for pattern in COMPANIONS)]
    # the config's modules last: a name both give (a tokenizer module importing .configuration_x) is the model's
    for folder, names in ((src, AUTO_MAP_TOKENIZER_FILES), (config_src or src, ("config.json",))):
        files += remote_modules(folder, names)
    return files


def check_companions(src: Path, config_src: Path | None = None) -> None:
    """Refuse, before a build writes anything, a file copy_companions would copy through a link out of its folder
    (import_checks.link_problems: a link into the model's own cached Hub repo passes): checked where files are
    copied, a registered model's too, since a link can be added to its folder after its import (an import refuses
    one); a training's model too (training.check_inputs: it re-saves the tokenizer it loaded). Reading a folder
    through its links (evaluation, chat) is not refused."""
    copied = _companions(src, config_src)
    problems = [why for folder in {Path(src), Path(config_src or src)}
                for name, why in registry.link_problems(folder, again="try again")
                if any(f.name == name and f.parent == folder for f in copied)]
    if problems:
        raise registry.RegistryError(" ".join(problems))


def copy_companions(src: Path, dst: Path, config_src: Path | None = None) -> None:
    """The files of `src` that COMPANIONS names (tokenizer, chat template, generation config, licence), and the
    Python modules of a remote-code model: those the auto_map of `src`'s tokenizer_config.json and of
    `config_src`'s (default `src`) config.json name, config.json being the one the caller writes. None is copied
    through a link out of its folder (check_companions)."""
    check_companions(src, config_src)
    for f in _companions(src, config_src):
        shutil.copy2(f, dst / f.name)


# Files whose auto_map names classes in the folder's own modules (a remote-code model: transformers imports them under
# trust_remote_code). A built folder kept config.json's auto_map but none of the modules it names, so its user could
# not load it with trust_remote_code as they loaded its source.
AUTO_MAP_TOKENIZER_FILES = ("tokenizer_config.json", "preprocessor_config.json")


def remote_modules(folder: Path, files: tuple[str, ...]) -> list[Path]:
    """The .py files of `folder` that the auto_map of `files` names ("modeling_x.XForCausalLM"; a tokenizer's
    [slow, fast] pair), with the modules they import relatively, recursively: what transformers' save_pretrained
    writes for a remote-code object (dynamic_module_utils.custom_object_save: the class's module and
    get_relative_import_files). Only read, never imported: no code of the model runs here. A class in another repo
    ("org/repo--modeling_x.X") has no file here and stays as it is named."""
    folder = Path(folder)
    refs: list[str] = []
    for name in files:
        try:
            auto_map = json.loads((folder / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]  # old tokenizer form: a bare pair
        for value in values:
            refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    # a module name, as transformers splits "module.Class"; no path ("../x"), no package ("sub.mod": not copied
    # flat by transformers either)
    todo = [m for ref in refs if "--" not in ref and "." in ref and (m := ref.rsplit(".", 1)[0]).isidentifier()]
    found: list[Path] = []
    while todo:
        module = folder / f"{todo.pop()}.py"
        if module in found or not module.is_file():
            continue
        found.append(module)
        from transformers.dynamic_module_utils import get_relative_imports  # a regex over the file's text

        todo += [m for m in get_relative_imports(module) if m.isidentifier()]
    return sorted(found)


def register_output(out_dir: Path, name: str, kind: str, **fields) -> ModelRecord:
    """Register a finished folder; if that fails the folder goes too, so disk and registry stay in step."""
    try:
        rec = registry.register(out_dir, name, kind, **fields)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    (Path(out_dir) / db.UNREGISTERED_MARK).unlink(missing_ok=True)
    return rec
