"""Benchmark: how long the dashboard takes to draw a page while a job keeps every core busy, with the job at the
dashboard's own priority (niceness 0, the peer) and at the niceness a worker gives its jobs (backend/runner/loop.py
job_niceness, $DUS_JOB_NICE, default 10), beside the idle machine (the floor), in the same run.

    .venv/bin/python bench/job_niceness.py                 # the Jobs page, 5 renders each
    .venv/bin/python bench/job_niceness.py --page compare.py --renders 8

The busy job stands in for a CPU training job: one process multiplying float32 matrices with torch's default
threads, one per core (as the trainer does). A render is streamlit's AppTest running app.py and then the page, as a browser's visit does
(the server's own work; no network or browser). The first render of each row warms caches and is left out of the
median. The bench exits with status 1 when the niced job does not leave the page faster than the job at niceness 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BURN = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def render(page: str) -> float:
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(f"pages/{page}").run()
    if at.exception:
        raise SystemExit(f"pages/{page} raised: {at.exception[0].message}")
    return time.perf_counter() - t0


def row(page: str, renders: int, nice: int | None) -> list[float]:
    """Render times beside the busy job at `nice` (None: an idle machine)."""
    busy = [] if nice is None else [subprocess.Popen([sys.executable, "-c", BURN], preexec_fn=lambda: os.nice(nice))]
    try:
        time.sleep(2.0 if busy else 0.0)  # the busy processes past their imports
        return [render(page) for _ in range(renders + 1)][1:]
    finally:
        for p in busy:
            p.kill()
            p.wait()


def main() -> int:
    from backend.runner import job_niceness

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page", default="jobs.py")
    ap.add_argument("--renders", type=int, default=5)
    a = ap.parse_args()
    os.environ["DUS_WORKSPACE"] = tempfile.mkdtemp(prefix="dus-bench-nice-")
    worker_nice = job_niceness()
    for _ in range(3):  # imports and streamlit's caches warm before any row: the first row is not the slowest
        render(a.page)
    rows = {"idle machine (floor)": row(a.page, a.renders, None), "job at niceness 0 (peer)": row(a.page, a.renders, 0),
            f"job at niceness {worker_nice} (a worker's)": row(a.page, a.renders, worker_nice)}
    floor = statistics.median(rows["idle machine (floor)"])
    print(f"pages/{a.page}, {a.renders} renders each, the job on all {os.cpu_count()} cores\n")
    print(f"| {'while':32} | median s | × idle |\n|{'-' * 34}|----------|--------|")
    medians = {k: statistics.median(v) for k, v in rows.items()}
    for k, m in medians.items():
        print(f"| {k:32} | {m:8.2f} | {m / floor:6.2f} |")
    peer, ours = list(medians.values())[1:]
    print(f"\nniced job: page drawn {peer / ours:.2f}× faster than beside a job at the dashboard's priority")
    return 0 if ours < peer else 1


if __name__ == "__main__":
    sys.exit(main())
