"""Benchmark: the recipe machinery's overhead — the smoke recipe run as a recipe (plan: resolve, fingerprint and
hash every stage; submit with dependencies; stage rows) against the very same jobs submitted one by one (as
chained CLI commands would: `--after`), both through the real worker, alternating, in fresh workspaces.

    .venv/bin/python bench/bench_recipe.py             # tiny random model, 1 round each
    .venv/bin/python bench/bench_recipe.py --rounds 3

Prints wall time of each way, the planning + submitting time alone, and the overhead ratio (target ≤ 5 %).
The CPU may be shared: the planning time is the stable number; the end-to-end ratio carries the noise of the
jobs themselves, so several rounds are reported as medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tiny_model(folder: Path) -> Path:
    """The tests' tiny random Llama (tests/conftest.py) with its trained-here BPE tokenizer."""
    from tests.conftest import make_llama, make_tokenizer

    return make_llama(make_tokenizer(folder / "tok"), folder / "model")


def fresh_workspace(root: Path, tag: str) -> None:
    from storage import db

    ws = root / tag
    os.environ["DUS_WORKSPACE"] = str(ws)
    db.init_db()


def as_recipe(text: str) -> tuple[float, float]:
    from backend import recipe, runner

    t0 = time.perf_counter()
    [p] = recipe.plan_text(text)
    recipe.submit(p, text)
    machinery = time.perf_counter() - t0
    runner.worker(once=True, poll=0.2)
    return time.perf_counter() - t0, machinery


def one_by_one(text: str) -> tuple[float, float]:
    """The same specs, submitted as separate jobs, each `--after` the job it reads (the evaluation after the last)."""
    from backend import recipe, runner

    [p] = recipe.plan_text(text)  # only to get the identical specs; not timed
    t0 = time.perf_counter()
    last = None
    ids: dict[str, int] = {}
    for n in p.nodes:
        if n.spec is None or n.kind == "eval":
            continue
        after = max((ids[d] for d in n.deps if d in ids), default=None)
        ids[n.stage] = runner.submit(n.spec, after=after).id
        last = ids[n.stage]
    evals = [n for n in p.nodes if n.kind == "eval"]
    runner.submit(evals[0].spec.model_copy(update={"models": [m for n in evals for m in n.spec.models]}),
                  after=last)
    machinery = time.perf_counter() - t0
    runner.worker(once=True, poll=0.2)
    return time.perf_counter() - t0, machinery


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    from backend import recipe, runner
    from storage import db

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = tiny_model(root)
        text = recipe.preset("smoke", str(base))
        results: dict[str, list[tuple[float, float]]] = {"one by one": [], "recipe": []}
        for r in range(a.rounds):
            for way, fn in (("one by one", one_by_one), ("recipe", as_recipe)):
                fresh_workspace(root, f"{way.replace(' ', '-')}-{r}")
                wall, machinery = fn(text)
                failed = [j.id for j in runner.list_jobs() if j.status != "succeeded"]
                if failed:
                    sys.exit(f"{way}: jobs {failed} did not succeed; see {db.workspace()}/logs")
                results[way].append((wall, machinery))
                print(f"round {r + 1}: {way:10} {wall:7.1f} s (planning + submitting {machinery * 1000:6.0f} ms)",
                      flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}
    base_wall = med["one by one"][0]
    print(f"\n{'way':12} {'wall s':>8} {'plan+submit ms':>15} {'vs one by one':>14}")
    for k, (w, m) in med.items():
        print(f"{k:12} {w:8.1f} {m * 1000:15.0f} {(w / base_wall - 1) * 100:+13.1f}%")
    print(f"\nrecipe machinery alone: {(med['recipe'][1] - med['one by one'][1]) / base_wall * 100:.2f} % of the "
          f"one-by-one wall time (target ≤ 5 %)")


if __name__ == "__main__":
    main()
