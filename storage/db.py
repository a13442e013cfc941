"""The workspace folder, the engine and `init_db()`.

The workspace (default `./workspace`, or `$DUS_WORKSPACE`) holds the SQLite database and every artifact: models,
job logs, and `.tmp/` where builds are assembled before they are renamed into place. `DATABASE_URL` overrides the
SQLite default (any SQLAlchemy URL).
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def workspace() -> Path:
    root = Path(os.environ.get("DUS_WORKSPACE", "workspace")).resolve()
    for sub in ("models", "logs", ".tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    return workspace() / "models"


def tmp_dir() -> Path:
    return workspace() / ".tmp"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{workspace() / 'studio.db'}"


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        # WAL lets the page read while a job process writes progress rows.
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url)


def engine() -> Engine:
    return _engine_for(database_url())


def init_db() -> Engine:
    eng = engine()
    SQLModel.metadata.create_all(eng)
    return eng


def session() -> Session:
    return Session(init_db())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_tmp(prefix: str) -> Path:
    """A fresh temporary folder tagged with this process id, so a cleaner can tell live work from leftovers."""
    import uuid

    path = tmp_dir() / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def clean_stale_tmp() -> list[Path]:
    """Remove leftovers of builds killed mid-way (they never reached models/, so nothing was registered).

    Folders whose owning process is still alive are left alone: a CLI build may be running beside the worker.
    """
    removed = []
    for p in tmp_dir().iterdir():
        parts = p.name.split("-")
        pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed
