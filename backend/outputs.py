"""Where every kind of work puts a new model: checked up front, built in a temporary folder on the destination's
filesystem, renamed into place only when complete, and registered — or removed if registration fails.

Depth up-scaling, merging and training share these steps, so nothing half-written is ever registered whichever
work made it.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from backend import registry
from backend.names import human_bytes, inside
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
    its parent is created and, when `needed` bytes are known, checked for space."""
    registry.check_name_free(name)
    out = Path(out_dir or spec_out or inside(db.models_dir(), name)).expanduser().resolve()
    if (out / db.UNREGISTERED_MARK).is_file():  # left by a build killed before its row: a resume may reuse the name
        db.clean_unregistered_builds([out])
    check_folder_free(out, by_name=not (out_dir or spec_out))
    out.parent.mkdir(parents=True, exist_ok=True)
    if needed is not None:
        check_disk(out.parent, needed)
    return out


def default_folder(spec_out: str | None, name: str) -> Path:
    """Where a job will write the model named `name`: the spec's `out`, else workspace/models/NAME."""
    return Path(spec_out or inside(db.models_dir(), name)).expanduser().resolve()


def check_folder_free(out: Path, by_name: bool) -> None:
    """Refuse a folder that already holds files (not those of a build killed before its row, which a resume
    reuses). `by_name`: the folder comes from the model's name (the pages have only a name field), so the message
    asks for another name, not another output folder."""
    if out.exists() and not out.is_dir():  # iterdir said "[Errno 20] Not a directory"
        raise FileExistsError(f"{out} is a file, not a folder: choose another output folder. Nothing was changed.")
    check_not_a_models_folder(out, by_name)
    if not out.exists() or not any(out.iterdir()) or (out / db.UNREGISTERED_MARK).is_file():
        return
    if by_name:
        raise FileExistsError(f"A folder named {out.name!r} already holds files in the models folder ({out}), though "
                              "no model is registered under that name: choose another name, or move that folder "
                              "away. Nothing was changed.")
    raise FileExistsError(f"{out} already exists and is not empty: choose another output folder.")


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
    note = None
    if os.stat(out_dir.parent).st_dev == os.stat(db.tmp_dir()).st_dev:
        tmp = db.new_tmp(prefix)
    else:
        tag = db.tmp_tag()  # process and machine: a worker of another machine sharing the workspace leaves it alone
        tmp = out_dir.parent / f".tmp-{prefix}-{tag}"
        note = db.tmp_dir() / f"external-{tag}{db.EXTERNAL_TMP_SUFFIX}"
        note.write_text(str(tmp))  # written first: a kill right after mkdir still leaves the note
        tmp.mkdir()
    try:
        yield tmp
        # until register_output removes it, this marks the folder as not registered yet: a kill between the
        # rename and the registration leaves a folder the next start can tell from one a user put there
        db.mark_unregistered(tmp)
        if out_dir.exists():
            _check_still_free(out_dir)
            out_dir.rmdir()  # empty: output_dir() refused a non-empty one
        tmp.rename(out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):
            raise OSError(errno.ENOSPC, f"Disk full while writing the model to {out_dir.parent}: the partial "
                                        "files were removed and nothing was registered. Free some space or choose "
                                        "another output folder.") from exc
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
    """ENOSPC/EDQUOT anywhere in the chain (a shard-writer thread's error may arrive wrapped)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def copy_companions(src: Path, dst: Path, config_src: Path | None = None) -> None:
    """The files of `src` that COMPANIONS names (tokenizer, chat template, generation config, licence), and the
    Python modules of a remote-code model: those the auto_map of `src`'s tokenizer_config.json and of
    `config_src`'s (default `src`) config.json name, config.json being the one the caller writes."""
    for f in Path(src).iterdir():
        if f.is_file() and any(fnmatch.fnmatchcase(f.name, pattern) for pattern in COMPANIONS):
            shutil.copy2(f, dst / f.name)
    # the config's modules last: a name both give (a tokenizer module importing .configuration_x) is the model's
    for folder, files in ((src, AUTO_MAP_TOKENIZER_FILES), (config_src or src, ("config.json",))):
        for module in remote_modules(folder, files):
            shutil.copy2(module, dst / module.name)


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
