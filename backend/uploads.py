"""Where a browser upload is written: always `workspace/uploads/<sha256 prefix>-<safe stem><suffix>`.

The file name a browser sends is only a hint: Streamlit passes the multipart file name through unchanged, so
'../../x.jsonl' or '/etc/cron.d/x.json' would otherwise choose where the bytes land. Here the name is reduced to
a safe stem, the content hash makes it unique (the same file uploaded twice is the same path), and the suffix
must be one the page accepts. An upload the page then refuses (empty, binary, wrong columns) is removed again
(discard_refused), so workspace/uploads/ holds only files someone could still use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path, PureWindowsPath
from typing import Iterable

from backend.data import GZ_SUFFIXES, LOADERS
from backend.names import safe_name
from storage import db

DATA_SUFFIXES = (*LOADERS, *GZ_SUFFIXES)  # what backend/data.py reads: its own lists, not a second copy
SEED_SUFFIXES = (".jsonl", ".json")  # MATH / GSM8K seed files


def uploads_dir() -> Path:
    return db.workspace() / "uploads"


def upload_name(data: bytes, sent_name: str, allowed_suffixes: Iterable[str]) -> str:
    """The generated file name for these bytes; ValueError when the sent name's suffix is not allowed."""
    allowed = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in allowed_suffixes)
    base = PureWindowsPath(str(sent_name or "")).name  # the last component whichever separator, '/' or '\'
    # the longest allowed suffix the name ends with (x.jsonl.gz is a .jsonl.gz, not a .gz), after a stem
    suffix = next((s for s in sorted(allowed, key=len, reverse=True)
                   if base.lower().endswith(s) and base[:-len(s)].strip(".")), "")
    if not suffix:
        raise ValueError(f"upload {sent_name!r}: only {', '.join(allowed)} files are accepted.")
    stem = base[:-len(suffix)]
    stem = re.sub(r"-+$", "", safe_name(stem, fallback="upload")[:60]) or "upload"
    return f"{hashlib.sha256(data).hexdigest()[:16]}-{stem}{suffix}"


def shown_name(path: Path | str) -> str:
    """The name a user knows a file by, for errors about it: an upload's own name (its stored name less the content
    hash upload_name puts in front), any other file's name as it is."""
    path = Path(path)
    sent = re.fullmatch(r"[0-9a-f]{16}-(.+)", path.name)
    return sent[1] if sent and path.resolve().parent == uploads_dir().resolve() else path.name


def store_upload(data: bytes, sent_name: str, allowed_suffixes: Iterable[str] = DATA_SUFFIXES,
                 folder: Path | None = None) -> tuple[Path, int | None]:
    """The path the bytes are written at under a generated name inside `folder` (default workspace/uploads), and the
    file's modification time (ns) when this call wrote it (None: the same content was stored before, and may be
    named by a saved spec, a job or a data set). Written to a temporary file and renamed, so a reader never sees half
    a file. Finding the file already here touches it: an upload that wrote it and is still reading it then sees
    another use began (discard_refused keeps it)."""
    root = Path(folder or uploads_dir()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = (root / upload_name(data, sent_name, allowed_suffixes)).resolve()
    if path.parent != root:  # cannot happen with a generated name; kept as the last word on where bytes go
        raise ValueError(f"upload {sent_name!r}: {path} is outside {root}.")
    if path.is_file() and path.stat().st_size == len(data):
        # same hash, same name: already here, and now in use here too (another tab's refusal must not remove it)
        # 2 s on: a filesystem that keeps whole seconds (ext3, HFS+) or two (FAT) must see the change
        try:
            os.utime(path, ns=(time.time_ns(), max(time.time_ns(), path.stat().st_mtime_ns + 2_000_000_000)))
        except OSError:  # another user's file (a shared workspace) or a read-only one: only its owner may set its
            pass  # times (PermissionError). Not touched, it is still not this call's to remove (written None)
        return path, None
    # per thread, not only per process: Streamlit's sessions are threads of one process, and two saving the same
    # file at once shared one temporary name, so the second rename found it gone (FileNotFoundError)
    tmp = root / f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk-full write leaves no partial file behind
        raise
    return path, path.stat().st_mtime_ns


def discard_refused(path: Path | str, written: int | None) -> bool:
    """Remove an upload the page refused (it could not be read for this use), so refused files do not pile up in
    workspace/uploads/ (each rerun of the page saved it again and kept it for good). Kept when it was stored before
    this upload (`written` None: a saved spec, a job, a data set or another page's table may name it, and a file
    refused for SFT may be good text for continued pretraining), when another upload of the same bytes found it
    since this one wrote it (its modification time is no longer `written`: store_upload touched it), or when a job
    or data set names it. True when removed."""
    path = Path(path)
    if written is None or path.resolve().parent != uploads_dir().resolve() or _named_by_records(path):
        return False
    try:
        if path.stat().st_mtime_ns != written:
            return False
        path.unlink(missing_ok=True)
    except OSError:  # gone already, or the folder is no longer ours to change: kept, as any upload stored before
        return False
    return True


def _named_by_records(path: Path) -> bool:
    """Whether a job's spec (any status: a failed job can be retried) or a data set's record names `path`."""
    from sqlmodel import select

    from storage.models import DatasetRecord, Job

    text = json.dumps(str(path))[1:-1]  # as the JSON columns spell it
    with db.session() as s:
        specs = s.exec(select(Job.spec)).all()
        sets = s.exec(select(DatasetRecord.path, DatasetRecord.provenance)).all()
    return any(text in json.dumps(spec) for spec in specs) or \
        any(p == str(path) or text in json.dumps(prov) for p, prov in sets)
