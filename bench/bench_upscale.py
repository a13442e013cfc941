"""Benchmark: streaming depth up-scaling against the copy floor and mergekit's passthrough merge.

    .venv/bin/python bench/bench_upscale.py                 # 1.1B bf16 TinyLlama shapes, 22 -> 34 layers (m=5)
    .venv/bin/python bench/bench_upscale.py --scale 4       # also a model 4x larger (88 layers), ours and cp only

A synthetic checkpoint with TinyLlama's shapes (hidden 2048, intermediate 5632, 32 heads, 4 KV heads, vocab 32000)
is written once as sharded bf16 safetensors under bench/out/. Each tool then runs in its own process under
`/usr/bin/time` (wall time, peak RSS): `cp -r` of the input and `cp -r` of a finished up-scaled model (the
floor: the output's bytes must be written at least once), `python -m backend upscale` (process start included), and mergekit 0.1.5 (`mergekit-yaml`, passthrough, `--out-shard-size 1B`) installed
in a separate venv (bench/out/mergekit-venv, created on first use). Each round's outputs of ours and mergekit are
compared tensor by tensor, every tensor; the bench exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
SHAPES = dict(hidden=2048, inter=5632, heads=32, kv=4, vocab=32000)


def make_checkpoint(folder: Path, layers: int, seed: int = 0) -> Path:
    """TinyLlama-shaped random bf16 checkpoint, sharded at ~1 GB, with an index; written once and reused."""
    import torch
    from safetensors.torch import save_file

    if (folder / "config.json").exists():
        if not (folder / "tokenizer.json").exists():  # one written before the up-scale needed a tokenizer
            write_tokenizer(folder)
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    h, i, kv_dim = SHAPES["hidden"], SHAPES["inter"], SHAPES["hidden"] // SHAPES["heads"] * SHAPES["kv"]
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    tensors: list[tuple[str, tuple]] = [("model.embed_tokens.weight", (SHAPES["vocab"], h))]
    for n in range(layers):
        p = f"model.layers.{n}."
        tensors += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv_dim, h)),
                    (p + "self_attn.v_proj.weight", (kv_dim, h)), (p + "self_attn.o_proj.weight", (h, h)),
                    (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                    (p + "mlp.down_proj.weight", (h, i)), (p + "input_layernorm.weight", (h,)),
                    (p + "post_attention_layernorm.weight", (h,))]
    tensors += [("model.norm.weight", (h,)), ("lm_head.weight", (SHAPES["vocab"], h))]
    shard: dict = {}
    size = total = 0
    weight_map: dict[str, str] = {}
    names: list[list[str]] = []

    def flush() -> None:  # one shard in memory at a time; renamed to -of-N once N is known
        fname = f"shard-{len(names):05d}.safetensors"
        save_file(shard, tmp / fname, metadata={"format": "pt"})
        names.append(list(shard))

    for name, shape in tensors:
        t = rnd(*shape)
        shard[name] = t
        size += t.numel() * 2
        total += t.numel() * 2
        if size > 1_000_000_000:
            flush()
            shard, size = {}, 0
    if shard:
        flush()
    for k, shard_names in enumerate(names):
        fname = f"model-{k + 1:05d}-of-{len(names):05d}.safetensors"
        (tmp / f"shard-{k:05d}.safetensors").rename(tmp / fname)
        weight_map.update({n: fname for n in shard_names})
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
              "intermediate_size": i, "num_attention_heads": SHAPES["heads"], "num_key_value_heads": SHAPES["kv"],
              "num_hidden_layers": layers, "vocab_size": SHAPES["vocab"], "rms_norm_eps": 1e-5,
              "max_position_embeddings": 2048, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(tmp)
    tmp.rename(folder)
    return folder


def write_tokenizer(folder: Path) -> None:
    """A small word-level tokenizer (its tokens well under the vocabulary): `python -m backend upscale` refuses a
    folder without one, as an import does, since the model it would register could not be trained or chatted with."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", *(f"w{k}" for k in range(61))]
    tok = Tokenizer(WordLevel({w: k for k, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(folder)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command, measured by GNU time in a process of its own."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        r = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", f.name, *cmd], env={**os.environ, **(env or {})},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr[-2000:]}")
        wall, rss_kb = f.read().split()[-2:]
    return float(wall), int(rss_kb) / 1024


def mergekit_bin() -> Path:
    venv = OUT / "mergekit-venv"
    exe = venv / "bin" / "mergekit-yaml"
    if not exe.exists():
        print("installing mergekit 0.1.5 into bench/out/mergekit-venv (one time)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "torch==2.13.0", "mergekit==0.1.5"], check=True)
    return exe


def run_ours(src: Path, m: int, dst: Path) -> tuple[float, float]:
    ws = Path(tempfile.mkdtemp(dir=OUT, prefix="ws-"))
    try:
        return timed([sys.executable, "-m", "backend", "upscale", "--base", str(src), "--m", str(m), "--out",
                      str(dst), "--name", "bench", "--shard-size", "1GB"], env={"DUS_WORKSPACE": str(ws)})
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def run_mergekit(src: Path, n: int, m: int, dst: Path) -> tuple[float, float]:
    cfg = OUT / "passthrough.yml"
    cfg.write_text(f"""slices:
  - sources:
      - model: {src}
        layer_range: [0, {n - m}]
  - sources:
      - model: {src}
        layer_range: [{m}, {n}]
merge_method: passthrough
dtype: bfloat16
""")
    return timed([str(mergekit_bin()), str(cfg), str(dst), "--out-shard-size", "1B", "--quiet"])


def differing_tensors(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ between two safetensors folders: every tensor, and a name only one holds."""
    import torch
    from safetensors import safe_open

    def handles(folder: Path) -> dict:
        return {n: h for h in (safe_open(f, "pt") for f in sorted(folder.glob("*.safetensors"))) for n in h.keys()}

    ha, hb = handles(a), handles(b)
    return sorted(set(ha) ^ set(hb)) + [n for n in sorted(set(ha) & set(hb))
                                        if not torch.equal(ha[n].get_tensor(n), hb[n].get_tensor(n))]


def bench(layers: int, m: int, with_mergekit: bool, reps: int) -> list[dict]:
    """Tools run interleaved, `reps` rounds, after a `sync` each (the disk here is noisy); medians reported."""
    import statistics

    src = make_checkpoint(OUT / f"synthetic-{layers}L", layers)
    subprocess.run(["cat", *map(str, src.glob("*.safetensors"))], stdout=subprocess.DEVNULL)  # warm the page cache
    size = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
    reference = OUT / f"reference-{layers}L"  # an up-scaled copy: `cp` of it writes exactly the bytes we must
    if not reference.exists():
        run_ours(src, m, reference)
    tools = [("cp -r input", lambda d: timed(["cp", "-r", str(src), str(d)])),
             ("cp -r output", lambda d: timed(["cp", "-r", str(reference), str(d)])),
             ("dus-studio", lambda d: run_ours(src, m, d))]
    if with_mergekit:
        tools.append(("mergekit 0.1.5", lambda d: run_mergekit(src, layers, m, d)))
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in tools}
    # this round's outputs of ours and mergekit, kept to be compared: mergekit's was compared with `reference`, an
    # up-scale an earlier run (or an earlier version of the code) left, so a wrong output of this run passed
    kept = {"dus-studio": OUT / "out-dus-studio", "mergekit 0.1.5": OUT / "out-mergekit"} if with_mergekit else {}
    for _ in range(reps):
        for label, fn in tools:
            dst = OUT / "dst"
            shutil.rmtree(dst, ignore_errors=True)
            subprocess.run(["sync"])
            results[label].append(fn(dst))
            if label in kept:
                shutil.rmtree(kept[label], ignore_errors=True)
                dst.rename(kept[label])
        if kept:
            differ = differing_tensors(*kept.values())
            if differ:
                print(f"FAIL: dus-studio and mergekit outputs differ in {len(differ)} tensors: {differ[:5]} (both kept: "
                      f"{kept['dus-studio']}, {kept['mergekit 0.1.5']})")
                sys.exit(1)
    for d in (OUT / "dst", *kept.values()):
        shutil.rmtree(d, ignore_errors=True)
    return [{"model": f"{layers}L {size:.1f} GB", "tool": label,
             "wall_s": statistics.median(w for w, _ in runs), "peak_rss_mib": max(r for _, r in runs)}
            for label, runs in results.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=0, help="also run a model this many times larger (ours, cp)")
    ap.add_argument("--reps", type=int, default=3, help="runs per tool; the median is reported")
    ap.add_argument("--no-mergekit", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = bench(22, 5, not a.no_mergekit, a.reps)
    if a.scale:
        rows += bench(22 * a.scale, 5 * a.scale, False, 1)
    floor = {r["model"]: r["wall_s"] for r in rows if r["tool"] == "cp -r output"}
    ours = {r["model"]: r for r in rows if r["tool"] == "dus-studio"}
    print("\nmedian wall time; floor = cp -r of a finished up-scaled model (the same bytes written)")
    print(f"{'model':14} {'tool':16} {'wall s':>8} {'× floor':>8} {'peak RSS MiB':>13} {'÷ dus-studio':>13}")
    for r in rows:
        o = ours[r["model"]]
        print(f"{r['model']:14} {r['tool']:16} {r['wall_s']:8.2f} {r['wall_s'] / floor[r['model']]:8.2f} "
              f"{r['peak_rss_mib']:13.0f} {r['wall_s'] / o['wall_s']:12.2f}×")


if __name__ == "__main__":
    main()
