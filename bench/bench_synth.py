"""Benchmark: rule-based rephrasing throughput, and the inspect page's server-side render time with 100k pairs.

    .venv/bin/python bench/bench_synth.py             # 100k pairs (about a minute to build once)
    .venv/bin/python bench/bench_synth.py --pairs 20000

Rephrasing is compared with the seed generator alone on the same seeds (the floor: making the problems at all).
The page is rendered server-side with Streamlit's AppTest (what the server does per rerun, without the browser),
with 100k pairs stored, against the same page with no pairs (its fixed cost); target under 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def render_seconds(page: str, reps: int) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(page).run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    ws = OUT / "ws-synth"
    shutil.rmtree(ws, ignore_errors=True)
    os.environ["DUS_WORKSPACE"] = str(ws)
    from backend.specs import SynthMathSpec
    from backend.synth.pipeline import run_synth_math
    from backend.synth.rephrase import RulesRephraser
    from backend.synth.seeds import generate

    n = min(a.pairs, 20_000)
    t0 = time.perf_counter()
    seeds = generate(n, seed=1)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    RulesRephraser().rephrase(seeds)
    reph_s = time.perf_counter() - t0
    empty = render_seconds("pages/synth.py", a.reps)
    t0 = time.perf_counter()
    result = run_synth_math(SynthMathSpec(num_seeds=a.pairs, batch_size=512))
    build_s = time.perf_counter() - t0
    full = render_seconds("pages/synth.py", a.reps)
    print(f"\n{'measure':44} {'value':>12} {'vs':>24}")
    print(f"{'seed generator (floor), seeds/s':44} {n / gen_s:12,.0f}")
    print(f"{'rules rephraser, pairs/s':44} {n / reph_s:12,.0f} {f'{gen_s / reph_s:.2f}× the generator':>24}")
    verified = f"({result['verified']:,} verified)"
    print(f"{'full job incl. verify + store, pairs/s':44} {a.pairs / build_s:12,.0f} {verified:>24}")
    print(f"{'inspect page render, no pairs, s':44} {empty:12.3f}")
    print(f"{f'inspect page render, {a.pairs:,} pairs, s':44} {full:12.3f} {f'{full / empty:.2f}× the empty page':>24}")


if __name__ == "__main__":
    main()
