"""The dashboard at the size a months-long user reaches: each page's server-side script run (Streamlit's AppTest)
and the CLI listings, on a small workspace and on a big one, side by side.

    .venv/bin/python bench/bench_pages_scale.py [--keep DIR] [--only compare synth ...]

Big: 150 registered models with lineage, 3,000 jobs (done / failed / cancelled, each with a log; the newest one's
log is 30 MB), ~0.9M logged metric rows, 150 models × 20 tasks of scores (8,250 rows), 198,000 generated answers
(3 generation tasks × 440 items per model), 100,000 synthetic pairs with their JSONL exports, 300 arena rounds,
6 recipe runs. Small: 6 models, 20 jobs, 5 tasks × 20 items, 200 pairs. Rows are bulk-inserted as the product
writes them (no model weights: pages here read rows, configs and logs). Seeding takes ~20 s.

Prints a table: page or action, seconds on the small workspace, on the big one, and the ratio; each page is timed
on its first script run (after app.py's start-up, in a process that has imported everything once) and on a rerun
(what every click costs), with the SQL statements the rerun issued. Server time only: the browser's rendering of
what is sent is not counted. Runs on the CPU; share the machine with nothing heavy or the numbers swing ±50 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def seed(SMALL: bool) -> None:
    """Rows as registry.register, runner.submit/execute, train_entry (JobMetric), evaluate.run_eval and the synth
    pipeline write them, inserted in bulk; tiny files where pages read files (configs, job logs, the exports)."""
    import random
    import uuid
    from datetime import datetime, timedelta, timezone

    from storage import db
    from storage.models import (ChatTranscript, DatasetRecord, EvalScore, Generation, Job, JobMetric, ModelRecord,
                                RecipeRun, RecipeStage, SynthPair, Vote)
    N_MODELS = 6 if SMALL else 150
    N_JOBS = 20 if SMALL else 3000
    N_TASKS = 5 if SMALL else 20
    ITEMS = 20 if SMALL else 440          # generation items per (model, gen task)
    N_PAIRS = 200 if SMALL else 100_000
    STEPS = 20 if SMALL else 200
    N_ROUNDS = 10 if SMALL else 300
    rng = random.Random(0)
    T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
    ws = db.workspace()
    eng = db.init_db()
    t_start = time.time()


    def ins(table, rows, chunk=20000):
        with eng.begin() as conn:
            for i in range(0, len(rows), chunk):
                conn.execute(table.__table__.insert(), rows[i:i + chunk])


    # ---- models ------------------------------------------------------------------------------------------------
    models = []
    names = []
    for i in range(N_MODELS):
        if i < 3:
            kind, name, parents = "base", ["SmolLM2-135M-Instruct", "SmolLM2-360M-Instruct", "tiny-base"][i], []
        else:
            kind = ["upscaled", "trained", "trained", "trained", "merged"][i % 5]
            if kind == "upscaled":
                parents = [names[rng.randrange(0, 3)]]
                name = f"{parents[0]}-dus-m{rng.choice([4, 8, 12])}-{i}"
            elif kind == "trained":
                parents = [names[rng.randrange(0, i)]]
                name = f"{parents[0][:30]}-{rng.choice(['cpt', 'sft', 'dpo'])}-{i}"
            else:
                parents = rng.sample(names, 2)
                name = f"merge-{rng.choice(['average', 'slerp', 'ties'])}-{i}"
        names.append(name)
        folder = ws / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                        "num_hidden_layers": 30, "hidden_size": 576}))
        models.append(dict(name=name, path=str(folder), kind=kind, parents=parents,
                           recipe={} if kind == "base" else {"kind": kind, "base": parents[0], "m": 8, "method": "average",
                                                             "models": parents, "name": name},
                           source="builtin" if kind == "base" else kind, architecture="LlamaForCausalLM",
                           model_type="llama", num_layers=30 + (i % 5) * 4, hidden_size=576,
                           num_parameters=134_515_008 + i, dtype="bfloat16", size_bytes=269_060_552,
                           created=T0 + timedelta(hours=i)))
    ins(ModelRecord, models)

    # ---- jobs, logs, metrics ----------------------------------------------------------------------------------------
    (ws / "logs").mkdir(exist_ok=True)
    kinds = ["sft", "cpt", "dpo", "eval", "merge", "upscale", "synth-math", "import"]
    jobs, metrics = [], []
    for jid in range(1, N_JOBS + 1):
        kind = rng.choice(kinds)
        status = rng.choices(["succeeded", "failed", "cancelled"], [8, 1.5, 0.5])[0]
        m = rng.choice(names)
        if kind in ("sft", "cpt", "dpo"):
            spec = {"kind": kind, "model": m, "data": [{"source": "builtin:alpaca-mini", "weight": 1.0}],
                    "max_steps": STEPS, "name": f"{m[:30]}-{kind}-j{jid}", "resources": {"cpus": 1.0, "gpus": 0.0}}
        elif kind == "eval":
            spec = {"kind": "eval", "models": rng.sample(names, min(3, len(names))), "tasks": ["perplexity", "synth-math",
                                                                                                "qa"], "limit": 40}
        elif kind == "merge":
            spec = {"kind": "merge", "models": rng.sample(names, 2), "method": "average", "name": f"merge-j{jid}"}
        elif kind == "upscale":
            spec = {"kind": "upscale", "base": m, "m": 8, "name": f"{m[:30]}-dus-j{jid}"}
        elif kind == "synth-math":
            spec = {"kind": "synth-math", "seeds": 200, "rephraser": "rules", "name": f"synth-j{jid}"}
        else:
            spec = {"kind": "import", "target": "builtin", "name": None}
        created = T0 + timedelta(minutes=60 * jid / 10)
        log = ws / "logs" / f"job-{jid}.log"
        lines = [f"[{created}] step {k}/{STEPS} loss={2.5 - k / STEPS:.3f}" for k in range(0, STEPS, 5)]
        log.write_text("\n".join(lines) + "\n")
        run_dir = str(ws / "runs" / f"job-{jid}") if kind in ("sft", "cpt", "dpo") else ""
        jobs.append(dict(id=jid, kind=kind, spec=spec, status=status, progress=1.0 if status == "succeeded" else 0.4,
                         message="done" if status == "succeeded" else "stopped", error="Traceback ... RuntimeError: boom"
                         if status == "failed" else "", log_path=str(log), after=None, needs=[], run_dir=run_dir,
                         pid=None, host="scalehost", cluster_ref="",
                         result={"model": spec.get("name")} if status == "succeeded" and kind != "eval" else {},
                         created=created, started=created + timedelta(seconds=5),
                         finished=created + timedelta(seconds=600)))
        if kind in ("sft", "cpt", "dpo"):
            for step in range(1, STEPS + 1):
                for nm, v in (("loss", 2.5 - step / STEPS), ("learning_rate", 5e-5), ("grad_norm", 1.0),
                              ("tokens_per_s", 900.0)):
                    metrics.append(dict(job_id=jid, step=step, name=nm, value=v, time=created))
                if step % 10 == 0:
                    metrics.append(dict(job_id=jid, step=step, name="eval_loss", value=2.4 - step / STEPS, time=created))
            if kind == "cpt":
                metrics.append(dict(job_id=jid, step=0, name="reference_eval_loss", value=2.2, time=created))
    ins(Job, jobs)
    print("jobs", len(jobs), "metrics", len(metrics), flush=True)
    ins(JobMetric, metrics)
    del metrics
    # one long training job's log: tqdm lines of a multi-day run (30 MB), the newest job
    if not SMALL:
        long_log = Path(jobs[-1]["log_path"])
        line = " 42%|████▏     | 4200/10000 [3:21:07<4:38:12,  2.88s/it] {'loss': 1.234, 'grad_norm': 0.98}\n"
        with long_log.open("w") as f:
            for _ in range(30_000_000 // len(line)):
                f.write(line)

    # ---- evaluation scores and generations -------------------------------------------------------------------------
    gen_tasks = ["synth-math", "qa", "gsm8k:data/eval-math.jsonl"]
    other_tasks = ["perplexity", "lm-eval:dus_truthfulqa_mini", "lm-eval:h6"] + [f"mc:data/mc-{k}.jsonl"
                                                                                  for k in range(N_TASKS - 6)]
    tasks = (gen_tasks + other_tasks)[:N_TASKS]
    scores, gens = [], []
    details_base = {"source": "builtin", "fingerprint": "ab" * 32, "items": 40,
                    "settings": {"limit": 40, "max_new_tokens": 96, "samples": 1, "prompt": "chat"},
                    "overlap": {"items_over": 1, "share_over": 0.025, "against": ["builtin:alpaca-mini"],
                                "unchecked": {}}, "device": "cpu float32"}
    for mi, m in enumerate(names):
        for task in tasks:
            run = uuid.uuid4().hex
            jid = rng.randrange(1, N_JOBS + 1)
            if task == "qa":
                mets = {"accuracy": .4, "abstention_rate": .2, "hallucination_rate": .3, "cut_off_rate": .1,
                        "precision": .57, "accuracy[answerable]": .5, "hallucination_rate[unanswerable]": .4}
            elif task == "perplexity":
                mets = {"perplexity": 12.3}
            elif task == "lm-eval:h6":
                mets = {f"{t}/acc_norm": .5 for t in ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2",
                                                      "winogrande", "gsm8k")}
                mets.update({k + "_stderr": .02 for k in list(mets)})
                mets["h6_average"] = .5
            else:
                mets = {"accuracy": rng.random(), "consistency": .8}
            clean = {k: v for k, v in mets.items()} | {"n": 39}
            for met, v in mets.items():
                scores.append(dict(job_id=jid, model=m, task=task, metric=met, value=v, n=40,
                                   details=details_base | {"clean": clean}, overlap_share=0.025, run=run,
                                   created=T0 + timedelta(days=1, minutes=mi)))
            if task in gen_tasks:
                for k in range(ITEMS):
                    verdict = rng.choice(["correct", "wrong", "abstained", "cut off", "empty"]) if task == "qa" else \
                        rng.choice(["correct", "wrong"])
                    words = 0 if verdict == "empty" else rng.randint(5, 120)  # qa.classify's "empty": a blank reply
                    gens.append(dict(job_id=jid, model=m, task=task, prompt_id=f"{task}-{k}",
                                     prompt=f"Question {k}: what is {k} plus {k*3}? Explain step by step.",
                                     reference=str(k * 4), output=("so the answer is " * (words // 5))[:600],
                                     tokens=int(words * 1.3), words=words, answered=verdict in ("correct", "wrong"),
                                     correct=verdict == "correct", hallucination=verdict == "wrong", run=run,
                                     consistency=None, verdict=verdict,
                                     item_kind="math" if task != "qa" else rng.choice(["answerable", "unanswerable"]),
                                     overlap=0.0, judge_verdict="", truncated=verdict == "cut off"))
    ins(EvalScore, scores)
    print("scores", len(scores), "generations", len(gens), flush=True)
    ins(Generation, gens)
    del gens

    # ---- synthetic math: 100k pairs + the exported files ----------------------------------------------------------
    with eng.begin() as conn:
        path = ws / "datasets" / "synth-big" / "pairs.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        res = conn.execute(DatasetRecord.__table__.insert(), [dict(
            name="synth-big-pairs", kind="synth-pairs", path=str(path), rows=N_PAIRS,
            provenance={"rephraser": "rules", "settings": {"seeds": N_PAIRS, "rephraser": "rules"}}, created=T0)])
        ds_id = res.inserted_primary_key[0]
    pairs = []
    cats = ["arithmetic", "algebra", "fractions", "percent", "word_problem"]
    for k in range(N_PAIRS):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        q = f"What is {a} plus {b}? Give the answer as a whole number."
        s_ = f"We add {a} and {b}. {a} + {b} = {a + b}. The answer is {a + b}."
        pairs.append(dict(dataset_id=ds_id, seed_id=f"s{k}", category=rng.choice(cats), level=rng.randint(1, 3),
                          status=rng.choices(["verified", "failed", "flagged"], [8, 1, 1])[0], reason="",
                          rejected_by_hand=k % 97 == 0, question=q, solution=s_, answer=str(a + b),
                          new_question="Compute the sum: " + q, new_solution="First, " + s_ + " So we are done.",
                          new_answer=str(a + b), q_words=len(q.split()), a_words=len(s_.split()),
                          new_q_words=len(q.split()) + 3, new_a_words=len(s_.split()) + 6, overlap=0.0))
    ins(SynthPair, pairs)
    with path.open("w") as f:
        for p in pairs:
            f.write(json.dumps({"question": p["question"], "solution": p["solution"], "answer": p["answer"]}) + "\n")
    for kind, suffix in (("sft", "instruct"), ("dpo", "alignment")):
        out = path.parent / f"synth-big-{suffix}.jsonl"
        with out.open("w") as f:
            for p in pairs:
                if kind == "sft":
                    f.write(json.dumps({"instruction": p["new_question"], "output": p["new_solution"]}) + "\n")
                else:
                    f.write(json.dumps({"prompt": p["new_question"], "chosen": p["new_solution"],
                                        "rejected": p["solution"]}) + "\n")
        ins(DatasetRecord, [dict(name=f"synth-big-{suffix}", kind=kind, path=str(out), rows=N_PAIRS,
                                 provenance={"pairs": "synth-big-pairs", "include_flagged": False}, created=T0)])
    del pairs

    # ---- arena ----------------------------------------------------------------------------------------------------
    for r in range(N_ROUNDS):
        shown = rng.sample(names[:12], 2)
        with eng.begin() as conn:
            tid = conn.execute(ChatTranscript.__table__.insert(), [dict(
                prompt=f"prompt {r}", settings={"max_new_tokens": 96}, answers={m: {"text": "x " * 50, "tokens": 50,
                                                                                       "seconds": 1.0} for m in shown},
                positions=shown, blind=True, created=T0 + timedelta(minutes=r))]).inserted_primary_key[0]
            conn.execute(Vote.__table__.insert(), [dict(transcript_id=tid, model_a=shown[0], model_b=shown[1],
                                                        outcome=rng.choice("ab") if r % 5 else "tie", tokens_a=50,
                                                        tokens_b=60, position_a=0, position_b=1, blind=True,
                                                        created=T0 + timedelta(minutes=r))])

    # ---- recipe runs ------------------------------------------------------------------------------------------------
    for run_no in range(1, (2 if SMALL else 6) + 1):
        with eng.begin() as conn:
            rid = conn.execute(RecipeRun.__table__.insert(), [dict(name="solar-mini", text="name: solar-mini\n",
                                                                   created=T0)]).inserted_primary_key[0]
            stages = []
            for k, (st, kd) in enumerate([("upscaled", "upscale"), ("cpt", "cpt"), ("sft-v1", "sft"), ("sft-v2", "sft"),
                                          ("sft-v3", "sft"), ("sft-v4", "sft"), ("dpo-v1", "dpo"), ("dpo-v2", "dpo"),
                                          ("cand1", "merge"), ("eval", "eval")]):
                out = names[min(3 + k + run_no * 10, len(names) - 1)] if kd != "eval" else ""
                stages.append(dict(run_id=rid, recipe="solar-mini", stage=st, kind=kd, output=out,
                                   hash=uuid.uuid4().hex, job_id=rng.randrange(1, N_JOBS + 1), reused=False,
                                   info={"label": st, "needs": []}))
            conn.execute(RecipeStage.__table__.insert(), stages)
    print(f"seeded {ws} in {time.time() - t_start:.0f} s")


def base_weights() -> None:
    """A tiny safetensors for the built-in base, so the Build page plans an up-scale (it reads headers only)."""
    import numpy as np
    from safetensors.numpy import save_file

    from storage import db

    t = {"model.embed_tokens.weight": np.zeros((4, 4), np.float16), "model.norm.weight": np.zeros(4, np.float16),
         "lm_head.weight": np.zeros((4, 4), np.float16)}
    for i in range(30):
        for s in ("self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.down_proj.weight"):
            t[f"model.layers.{i}.{s}"] = np.zeros((4, 4), np.float16)
        t[f"model.layers.{i}.input_layernorm.weight"] = np.zeros(4, np.float16)
    save_file(t, str(db.models_dir() / "SmolLM2-135M-Instruct" / "model.safetensors"))


PAGES = ["build.py", "models.py", "synth.py", "train.py", "monitor.py", "jobs.py", "recipe.py", "compare.py",
         "arena.py"]


def time_pages(only: list[str]) -> dict[str, tuple[float, int]]:
    """{label: (seconds, SQL statements)} for every page's first run and rerun, and the main selections."""
    from sqlalchemy import event
    from streamlit.testing.v1 import AppTest

    from storage import db

    os.chdir(ROOT)
    count = {"n": 0}
    event.listen(db.engine(), "before_cursor_execute", lambda *a, **k: count.__setitem__("n", count["n"] + 1))
    out: dict[str, tuple[float, int]] = {}

    def timed(label, at, action):
        if only and not any(o in label for o in only):
            return
        count["n"] = 0
        t = time.perf_counter()
        action(at)
        out[label] = (time.perf_counter() - t, count["n"])
        if at.exception:
            out[label + " (EXCEPTION)"] = (0.0, 0)

    def page(name):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        at.run()
        at.switch_page(f"pages/{name}")
        return at

    warm = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
    warm.run()
    for name in PAGES:  # import every page's libraries once: a first visit then measures the page, not torch
        warm.switch_page(f"pages/{name}").run()
    actions = {"synth.py": "last page search", "compare.py": "clean-only toggle task qa model B = last",
               "monitor.py": "10 jobs", "models.py": "pick a base"}  # the labels timed below, by page
    for name in PAGES:
        if only and not any(o in f"{name} first run rerun {actions.get(name, '')}" for o in only):
            continue  # --only compare: the other pages' actions (and their keys) are not needed
        at = page(name)
        timed(f"{name} first run", at, lambda a: a.run())
        timed(f"{name} rerun", at, lambda a: a.run())
        if name == "synth.py":
            last = int(at.number_input(key="f_page").max)
            timed("synth.py last page", at, lambda a: a.number_input(key="f_page").set_value(last).run())
            timed("synth.py search", at, lambda a: a.text_input(key="f_search").set_value("plus 5").run())
        if name == "compare.py":
            timed("compare.py clean-only toggle", at, lambda a: a.toggle(key="clean_only").set_value(True).run())
            timed("compare.py task qa", at, lambda a: a.selectbox(key="gen_task").set_value("qa").run())
            opts = at.selectbox(key="lc_b").options
            timed("compare.py model B = last", at, lambda a: a.selectbox(key="lc_b").set_value(opts[-1]).run())
        if name == "monitor.py":
            ids = [int(o.split(" ")[0]) for o in at.multiselect(key="monitor_jobs").options][:10]
            timed("monitor.py 10 jobs", at, lambda a: a.multiselect(key="monitor_jobs").set_value(ids).run())
        if name == "models.py" and any(w.key == "model" for w in at.selectbox):
            first = at.selectbox(key="model").options[0]
            timed("models.py pick a base", at, lambda a: a.selectbox(key="model").set_value(first).run())
    return out


CLI = ["--help", "jobs list", "models list", "scores", "datasets list", "jobs show 1",
       "compare SmolLM2-135M-Instruct SmolLM2-360M-Instruct --task synth-math"]  # --help: the import floor


def time_cli(ws: str) -> dict[str, tuple[float, int]]:
    out = {}
    env = {**os.environ, "DUS_WORKSPACE": ws}
    for cmd in CLI:
        best = float("inf")
        for _ in range(3):  # the best of three: a fresh process's imports swing with the disk cache and the CPU
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "backend", *cmd.split()], cwd=ROOT, env=env,
                               capture_output=True, text=True)
            best = min(best, time.perf_counter() - t)
        out[f"cli: {cmd.split(' --')[0][:40]}" + ("" if r.returncode == 0 else " (FAILED)")] = \
            (best, len(r.stdout.splitlines()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="seed into DIR/small and DIR/big and keep them (reused when already there)")
    ap.add_argument("--only", nargs="*", default=[], help="labels containing one of these words (compare, synth…)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one seeded workspace, print JSON
    ap.add_argument("--seed", choices=["small", "big"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.seed:
        seed(a.seed == "small")
        base_weights()
        return
    if a.worker:
        print("RESULT " + json.dumps(time_pages(a.only)))
        return
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="dus-scale-"))
    results = {}
    for size in ("small", "big"):
        ws = root / size
        env = {**os.environ, "DUS_WORKSPACE": str(ws)}
        env.pop("DATABASE_URL", None)
        if not (ws / "studio.db").exists():
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--seed", size], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            print(f"seeded {size} in {time.perf_counter() - t:.0f} s: {ws}", file=sys.stderr)
        r = subprocess.run([sys.executable, __file__, "--worker", "1", "--only", *a.only], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"timing {size} failed:\n{r.stderr[-3000:]}")
        results[size] = json.loads(line[len("RESULT "):])
        if not a.only:
            results[size].update(time_cli(str(ws)))
    print(f"{'page / action':40} {'small s':>8} {'big s':>8} {'ratio':>6} {'sql (big)':>9}")
    for label, (big, n) in results["big"].items():
        small = results["small"].get(label, (float("nan"), 0))[0]
        ratio = big / small if small else float("nan")
        unit = "lines" if label.startswith("cli:") else "sql"
        print(f"{label:40} {small:8.2f} {big:8.2f} {ratio:6.1f} {n:>5} {unit}")
    print("page rows: AppTest script runs (server time); cli rows: a fresh `python -m backend` process, imports "
          "included (~0.6–1.4 s of it); the last column counts SQL statements (pages) or output lines (cli).")


if __name__ == "__main__":
    main()
