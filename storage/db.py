"""The workspace folder, the engine and `init_db()`.

The workspace (default `./workspace`, or `$DUS_WORKSPACE`) holds the SQLite database and every artifact: models,
job logs, and `.tmp/` where builds are assembled before they are renamed into place. `DATABASE_URL` overrides the
SQLite default (any SQLAlchemy URL).
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
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
    """The engine, with every table present and up to date (checked once per database per process)."""
    return _ready(database_url())


@lru_cache(maxsize=4)
def _ready(url: str) -> Engine:
    eng = _engine_for(url)
    SQLModel.metadata.create_all(eng)
    upgrade_schema(eng)
    return eng


def upgrade_schema(eng: Engine) -> list[str]:
    """Bring a database written by an older DUS Studio up to the current tables: new tables come from create_all,
    and the columns a table lacks are added here, with the model's default for the rows already there (Alembic
    computes the difference). Only additions are made; nothing is dropped or retyped. Returns what was added."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    classes = {m.class_.__tablename__: m.class_ for m in SQLModel._sa_registry.mappers}
    added = []
    with eng.begin() as conn:
        ctx = MigrationContext.configure(conn)
        ops = Operations(ctx)
        for diff in compare_metadata(ctx, SQLModel.metadata):
            if not (isinstance(diff, tuple) and diff[0] == "add_column"):
                continue
            _, _, table, column = diff
            col = column._copy()
            field = classes[table].model_fields.get(col.name)
            value = field.get_default(call_default_factory=True) if field else None
            if isinstance(value, (bool, int, float, str, list, dict)) and not col.primary_key:
                literal = json.dumps(value) if isinstance(value, (list, dict)) else value
                sql = sa.literal(literal).compile(compile_kwargs={"literal_binds": True}, dialect=eng.dialect)
                col.server_default = sa.DefaultClause(sa.text(sql.string))
            else:
                col.nullable = True  # no value to give the old rows (a time, an id): they keep NULL
            ops.add_column(table, col)  # with its index, when the field has one
            added.append(f"{table}.{col.name}")
    return added


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
