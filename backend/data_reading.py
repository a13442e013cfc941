"""Reading data files safely, and showing them: `datasets` only after torch and transformers are imported whole
(datasets_ready), a failed read told apart as the file's fault or the reader's (file_fault, ReaderFailed), the
suffix a file is read by (a .gz file's inner one), and a preview's example texts cut to a size a page can show.
Split from backend/data.py and backend/data_files.py (house size); it imports neither.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
import threading
from pathlib import Path


# gzip-compressed text files, as `datasets` reads them (its loaders infer the compression from the suffix); read
# here from a decompressed copy (data_files.utf8_copy), so every check before `datasets` sees the text
GZ_SUFFIXES = (".jsonl.gz", ".json.gz", ".csv.gz", ".txt.gz")
# suffix -> the `datasets` loader that reads it (backend/data.py re-exports it)
LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def loader_suffix(path: Path | str) -> str:
    """The suffix that says how a data file is read: its own (lower case), or a .gz file's inner one when
    GZ_SUFFIXES holds it (x.jsonl.gz reads as .jsonl; x.parquet.gz stays .gz: Parquet compresses itself)."""
    name = Path(path).name.lower()
    inner = next((s for s in GZ_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
    return inner.removesuffix(".gz") if inner else Path(name).suffix


def names_data_file(path: Path | str) -> bool:
    """Whether a path's name says it is a data file backend/data.py reads (x.jsonl, x.JSONL, x.jsonl.gz: its
    loader_suffix is one of LOADERS), whether or not it exists: the one test of a file by its suffix (a recipe's
    plan, an evaluation's task check). `path.suffix in DATA_SUFFIXES` took a missing x.jsonl.gz for a name or a Hub
    id (its suffix is .gz), so a recipe said "not builtin:NAME … or a Hub id" and an evaluation was queued unread."""
    return loader_suffix(path) in LOADERS


def not_a_regular_file(path: Path | str, what: str = "a data file") -> str | None:
    """Why an existing path is no file to read, else None (a regular file; a folder, or a missing path, each refused
    in its own words): a named pipe given as --data hung the reader waiting for a writer, and /dev/zero behind a
    symbolic link read as an empty file. Links are followed, as a read follows them."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    return (f"{path} is not a regular file ({kind}): a pipe, device or socket may wait forever or never end, so "
            f"it is not read. Give {what} saved on disk.")


class ReaderFailed(RuntimeError):
    """A local file's read failed for a reason that is not the file's (a library half imported by another thread,
    memory, a full disk): said as such, never as the file's fault, and an upload is kept (uploads.discard_refused is
    for files the page refuses)."""


_READY = False
_READY_LOCK = threading.Lock()


def datasets_ready() -> None:
    """Import torch and transformers whole before `datasets` fingerprints anything: its pickler
    (datasets/utils/_dill.py) reads `transformers.PreTrainedTokenizerBase` and `torch.Tensor` whenever those modules
    are in sys.modules, and a module another thread is still importing (a Streamlit session loading a model) is
    there half made: a valid upload was refused as "Could not read alpaca.json as JSON: module 'transformers' has no
    attribute 'PreTrainedTokenizerBase'" and deleted. importlib waits for the other thread's import to finish (a
    bare `import transformers` did too, but kept the half-made module, which transformers replaces in sys.modules
    with its lazy one when done). Once per process, under a lock; a flag check afterwards. Skipped while this is
    the process's only thread and neither is imported (a CLI command: no thread can import them halfway through its
    read, and importing them added 2-5 s and 200 MB to `datasets preview`)."""
    global _READY
    if _READY or (threading.active_count() == 1 and not {"torch", "transformers"} & sys.modules.keys()):
        return
    with _READY_LOCK:
        if not _READY:
            importlib.import_module("torch")
            importlib.import_module("transformers")
            sys.modules["transformers"].PreTrainedTokenizerBase  # noqa: B018 - its lazy submodule, imported here
            _READY = True


def file_fault(exc: BaseException) -> bool:
    """Whether a reader's exception is the file's fault (it does not parse, its values do not fit a table), as every
    failure to read a file was called before: all but the reader's (or the machine's) own, which are an
    AttributeError or ImportError (a library half imported by another thread), running out of memory (MemoryError,
    pyarrow's ArrowMemoryError, which is an ArrowException too), a cancelled read, or an OSError that is not a
    ValueError somewhere in the chain. `datasets` wraps what its builder raises in a DatasetGenerationError whose
    cause may be a plain TypeError ("Couldn't cast array of type": a column that changes type after the first block
    of a JSON Lines file): the file's. Its causes are looked at."""
    import pyarrow as pa

    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, ValueError) and not isinstance(e, pa.ArrowMemoryError) for e in chain):
        return True  # json's, Unicode's, pyarrow's ArrowInvalid, pandas' ParserError, datasets' "no data"
    return not any(isinstance(e, (AttributeError, ImportError, MemoryError, OSError, pa.ArrowMemoryError,
                                  pa.ArrowCancelled, KeyboardInterrupt)) for e in chain)


def reader_failed(path: Path, exc: BaseException) -> ReaderFailed:
    """The error for a read that failed for a reason that is not the file's (file_fault): what failed, and that
    the file was kept."""
    from backend.uploads import shown_name

    while exc.__cause__ is not None:
        exc = exc.__cause__
    why = (str(exc).splitlines() or [""])[0][:300]
    return ReaderFailed(f"Reading {shown_name(path)} failed, not for anything in the file ({type(exc).__name__}: "
                        f"{why}). Try again; if it keeps failing, restart the app and report it.")


PREVIEW_CHARS = 2_000  # the most characters of one text a preview's example shows; training reads it whole


def _clipped(rows: list) -> tuple[list, int]:
    """(the example rows with every text over PREVIEW_CHARS cut there and marked, how many were cut). A whole row
    went out: a 1 GB one-line .txt printed 1 GB (6.1 GB RSS), and the page kept its rows in its cache and sent them
    to the browser (a 40 MB row took ~8 s to open)."""
    cut = 0

    def clip(value):
        nonlocal cut
        if isinstance(value, str) and len(value) > PREVIEW_CHARS:
            cut += 1
            return f"{value[:PREVIEW_CHARS]}… [cut here: {len(value) - PREVIEW_CHARS:,} more characters]"
        if isinstance(value, dict):
            return {k: clip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clip(v) for v in value]
        return value

    return [clip(row) for row in rows], cut


def cut_said(pv: dict) -> str:
    """A preview's words for its cut example texts (the Train page, `datasets preview`), or ''."""
    return (f"{pv['cut']} example text{'s' if pv['cut'] > 1 else ''} over {PREVIEW_CHARS:,} characters cut short "
            "here (each marked where it stops); training reads {} whole.".format("them" if pv["cut"] > 1 else "it")) \
        if pv.get("cut") else ""
