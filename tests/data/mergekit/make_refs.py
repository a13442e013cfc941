"""Reference merges made once with mergekit 0.1.5, committed for tests/test_merge.py.

Builds tiny Llama-shaped models (fixed seeds; float32 and bfloat16), runs `mergekit-yaml` for each method and
configuration below, and saves the inputs and outputs as safetensors under tests/data/mergekit/{float32,bfloat16}/
with refs.json (each configuration's mergekit YAML and the equivalent DUS Studio MergeSpec fields). Rerun it with
mergekit's own venv (never the project's: mergekit pins its own dependencies), created by bench/bench_upscale.py's
mergekit_bin():

    .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import bench_upscale as b; b.mergekit_bin()"
    bench/out/mergekit-venv/bin/python tests/data/mergekit/make_refs.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
MERGEKIT = Path(sys.executable).parent / "mergekit-yaml"
H, I, HEADS, KV, VOCAB, LAYERS = 8, 16, 2, 1, 32, 3
TIED_SIGNS = "model.layers.1.mlp.up_proj.weight"  # its first 32 entries: b - base = -(a - base) exactly

# name: (mergekit YAML without models, models {name: parameters}, base model, our MergeSpec fields)
CONFIGS = {
    "linear": ({"merge_method": "linear"}, {"a": {"weight": 0.3}, "b": {"weight": 0.7}}, None,
               {"method": "average", "weights": [0.3, 0.7]}),
    "linear_raw": ({"merge_method": "linear", "parameters": {"normalize": False}},
                   {"a": {"weight": 0.5}, "b": {"weight": 0.8}}, None,
                   {"method": "average", "weights": [0.5, 0.8], "normalize": False}),
    "slerp": ({"merge_method": "slerp", "parameters": {"t": 0.3}}, {"a": {}, "b": {}}, "a",
              {"method": "slerp", "t": 0.3}),
    # B = A + small noise: |cos| ≈ 0.9999, above mergekit's 0.9995, so it interpolates linearly
    "slerp_near": ({"merge_method": "slerp", "parameters": {"t": 0.4}}, {"a": {}, "near": {}}, "a",
                   {"method": "slerp", "t": 0.4}),
    "slerp_schedule": ({"merge_method": "slerp",
                        "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]}, {"value": 0.7}]}},
                       {"a": {}, "b": {}}, "a",
                       {"method": "slerp", "t": 0.7, "filters": {"self_attn": [0.0, 0.5, 1.0]}}),
    "task_arithmetic": ({"merge_method": "task_arithmetic"}, {"a": {"weight": 0.3}, "b": {"weight": 0.7}}, "base",
                        {"method": "task_arithmetic", "weights": [0.3, 0.7]}),
    "task_arithmetic_norm_lambda": ({"merge_method": "task_arithmetic",
                                     "parameters": {"normalize": True, "lambda": 0.8}},
                                    {"a": {"weight": 0.3}, "b": {"weight": 0.9}}, "base",
                                    {"method": "task_arithmetic", "weights": [0.3, 0.9], "normalize": True,
                                     "lambda": 0.8}),
    "ties": ({"merge_method": "ties"}, {"a": {"weight": 0.6, "density": 0.4}, "b": {"weight": 0.5, "density": 0.4}},
             "base", {"method": "ties", "weights": [0.6, 0.5], "density": 0.4}),
    "ties_raw": ({"merge_method": "ties", "parameters": {"normalize": False}},
                 {"a": {"weight": 1.0, "density": 0.6}, "b": {"weight": 1.0, "density": 0.6}}, "base",
                 {"method": "ties", "weights": [1.0, 1.0], "density": 0.6, "normalize": False}),
    "ties_rescale": ({"merge_method": "ties", "parameters": {"rescale": True}},
                     {"a": {"weight": 0.6, "density": 0.5}, "b": {"weight": 0.5, "density": 0.5}}, "base",
                     {"method": "ties", "weights": [0.6, 0.5], "density": 0.5, "rescale": True}),
    "dare_linear": ({"merge_method": "dare_linear"},
                    {"a": {"weight": 0.5, "density": 1.0}, "b": {"weight": 0.7, "density": 1.0}}, "base",
                    {"method": "dare_linear", "weights": [0.5, 0.7], "density": 1.0}),
    "dare_ties": ({"merge_method": "dare_ties"},
                  {"a": {"weight": 0.5, "density": 1.0}, "b": {"weight": 0.7, "density": 1.0}}, "base",
                  {"method": "dare_ties", "weights": [0.5, 0.7], "density": 1.0}),
    # one task vector at density 0.5: out - base = mask·delta·‖delta‖₁/‖kept‖₁ — its statistics are compared
    "dare_linear_half": ({"merge_method": "dare_linear"}, {"a": {"weight": 1.0, "density": 0.5}}, "base",
                         {"method": "dare_linear", "weights": [1.0], "density": 0.5}),
}


def shapes() -> list[tuple[str, tuple[int, ...]]]:
    kv = H // HEADS * KV
    out = [("model.embed_tokens.weight", (VOCAB, H))]
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.k_proj.weight", (kv, H)),
                (p + "self_attn.v_proj.weight", (kv, H)), (p + "self_attn.o_proj.weight", (H, H)),
                (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I)), (p + "input_layernorm.weight", (H,)),
                (p + "post_attention_layernorm.weight", (H,))]
    return out + [("model.norm.weight", (H,)), ("lm_head.weight", (VOCAB, H))]


def models(dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    base, a, b, near = {}, {}, {}, {}
    for name, shape in shapes():
        x = torch.randn(shape, generator=g) * 0.02 + (1.0 if name.endswith("norm.weight") else 0.0)
        base[name] = x.to(dtype)
        a[name] = (x + torch.randn(shape, generator=g) * 0.01).to(dtype)
        b[name] = (x + torch.randn(shape, generator=g) * 0.01).to(dtype)
        near[name] = (a[name].float() + torch.randn(shape, generator=g) * 3e-4).to(dtype)
    # exactly opposite task vectors (values exact in bf16): the weighted sign sum is 0 and elects +
    ks = torch.randint(-100, 100, (32,), generator=g).float() * 2**-10
    kd = torch.randint(1, 60, (32,), generator=g).float() * 2**-10
    for m, sign in ((base, 0), (a, 1), (b, -1)):
        flat = m[TIED_SIGNS].reshape(-1).clone()
        flat[:32] = (ks + sign * kd).to(dtype)
        m[TIED_SIGNS] = flat.view_as(m[TIED_SIGNS])
    return {"base": base, "a": a, "b": b, "near": near}


def config_json() -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
            "num_attention_heads": HEADS, "num_key_value_heads": KV, "num_hidden_layers": LAYERS,
            "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}


def main() -> None:
    manifest = {}
    for dtype, label in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        root = HERE / label
        shutil.rmtree(root, ignore_errors=True)
        for mname, state in models(dtype).items():
            (root / mname).mkdir(parents=True)
            save_file(state, root / mname / "model.safetensors", metadata={"format": "pt"})
            (root / mname / "config.json").write_text(json.dumps({**config_json(), "torch_dtype": label}, indent=1))
        for cname, (cfg, members, base, ours) in CONFIGS.items():
            doc = {**cfg, "dtype": label,
                   "models": [{"model": str(root / m), **({"parameters": p} if p else {})} for m, p in members.items()]}
            if base:
                doc["base_model"] = str(root / base)
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "c.yml").write_text(yaml.safe_dump(doc))
                subprocess.run([str(MERGEKIT), str(Path(tmp) / "c.yml"), str(Path(tmp) / "out"), "--quiet",
                                "--no-copy-tokenizer"], check=True)
                merged = {}
                for f in sorted((Path(tmp) / "out").glob("*.safetensors")):
                    merged.update(load_file(f))
            (root / f"out-{cname}").mkdir()
            save_file(merged, root / f"out-{cname}" / "model.safetensors", metadata={"format": "pt"})
            manifest[cname] = {"mergekit": {k: v for k, v in doc.items() if k not in ("models", "base_model")},
                               "models": list(members), "base": base if cfg["merge_method"] != "slerp" else None,
                               "spec": ours}
    (HERE / "refs.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {sum(f.stat().st_size for f in HERE.rglob('*.safetensors')) / 1024:.0f} KiB of safetensors")


if __name__ == "__main__":
    main()
