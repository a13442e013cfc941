"""Benchmark: what a CLI command costs before it does any work. `--help`, `jobs list` and `models list` on a small
workspace, each a fresh `python -m backend` process, timed by the CPU it used (user + system, from
resource.getrusage(RUSAGE_CHILDREN): a loaded machine stretches wall time, not CPU), against the floor of a Python
that only imports the package (`python -c "import backend"`), in the same run.

    .venv/bin/python bench/bench_cli_start.py                    # 5 runs each, the median
    .venv/bin/python bench/bench_cli_start.py --repeats 9 --before HEAD~1   # also a commit's tree, as the peer

--before REV extracts that commit's backend/ and storage/ (git archive) into a temporary folder and times the same
commands there, on the same workspace: the table then shows before and after. The first run of each command is a
warm-up (bytecode compiled, the database made) and left out.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {"import backend (floor)": ["-c", "import backend"], "--help": ["-m", "backend", "--help"],
            "jobs --help": ["-m", "backend", "jobs", "--help"], "jobs list": ["-m", "backend", "jobs", "list"],
            "models list": ["-m", "backend", "models", "list"]}


def cpu_seconds(args: list[str], tree: Path, env: dict) -> float:
    """User + system CPU of one `python ARGS` run in `tree` (its children's, as getrusage counts them)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, *args], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} in {tree} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_cpu(args: list[str], tree: Path, env: dict, repeats: int) -> float:
    cpu_seconds(args, tree, env)  # warm-up: .pyc files written, the database made
    return statistics.median(cpu_seconds(args, tree, env) for _ in range(repeats))


def seed(env: dict) -> None:
    """A small workspace: the built-in model registered, three jobs queued."""
    script = ("from backend import runner\nfrom backend.specs import EvalSpec\n"
              "from storage import db\ndb.init_db()\n"
              "for i in range(3):\n"
              "    runner.submit(EvalSpec(models=['builtin'], tasks=['perplexity'], limit=2))\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", metavar="REV", help="also time this commit's tree (git archive), as the peer")
    a = ap.parse_args()
    env = {**os.environ, "DUS_WORKSPACE": tempfile.mkdtemp(prefix="dus-bench-cli-")}
    env.pop("DATABASE_URL", None)
    seed(env)
    trees = {"this tree": ROOT}
    if a.before:
        old = Path(tempfile.mkdtemp(prefix="dus-bench-cli-rev-"))
        archive = subprocess.run(["git", "archive", a.before, "backend", "storage"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {a.before: old, **trees}
    cpu = {(t, k): median_cpu(args, path, env, a.repeats) for t, path in trees.items() for k, args in COMMANDS.items()}
    print(f"CPU seconds (user + system) of one fresh process, median of {a.repeats}, {os.cpu_count()} cores\n")
    head = "".join(f" {t + ' s':>14} | {'× floor':>8} |" for t in trees)
    print(f"| {'command':24} |{head}\n|{'-' * 26}|" + ("-" * 16 + "|" + "-" * 10 + "|") * len(trees))
    for k in COMMANDS:
        cells = "".join(f" {cpu[t, k]:14.3f} | {cpu[t, k] / cpu[t, 'import backend (floor)']:8.1f} |"
                        for t in trees)
        print(f"| {k:24} |{cells}")
    if a.before:
        print("\n" + ", ".join(f"{k}: {cpu[a.before, k] / cpu['this tree', k]:.1f}× less CPU than {a.before}"
                               for k in COMMANDS if k != "import backend (floor)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
