"""Generation-based evaluation of the built-in SmolLM2-135M-Instruct: batched (batch 8, left padding, prompts in
length order) against one prompt at a time, on the same items with greedy decoding.

    .venv/bin/python bench/bench_eval.py [--items 16 --max-new-tokens 48 --batch 8]
    python bench/bench_eval.py --model FOLDER --items 500 --batched-only   # on CUDA: a 1.1B model, target <= 60 s

Imports the built-in model into a temporary DUS_WORKSPACE (as `python -m backend models import builtin` does),
loads it as evaluation does (backend/evaldevice.py's plan: float32 on the CPU, bfloat16 + sdpa on CUDA), and prints
a table: seconds, answers per second, the ratio (target ≥ 2.5×), and whether greedy answers are the same; exits 1
when any batched answer differs from its one-prompt-at-a-time answer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8, help="batch size (on CUDA the plan fits it to free memory)")
    ap.add_argument("--model", help="a model folder to evaluate instead of the built-in SmolLM2 (the CUDA check uses "
                                    "bench/gpu_train_mfu.py --keep's random TinyLlama-shaped model)")
    ap.add_argument("--batched-only", action="store_true", help="time the batched path only (the CUDA check: "
                                                                "--items questions, items repeated to reach it)")
    a = ap.parse_args()
    ws = tempfile.mkdtemp(prefix="bench-eval-")
    os.environ["DUS_WORKSPACE"] = ws
    os.environ.pop("DATABASE_URL", None)
    try:
        run(a)
    finally:  # the imported model's copy: the built-in's is 517 MB, and every run left one in /tmp
        shutil.rmtree(ws, ignore_errors=True)


def run(a: argparse.Namespace) -> None:
    subprocess.run([sys.executable, "-m", "backend", "models", "import", a.model or "builtin"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    import torch

    from backend import evaldevice, evaluate, qa, registry

    name = registry.list_models()[0].name
    folder = registry.resolve(name)[0]
    plan = evaldevice.plan_for(folder, seq_len=256 + a.max_new_tokens, batch_size=a.batch)
    tok, model = evaluate._load(name, plan)
    items = evaluate._stratified(qa.load_items(evaluate.heldout.eval_path("qa-closed-book")), a.items)
    items = (items * (a.items // len(items) + 1))[:a.items]  # the set holds 120: repeated for a larger timing run
    prompts = [qa.prompt_for(it) for it in items]
    evaluate.generate(tok, model, prompts[:2], 4, batch_size=2)  # warm-up: first-call allocations
    if a.batched_only:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = evaluate.generate(tok, model, prompts, a.max_new_tokens, batch_size=plan.batch_size)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        print(f"{name}: {len(prompts)} qa prompts, max_new_tokens {a.max_new_tokens}, {plan.note}: {secs:.1f} s, "
              f"{len(prompts) / secs:.1f} answers/s, {sum(n for _, n, _ in out)} new tokens (target <= 60 s: "
              f"{'met' if secs <= 60 else 'NOT met'})")
        return
    rows = []
    outs = {}
    for label, bs in (("one prompt at a time", 1), (f"batched ({plan.batch_size})", plan.batch_size)):
        t0 = time.perf_counter()
        outs[label] = evaluate.generate(tok, model, prompts, a.max_new_tokens, batch_size=bs)
        secs = time.perf_counter() - t0
        rows.append((label, secs, len(prompts) / secs, sum(n for _, n, _ in outs[label])))
    (l1, o1), (l2, o2) = outs.items()
    verdicts = [[qa.classify(t, it["answers"], it["kind"], cut) for (t, _, cut), it in zip(o, items)] for o in (o1, o2)]
    print(f"SmolLM2-135M-Instruct, {len(prompts)} qa items, max_new_tokens {a.max_new_tokens}, {plan.note}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'mode':26} {'seconds':>8} {'answers/s':>10} {'new tokens':>11}")
    for label, secs, rate, ntok in rows:
        print(f"{label:26} {secs:8.1f} {rate:10.3f} {ntok:11d}")
    print(f"speed-up (answers/s, batched ÷ single): {rows[1][2] / rows[0][2]:.2f}× (target ≥ 2.5×)")
    lines = differences(o1, o2, items)
    print(f"same answers (greedy): {'no' if lines else 'yes'} ({len(prompts) - len(lines)}/{len(prompts)} identical "
          f"texts, {sum(x == y for x, y in zip(*verdicts))}/{len(prompts)} identical verdicts)")
    for line in lines:
        print(line)
    if lines:
        sys.exit(1)


def differences(single: list, batched: list, items: list[dict]) -> list[str]:
    """One line per item whose batched answer is not the one-prompt-at-a-time answer. The outputs are
    evaluate.generate's (text, new tokens, cut off) triples; the single path defines the answer (no padding), so
    any line here is a failure of the batched path, and main exits 1 on it rather than printing it beside a
    speed-up."""
    return [f"  differs on {it['id']}: {t1[:60]!r} vs {t2[:60]!r}"
            for (t1, *_), (t2, *_), it in zip(single, batched, items) if t1 != t2]


if __name__ == "__main__":
    main()
