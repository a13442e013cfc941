"""A server's first visit of the Train page: its memory plan needs the model's shape, which it built by making the
model on the meta device (transformers' model code, accelerate, torch._dynamo imported: ~2 s of CPU and ~100 MB in
every fresh server process). The shape is now kept in workspace/cache/shapes (backend/memplan/shape.py). Against
that, the same first visit with the cache emptied (the path every visit took before), in the same run:

    .venv/bin/python bench/bench_train_page.py              # a tiny registered model; 3 rounds of each
    .venv/bin/python bench/bench_train_page.py --rounds 5

Each round is a fresh Python process (as a server's first visit is): AppTest runs app.py on the Train page, and the
process reports the CPU seconds of that run, its peak RSS, and the memory plan's first row. The table gives the
median of each; the last column is built ÷ kept. Exits 1 if the two paths' plans differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VISIT = r"""
import json, os, resource, sys, time
sys.path.insert(0, os.getcwd())
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=180)
at.switch_page("pages/train.py")
t = time.process_time()
at.run()
cpu = time.process_time() - t
assert not at.exception, at.exception
plan = next(d.value for d in at.dataframe if "strategy" in d.value.columns)
print(json.dumps({"cpu": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "plan": plan.iloc[0].astype(str).to_dict()}))
"""


def visit(ws: Path) -> dict:
    env = {**os.environ, "DUS_WORKSPACE": str(ws)}
    env.pop("DATABASE_URL", None)
    r = subprocess.run([sys.executable, "-c", VISIT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"the Train page failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-page-"))
    try:
        ws = tmp / "ws"
        os.environ["DUS_WORKSPACE"] = str(ws)
        os.environ.pop("DATABASE_URL", None)
        from backend import registry
        from tests.conftest import make_llama, make_tokenizer

        registry.import_folder(make_llama(make_tokenizer(tmp / "tok"), tmp / "tiny"), "tiny")
        shapes = ws / "cache" / "shapes"
        runs: dict[str, list[dict]] = {"built (cache emptied)": [], "kept": []}
        for _ in range(a.rounds):
            shutil.rmtree(shapes, ignore_errors=True)
            runs["built (cache emptied)"].append(visit(ws))
            runs["kept"].append(visit(ws))  # the shape the visit before kept
        med = {k: (statistics.median(r["cpu"] for r in v), statistics.median(r["rss_mb"] for r in v))
               for k, v in runs.items()}
        print(f"the Train page's first run in a fresh process, median of {a.rounds}\n")
        print("| shape | CPU (s) | peak RSS (MB) |\n|---|---:|---:|")
        for k, (cpu, rss) in med.items():
            print(f"| {k} | {cpu:.2f} | {rss:.0f} |")
        (cb, rb), (ck, rk) = med["built (cache emptied)"], med["kept"]
        print(f"\nbuilt ÷ kept: CPU {cb / ck:.2f}x, peak RSS {rb / rk:.2f}x")
        plans = {json.dumps(r["plan"], sort_keys=True) for v in runs.values() for r in v}
        if len(plans) != 1:
            print(f"\nthe memory plans differ between the two paths: {sorted(plans)}")
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
