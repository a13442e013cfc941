"""Benchmark: data-parallel training through Ray Train (2 workers, DDP over gloo, one per node of a local two-node
Ray cluster) against the same training under `accelerate launch --num_processes 2` (torchrun, gloo) on this
machine, in the same run. Both go through `training.run_train` with the same spec but for where the two ranks run.

    .venv/bin/python bench/bench_ray_train.py                  # the built-in SmolLM2-135M, continued pretraining
    .venv/bin/python bench/bench_ray_train.py --steps 6 --rounds 1 --max-length 128

Throughput is training samples per second between the first and the last step's log line (rank 0's metrics.jsonl:
(steps - 1) x batch x 2 ranks / seconds), so process start, model loading, the first step's warm-up and saving are
left out; the trainer's whole train_runtime and the end-to-end wall time are printed beside it.
Each rank gets one CPU either way (a Ray node with 1 CPU; torchrun's OMP_NUM_THREADS=1), the two ranks share this
machine's cores. Rounds alternate the two paths; medians reported. Exits 1 when Ray's samples/s is below 0.8 of
accelerate's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
FLOOR = 0.8  # Ray Train's samples/s against accelerate's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2, help="per rank")
    a = ap.parse_args()
    if a.steps < 3:
        ap.error("--steps: at least 3 (the first step is warm-up, left out of samples/s)")
    os.environ["DUS_WORKSPACE"] = str(OUT / "ws-ray-train")
    for var in ("RAY_ADDRESS", "DUS_RAY_ADDRESS", "DUS_JOB_ID"):
        os.environ.pop(var, None)
    from backend import registry
    from backend.specs import CptSpec, DataSource, Resources
    from backend.training import run_train
    from tests.ray_cluster import RayCluster

    base = registry.import_builtin()
    rows: dict[str, list[dict]] = {"accelerate launch": [], "Ray Train": []}
    with RayCluster(cpus=(1, 1)) as cluster:
        for r in range(a.rounds):
            for label in rows:
                on_ray = label == "Ray Train"
                spec = CptSpec(model=base.name, data=[DataSource(source="builtin:facts-corpus")], max_steps=a.steps,
                               batch_size=a.batch_size, max_length=a.max_length, eval_fraction=0.0,
                               save_steps=10_000, logging_steps=1, name=f"bench-ray-{int(time.time())}-{r}",
                               **({"ray_workers": 2, "resources": Resources(cpus=1)} if on_ray
                                  else {"num_processes": 2}))
                if on_ray:
                    os.environ["RAY_ADDRESS"] = cluster.gcs_address  # as Ray sets it inside a Ray Job
                t0 = time.time()
                try:
                    res = run_train(spec)
                finally:
                    os.environ.pop("RAY_ADDRESS", None)
                wall = time.time() - t0
                assert res["world_size"] == 2 and res["global_step"] == a.steps, res
                if on_ray:  # the two ranks really ran on the two nodes
                    assert len({w["node_id"] for w in res["ray_ranks"]}) == 2, res["ray_ranks"]
                logged = [json.loads(ln) for ln in Path(res["run_dir"], "metrics.jsonl").read_text().splitlines()]
                t = {m["step"]: m["time"] for m in logged if "loss" in m}
                sps = (a.steps - 1) * a.batch_size * res["world_size"] / (t[a.steps] - t[1])
                rows[label].append({"samples_s": sps, "train_s": res["train_seconds"], "wall_s": wall})
                registry.delete(res["model"])
                print(f"round {r}: {label}: {sps:.2f} samples/s, train {res['train_seconds']:.1f} s, "
                      f"wall {wall:.1f} s", flush=True)

    print(f"\n{base.name}, cpt, {a.steps} steps, 2 ranks x batch {a.batch_size} x {a.max_length} tokens, "
          f"{a.rounds} rounds (medians), CPU gloo, {os.cpu_count()} cores shared by both ranks")
    print(f"{'path':18} {'samples/s':>10} {'ratio':>7} {'train s':>8} {'end-to-end s':>13}")
    ref = statistics.median(x["samples_s"] for x in rows["accelerate launch"])
    for label, runs in rows.items():
        sps = statistics.median(x["samples_s"] for x in runs)
        print(f"{label:18} {sps:10.2f} {sps / ref:7.3f} {statistics.median(x['train_s'] for x in runs):8.1f} "
              f"{statistics.median(x['wall_s'] for x in runs):13.1f}")
    ratio = statistics.median(x["samples_s"] for x in rows["Ray Train"]) / ref
    if ratio < FLOOR:
        print(f"FAIL: Ray Train at {ratio:.2f} of accelerate launch's samples/s (floor {FLOOR})")
        sys.exit(1)


if __name__ == "__main__":
    main()
