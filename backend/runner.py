"""The job runner: pages write a queued row; a worker process runs each job in a child process of its own.

    python -m backend worker          # the dashboard's run command starts one for you

A job never runs in the Streamlit script thread (a rerun would start it twice or kill it). The child process runs
`run_<kind>(spec, out_dir, progress)`, the same function the CLI calls in the foreground, and writes progress and
the final status into its row. The worker only launches children, notices ones that died, and marks jobs whose
worker vanished as interrupted when it starts again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from sqlmodel import select

from backend.specs import _Spec, spec_from_dict
from storage import db
from storage.models import Job, utcnow

FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


def work_function(kind: str) -> Callable[..., dict]:
    if kind == "upscale":
        from backend.upscale import run_upscale

        return run_upscale
    if kind == "import":
        from backend.registry import run_import

        return run_import
    raise ValueError(f"No runner for job kind {kind!r}.")


def submit(spec: _Spec) -> Job:
    with db.session() as s:
        job = Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status="queued", message="waiting for the worker")
        s.add(job)
        s.commit()
        s.refresh(job)
        job.log_path = str(db.workspace() / "logs" / f"job-{job.id}.log")
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def get(job_id: int) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def list_jobs(limit: int = 100) -> list[Job]:
    with db.session() as s:
        return list(s.exec(select(Job).order_by(Job.id.desc()).limit(limit)))


def _update(job_id: int, **fields) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)
        s.commit()


def cancel(job_id: int) -> Job:
    job = get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}.")
    if job.status == "queued":
        _update(job_id, status="cancelled", finished=utcnow(), message="cancelled before it started")
    elif job.status == "running":
        _update(job_id, status="cancelled", finished=utcnow(), message="cancelled")
        if job.pid:
            try:
                os.killpg(job.pid, signal.SIGTERM)  # the child leads its own process group: its children go too
                for _ in range(50):
                    os.killpg(job.pid, 0)
                    time.sleep(0.1)
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return get(job_id)


# ---------------------------------------------------------------- the child: one job

def execute(job_id: int) -> int:
    """Run one job in this process (the worker starts `python -m backend jobs exec ID`). Returns an exit code."""
    job = get(job_id)
    if job is None or job.status not in ("queued", "running"):
        return 1
    _update(job_id, status="running", started=utcnow(), pid=os.getpid(), message="starting")
    last = [0.0]

    def progress(frac: float, message: str) -> None:
        print(f"[{frac:6.1%}] {message}", flush=True)
        now = time.monotonic()
        if now - last[0] > 0.5 or frac >= 1.0:
            last[0] = now
            _update(job_id, progress=float(frac), message=message[:500])

    try:
        spec = spec_from_dict(job.spec)
        result = work_function(job.kind)(spec, None, progress)
    except Exception as exc:
        traceback.print_exc()
        if get(job_id).status != "cancelled":
            _update(job_id, status="failed", finished=utcnow(), error=str(exc) or type(exc).__name__,
                    message="failed")
        return 1
    _update(job_id, status="succeeded", finished=utcnow(), progress=1.0, result=result,
            message="done: " + ", ".join(f"{k} {v}" for k, v in result.items() if k != "path")[:400])
    return 0


# ---------------------------------------------------------------- the worker

def heartbeat_path() -> Path:
    return db.workspace() / "worker.json"


def worker_alive() -> bool:
    try:
        info = json.loads(heartbeat_path().read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, json.JSONDecodeError):
        return False
    except PermissionError:
        return True
    return time.time() - info.get("time", 0) < 15


def recover_orphans() -> list[int]:
    """Running jobs whose process is gone (worker or machine died) become interrupted."""
    orphans = []
    with db.session() as s:
        for job in s.exec(select(Job).where(Job.status == "running")):
            alive = False
            if job.pid:
                try:
                    os.kill(job.pid, 0)
                    alive = True
                except ProcessLookupError:
                    pass
                except PermissionError:
                    alive = True
            if not alive:
                job.status, job.finished = "interrupted", utcnow()
                job.message = "interrupted: its process ended without finishing (worker or machine stopped)"
                s.add(job)
                orphans.append(job.id)
        s.commit()
    return orphans


def _claim_next() -> Job | None:
    with db.session() as s:
        job = s.exec(select(Job).where(Job.status == "queued").order_by(Job.id)).first()
        if job is None:
            return None
        job.status, job.message = "running", "launching"
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def start_child(job: Job) -> subprocess.Popen:
    log = open(job.log_path or os.devnull, "ab")
    env = dict(os.environ, DUS_WORKSPACE=str(db.workspace()), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "jobs", "exec", str(job.id)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    _update(job.id, pid=proc.pid)
    return proc


def worker(poll: float = 1.0, once: bool = False) -> None:
    """Run queued jobs one at a time until stopped. `once`: run what is queued now, then return (tests, CI)."""
    db.init_db()
    db.clean_stale_tmp()
    recover_orphans()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        heartbeat_path().write_text(json.dumps({"pid": os.getpid(), "time": time.time()}))
        job = _claim_next()
        if job is None:
            if once:
                return
            time.sleep(poll)
            continue
        proc = start_child(job)
        while proc.poll() is None:
            heartbeat_path().write_text(json.dumps({"pid": os.getpid(), "time": time.time()}))
            time.sleep(0.2)
        final = get(job.id)
        if final.status == "running":  # the child died without saying why (killed, out of memory...)
            _update(job.id, status="failed", finished=utcnow(),
                    error=f"the job process exited with code {proc.returncode} without finishing; see its log")
