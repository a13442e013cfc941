"""Depth up-scaling: tensor-exact layer maps for dus / slices / llama-pro, configs, loading, generation."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from backend import registry
from backend.specs import SliceRange, UpscaleSpec
from backend.upscale import run_upscale
from tests.conftest import load_state, make_llama


def _layer_of(name: str) -> tuple[int, str] | None:
    parts = name.split(".")
    if parts[:2] == ["model", "layers"]:
        return int(parts[2]), ".".join(parts[3:])
    return None


def assert_layer_map(out: Path, sources: list[Path], expected: list[tuple[int, int]]) -> None:
    """Every output tensor equals its source tensor exactly, following `expected[i] = (source, layer)`."""
    new = load_state(out)
    srcs = [load_state(s) for s in sources]
    seen_layers = set()
    for name, tensor in new.items():
        loc = _layer_of(name)
        if loc is None:
            assert torch.equal(tensor, srcs[0][name]), name
            continue
        i, suffix = loc
        seen_layers.add(i)
        src, layer = expected[i]
        assert torch.equal(tensor, srcs[src][f"model.layers.{layer}.{suffix}"]), name
    assert seen_layers == set(range(len(expected)))
    assert set(n for n in new if _layer_of(n) is None) == set(n for n in srcs[0] if _layer_of(n) is None)


def test_dus_maps_layers_exactly_and_registers_lineage(tiny_llama):
    result = run_upscale(UpscaleSpec(base=str(tiny_llama), m=2, name="tiny-dus"))
    out = Path(result["path"])
    n, m = 6, 2
    expected = [(0, i) for i in range(0, n - m)] + [(0, i) for i in range(m, n)]
    assert_layer_map(out, [tiny_llama], expected)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 * (n - m) == result["layers"] == 8
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in load_state(out)
    rec = registry.get("tiny-dus")
    assert rec.kind == "upscaled" and rec.num_layers == 8 and rec.parents == [str(tiny_llama)]
    assert rec.recipe["m"] == 2 and rec.recipe["method"] == "dus"
    # tokenizer, chat template and generation config travel with the model; the card says how to rebuild it
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).exists(), f
    card = (out / "README.md").read_text()
    assert "s = 2·(n−m) = 8" in card and "--m 2" in card and "| 0–3 |" in card and "| 4–7 |" in card


def test_dus_model_loads_and_cached_generation_equals_uncached(tiny_llama):
    from transformers import AutoModelForCausalLM

    out = Path(run_upscale(UpscaleSpec(base=str(tiny_llama), m=1, name="gen"))["path"])
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(model.model.layers) == 10
    # copied layers must own distinct KV-cache slots (layer_idx), or cached decoding diverges
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(10))
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=2)
    uncached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=2)
    assert torch.equal(cached, uncached)
    # the up-scaled network is a different function from the base (it is deeper), not a copy
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base(ids).logits)


def test_qwen2_layer_types_follow_the_layer_map_and_untied_head_is_kept(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    out = Path(run_upscale(UpscaleSpec(base=str(tiny_qwen2), m=2, name="q"))["path"])
    src_types = json.loads((tiny_qwen2 / "config.json").read_text())["layer_types"]
    cfg = json.loads((out / "config.json").read_text())
    layer_map = list(range(0, 4)) + list(range(2, 6))
    assert cfg["layer_types"] == [src_types[i] for i in layer_map]
    assert cfg["num_hidden_layers"] == 8
    state = load_state(out)
    assert torch.equal(state["lm_head.weight"], load_state(tiny_qwen2)["lm_head.weight"])
    assert_layer_map(out, [tiny_qwen2], [(0, i) for i in layer_map])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.layer_types == cfg["layer_types"]


def test_slices_from_two_models(tiny_llama, tokenizer_dir, tmp_path):
    other = make_llama(tokenizer_dir, tmp_path / "other", seed=7)
    spec = UpscaleSpec(base=str(tiny_llama), second=str(other), method="slices", name="mix",
                       slices=[SliceRange(source=0, start=0, end=4), SliceRange(source=1, start=3, end=6),
                               SliceRange(source=0, start=5, end=6)])
    out = Path(run_upscale(spec)["path"])
    expected = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (1, 4), (1, 5), (0, 5)]
    assert_layer_map(out, [tiny_llama, other], expected)
    assert registry.get("mix").parents == [str(tiny_llama), str(other)]


def test_llama_pro_computes_exactly_what_the_base_did(tiny_llama_untied):
    from transformers import AutoModelForCausalLM

    out = Path(run_upscale(UpscaleSpec(base=str(tiny_llama_untied), method="llama-pro", groups=3,
                                       name="pro"))["path"])
    state = load_state(out)
    # groups of 2: layers 0,1,+copy(1),2,3,+copy(3),4,5,+copy(5)
    expected = [0, 1, 1, 2, 3, 3, 4, 5, 5]
    src = load_state(tiny_llama_untied)
    for i, layer in enumerate(expected):
        identity = i in (2, 5, 8)
        for suffix in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"):
            assert torch.equal(state[f"model.layers.{i}.{suffix}"], src[f"model.layers.{layer}.{suffix}"])
        for suffix in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            want = torch.zeros_like(src[f"model.layers.{layer}.{suffix}"]) if identity else \
                src[f"model.layers.{layer}.{suffix}"]
            assert torch.equal(state[f"model.layers.{i}.{suffix}"], want)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_untied).eval()
    pro = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.no_grad():
        torch.testing.assert_close(pro(ids).logits, base(ids).logits, rtol=0, atol=1e-5)


def test_sharded_output_with_index_and_bf16_preserved(tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    src = make_llama(tokenizer_dir, tmp_path / "bf16", dtype=torch.bfloat16)
    out = Path(run_upscale(UpscaleSpec(base=str(src), m=2, name="sharded", shard_size="20KB"))["path"])
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 3
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert all(t.dtype == torch.bfloat16 for t in load_state(out).values())
    assert registry.get("sharded").dtype == "BF16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 8
