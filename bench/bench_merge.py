"""Benchmark: merging two 1.1B-parameter bf16 checkpoints (TinyLlama shapes) by average and by SLERP, against
mergekit 0.1.5 (linear and slerp) in the same run: wall time and peak RSS, each tool in its own process.

    .venv/bin/python bench/bench_merge.py

The checkpoints are the synthetic ones of bench_upscale.py (seeds 0 and 1), written once under bench/out/.
A probe tensor of each pair of outputs is compared (bf16 rounding allows small differences).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_upscale import OUT, make_checkpoint, mergekit_bin, timed  # noqa: E402


def ours(a: Path, b: Path, method: str, dst: Path) -> tuple[float, float]:
    ws = Path(tempfile.mkdtemp(dir=OUT, prefix="ws-"))
    try:
        extra = ["--t", "0.5"] if method == "slerp" else ["--weights", "0.5", "0.5"]
        return timed([sys.executable, "-m", "backend", "merge", "--method", method, "--models", str(a), str(b),
                      *extra, "--out", str(dst), "--name", "bench", "--shard-size", "1GB"],
                     env={"DUS_WORKSPACE": str(ws)})
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def mergekit(a: Path, b: Path, method: str, dst: Path) -> tuple[float, float]:
    cfg = OUT / f"merge-{method}.yml"
    if method == "slerp":
        cfg.write_text(f"models:\n  - model: {a}\n  - model: {b}\nmerge_method: slerp\nbase_model: {a}\n"
                       "parameters:\n  t: 0.5\ndtype: bfloat16\n")
    else:
        cfg.write_text(f"models:\n  - model: {a}\n    parameters:\n      weight: 0.5\n  - model: {b}\n    parameters:\n"
                       "      weight: 0.5\nmerge_method: linear\ndtype: bfloat16\n")
    return timed([str(mergekit_bin()), str(cfg), str(dst), "--out-shard-size", "1B", "--quiet"])


def probe(folder: Path, name: str):
    import json

    from safetensors import safe_open

    wm = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(folder / wm[name], "pt") as f:
        return f.get_tensor(name).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    m1 = make_checkpoint(OUT / "synthetic-22L", 22, seed=0)
    m2 = make_checkpoint(OUT / "synthetic-22L-b", 22, seed=1)
    rows = []
    for method in ("average", "slerp"):
        results = {}
        for label, fn in (("dus-studio", ours), ("mergekit 0.1.5", mergekit)):
            runs = []
            for _ in range(a.reps):
                dst = OUT / f"merged-{label.split()[0]}"
                shutil.rmtree(dst, ignore_errors=True)
                subprocess.run(["sync"])
                runs.append(fn(m1, m2, method, dst))
            results[label] = (statistics.median(w for w, _ in runs), max(r for _, r in runs))
        name = "model.layers.10.mlp.down_proj.weight"
        diff = (probe(OUT / "merged-dus-studio", name) - probe(OUT / "merged-mergekit", name)).abs().max().item()
        for label, (wall, rss) in results.items():
            rows.append((method, label, wall, rss, results["mergekit 0.1.5"][0] / wall, diff))
    print(f"\n{'method':8} {'tool':16} {'wall s':>8} {'peak RSS MiB':>13} {'mergekit ÷ this':>16} {'max |Δ| probe':>14}")
    for method, label, wall, rss, speed, diff in rows:
        print(f"{method:8} {label:16} {wall:8.2f} {rss:13.0f} {speed:15.2f}× {diff:14.2e}")
    for d in ("merged-dus-studio", "merged-mergekit"):
        shutil.rmtree(OUT / d, ignore_errors=True)


if __name__ == "__main__":
    main()
