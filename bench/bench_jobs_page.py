"""The Jobs page's table pass (its fragment reruns every 2 s) and `jobs list`'s: every shown job's message and
will-fail warning, read through runner.messages.one_pass (one read of the queue, the models, the heartbeats and
the rows waited on) against the row-by-row path (each job's message and warning reading what it needs itself), in
the same run, on the same rows.

    .venv/bin/python bench/bench_jobs_page.py                       # 300 and 3,000 jobs, 8 % of them active
    .venv/bin/python bench/bench_jobs_page.py --jobs 3000 --rounds 5 --active 0.08

Rows are bulk-inserted as runner.submit and the worker's transitions write them (specs as JSON, statuses, `after`
chains, running jobs with no process left); 150 registered models (a config.json each: no weights are read). Each
size runs twice, with no worker alive and with one alive (a fresh heartbeat row): with one alive a queued job's
message names the jobs that go first, which the row-by-row path works out again for every queued job.

Prints a table: jobs, active, worker, path, SQL statements and seconds per pass (median of --rounds), and the
row-by-row path's seconds over the batched one's (the ratio). Both paths' messages are checked equal first.
CPU only; share the machine with nothing heavy or the seconds swing.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def seed(n_jobs: int, active_share: float, n_models: int = 150) -> None:
    """`n_models` models and `n_jobs` jobs, the newest `active_share` of them queued or running, in the workspace."""
    import json
    import random
    from datetime import timedelta

    from storage import db
    from storage.models import Job, ModelRecord, utcnow

    rng, ws, eng, now = random.Random(0), db.workspace(), db.init_db(), utcnow()
    names = [f"tiny-{i}" if i < 5 else f"tiny-{i % 5}-dus-m{1 + i % 3}-{i}" for i in range(n_models)]
    models = []
    for i, name in enumerate(names):
        folder = ws / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 8}))
        models.append(dict(name=name, path=str(folder), kind="base" if i < 5 else "upscaled", parents=[],
                           recipe={}, source="folder", num_layers=8, created=now - timedelta(hours=n_models - i)))
    jobs, first_active = [], int(n_jobs * (1 - active_share))
    for jid in range(1, n_jobs + 1):
        if jid % 10 == 0:
            spec = {"kind": "upscale", "base": rng.choice(names[:5]), "m": 1, "name": f"queued-up-{jid}"}
        else:
            spec = {"kind": "eval", "models": rng.sample(names, rng.randint(1, 3)), "tasks": ["perplexity"],
                    "limit": 2}
        row = dict(kind=spec["kind"], spec=spec, created=now - timedelta(seconds=n_jobs - jid), needs=[], waits=[],
                   log_path=str(ws / "logs" / f"job-{jid}.log"), progress=0.0, message="waiting for the worker",
                   status="queued", error="", host="", after=None, started=None, finished=None)
        if jid < first_active:  # finished, as the worker leaves them
            status = ["succeeded"] * 6 + ["failed", "cancelled", "interrupted"]
            row.update(status=(st := status[jid % len(status)]), started=row["created"], finished=row["created"],
                       progress=1.0 if st == "succeeded" else 0.3, message="done: 3 scores" if st == "succeeded"
                       else st, error="EvalFailed: x / perplexity failed" if st == "failed" else "")
        elif jid % 5 == 0:  # running, its process gone (a worker killed with -9)
            row.update(status="running", started=now - timedelta(minutes=5), message="step 3/9", progress=0.3)
        elif jid % 7 == 0:  # a chain: after the job before it
            row.update(after=jid - 1, message=f"waiting for job {jid - 1}")
        jobs.append(row)
    with eng.begin() as conn:
        conn.execute(ModelRecord.__table__.insert(), models)
        conn.execute(Job.__table__.insert(), jobs)


def passes(rounds: int, shown: int | None) -> dict[str, tuple[int, float]]:
    """Each path's SQL statements and median seconds per pass, after checking they say the same."""
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from backend import runner
    from backend.runner.messages import one_pass

    seen = collections.Counter()

    def count(*_):
        seen["n"] += 1

    def row_by_row(jobs):
        alive, active = runner.worker_alive(), runner.active_jobs()
        making = runner.made_by(active)
        return ({j.id: runner.job_message(j, active, alive) for j in jobs},
                [w for j in jobs if (w := runner.will_fail(j, active, making))])

    def batched(jobs):
        with one_pass(jobs) as (active, alive):
            making = runner.made_by(active)
            return ({j.id: runner.job_message(j, active, alive) for j in jobs},
                    [w for j in jobs if (w := runner.will_fail(j, active, making))])

    jobs = runner.list_jobs(shown)
    if row_by_row(jobs) != batched(jobs):
        raise SystemExit("the batched pass says other words than the row-by-row one")
    sa.event.listen(Engine, "before_cursor_execute", count)
    out = {}
    for fn in (row_by_row, batched):
        times, seen["n"] = [], 0
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(jobs)
            times.append(time.perf_counter() - t0)
        out[fn.__name__.replace("_", "-")] = (seen["n"] // rounds, statistics.median(times))
    sa.event.remove(Engine, "before_cursor_execute", count)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--active", type=float, default=0.08, help="the share of jobs queued or running")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for n in a.jobs:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DUS_WORKSPACE"] = tmp  # a database of its own per size (db.init_db: one engine per URL)
            seed(n, a.active)
            for alive in (False, True):
                _beat(alive)
                got = passes(a.rounds, 100)  # the page's default: the 100 newest and every active job
                rows += [(n, int(n * a.active), alive, path, *got[path], got["row-by-row"][1] / got[path][1])
                         for path in got]
    print(f"\nJobs page table pass (the 100 newest and every active job), median of {a.rounds}, CPU")
    print(f"{'jobs':>6} {'active':>6} {'worker':>6} {'path':12} {'SQL':>6} {'s/pass':>8} {'row-by-row / this':>18}")
    for n, act, alive, path, sql, sec, ratio in rows:
        print(f"{n:6d} {act:6d} {'alive' if alive else 'none':>6} {path:12} {sql:6d} {sec:8.3f} {ratio:18.1f}")


def _beat(alive: bool) -> None:
    """A worker of this machine alive (a heartbeat row now), or none."""
    import sqlalchemy as sa

    from backend import runner
    from storage import db
    from storage.models import WorkerBeat, utcnow

    with db.session() as s:
        s.exec(sa.delete(WorkerBeat))
        if alive:
            s.add(WorkerBeat(host=runner.host_id(), pid=os.getpid(), seen=utcnow()))
        s.commit()


if __name__ == "__main__":
    main()
