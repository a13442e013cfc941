"""Job rows: the statuses a job ends in, reading one row, and writing fields into it. A final state is written by
one conditional UPDATE (_transition), so of two racing writers (a cancel against a success, a dead-child check
against the child's own report) exactly one wins."""

from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable

import sqlalchemy as sa
from sqlmodel import func, select

from storage import db
from storage.models import Job

FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
UNSUCCESSFUL = FINISHED[1:]  # ended without succeeding: a job that needs it will not run
STOPPED = ("cancelled", "interrupted")  # ended by a row's change, not by its process: which may still be stopping


# rows known_once() read, by id (None: no such job); ids not in it are read from the database
_KNOWN: ContextVar[dict[int, Job | None] | None] = ContextVar("rows_known", default=None)


@contextmanager
def known_once(rows: Iterable[Job], more_ids: Iterable[int] = ()):
    """Inside it, get answers from `rows` and from one read of `more_ids`: a pass over the jobs (the Jobs page's
    table, `jobs list`) read each queued job's dependencies one SELECT at a time (states._waits_on_a_job). For
    reads only: nothing inside may change a job and read it back. Per context (a thread), never shared."""
    known: dict[int, Job | None] = {j.id: j for j in rows}
    if missing := sorted(set(more_ids) - set(known)):
        with db.session() as s:
            known |= dict.fromkeys(missing)
            known |= {j.id: j for j in s.exec(select(Job).where(Job.id.in_(missing)))}
    token = _KNOWN.set(known)
    try:
        yield
    finally:
        _KNOWN.reset(token)


@db.retrying  # a database server restart must not fail the worker loop or a job (storage/db.py)
def get(job_id: int) -> Job | None:
    if (known := _KNOWN.get()) is not None and job_id in known:
        return known[job_id]
    with db.session() as s:
        return s.get(Job, job_id)


def count_jobs(kinds=None, statuses=None) -> int:
    """How many jobs there are, of `kinds` and `statuses` when given: what `jobs list` left out is said against it."""
    q = select(func.count()).select_from(Job)
    q = q.where(Job.kind.in_(kinds)) if kinds else q
    with db.session() as s:
        return s.exec(q.where(Job.status.in_(statuses)) if statuses else q).one()


@db.retrying
def record_run_dir(job_id: int, run_dir: str) -> None:
    """The run folder a training job uses (backend/training.py), where the pages look for its checkpoints; a row
    that is gone (a command started with an inherited DUS_JOB_ID) is left alone."""
    with db.session() as s:
        if (job := s.get(Job, job_id)) is not None:
            job.run_dir = run_dir
            s.add(job)
            s.commit()


@db.retrying
def _update(job_id: int, **fields) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)
        s.commit()


@db.retrying
def _transition(job_id: int, from_status: str | tuple[str, ...], *, _of_pid: int | None = None, **fields) -> bool:
    """Set `fields` only while the job is still in `from_status`: one conditional UPDATE, so of two racing final
    transitions (cancel against success, a dead-child check against the child's own report) exactly one wins.
    `_of_pid`: only while the row is still that process's run (not a resumed run another worker started).
    Run again after a lost connection (db.retrying), the first run's commit may have landed: a row that then holds
    exactly what this transition sets counts as applied (a resume is not "resumed meanwhile", a success exits 0).
    Another writer that set that very state meanwhile (a second resume) counts too: the row ends as asked either way."""
    from sqlalchemy import update

    states = (from_status,) if isinstance(from_status, str) else from_status
    cond = [Job.id == job_id, Job.status.in_(states)] + ([Job.pid == _of_pid] if _of_pid is not None else [])
    with db.session() as s:
        done = s.exec(update(Job).where(*cond).values(**fields))
        s.commit()
        return done.rowcount == 1 or (db.rerun() and _holds(s, job_id, states, _of_pid, fields))


def _holds(s, job_id: int, states: tuple[str, ...], of_pid: int | None, fields: dict) -> bool:
    """Whether job `job_id`'s row holds what the transition from `states` (of `of_pid`'s run) to `fields` leaves.
    Compared by the database, so values come back as they were written (a time without its zone, a NUL written as
    U+FFFD); JSON columns here (PostgreSQL's json has no '='), as JSON."""
    cols = Job.__table__.c
    as_json = {k for k in fields if isinstance(cols[k].type, sa.JSON)}
    cond = [cols.id == job_id] + [cols[k].is_(None) if v is None else cols[k] == v
                                  for k, v in fields.items() if k not in as_json]
    if "status" not in fields:
        cond.append(cols.status.in_(states))
    if of_pid is not None and "pid" not in fields:
        cond.append(cols.pid == of_pid)
    row = s.connection().execute(sa.select(cols.id, *(cols[k] for k in as_json)).where(*cond)).first()
    return row is not None and all(_as_json(row._mapping[k]) == _as_json(fields[k]) for k in as_json)


def _as_json(value) -> str:
    """`value` as a JSON column keeps it: tuples as lists, keys as strings, NaN and infinities as null."""
    return json.dumps(db._finite(value), sort_keys=True, default=str)
