"""Benchmark: merging 1.1B-parameter bf16 checkpoints (TinyLlama shapes) by average, SLERP, TIES and DARE against
mergekit 0.1.5 (linear, slerp, ties, dare_linear, dare_ties) in the same run: wall time and peak RSS, each tool in
its own process, and the outputs compared tensor by tensor (every tensor, not a probe).

    .venv/bin/python bench/bench_merge.py                       # all rows
    .venv/bin/python bench/bench_merge.py --methods ties --reps 1

The checkpoints are the synthetic ones of bench_upscale.py (seeds 0, 1, 2), written once under bench/out/:
average and SLERP merge seeds 0 and 1; task-vector methods merge seeds 1 and 2 relative to seed 0 (weights 0.5 and
0.5, density 0.5, each method's mergekit defaults). "Equal" means:
- average, TIES: the same bits in every tensor, except, for TIES, entries whose |delta| equals a task vector's
  top-k threshold: mergekit's argsort (not stable) breaks those ties in an order only its full sort reproduces
  (ours: lowest index first; the same count and values). Such entries are counted, and any other difference fails.
- SLERP: within one bf16 rounding (the angle is a float32 sum whose order differs).
- DARE at density 0.5: the random masks differ by design, so statistics are compared: the share of entries left
  at the base, and ‖out − base‖₁ over the model, each within 1 % of mergekit's.
The bench exits with status 1 when any row is not equal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_upscale import OUT, make_checkpoint, mergekit_bin, timed  # noqa: E402

METHODS = ("average", "slerp", "ties", "dare_linear", "dare_ties")
DENSITY = 0.5


def ours(models: list[Path], base: Path | None, method: str, dst: Path) -> tuple[float, float]:
    ws = Path(tempfile.mkdtemp(dir=OUT, prefix="ws-"))
    extra = ["--t", "0.5"] if method == "slerp" else ["--weights", "0.5", "0.5"]
    if base:
        extra += ["--base", str(base), "--density", str(DENSITY)]
    try:
        return timed([sys.executable, "-m", "backend", "merge", "--method", method, "--models", *map(str, models),
                      *extra, "--out", str(dst), "--name", "bench", "--shard-size", "1GB"],
                     env={"DUS_WORKSPACE": str(ws)})
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def mergekit(models: list[Path], base: Path | None, method: str, dst: Path) -> tuple[float, float]:
    cfg = OUT / f"merge-{method}.yml"
    if method == "slerp":
        text = f"models:\n  - model: {models[0]}\n  - model: {models[1]}\nmerge_method: slerp\nbase_model: " \
               f"{models[0]}\nparameters:\n  t: 0.5\n"
    else:
        params = "      weight: 0.5\n" + (f"      density: {DENSITY}\n" if base else "")
        text = "models:\n" + "".join(f"  - model: {m}\n    parameters:\n{params}" for m in models) + \
            f"merge_method: {'linear' if method == 'average' else method}\n" + \
            (f"base_model: {base}\n" if base else "")
    cfg.write_text(text + "dtype: bfloat16\n")
    return timed([str(mergekit_bin()), str(cfg), str(dst), "--out-shard-size", "1B", "--quiet",
                  "--no-copy-tokenizer"])


class Checkpoint:
    """Tensors of a sharded safetensors folder, one at a time."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        wm = json.loads(index.read_text())["weight_map"] if index.exists() else None
        files = sorted(set(wm.values())) if wm else [p.name for p in folder.glob("*.safetensors")]
        self.handles = {f: safe_open(folder / f, "pt") for f in files}
        self.where = {n: f for f, h in self.handles.items() for n in h.keys()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.handles[self.where[name]].get_tensor(name)


def compare(method: str, a: Path, b: Path, inputs: list[Path], base: Path | None) -> tuple[bool, str]:
    """(equal, detail) over every tensor of our output `a` and mergekit's `b` (see the module docstring)."""
    ca, cb = Checkpoint(a), Checkpoint(b)
    if set(ca.where) != set(cb.where):
        return False, f"tensor names differ: {sorted(set(ca.where) ^ set(cb.where))[:3]}"
    cin = [Checkpoint(p) for p in inputs]
    cbase = Checkpoint(base) if base else None
    explained = unexplained = 0
    at_base = [0, 0]
    l1 = [0.0, 0.0]
    total = 0
    for name in sorted(ca.where):
        x, y = ca[name], cb[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
        if method.startswith("dare"):
            b0 = cbase[name]
            for i, out in enumerate((x, y)):
                at_base[i] += int((out == b0).sum())
                l1[i] += (out.float() - b0.float()).abs().sum(dtype=torch.float64).item()
            total += x.numel()
            continue
        differ = x != y
        if method == "slerp":
            differ &= (x.float() - y.float()).abs() > torch.finfo(torch.bfloat16).eps * y.float().abs()
        if method == "ties" and differ.any():
            b0 = cbase[name].reshape(-1)
            ties = torch.zeros_like(differ.reshape(-1))
            for c in cin:
                d = (c[name].reshape(-1) - b0).abs().float()  # the bf16 delta, as mergekit ranks it
                k = max(1, int(DENSITY * d.numel()))
                if k < d.numel():
                    ties |= d == torch.kthvalue(-d, k).values.neg()
            explained += int((differ.reshape(-1) & ties).sum())
            differ = differ.reshape(-1) & ~ties
        unexplained += int(differ.sum())
    if method.startswith("dare"):
        share = [n / total for n in at_base]
        ok = abs(share[0] / share[1] - 1) < 0.01 and abs(l1[0] / l1[1] - 1) < 0.01
        return ok, (f"share at base {share[0]:.4f} vs {share[1]:.4f}, |out-base|_1 {l1[0]:.4g} vs {l1[1]:.4g} "
                    "(statistics: masks differ by design)")
    detail = f"{unexplained} entries differ" + (f"; {explained} at top-k threshold ties" if method == "ties" else "")
    return unexplained == 0, detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    m0 = make_checkpoint(OUT / "synthetic-22L", 22, seed=0)
    m1 = make_checkpoint(OUT / "synthetic-22L-b", 22, seed=1)
    m2 = make_checkpoint(OUT / "synthetic-22L-c", 22, seed=2) if set(a.methods) - {"average", "slerp"} else None
    rows, failed = [], False
    for method in a.methods:
        models, base = ([m0, m1], None) if method in ("average", "slerp") else ([m1, m2], m0)
        results = {}
        for label, fn in (("dus-studio", ours), ("mergekit 0.1.5", mergekit)):
            runs = []
            for _ in range(a.reps):
                dst = OUT / f"merged-{label.split()[0]}"
                shutil.rmtree(dst, ignore_errors=True)
                subprocess.run(["sync"])
                runs.append(fn(models, base, method, dst))
            results[label] = (statistics.median(w for w, _ in runs), max(r for _, r in runs))
        equal, detail = compare(method, OUT / "merged-dus-studio", OUT / "merged-mergekit", models, base)
        failed |= not equal
        print(f"{method}: all tensors equal: {'yes' if equal else 'no'} ({detail}); "
              + ", ".join(f"{label} {w:.1f} s {r:.0f} MiB" for label, (w, r) in results.items()), flush=True)
        for label, (wall, rss) in results.items():
            rows.append((method, label, wall, rss, results["mergekit 0.1.5"][0] / wall, "yes" if equal else "no"))
    print(f"\n{'method':12} {'tool':16} {'wall s':>8} {'peak RSS MiB':>13} {'mergekit ÷ this':>16}  all tensors equal")
    for method, label, wall, rss, speed, eq in rows:
        print(f"{method:12} {label:16} {wall:8.2f} {rss:13.0f} {speed:15.2f}×  {eq}")
    for d in ("merged-dus-studio", "merged-mergekit"):
        shutil.rmtree(OUT / d, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
