"""A database server in DATABASE_URL (PostgreSQL, shared by workers on several machines): its engine, which pings
pooled connections and rides out a restart; the messages that say where it is without the password; the notice a
waiting page shows; and the text and JSON values PostgreSQL refuses (NUL, NaN). storage/db.py chooses it for any URL
but SQLite's."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine


class DatabaseUnavailable(RuntimeError):
    """The database server in DATABASE_URL cannot be reached or refuses us (the message never holds the password)."""


def describe(url: str) -> str:
    """Where a database URL points, for messages: `host:port/db as user`, never the password."""
    u = make_url(url)
    query = {k: v if isinstance(v, str) else v[0] for k, v in u.query.items()}
    host = u.host or query.get("host") or "localhost"  # ?host=/run/postgresql: a Unix socket folder
    host = host.rpartition("@")[2]  # a password's unescaped '@' leaves the password's tail in the host
    port = u.port or query.get("port") or (5432 if u.get_backend_name() in ("postgresql", "postgres") else "")
    return f"{host}:{port}/{u.database or ''} as {u.username or os.environ.get('USER', '?')}"


def _unavailable(url: str, exc: BaseException, note: str = "") -> DatabaseUnavailable:
    backend = make_url(url).get_backend_name()
    name = "PostgreSQL" if backend in ("postgresql", "postgres") else backend
    reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    password = make_url(url).password
    if password:
        reason = reason.replace(str(password), "***")
    return DatabaseUnavailable(f"could not connect to {name} at {describe(url)}: {reason}{note}; check DATABASE_URL")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_dumps(value) -> str:
    """PostgreSQL's json type refuses NaN and Infinity (they are not JSON), which a diverged loss or an infinite
    perplexity in a job's result would be: they are stored as null there, as JavaScript's JSON.stringify does."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def retry_seconds() -> float:
    """How long a process that was connected waits for its server to come back (a restart, a fail-over)."""
    return float(os.environ.get("DUS_DB_RETRY_SECONDS", "60"))


def _server_engine(url: str) -> Engine:
    """A database server shared by workers on several machines. Pooled connections are pinged before use, so
    one that a server restart killed is replaced instead of failing the next query; a new connection is retried
    (with back-off, for at most `retry_seconds()`) once this process has been connected, so the worker loop and
    running jobs ride out a restart. A server that was never reached fails at once, with a clear message."""
    try:
        u = make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # not echoed: it may hold a password
        raise DatabaseUnavailable("DATABASE_URL is not a database URL; write it as "
                                  "postgresql+psycopg://user:password@host:5432/dbname") from None
    if "@" in (u.host or ""):  # not echoed either: the text before that '@' is the rest of the password
        raise DatabaseUnavailable("DATABASE_URL's password holds an '@': write it as %40 "
                                  "(postgresql+psycopg://user:p%40ss@host:5432/dbname)") from None
    if u.drivername in ("postgres", "postgresql"):  # the driver this project installs (psycopg 3), not psycopg2
        u = u.set(drivername="postgresql+psycopg")
    args = {} if "connect_timeout" in u.query else {"connect_timeout": 10}  # libpq would wait forever
    try:
        engine = create_engine(u, pool_pre_ping=True, connect_args=args, json_serializer=_json_dumps)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseUnavailable(f"no driver for {u.drivername} is installed ({exc}); this project installs "
                                  "psycopg for postgresql+psycopg:// URLs; check DATABASE_URL") from None
    state = {"connected": False}

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        deadline, delay = None, 0.1
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
                state["connected"] = True
                if dialect.driver == "psycopg":
                    _nul_safe_text(conn)
                return conn
            except dialect.loaded_dbapi.ProgrammingError as exc:  # a mistyped option (?sslmod=): no retry mends it,
                raise _unavailable(url, exc) from exc  # and it is the URL's mistake, said as the others are
            except dialect.loaded_dbapi.OperationalError as exc:
                if not state["connected"]:
                    raise _unavailable(url, exc) from exc
                if deadline is None:
                    deadline = time.monotonic() + retry_seconds()
                    logging.getLogger(__name__).warning("database at %s unreachable; retrying for up to %.0f s",
                                                        describe(url), retry_seconds())
                    _tell_unreachable(describe(url), retry_seconds())
                if time.monotonic() >= deadline:
                    raise _unavailable(url, exc, f" (still unreachable after {retry_seconds():.0f} s)") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @event.listens_for(engine, "handle_error")
    def _lost(ctx):
        # psycopg 3 counts only a closed socket as a lost connection; a server shutting down first sends
        # "terminating connection due to administrator command" (SQLSTATE 57P01; 08xxx: connection errors).
        # Marked so, the pool drops that connection (and the others of the dead server) instead of reusing them.
        if (getattr(ctx.original_exception, "sqlstate", None) or "").startswith(("57P", "08")):
            ctx.is_disconnect = True

    return engine


_on_unreachable: list = [None]  # the process's notice: app.py's, in the dashboard; none in the CLI and the worker


def on_unreachable(callback) -> None:
    """Have `callback(where, seconds)` called, in the thread whose connection finds the server gone and waits for it
    (for at most `seconds`). During a PostgreSQL restart the pages went blank (a title and the running icon) for up
    to a minute with no word: the wait happens inside the page's first query. The dashboard (app.py) registers a
    notice for the process, which says nothing outside a page's run (pages/dbnotice.py): a ContextVar set by the
    app's run was empty in the threads its fragments rerun in (the Jobs table's, every 2 s). Storage imports no
    streamlit."""
    _on_unreachable[0] = callback


def _tell_unreachable(where: str, seconds: float) -> None:
    if (callback := _on_unreachable[0]) is None:
        return
    try:
        callback(where, seconds)
    except Exception:  # noqa: BLE001 (a notice that fails must not fail the reconnect it announces)
        logging.getLogger(__name__).debug("the unreachable-database notice failed", exc_info=True)


def _nul_safe_text(conn) -> None:
    """PostgreSQL text cannot hold NUL characters, which a model's generated answer (byte-level tokenizers decode
    any byte) or a log line may contain; SQLite stores them. Written as U+FFFD, the replacement character."""
    text, binary = _nul_safe_dumpers()
    conn.adapters.register_dumper(str, binary)
    conn.adapters.register_dumper(str, text)  # last: the one used for plain str parameters


@lru_cache(maxsize=1)
def _nul_safe_dumpers():
    from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

    class Text(StrDumperUnknown):
        def dump(self, obj: str):
            return super().dump(obj.replace("\x00", "\ufffd"))

    class BinaryText(StrBinaryDumper):
        def dump(self, obj: str):
            return super().dump(obj.replace("\x00", "\ufffd"))

    return Text, BinaryText
