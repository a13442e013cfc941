"""Benchmark: a training job run through the runner (worker -> job process -> accelerate launch -> trl, with metric
rows written every step) against the same trl trainer called directly with the same config, in the same run.

    .venv/bin/python bench/bench_runner.py                   # the built-in SmolLM2-135M, continued pretraining
    .venv/bin/python bench/bench_runner.py --steps 20 --kind sft

Training throughput is tokens seen / trainer's train_runtime (the training loop itself); end-to-end wall time
(process starts, model loads, saving) is reported beside it. Rounds alternate direct and runner, medians reported.
Both run at the niceness a worker gives its jobs ($DUS_JOB_NICE, default 10).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def direct(spec_json: str) -> None:
    """Child process: the plain trl way — load, configure, SFTTrainer.train(). Prints one JSON line."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from backend import data
    from backend.specs import spec_from_dict
    from backend.train_entry import make_config

    t0 = time.time()
    info = json.loads(spec_json)
    spec = spec_from_dict(info["spec"])
    tok = AutoTokenizer.from_pretrained(info["path"])
    model = AutoModelForCausalLM.from_pretrained(info["path"])
    train, _ = data.mix([(d.source, d.weight) for d in spec.data], spec.kind, spec.seed, spec.max_rows)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=model, args=make_config(spec, Path(tmp), False), train_dataset=train,
                             processing_class=tok)
        result = trainer.train()
        trainer.save_model(Path(tmp) / "final")
    print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "train_s": result.metrics["train_runtime"],
                      "wall_s": time.time() - t0}))


def at_job_niceness() -> None:
    """preexec_fn of the direct child: the niceness a worker gives its jobs (backend/runner/loop.py job_niceness, default
    10), so both paths run at one priority. The direct child ran at the bench's own (0) beside the runner's job at
    10: on a shared CPU the ratio measured the scheduler, not the runner."""
    from backend.runner import job_niceness

    os.setpriority(os.PRIO_PROCESS, 0, max(job_niceness(), os.nice(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="cpt", choices=["cpt", "sft"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--direct", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.direct:
        return direct(a.direct)
    os.environ.setdefault("DUS_WORKSPACE", str(OUT / "ws-runner"))
    from backend import registry, runner
    from backend.specs import CptSpec, DataSource, SftSpec

    base = registry.import_builtin()
    spec_cls, source = (CptSpec, "builtin:facts-corpus") if a.kind == "cpt" else (SftSpec, "builtin:alpaca-mini")
    rows = {"direct trl": [], "through runner": []}
    for r in range(a.rounds):
        spec = spec_cls(model=base.name, data=[DataSource(source=source)], max_steps=a.steps, batch_size=2,
                        max_length=256, eval_fraction=0.0, save_steps=10_000, logging_steps=1,
                        name=f"bench-{a.kind}-{int(time.time())}-{r}")
        payload = json.dumps({"spec": spec.model_dump(mode="json"), "path": base.path})
        out = subprocess.run([sys.executable, __file__, "--direct", payload], capture_output=True, text=True,
                             cwd=ROOT, check=True, preexec_fn=at_job_niceness).stdout.strip().splitlines()[-1]
        rows["direct trl"].append(json.loads(out))
        t0 = time.time()
        job = runner.submit(spec)
        runner.worker(once=True)
        done = runner.get(job.id)
        if done.status != "succeeded":
            raise SystemExit(f"runner job failed: {done.error}")
        rows["through runner"].append({"tokens": done.result["tokens_seen"], "train_s": done.result["train_seconds"],
                                       "wall_s": time.time() - t0})
        registry.delete(done.result["model"])
    print(f"\n{base.name}, {a.kind}, {a.steps} steps, batch 2 x 256 tokens, {a.rounds} rounds (medians), CPU, both "
          f"paths at niceness {runner.job_niceness()}")
    print(f"{'path':16} {'train tokens/s':>15} {'ratio':>7} {'end-to-end s':>13}")
    ref = statistics.median(x["tokens"] / x["train_s"] for x in rows["direct trl"])
    for label, runs in rows.items():
        tps = statistics.median(x["tokens"] / x["train_s"] for x in runs)
        print(f"{label:16} {tps:15.0f} {tps / ref:7.3f} {statistics.median(x['wall_s'] for x in runs):13.1f}")


if __name__ == "__main__":
    main()
