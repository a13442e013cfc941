"""GPU benchmark of training through the real job path: tokens/s, MFU and peak memory of `python -m backend train
cpt|sft|dpo` (accelerate launch, the data pipeline, trl) on a TinyLlama-1.1B-shaped random model (22 layers) and its
DUS up-scaled version (m=5 -> 34 layers), beside a plain bf16 PyTorch loop on the same model in the same run.

    python bench/gpu_train_mfu.py --budget-s 420 --out OUT   # a CUDA machine (scripts/device_gpu_bench.sh)
    python bench/gpu_train_mfu.py --tiny                      # the same code on a CPU, tiny shapes, a few minutes

Rows: each job's tokens/s is the median of its metrics.jsonl `tokens_per_s` after the warm-up steps, its peak
memory the job's summary.json `peak_memory_gib` (CUDA: torch.cuda.max_memory_allocated; CPU: peak RSS). MFU counts
6·N (N without the input embedding) plus 12·L·d·s attention FLOPs per token (backend/perf.py) over the datasheet
bf16 peak. DPO runs twice: ours (backend/perf.py's auto: the reference scored once before training) and trl's
defaults (a reference forward every step, activation checkpointing, no compile). Beside each job: the memory plan's
estimate (backend/memplan/, when present). Then the cancel check: a job queued through the runner and run by a
worker is cancelled mid-training; GPU memory in use (nvidia-smi) must return to its level before the job and no
training process may remain. Exit 1 when an estimate is off by more than 15 % (CUDA) or the cancel leaves memory
or processes behind. --budget-s skips (and names) what would not fit in the time left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {  # TinyLlama-1.1B (https://huggingface.co/TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T)
    "full": dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
                 vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ model, tokenizer and data

def make_tokenizer(vocab: int, out: Path) -> None:
    """One token per word: a WordLevel vocabulary of `vocab` entries (w0, w1, …) with a ChatML template, so a row of
    K random words is K tokens and every sequence can be made exactly full."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import CHATML  # the test fixtures' ChatML template

    words = {t: i for i, t in enumerate(SPECIALS)}
    words.update({f"w{i}": i for i in range(len(SPECIALS), vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    fast.save_pretrained(out)


def make_model(shape: dict, layers: int, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=4096, tie_word_embeddings=False,
                      bos_token_id=2, eos_token_id=3, pad_token_id=1, **shape)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # random init on the GPU: seconds instead of a minute for 1.1B on a CPU
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    GenerationConfig(eos_token_id=3, pad_token_id=1, max_new_tokens=8).save_pretrained(out)
    make_tokenizer(shape["vocab_size"], out)
    del model
    if device == "cuda":  # this process stays alive through the cancel check: hold no cached blocks
        torch.cuda.empty_cache()


def words(rng: random.Random, vocab: int, n: int) -> str:
    return " ".join(f"w{rng.randrange(len(SPECIALS), vocab)}" for _ in range(n))


def write_data(folder: Path, vocab: int, seq: int, rows: int) -> dict[str, Path]:
    """Rows that fill every sequence: cpt text of `seq` words; sft prompt + completion just under `seq` tokens with
    the template; dpo prompt + chosen/rejected likewise (DPO's max_length covers prompt + completion)."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f"{k}.jsonl" for k in ("cpt", "sft", "dpo")}
    template = 10  # the ChatML tokens around two turns
    prompt = seq // 8
    with open(paths["cpt"], "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": words(rng, vocab, seq)}) + "\n")
    with open(paths["sft"], "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": words(rng, vocab, prompt),
                                "completion": words(rng, vocab, seq - prompt - template)}) + "\n")
    with open(paths["dpo"], "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": words(rng, vocab, prompt),
                                "chosen": words(rng, vocab, seq - prompt - template),
                                "rejected": words(rng, vocab, seq - prompt - template)}) + "\n")
    return paths


# ------------------------------------------------------------------ running jobs

def cli(env: dict, *args: str, log_to: Path | None = None, check: bool = True) -> str:
    proc = subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if log_to:
        log_to.write_text(proc.stdout)
    if check and proc.returncode:
        raise RuntimeError(f"python -m backend {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


def train_argv(spec, yaml_dir: Path) -> list[str]:
    """`python -m backend train KIND …` when the spec is the CLI's (default perf options); otherwise the spec as
    YAML through `python -m backend run` (every field, as the UI saves it)."""
    from backend.specs import PerfOptions

    plain = spec.perf == PerfOptions() and not spec.gradient_checkpointing and \
        getattr(spec, "precompute_ref_log_probs", None) is None
    if plain:
        return ["train", spec.kind, "--model", spec.model, "--data", spec.data[0].source, "--name", spec.name,
                "--max-steps", str(spec.max_steps), "--batch-size", str(spec.batch_size), "--max-length",
                str(spec.max_length), "--save-steps", str(spec.save_steps), "--eval-fraction", "0",
                "--learning-rate", str(spec.learning_rate)] + \
            (["--max-rows", str(spec.max_rows)] if spec.max_rows else [])
    path = yaml_dir / f"{spec.name}.yaml"
    path.write_text(spec.to_yaml())
    return ["run", str(path)]


def memplan_gib(spec, model_path: Path) -> float:
    """The memory plan's estimate (backend/memplan/) of the peak the job allocates, as the job runs it here;
    a DPO spec's rows are max_rows (the bench writes more), which decides precompute "auto"."""
    from backend import memplan

    rows = spec.max_rows if spec.kind == "dpo" else None
    return memplan.plan_for_spec(spec, model_path, train_rows=rows).total_bytes / 2**30


def run_job(env: dict, spec, model_path: Path, work: Path, warmup: int) -> dict:
    t0 = time.time()
    out = cli(env, *train_argv(spec, work), log_to=work / "logs" / f"{spec.name}.log")
    m = re.search(r"^run_dir: (.+)$", out, re.M)
    run_dir = Path(m.group(1))
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][warmup:]
    summary = json.loads((run_dir / "summary.json").read_text())
    mfu = [r["mfu"] for r in rows if "mfu" in r][warmup:]
    return {"tokens_per_s": statistics.median(rates) if rates else float("nan"),
            "job_mfu": statistics.median(mfu) if mfu else None, "peak_gib": summary.get("peak_memory_gib"),
            "estimate_gib": memplan_gib(spec, model_path), "seconds": time.time() - t0, "perf": summary.get("perf")}


def plain_loop(folder: str, batch: int, seq: int, steps: int, warmup: int, compile_: bool) -> dict:
    """The peer: the same model in bf16 (float32 on a CPU), AdamW (fused), random full rows, no framework."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    step = torch.compile(model) if compile_ else model
    ids = torch.randint(len(SPECIALS), model.config.vocab_size, (batch, seq), device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for i in range(steps + warmup):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        step(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"tokens_per_s": batch * seq * steps / (time.perf_counter() - t0), "peak_gib": peak}


def run_plain(env: dict, folder: Path, a, compile_: bool) -> dict:
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--plain-loop", str(folder), "--batch", str(a.batch),
                          "--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup)]
                         + (["--compile"] if compile_ else []), env=env, text=True, capture_output=True)
    if out.returncode:
        raise RuntimeError(f"plain loop failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "estimate_gib": None, "seconds": time.time() - t0}


# ------------------------------------------------------------------ the cancel check

def gpu_used_mib() -> int | None:
    """GPU memory in use on device 0 as nvidia-smi reports it (all processes); None without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else None


def training_pids(run_dir: Path) -> list[int]:
    """Processes whose command line runs train_entry on this run folder (the job's accelerate children)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "backend.train_entry" in cmd and str(run_dir) in cmd:
                pids.append(int(p.name))
    return pids


def cancel_check(env: dict, model: str, data: Path, a, work: Path) -> dict:
    """Queue a long cpt job, let a worker run it to its second logged step, cancel it, and watch memory return."""
    from backend.specs import CptSpec, DataSource

    before = gpu_used_mib()
    worker = subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.5"], cwd=ROOT, env=env,
                              stdout=open(work / "logs" / "worker.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        spec = CptSpec(model=model, data=[DataSource(source=str(data))], max_steps=100000, batch_size=a.batch,
                       max_length=a.seq, save_steps=10**6, eval_fraction=0.0, name="cancelled")
        out = cli(env, *train_argv(spec, work), "--queue")
        job = int(re.search(r"queued job (\d+)", out).group(1))
        run_dir = Path(env["DUS_WORKSPACE"]) / "runs" / f"job-{job}"
        deadline = time.time() + a.cancel_wait_s
        while time.time() < deadline:
            metrics = run_dir / "metrics.jsonl"
            if metrics.exists() and sum(1 for _ in open(metrics)) >= 2:
                break
            time.sleep(0.5)
        else:
            return {"ok": False, "note": f"job {job} logged no second step within {a.cancel_wait_s} s"}
        during, pids = gpu_used_mib(), training_pids(run_dir)
        t_cancel = time.time()
        status = cli(env, "jobs", "cancel", str(job)).strip()
        after, left = during, pids
        while time.time() - t_cancel < 60:  # the killed processes' memory is released when the driver reaps them
            left, after = [p for p in training_pids(run_dir)], gpu_used_mib()
            if not left and (before is None or after <= before + 256):
                break
            time.sleep(0.5)
        released = time.time() - t_cancel
        ok = not left and (before is None or after <= before + 256)
        return {"ok": ok, "before": before, "during": during, "after": after, "released_s": released,
                "pids": len(pids), "left": left, "status": status}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the median (compilation, allocation)")
    ap.add_argument("--batch", type=int, default=8, help="micro-batch (sequences); DPO uses half (two per pair)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--peak", type=float, help="bf16 dense peak FLOP/s (default: backend/perf.py's table)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new rows when they would not fit")
    ap.add_argument("--cancel-wait-s", type=float, default=300)
    ap.add_argument("--out", help="folder for table.txt, results.json and the job logs")
    ap.add_argument("--keep", help="build the workspace here and keep it (e.g. for bench_eval --model)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on a CPU: checks the code path, no real numbers")
    ap.add_argument("--plain-loop", help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.plain_loop:  # the subprocess that runs the peer loop (its own process: memory returned on exit)
        print(json.dumps(plain_loop(a.plain_loop, a.batch, a.seq, a.steps, a.warmup, a.compile)))
        return 0
    if a.tiny:
        a.batch, a.seq, a.steps, a.warmup = 2, 128, 3, 1
    start = time.time()
    import torch

    from backend import perf
    from backend.specs import CptSpec, DataSource, DpoSpec, PerfOptions, SftSpec

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "CPU"
    peak = a.peak or (perf.gpu_peak_flops(device) if cuda else None)
    shape = SHAPES["tiny" if a.tiny else "full"]
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="gpu-train-mfu-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out_dir = Path(a.out) if a.out else work
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DUS_WORKSPACE": str(work / "workspace"), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
        "TOKENIZERS_PARALLELISM": "false"}
    env.pop("DATABASE_URL", None)
    log(f"{device}; peak {peak or 'unknown'}; batch {a.batch} x seq {a.seq}; workspace {work}")

    base = work / "tinyllama"
    make_model(shape, 22, base)
    cli(env, "models", "import", str(base), "--name", "tinyllama")
    cli(env, "upscale", "--base", "tinyllama", "--m", "5", "--name", "tinyllama-dus")
    dus = work / "workspace" / "models" / "tinyllama-dus"
    folders = {22: base, 34: dus}
    rows = a.batch * (a.steps + a.warmup + 1)
    data = write_data(work / "data", shape["vocab_size"], a.seq, rows)
    log(f"models and data ready in {time.time() - start:.0f} s")

    def spec(kind: str, layers: int, label: str, **over):
        cls = {"cpt": CptSpec, "sft": SftSpec, "dpo": DpoSpec}[kind]
        batch = max(1, a.batch // 2) if kind == "dpo" else a.batch
        fields = dict(model="tinyllama" if layers == 22 else "tinyllama-dus", data=[DataSource(source=str(data[kind]))],
                      max_steps=a.steps + a.warmup + 1, batch_size=batch, max_length=a.seq, save_steps=10**6,
                      eval_fraction=0.0, name=f"{kind}-{layers}-{label}", learning_rate=1e-5)
        if kind == "dpo":  # exactly as many pairs as the run uses: auto precomputes the reference
            fields["max_rows"] = batch * fields["max_steps"]
        return cls(**{**fields, **over})

    trl_defaults = dict(perf=PerfOptions(compile="off", liger=False), gradient_checkpointing=True,
                        precompute_ref_log_probs=False)
    plan = [  # in order of what the issue needs most; the budget cuts from the end
        ("job", 22, "cpt", "dus-studio", spec("cpt", 22, "ours")),
        ("plain", 22, "cpt", "plain bf16 loop", False),
        ("job", 22, "dpo", "dus-studio", spec("dpo", 22, "ours")),
        ("job", 22, "dpo", "trl defaults", spec("dpo", 22, "trl", **trl_defaults)),
        ("cancel", 22, "cpt", "cancel check", None),
        ("job", 34, "cpt", "dus-studio", spec("cpt", 34, "ours")),
        ("plain", 34, "cpt", "plain bf16 loop", False),
        ("job", 22, "sft", "dus-studio", spec("sft", 22, "ours")),
        ("plain", 22, "cpt", "plain loop compiled", True),
        ("job", 22, "cpt", "ours, liger off", spec("cpt", 22, "noliger", perf=PerfOptions(liger=False))),
        ("job", 22, "cpt", "ours, compile off", spec("cpt", 22, "nocompile", perf=PerfOptions(compile="off"))),
        ("job", 34, "sft", "dus-studio", spec("sft", 34, "ours")),
        ("job", 34, "dpo", "dus-studio", spec("dpo", 34, "ours")),
        ("plain", 34, "cpt", "plain loop compiled", True),
    ]
    results, skipped, cancel = [], [], None
    if a.tiny:  # inductor on a CPU compiles for minutes; the code path is the same as on CUDA
        skipped += [f"{p[1]} {p[2]} {p[3]} (--tiny: torch.compile on a CPU takes minutes)" for p in plan
                    if p[0] == "plain" and p[4]]
        plan = [p for p in plan if not (p[0] == "plain" and p[4])]
    longest = {"job": 0.0, "plain": 0.0, "cancel": 0.0}
    for what, layers, kind, label, arg in plan:
        left = a.budget_s - (time.time() - start)
        guess = longest[what] or longest["job"]  # the slowest of its sort so far
        if guess > left:
            skipped.append(f"{layers} {kind} {label} (about {guess:.0f} s, {left:.0f} s left)")
            continue
        log(f"{layers} layers, {kind}, {label} ...")
        t0 = time.time()
        try:
            if what == "job":
                r = run_job(env, arg, folders[layers], work, a.warmup)
            elif what == "plain":
                r = run_plain(env, folders[layers], a, arg)
            else:
                a.cancel_wait_s = min(a.cancel_wait_s, max(60.0, left))  # waiting for step 2 stays in budget
                cancel = cancel_check(env, "tinyllama", data["cpt"], a, work)
                r = None
        except Exception as e:  # one failing row must not lose the others: say which and why
            r = {"error": str(e)[-800:]}
            log(f"failed: {e}")
        longest[what] = max(longest[what], time.time() - t0)
        if r is not None:
            fpt = perf.flops_per_token(_config(folders[layers]), _params(folders[layers]), a.seq)
            if what == "job" and kind == "dpo" and getattr(arg, "precompute_ref_log_probs", None) is False:
                # trl's default: the frozen reference's forward on every step's tokens, compute the GPU did (the
                # precomputed run's pass comes before training, outside the tokens/s window: its own job line)
                fpt += perf.forward_flops_per_token(_config(folders[layers]), _params(folders[layers]), a.seq)
            r.update(layers=layers, kind=kind, path=label, mfu=r["tokens_per_s"] * fpt / peak
                     if peak and "tokens_per_s" in r else None)
            results.append(r)
        write_out(out_dir, results, cancel, skipped, device, a)  # after every row: a run cut short keeps its rows

    print(write_out(out_dir, results, cancel, skipped, device, a))
    if out_dir != work:
        shutil.copytree(work / "logs", out_dir / "logs", dirs_exist_ok=True)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    bad_estimate = [r for r in results if cuda and r.get("estimate_gib") and r.get("peak_gib")
                    and abs(r["estimate_gib"] / r["peak_gib"] - 1) > 0.15]
    failed = [r for r in results if "error" in r]
    return 1 if bad_estimate or failed or (cancel is not None and not cancel["ok"]) else 0


def write_out(out_dir: Path, results, cancel, skipped, device, a) -> str:
    table = render(results, cancel, skipped, device, a)
    (out_dir / "table.txt").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"device": device, "rows": results, "cancel": cancel,
                                                      "skipped": skipped}, indent=2, default=str))
    return table


def _config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def _params(folder: Path) -> int:
    from safetensors import safe_open

    n = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                n += _numel(s.get_slice(k).get_shape())
    return n


def _numel(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render(results: list[dict], cancel: dict | None, skipped: list[str], device: str, a) -> str:
    lines = [f"{device}; micro-batch {a.batch} (DPO {max(1, a.batch // 2)} pairs) x seq {a.seq}; median tokens/s "
             f"over {a.steps} steps after {a.warmup} warm-up",
             f"{'layers':>6} {'kind':4} {'path':22} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} {'est. GiB':>9} "
             f"{'error %':>8} {'wall s':>7}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['layers']:6d} {r['kind']:4} {r['path']:22} FAILED: {r['error'][-200:]!r}")
            continue
        est, pk = r.get("estimate_gib"), r.get("peak_gib")
        err = f"{(est / pk - 1) * 100:+8.1f}" if est and pk else f"{'n/a':>8}"
        mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else f"{'n/a':>6}"
        lines.append(f"{r['layers']:6d} {r['kind']:4} {r['path']:22} {r['tokens_per_s']:10.0f} {mfu} "
                     f"{_num(pk):>9} {_num(est):>9} {err} {r['seconds']:7.0f}")
    ours = {(r["layers"], r["kind"]): r for r in results if r.get("path") == "dus-studio" and "error" not in r}
    for r in results:
        peer = ours.get((r["layers"], r["kind"]))
        if peer and r is not peer and "error" not in r:
            lines.append(f"ratio {r['layers']} {r['kind']}: dus-studio / {r['path']} = "
                         f"{peer['tokens_per_s'] / r['tokens_per_s']:.2f}x")
    if cancel is not None:
        mem = (f"GPU memory used {cancel.get('before')} MiB before, {cancel.get('during')} during, "
               f"{cancel.get('after')} after" if cancel.get("before") is not None else "no GPU: processes only")
        lines.append(f"cancel check: {'ok' if cancel['ok'] else 'FAILED'}: {cancel.get('note') or ''}{mem}; "
                     f"{cancel.get('pids', 0)} training processes, {len(cancel.get('left') or [])} left after "
                     f"{cancel.get('released_s', 0):.1f} s ({cancel.get('status', '')})")
    lines += [f"skipped (budget): {s}" for s in skipped]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
