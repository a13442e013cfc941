"""The workspace folder, the engine and `init_db()`.

The workspace (default `./workspace`, or `$DUS_WORKSPACE`) holds the SQLite database and every artifact: models,
job logs, and `.tmp/` where builds are assembled before they are renamed into place. `DATABASE_URL` overrides the
SQLite default: `postgresql+psycopg://user:password@host:5432/dbname` lets workers on several machines share one
database (the workspace folder must then be shared too, since rows name files in it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Collection
from contextvars import ContextVar
from functools import lru_cache, wraps
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)
# A database server's engine, its messages and its notice live beside this module (storage/server.py); every name
# the rest of the studio uses is imported from here.
from storage.server import (DatabaseUnavailable, _finite, _server_engine, _tell_unreachable,  # noqa: F401
                            _unavailable, describe, on_unreachable, retry_seconds)


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
    return _server_engine(url)


_rerun: ContextVar[bool] = ContextVar("dus_db_rerun", default=False)
_notes: ContextVar[dict | None] = ContextVar("dus_db_unit_notes", default=None)


def rerun() -> bool:
    """Whether the unit of work running now (or one that called it) is being run again by `retrying`: its earlier
    run's commit may have reached the server, so a conditional update that finds its row changed already may be
    finding its own change (runner._transition checks; runner._claim_next finds its claim)."""
    return _rerun.get()


def unit_notes() -> dict:
    """A dict that every run of the `retrying` unit running now shares (a fresh one for each call of the unit): a
    run notes what it is about to commit, so that a rerun can tell whether that commit landed."""
    notes = _notes.get()
    if notes is None:
        raise RuntimeError("db.unit_notes() holds notes of a unit of work: call it in a function wrapped by "
                           "db.retrying")
    return notes


def retrying(fn):
    """Run a unit of database work again when its connection was lost half-way (a server restart, a fail-over):
    the server rolled the unfinished transaction back, so the whole unit runs again, for at most
    `retry_seconds()`. Used on the runner's units of work (worker loop, job processes). SQLite has no connection
    to lose. A commit may reach the server just as the connection dies: the unit then runs twice. So a rerun is
    told it is one (`rerun()`, true in the units it calls too) and shares `unit_notes()` with its earlier run.
    The runner's plain sets simply set the same values again; its conditional sets (runner._transition), finding
    their row changed already, count as applied when the row holds exactly the state they set (a resume, a job's
    success, a cancel report what they did); and a claim (runner._claim_next) finds the job it claimed and returns
    it, rather than leaving it "running" without a process and claiming another."""

    @wraps(fn)
    def run(*args, **kwargs):
        deadline, again, notes = None, _rerun.get(), {}
        while True:
            tokens = _rerun.set(again), _notes.set(notes)
            try:
                return fn(*args, **kwargs)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                deadline = deadline or time.monotonic() + retry_seconds()
                if time.monotonic() >= deadline:
                    raise _unavailable(database_url(), exc, " (lost, and not back in time)") from exc
                logging.getLogger(__name__).warning("lost the database connection in %s; running it again",
                                                    fn.__name__)
                again = True
                time.sleep(0.2)
            finally:
                _notes.reset(tokens[1])
                _rerun.reset(tokens[0])

    return run


def engine() -> Engine:
    return _engine_for(database_url())


def init_db() -> Engine:
    """The engine, with every table present and up to date (checked once per database per process)."""
    return _ready(database_url())


@lru_cache(maxsize=4)
def _ready(url: str) -> Engine:
    eng = _engine_for(url)
    with eng.connect() as conn:
        if not _missing(conn):  # the usual case: every table and column there, no lock taken
            return eng
    with eng.connect() as conn:
        # Several processes (the page and the worker, or workers on several machines) may open a fresh database
        # at once: one creates and upgrades the tables while the others wait, then finds them there. Without the
        # lock, two CREATE TABLEs collide ("table models already exists").
        _lock_schema(conn)
        SQLModel.metadata.create_all(conn)
        _upgrade(conn)
        conn.commit()
    return eng


_SCHEMA_LOCK = 0x4455_5353  # "DUSS": any constant that other applications sharing the server are unlikely to use


def _lock_schema(conn: sa.Connection) -> None:
    """Take the schema lock for the rest of `conn`'s transaction: one process changes the tables at a time."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})  # freed at commit
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now (sqlite3 runs DDL outside a transaction)


def upgrade_schema(eng: Engine) -> list[str]:
    """Bring a database written by an older DUS Studio up to the current tables: new tables come from create_all,
    and the columns a table lacks are added here, with the model's default for the rows already there (Alembic
    computes the difference), then the indexes it lacks (_upgrade). Only additions are made, and 32-bit integer
    columns widened to the 64 bits this version declares (_narrow); nothing is dropped or narrowed. Returns what
    was added or widened."""
    with eng.begin() as conn:
        _lock_schema(conn)  # as on opening (_ready): another process may be upgrading the same database
        return _upgrade(conn)


def _missing(conn: sa.Connection) -> list:
    """The tables, columns and indexes this version has that the database lacks, and the integer columns it holds too
    narrow: what _upgrade adds or widens. Read in a query of the catalogue (SQLite's pragma_table_info, PostgreSQL's
    information_schema) and one of its indexes, not by Alembic's comparison: importing alembic and comparing every table cost each command
    and page process a quarter of a second at its first query (`jobs list` 0.98 s of CPU, 0.26 s of it here), and
    its answer is needed only when something is missing, which _upgrade computes with Alembic as before."""
    have = _columns(conn)
    out: list = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in have:
            out.append(("add_table", table.name))
        else:
            out += [("add_column", table.name, c.name) for c in table.columns if c.name not in have[table.name]]
    return out + [("add_index", i.table.name, i.name) for i in _lacking_indexes(conn)] + _narrow(conn)


def _lacking_indexes(conn: sa.Connection) -> list[sa.Index]:
    """The indexes this version declares on tables the database has, and the database lacks (by name; one query of
    the catalogue). Only plain indexes: a unique one is a rule on the rows, and adding it to rows an older version
    wrote could fail on a duplicate and leave the database unopenable; every unique index this version declares
    came with its table."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'").all()
    elif conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text("SELECT tablename, indexname FROM pg_indexes WHERE "
                                    "schemaname = current_schema()")).all()
    else:
        inspector = sa.inspect(conn)
        rows = [(t, i["name"]) for t in inspector.get_table_names() for i in inspector.get_indexes(t)]
    have: dict[str, set[str]] = {}
    for table, name in rows:
        have.setdefault(table, set()).add(name)
    return [i for t in SQLModel.metadata.sorted_tables if t.name in have
            for i in sorted(t.indexes, key=lambda i: i.name) if not i.unique and i.name not in have[t.name]]


def _columns(conn: sa.Connection) -> dict[str, set[str]]:
    """{table: its column names} of the database's own schema, in one query where the dialect allows it."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
                                    "WHERE m.type = 'table'").all()
    elif conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text("SELECT table_name, column_name FROM information_schema.columns WHERE "
                                    "table_schema = current_schema()")).all()
    else:  # any other database SQLAlchemy speaks: its inspector, a query per table
        inspector = sa.inspect(conn)
        rows = [(t, c["name"]) for t in inspector.get_table_names() for c in inspector.get_columns(t)]
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


def _narrow(conn: sa.Connection) -> list[tuple[str, str]]:
    """(table, column) of the 64-bit integer columns of this version that a PostgreSQL database, made by an older
    one, holds as INTEGER (32 bits: a model's size in bytes overflowed it). SQLite's INTEGER is 64 bits already."""
    if conn.dialect.name != "postgresql":
        return []
    inspector, narrow = sa.inspect(conn), []
    for table in SQLModel.metadata.sorted_tables:
        wide = [c.name for c in table.columns if isinstance(c.type, sa.BigInteger)]
        if wide and inspector.has_table(table.name):
            have = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
            narrow += [(table.name, n) for n in wide if n in have and not isinstance(have[n], sa.BigInteger)]
    return narrow


def _upgrade(conn: sa.Connection) -> list[str]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    added = []
    ctx = MigrationContext.configure(conn)
    ops = Operations(ctx)
    for diff in compare_metadata(ctx, SQLModel.metadata):
        if not (isinstance(diff, tuple) and diff[0] == "add_column"):
            continue
        _, _, table, column = diff
        col = column._copy()  # with the model's default as the server default (storage/models.py _server_defaults)
        if col.server_default is None:
            col.nullable = True  # no value to give the old rows (a time, an id): they keep NULL
        ops.add_column(table, col)  # with its index, when the field has one
        added.append(f"{table}.{col.name}")
    for table, name in _narrow(conn):  # widened, never narrowed: every value the old column held still fits
        ops.alter_column(table, name, type_=sa.BigInteger(), existing_type=sa.Integer())
        added.append(f"{table}.{name} (64-bit)")
    # Read after the columns: a column added above came with its own index. IF NOT EXISTS as well as the lock, so
    # that a caller holding no lock (or another version's) finds it made rather than failing.
    for index in _lacking_indexes(conn):
        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        added.append(f"{index.table.name} index {index.name}")
    return added


def session() -> Session:
    return Session(init_db())


def named_any_case(table, name: str):
    """The row of `table` (a model or a data set) whose name is `name` in any letter case: on a case-insensitive file
    system (macOS, Windows, an exFAT or SMB share) 'Tiny' and 'tiny' are one folder. Names are ASCII
    (backend/names.py), so SQL's lower() is Python's on every database."""
    from sqlmodel import select

    with session() as s:
        return s.exec(select(table).where(sa.func.lower(table.name) == name.lower())).first()


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs. A zombie (ended, not yet reaped by its parent; in a container whose PID 1
    never reaps, for good) has ended: os.kill(pid, 0) alone called it alive, so a cancelled job read "still
    stopping" for ever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = _stat_fields(Path(f"/proc/{pid}"))
    except FileNotFoundError:  # gone since, or no /proc at all (macOS): then os.kill's answer stands
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return fields[0] != "Z"


def _stat_fields(proc_dir: Path) -> list[str]:
    """/proc/PID/stat after the parenthesised name (which may hold spaces): state, ppid, pgrp, ..."""
    stat = (proc_dir / "stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def _group_running(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (a job process leads its own group; accelerate and the
    trainer are in it). os.killpg(pgid, 0) counts a zombie leader its parent has not reaped yet: /proc says which
    members have ended. Without /proc (macOS), os.killpg's answer."""
    if not Path("/proc/self").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, pgrp = _stat_fields(entry)[:3]
        except OSError:  # ended while we looked
            continue
        if pgrp == str(pgid) and state != "Z":
            return True
    return False


EXTERNAL_TMP_SUFFIX = ".external"  # a note in .tmp/ naming a build folder kept beside its destination
UNREGISTERED_MARK = ".dus-unregistered"  # in a finished model folder until its row is written


def host_id() -> str:
    """This machine's name (DUS_HOST_ID overrides it: two workers on one machine can play two machines). Machines
    sharing a workspace tag their builds with it: a process id means something only on the machine that wrote it."""
    return os.environ.get("DUS_HOST_ID") or socket.gethostname()


def process_space() -> str:
    """Which kernel and process-id namespace this process runs in (Linux: the boot id and /proc/self/ns/pid), ""
    elsewhere. Two containers sharing a host name (docker --network host, a fixed --hostname) share the host id but
    not their process ids: a worker must not judge or signal the other's jobs by pid (runner.check_host_id)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


_PLAIN_HOST = re.compile(r"[A-Za-z0-9.-]{1,40}")  # a host name as DNS allows it, short enough for a folder name


def _host_key(host: str) -> str:
    """`host` as it is written after the '@' of a build folder's name: itself when a short DNS name, otherwise
    '_' and a hash (a DUS_HOST_ID may hold a '/' or a space; no DNS name holds a '_', so the two never meet)."""
    return host if _PLAIN_HOST.fullmatch(host) else "_" + hashlib.sha256(host.encode()).hexdigest()[:12]


def tmp_tag() -> str:
    """`PID-UUID@HOST`: names a build of this process on this machine, so a cleaner on any machine sharing the
    workspace can tell whose it is. The '@' parses unambiguously: no host key (_host_key) and no prefix holds one."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}@{_host_key(host_id())}"


def mark_unregistered(folder: Path) -> None:
    """Mark a finished folder as not registered yet, by this process of this machine (`PID@HOST`): if it is killed
    between moving the folder into place and writing its row, the next start (clean_unregistered_builds) can tell
    it from a folder a user put there, and a worker of another machine sharing the workspace leaves it alone."""
    (Path(folder) / UNREGISTERED_MARK).write_text(f"{os.getpid()}@{host_id()}")


def new_tmp(prefix: str) -> Path:
    """A fresh temporary folder `PREFIX-PID-UUID@HOST` (tmp_tag), so a cleaner can tell live work from leftovers."""
    path = tmp_dir() / f"{prefix}-{tmp_tag()}"
    path.mkdir(parents=True)
    return path


def _tmp_owner(name: str) -> tuple[str, int | None]:
    """(host key, pid) of a .tmp entry named by new_tmp or a note `external-TAG.external`. A name without '@' is from
    before builds recorded their machine (`PREFIX-PID-UUID`): this machine's, as it was then taken to be."""
    stem, at, key = name.removesuffix(EXTERNAL_TMP_SUFFIX).rpartition("@")
    if not at:
        stem, key = key, _host_key(host_id())
    parts = stem.split("-")
    return key, int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _mark_owner(text: str) -> tuple[str, int | None]:
    """(host key, pid) of an unregistered mark `PID@HOST`; a bare pid is an old mark, this machine's."""
    pid, at, host = text.strip().partition("@")
    return _host_key(host if at else host_id()), int(pid) if pid.isdigit() else None


def _in_use(owner: tuple[str, int | None], dead_elsewhere: Collection[str]) -> bool:
    """Whether a build of `owner` (host key, pid) may still be in progress. This machine's: while its process runs
    (this process's own are leftovers: it is not building now). Another machine's: unless that machine is known
    dead (named in `dead_elsewhere`: its workers stopped beating). A machine never heard of is not known dead: one
    that runs only the dashboard or the CLI, or a Ray node, beats no heartbeat while it builds."""
    key, pid = owner
    if key == _host_key(host_id()):
        return pid is not None and pid != os.getpid() and _pid_alive(pid)
    return key not in {_host_key(h) for h in dead_elsewhere}


def clean_stale_tmp(dead_elsewhere: Collection[str] = (), pid: int | None = None) -> list[Path]:
    """Remove leftovers of builds killed mid-way (they never reached models/, so nothing was registered).

    Folders whose owning process is still alive are left alone: a CLI build may be running beside the worker. With
    the workspace shared by several machines, another machine's are removed only once it is known dead (named in
    `dead_elsewhere`; default none: every other machine's builds are kept). `pid`: only the .tmp entries of that
    process of this machine (a job process the worker saw end: a build killed with kill -9 left its folder until
    the worker's next start), not the models/ folders of unregistered builds.
    """
    removed = []
    for p in tmp_dir().iterdir():
        owner = _tmp_owner(p.name)
        if (pid is not None and owner != (_host_key(host_id()), pid)) or _in_use(owner, dead_elsewhere):
            continue
        if p.name.endswith(EXTERNAL_TMP_SUFFIX):  # a build beside an output folder outside this filesystem
            target = Path(p.read_text().strip())
            if target.name.startswith(".tmp-") and target.exists():  # only ever a folder we named
                shutil.rmtree(target, ignore_errors=True)
                removed.append(target)
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed if pid is not None else removed + clean_unregistered_builds(dead_elsewhere=dead_elsewhere)


def clean_unregistered_builds(folders: list[Path] | None = None, dead_elsewhere: Collection[str] = ()) -> list[Path]:
    """Model folders renamed into place whose process was killed before registering them (they still carry the
    mark backend/outputs.py writes), and that no row names: removed, so the name can be used again. `folders`:
    these only (a job's output folder before it is refused as not empty); default every folder in models/.
    `dead_elsewhere`: as in clean_stale_tmp (another machine's folder may be being registered right now)."""
    marked = [d for d in (models_dir().iterdir() if folders is None else folders) if (d / UNREGISTERED_MARK).is_file()]
    if not marked:
        return []
    from sqlmodel import select

    with session() as s:
        registered = set(s.exec(select(models.ModelRecord.path)).all())
    removed = []
    for d in marked:
        owner = _mark_owner((d / UNREGISTERED_MARK).read_text())
        if str(d.resolve()) in registered or _in_use(owner, dead_elsewhere):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed
