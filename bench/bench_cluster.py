"""Benchmark: 8 independent evaluation jobs on a two-node local Ray cluster (2 slots) against the local worker
(1 slot), in the same run.

    .venv/bin/python bench/bench_cluster.py                 # 8 jobs, each a few seconds of CPU on one core
    .venv/bin/python bench/bench_cluster.py --jobs 4 --limit 20

A small random Llama (hidden 256, 8 layers) is made under bench/out/cluster/; each job scores its perplexity on the
held-out text (`--limit` items), one thread each (OMP_NUM_THREADS=1), so a node of one CPU runs one job. The local
run is `python -m backend worker --once --slots 1`; the cluster run is the same worker with DUS_RAY_ADDRESS and
`--slots 2`, on tests/ray_cluster.py's cluster (two `ray start` nodes of 1 CPU each). Reported: wall seconds from
the worker's start to its exit, jobs/s, their ratio, and the start latency of a job — from its claim (the row's
`started`) to its process's first log line — whose difference between the two runs is what a Ray submission adds.
Also the machine's busy CPU time in each run (/proc/stat, every process: Ray's own daemons count), which shows the
ceiling a machine of few cores puts on the ratio. Fails (exit 1) when the ratio is under 1.7 or that overhead is 2 s
or more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "cluster"


def make_model() -> Path:
    """A random Llama large enough that scoring it takes seconds, with the tests' tiny BPE tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import make_tokenizer

    folder = OUT / "model"
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=256, intermediate_size=1024, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    make_tokenizer(folder)
    return folder


def first_lines(job_ids: list[int], seen: dict[int, float], stop: threading.Event) -> None:
    """When each job's log gets its process's first line ("job N (...) started in process P")."""
    from backend import runner

    logs = {i: Path(runner.get(i).log_path) for i in job_ids}
    while not stop.is_set() and len(seen) < len(job_ids):
        for i, log in logs.items():
            if i not in seen and log.exists() and "started in process" in log.read_text(errors="replace"):
                seen[i] = time.time()
        time.sleep(0.02)


def busy_seconds() -> float:
    """CPU seconds this machine has spent busy (every process, Ray's daemons included), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(label: str, ws: Path, model: Path, n: int, limit: int, slots: int, address: str | None) -> dict:
    """Submit n jobs into a fresh workspace, run one worker until they are done; wall time and start latencies."""
    from backend import registry, runner
    from backend.specs import EvalSpec
    from storage import db

    shutil.rmtree(ws, ignore_errors=True)
    os.environ["DUS_WORKSPACE"] = str(ws)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("DUS_RAY_ADDRESS", None)
    if address:
        os.environ["DUS_RAY_ADDRESS"] = address  # submit runs the cluster's checks (once: the folder check is cached)
    db.init_db()
    registry.import_folder(model, "bench")
    jobs = [runner.submit(EvalSpec(models=["bench"], tasks=["perplexity"], limit=limit)).id for _ in range(n)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    seen: dict[int, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=first_lines, args=(jobs, seen, stop), daemon=True)
    watcher.start()
    t0, busy0 = time.time(), busy_seconds()
    subprocess.run([sys.executable, "-m", "backend", "worker", "--once", "--poll", "0.2", "--slots", str(slots)],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, busy = time.time() - t0, busy_seconds() - busy0
    stop.set()
    watcher.join()
    rows = [runner.get(i) for i in jobs]
    bad = [(r.id, r.status, r.error[-300:]) for r in rows if r.status != "succeeded"]
    if bad:
        raise SystemExit(f"{label}: jobs did not succeed: {bad}")
    latency = [seen[r.id] - r.started.timestamp() for r in rows if r.id in seen]
    accepted = []  # claim -> Ray accepted the submission (the worker's part); the rest is Ray starting it
    if address:
        from backend.cluster import ray_jobs

        infos = [ray_jobs.client(address).get_job_info(r.cluster_ref) for r in rows]
        accepted = [i.start_time / 1000 - r.started.timestamp() for i, r in zip(infos, rows)]
    return {"label": label, "wall": wall, "rate": n / wall, "latency": statistics.median(latency),
            "first": statistics.median(latency[:2]), "accepted": statistics.median(accepted) if accepted else 0.0,
            "seconds": statistics.median((r.finished - r.started).total_seconds() for r in rows),
            "cores": busy / wall, "cpu_per_job": busy / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--limit", type=int, default=40, help="held-out items each job scores")
    a = ap.parse_args()
    from tests.ray_cluster import RayCluster

    OUT.mkdir(parents=True, exist_ok=True)
    model = make_model()
    local = run("local worker, 1 slot", OUT / "ws-local", model, a.jobs, a.limit, 1, None)
    with RayCluster(cpus=(1, 1)) as cluster:
        ray = run("Ray, 2 nodes x 1 CPU, 2 slots", OUT / "ws-ray", model, a.jobs, a.limit, 2, cluster.address)
    ratio = ray["rate"] / local["rate"]
    overhead = ray["latency"] - local["latency"]
    print(f"\n{a.jobs} perplexity jobs (limit {a.limit}), {os.cpu_count()} CPU cores on this machine (shared)\n")
    print(f"{'run':32} {'wall s':>7} {'jobs/s':>7} {'job s':>6} {'claim->first line s':>20} {'(first 2 jobs)':>15}"
          f" {'cores busy':>10} {'CPU s/job':>9}")
    for r in (local, ray):
        print(f"{r['label']:32} {r['wall']:7.1f} {r['rate']:7.3f} {r['seconds']:6.1f} {r['latency']:20.2f} "
              f"{r['first']:15.2f} {r['cores']:10.2f} {r['cpu_per_job']:9.1f}")
    # the physical ceiling: with every core busy, throughput is at most (cores / CPU-s per job)
    ceiling = os.cpu_count() / ray["cpu_per_job"] / local["rate"]
    print(f"\nmachine CPU per job: {ray['cpu_per_job'] / local['cpu_per_job']:.2f}x the local run's under Ray (its "
          f"daemons and each job's Ray worker start); with all {os.cpu_count()} cores busy that caps the ratio at "
          f"{ceiling:.2f} here")
    print(f"\nthroughput ratio Ray / local: {ratio:.2f} (floor 1.7)")
    print(f"Ray submission overhead per job (medians): {overhead:+.2f} s (ceiling 2 s); of the Ray run's "
          f"{ray['latency']:.2f} s, {ray['accepted']:.2f} s from claim to Ray's acceptance; first two jobs (nodes "
          f"free): {ray['first'] - local['first']:+.2f} s")
    return 0 if ratio >= 1.7 and overhead < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
