"""How long the compare page takes to render server-side with many scores: 20 models × 10 tasks × 1,000 items
(score rows with overlap details, and a Generation row per item), through Streamlit's AppTest.

    .venv/bin/python bench/bench_compare.py [--models 20 --tasks 10 --items 1000]

Prints a table: rows seeded, the models × tasks and QA tables built by backend/scoretable.py and qatable.py alone,
the page's first render (after app.py's start-up warm-up, as a user reaching the page finds it), a rerun, and the
rerun with "score only non-overlapping items" on. The floor to compare against is
the page with no generations at all (the same tables; the length / hallucination analysis has nothing to read);
the last row is each time's ratio to it. Each case runs in a fresh process, so both are timed equally cold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def seed(models: int, tasks: int, items: int, generations: bool = True) -> int:
    """Score rows as run_eval writes them (qa tasks with per-kind metrics), and one Generation per item."""
    from storage import db
    from storage.models import EvalScore, Generation, ModelRecord

    db.init_db()
    with db.session() as s:  # registry rows only (the page lists them); no weights are read
        s.add_all([ModelRecord(name=f"model-{m:02d}", path=f"/nonexistent/model-{m:02d}", kind="trained",
                               parents=["base"], num_layers=30) for m in range(models)])
        s.commit()
    kinds = ("answerable", "unanswerable", "math")
    verdicts = ("correct", "wrong", "abstained")
    n_rows = 0
    with db.session() as s:
        for m in range(models):
            for t in range(tasks):
                task = "qa" if t == 0 else f"gsm8k:task{t}.jsonl"
                over = (m * 7 + t) % 5 * 20
                details = {"source": task, "fingerprint": f"{t:064x}", "items": items,
                           "overlap": {"ngram": 8, "threshold": 0.3, "max": 1.0 if over else 0.0, "mean": over / 100,
                                       "items_over": over * items // 100, "share_over": over / 100,
                                       "against": ["builtin:alpaca-mini"], "unchecked": {}, "notes": []},
                           "clean": {"accuracy": 0.5, "hallucination_rate": 0.2, "abstention_rate": 0.3,
                                     "precision": 0.7, "n": items - over * items // 100}, "device": "CPU: float32"}
                metrics = ["accuracy", "hallucination_rate", "abstention_rate", "mean_words"]
                if task == "qa":
                    metrics = ["accuracy", "hallucination_rate", "abstention_rate", "precision"]
                    metrics += [f"{x}[{k}]" for k in kinds for x in metrics[:4]]
                for metric in metrics:
                    s.add(EvalScore(model=f"model-{m:02d}", task=task, metric=metric, value=(m + t) % 10 / 10,
                                    n=items, details=details, overlap_share=over / 100))
                    n_rows += 1
                if generations:
                    s.add_all([Generation(model=f"model-{m:02d}", task=task, prompt_id=str(i), prompt="q",
                                          reference="1", output="x " * (i % 40), tokens=i % 40 + 1,
                                          words=i % 40, answered=True, correct=i % 3 == 0,
                                          hallucination=i % 3 == 1, verdict=verdicts[i % 3],
                                          item_kind=kinds[i % 3], overlap=0.0) for i in range(items)])
                    n_rows += items
            s.commit()
    return n_rows


def render_times(page: str = "compare.py") -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    from backend import registry

    registry.list_models()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    for thread in threading.enumerate():  # the server's warm-up (app.py) is done before a user can click on
        if thread.name == "dus-preload":
            thread.join()
    at.switch_page(f"pages/{page}")
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    assert not at.exception, at.exception
    t0 = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.toggle(key="clean_only").set_value(True).run()
    clean = time.perf_counter() - t0
    assert not at.exception, at.exception
    return {"first render": first, "rerun": rerun, "rerun, clean only": clean}


def run_case(gens: bool, models: int, tasks: int, items: int) -> dict:
    """One case timed in this process, from a fresh workspace: rows seeded, seconds, and the process id."""
    with tempfile.TemporaryDirectory() as ws:
        os.environ["DUS_WORKSPACE"] = ws
        os.environ.pop("DATABASE_URL", None)

        t0 = time.perf_counter()
        rows = seed(models, tasks, items, gens)
        seeded = time.perf_counter() - t0
        t0 = time.perf_counter()
        from backend import qatable, registry, scoretable

        latest = scoretable.latest_scores()
        records = {r.name: r for r in registry.list_models()}
        for clean in (False, True):
            scoretable.table_rows(latest, records, clean=clean)
            qatable.qa_rows(latest, clean=clean)
        table_s = time.perf_counter() - t0
        return {"rows": rows, "seeded": seeded, "times": {**render_times(), "table": table_s}, "pid": os.getpid()}


def case_in_child(gens: bool, models: int, tasks: int, items: int) -> dict:
    """run_case in a fresh Python process. Both cases in one process timed the floor cold (the page's libraries,
    scoretable, the first AppTest) and the full case warm: at 3 models x 2 tasks x 20 items the floor's first render
    read 0.58 s and the full case's 0.08 s, 'faster' than its own floor."""
    r = subprocess.run([sys.executable, __file__, "--case", "full" if gens else "floor", "--models", str(models),
                        "--tasks", str(tasks), "--items", str(items)], cwd=ROOT, capture_output=True, text=True)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode or line is None:
        sys.exit(f"the {'full' if gens else 'floor'} case failed:\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--cases", choices=["both", "floor", "full"], default="both")
    ap.add_argument("--case", choices=["floor", "full"], help=argparse.SUPPRESS)  # internal: one case, JSON out
    a = ap.parse_args()
    if a.case:
        print("RESULT " + json.dumps(run_case(a.case == "full", a.models, a.tasks, a.items)))
        return
    results = {}
    cases = [("scores only (floor)", False), ("scores + generations", True)]
    cases = cases[:1] if a.cases == "floor" else cases[1:] if a.cases == "full" else cases
    for label, gens in cases:
        results[label] = case_in_child(gens, a.models, a.tasks, a.items)
    print(f"{a.models} models × {a.tasks} tasks × {a.items} items (server-side AppTest render of pages/compare.py), "
          "each case in a fresh process")
    print(f"{'case':24} {'rows':>8} {'seed s':>7} {'table s':>8} {'first s':>8} {'rerun s':>8} {'clean s':>8}")
    for label, r in results.items():
        t = r["times"]
        print(f"{label:24} {r['rows']:8d} {r['seeded']:7.1f} {t['table']:8.3f} {t['first render']:8.2f} "
              f"{t['rerun']:8.2f} {t['rerun, clean only']:8.2f}")
    if len(results) == 2:
        (_, floor), (_, full) = results.items()
        keys = ("table", "first render", "rerun", "rerun, clean only")
        print(f"{'÷ floor':24} {'':8} {'':7} " + " ".join(f"{full['times'][k] / floor['times'][k]:7.2f}×"
                                                        for k in keys))
    print("table s: backend/scoretable.py building both tables, plain and clean-only, from the database")
    warm = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); from backend import analysis; "
                           "analysis.preload(); print(time.perf_counter() - t)"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"first s: after the server's start-up warm-up (app.py imports the regression's libraries in a thread, "
          f"{float(warm):.2f} s in a fresh process, while the user is on another page)")


if __name__ == "__main__":
    main()
