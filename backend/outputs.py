"""Where every kind of work puts a new model: checked up front, built in a temporary folder on the destination's
filesystem, renamed into place only when complete, and registered — or removed if registration fails.

Depth up-scaling, merging and training share these steps, so nothing half-written is ever registered whichever
work made it.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from backend import registry
from backend.safetensors_stream import INDEX_NAME
from storage import db
from storage.models import ModelRecord

# Files a model folder carries besides weights, config and card: tokenizer, chat template, generation config...
_NOT_COMPANIONS = {"config.json", INDEX_NAME, "README.md", ".gitattributes"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed * 1.02 + (50 << 20):
        raise OSError(f"Not enough disk space in {path}: the new model needs {needed / 2**30:.2f} GiB, "
                      f"{free / 2**30:.2f} GiB is free. Free some space or choose another output folder.")


def output_dir(out_dir: Path | str | None, spec_out: str | None, name: str, needed: int | None = None) -> Path:
    """The folder a new model goes to (default workspace/models/NAME), refused when it already holds something;
    its parent is created and, when `needed` bytes are known, checked for space."""
    registry.check_name_free(name)
    out = Path(out_dir or spec_out or db.models_dir() / name).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty: choose another output folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    if needed is not None:
        check_disk(out.parent, needed)
    return out


@contextmanager
def building(out_dir: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder that becomes `out_dir` when the block completes and is removed if it fails. It sits in
    workspace/.tmp (cleaned at the next start if the process is killed) when that is on the same filesystem, so
    the final rename is atomic; otherwise beside the destination."""
    if os.stat(out_dir.parent).st_dev == os.stat(db.tmp_dir()).st_dev:
        tmp = db.new_tmp(prefix)
    else:
        tmp = out_dir.parent / f".tmp-{prefix}-{os.getpid()}-{int(time.time())}"
        tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()  # empty: output_dir() refused a non-empty one
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_companions(src: Path, dst: Path) -> None:
    """Tokenizer, chat template, generation config… everything of `src` that is not weights, config or card."""
    for f in Path(src).iterdir():
        if f.is_file() and f.name not in _NOT_COMPANIONS and not f.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(f, dst / f.name)


def register_output(out_dir: Path, name: str, kind: str, **fields) -> ModelRecord:
    """Register a finished folder; if that fails the folder goes too, so disk and registry stay in step."""
    try:
        return registry.register(out_dir, name, kind, **fields)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
