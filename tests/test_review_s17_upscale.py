"""Review s17 of the model-building path: per-layer config lists transformers derives, safetensors headers as the
reference reader checks them, and the reference writer's alignment."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from backend.safetensors_stream import DTYPE_SIZES, CheckpointError, OutTensor, open_checkpoint, read_header, \
    write_checkpoint
from backend.specs import SliceRange, UpscaleSpec
from backend.upscale import run_upscale
from tests.conftest import _save, load_state, make_qwen2


def make_gemma3_hub_style(tokenizer_dir: Path, out: Path, layers: int = 6) -> Path:
    """A tiny Gemma 3 text model whose config.json is written as the Hub's (google/gemma-3-1b-it) is: a
    sliding_window_pattern and no layer_types list, which transformers derives on loading."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                           sliding_window=4, query_pre_attn_scalar=8, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    _save(Gemma3ForCausalLM(cfg), tokenizer_dir, out)
    raw = json.loads((out / "config.json").read_text())
    raw.pop("layer_types")
    raw["sliding_window_pattern"] = 6
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    return out


def test_gemma3_layer_types_derived_from_the_pattern_follow_the_layer_map(tokenizer_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    base = make_gemma3_hub_style(tokenizer_dir, tmp_path / "g3")
    base_types = AutoConfig.from_pretrained(base).layer_types
    assert base_types == ["sliding_attention"] * 5 + ["full_attention"]  # every sixth layer global
    out = Path(run_upscale(UpscaleSpec(base=str(base), m=1, name="g3-dus"))["path"])
    layer_map = list(range(0, 5)) + list(range(1, 6))
    want = [base_types[i] for i in layer_map]
    # the global layer 5 lands in slot 9; before, the pattern counted from the new stack's slot 0 made slot 5
    # (layer 1, sliding) global and slot 9 (layer 5, global) sliding
    assert json.loads((out / "config.json").read_text())["layer_types"] == want
    assert AutoConfig.from_pretrained(out).layer_types == want
    model = AutoModelForCausalLM.from_pretrained(out)
    assert [layer.self_attn.layer_type for layer in model.model.layers] == want


def test_a_deeper_second_model_gives_its_own_layers_their_types(tokenizer_dir, tmp_path, tiny_qwen2):
    """Base Qwen2 (6 layers, layer_types written) and a deeper one whose config.json has no layer_types (an older
    save): the slots from the second model take its own derived types, not an index into the base's list (which
    raised IndexError past layer 5)."""
    from transformers import AutoConfig

    second = make_qwen2(tokenizer_dir, tmp_path / "q8", layers=8, seed=3)
    raw = json.loads((second / "config.json").read_text())
    raw.pop("layer_types")
    (second / "config.json").write_text(json.dumps(raw))
    second_types = AutoConfig.from_pretrained(second).layer_types  # max_window_layers 28 > 8: all full
    base_types = json.loads((tiny_qwen2 / "config.json").read_text())["layer_types"]
    spec = UpscaleSpec(base=str(tiny_qwen2), second=str(second), method="slices", name="q-mix",
                       slices=[SliceRange(source=0, start=0, end=6), SliceRange(source=1, start=5, end=8)])
    out = Path(run_upscale(spec)["path"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["layer_types"] == base_types + second_types[5:8]
    assert cfg["num_hidden_layers"] == 9
    assert torch.equal(load_state(out)["model.layers.8.mlp.down_proj.weight"],
                       load_state(second)["model.layers.7.mlp.down_proj.weight"])


def _write_raw(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _entry(dtype="F32", shape=(5,), offsets=(0, 20)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, words", [
    ({"a": _entry(), "b": _entry()}, bytes(20), "overlaps"),
    ({"a": _entry(shape=(2,), offsets=(0, 8)), "b": _entry(shape=(2,), offsets=(12, 20))}, bytes(20), "unused"),
    ({"a": _entry(shape=(-1, -5))}, bytes(20), "corrupt header entry"),
    ({"a": _entry(shape=(5.0,))}, bytes(20), "corrupt header entry"),
    ({"a": _entry(offsets=(0.0, 20.0))}, bytes(20), "corrupt header entry"),
    ({"a": _entry(shape=(True, 5))}, bytes(20), "corrupt header entry"),
], ids=["overlap", "gap", "negative-dims", "float-dim", "float-offsets", "bool-dim"])
def test_read_header_refuses_what_safetensors_refuses(tmp_path, header, data, words):
    from safetensors.torch import load_file

    path = _write_raw(tmp_path / "model.safetensors", header, data)
    with pytest.raises(Exception):  # the reference reader refuses each of these files
        load_file(path)
    with pytest.raises(CheckpointError, match=words) as info:
        read_header(path)
    assert "model.safetensors" in str(info.value) and "Re-download or re-export" in str(info.value)


def test_read_header_still_reads_zero_sized_and_unordered_entries(tmp_path):
    """Tiling is checked in offset order, not header order, and empty tensors take no bytes."""
    header = {"z": _entry(shape=(0,), offsets=(8, 8)), "b": _entry(shape=(2,), offsets=(8, 16)),
              "a": _entry(shape=(2,), offsets=(0, 8))}
    path = _write_raw(tmp_path / "model.safetensors", header, bytes(16))
    from safetensors.torch import load_file

    assert set(load_file(path)) == {"a", "b", "z"}
    got, start = read_header(path)
    assert {k: v["data_offsets"] for k, v in got.items()} == {"z": [8, 8], "b": [8, 16], "a": [0, 8]}


def test_mixed_dtype_output_is_aligned_as_the_reference_writer_aligns(tmp_path):
    """A BF16 tensor of odd length and a BOOL flag before an F32 tensor, in plan order: each output tensor must
    start at a multiple of its element size (safetensors' writer sorts by dtype for this)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = tmp_path / "src"
    src.mkdir()
    tensors = {"a.weight": torch.arange(3, dtype=torch.bfloat16), "b.flag": torch.tensor([True, False, True]),
               "c.weight": torch.arange(5, dtype=torch.float32) + 0.5, "d.weight": torch.arange(3, dtype=torch.int64)}
    save_file(tensors, src / "model.safetensors")
    refs = open_checkpoint(src)
    out = tmp_path / "out"
    out.mkdir()
    plan = [OutTensor(n, refs[n].dtype, refs[n].shape, refs[n].nbytes, refs[n]) for n in tensors]
    write_checkpoint(plan, out)
    header, start = read_header(out / "model.safetensors")
    for name, info in header.items():
        assert (start + info["data_offsets"][0]) % DTYPE_SIZES[info["dtype"]] == 0, name
    with safe_open(out / "model.safetensors", "pt") as f:
        for name, want in tensors.items():
            got = f.get_tensor(name)
            assert torch.equal(got, want) and got.data_ptr() % got.element_size() == 0, name


def test_one_dtype_output_keeps_the_plan_order(tiny_llama, tmp_path):
    """Sorting by dtype is stable: a one-dtype checkpoint keeps embeddings first and the final norm last."""
    refs = open_checkpoint(tiny_llama)
    names = list(refs)[::-1]
    out = tmp_path / "out"
    out.mkdir()
    write_checkpoint([OutTensor(n, refs[n].dtype, refs[n].shape, refs[n].nbytes, refs[n]) for n in names], out)
    header, _ = read_header(out / "model.safetensors")
    assert sorted(header, key=lambda n: header[n]["data_offsets"][0]) == names


def _tiny_opt(out: Path, *, pre_norm: bool) -> Path:
    """A tiny OPT with norms moved off 1/0, as training leaves them (a fresh LayerNorm is near-idempotent)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=300, hidden_size=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=4,
                    max_position_embeddings=128, word_embed_proj_dim=32, do_layer_norm_before=pre_norm)
    model = OPTForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(out)
    return out


def test_llama_pro_refuses_a_post_norm_model_whose_blocks_would_not_be_identities(tmp_path, workspace):
    from transformers import AutoModelForCausalLM

    from backend import registry

    ids = torch.tensor([[1, 5, 9, 22, 40]])
    pre = _tiny_opt(tmp_path / "opt-pre", pre_norm=True)
    out = Path(run_upscale(UpscaleSpec(base=str(pre), method="llama-pro", groups=2, name="opt-pre-pro"))["path"])
    with torch.no_grad():  # pre-norm (opt-125m and up): the expanded model computes what its base did
        assert torch.equal(AutoModelForCausalLM.from_pretrained(pre).eval()(ids).logits,
                           AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits)
    post = _tiny_opt(tmp_path / "opt-post", pre_norm=False)  # facebook/opt-350m's layout
    with pytest.raises(ValueError, match=r"do_layer_norm_before=false .* Use method dus or slices"):
        run_upscale(UpscaleSpec(base=str(post), method="llama-pro", groups=2, name="opt-post-pro"))
    assert registry.get("opt-post-pro") is None and not (workspace / "models" / "opt-post-pro").exists()
    # DUS does not rely on identities: the post-norm model still up-scales
    assert run_upscale(UpscaleSpec(base=str(post), m=1, name="opt-post-dus"))["layers"] == 6


def test_zeros_and_plain_copies_stream_in_bounded_blocks(tmp_path, monkeypatch):
    """A 64 MiB zero tensor (a LLaMA Pro projection) and a 64 MiB copy where the kernel cannot copy (EXDEV, as on
    an older kernel across filesystems) pass through at most a small block of memory each, and land intact."""
    import errno
    import os
    import tracemalloc

    from safetensors import safe_open
    from safetensors.torch import save_file

    src = tmp_path / "src"
    src.mkdir()
    big = torch.arange(16 << 20, dtype=torch.float32)  # 64 MiB
    save_file({"w": big}, src / "model.safetensors")
    ref = open_checkpoint(src)["w"]
    del big

    def no_kernel_copy(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    out = tmp_path / "out"
    out.mkdir()
    plan = [OutTensor("w", "F32", ref.shape, ref.nbytes, ref), OutTensor("z", "F32", ref.shape, ref.nbytes, None)]
    tracemalloc.start()
    try:
        write_checkpoint(plan, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak / 2**20:.0f} MiB held while writing 128 MiB"
    with safe_open(out / "model.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("w"), torch.arange(16 << 20, dtype=torch.float32))
        assert not f.get_tensor("z").any()


def test_layer_index_lists_name_the_new_slots(tmp_path):
    """Llama 4 text with every layer MoE: moe_layers [0..5] names layers by index. Re-mapped as per-layer values it
    became [0, 1, 2, 3, 2, 3, 4, 5], and transformers built slots 6 and 7 as dense MLPs: their experts were dropped
    and the MLP initialised at random. no_rope_layers (one flag per layer) still follows the layer map."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    torch.manual_seed(0)
    cfg = Llama4TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, intermediate_size_mlp=64,
                           num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                           max_position_embeddings=128, num_local_experts=2, interleave_moe_layer_step=1,
                           pad_token_id=0)
    base = tmp_path / "l4"
    Llama4ForCausalLM(cfg).save_pretrained(base)
    raw = json.loads((base / "config.json").read_text())
    assert raw["moe_layers"] == list(range(6))
    out = Path(run_upscale(UpscaleSpec(base=str(base), m=2, name="l4-dus"))["path"])
    new = json.loads((out / "config.json").read_text())
    layer_map = list(range(0, 4)) + list(range(2, 6))
    assert new["moe_layers"] == list(range(8))
    assert new["no_rope_layers"] == [raw["no_rope_layers"][i] for i in layer_map]
    model, info = Llama4ForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    src = load_state(base)
    assert torch.equal(model.model.layers[7].feed_forward.experts.down_proj.detach(),
                       src["model.layers.5.feed_forward.experts.down_proj"])


def test_layer_lists_tell_indices_from_flags():
    from backend.upscale import _is_layer_indices, _is_layer_list

    assert _is_layer_indices("moe_layers", [0, 1, 2, 3], 4) and not _is_layer_list("moe_layers", [0, 1, 2, 3], 4)
    assert _is_layer_indices("mlp_only_layers", [], 4) and _is_layer_indices("moe_layers", [1, 3], 4)
    flags = [1, 1, 0, 1]
    assert _is_layer_list("no_rope_layers", flags, 4) and not _is_layer_indices("no_rope_layers", flags, 4)
    assert _is_layer_list("layer_types", ["full_attention"] * 3, 3)
    assert not _is_layer_list("eos_token_id", [1, 2, 3], 3) and not _is_layer_indices("eos_token_id", [1, 2], 3)


def _tiny_fused_moe(kind: str, out: Path) -> Path:
    """Llama 4 text (routed experts plus a shared expert) or GPT-OSS, whose expert weights are fused parameters
    without ".weight"; random experts, as training leaves them (transformers initialises some to zero)."""
    import transformers as T

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=128, num_local_experts=2, pad_token_id=0)
    if kind == "llama4":
        model = T.Llama4ForCausalLM(T.Llama4TextConfig(**common, intermediate_size_mlp=64, interleave_moe_layer_step=1))
    else:
        model = T.GptOssForCausalLM(T.GptOssConfig(**common, num_experts_per_tok=2, sliding_window=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["llama4", "gpt_oss"])
def test_llama_pro_zeroes_fused_expert_projections(tmp_path, kind):
    from transformers import AutoModelForCausalLM

    base = _tiny_fused_moe(kind, tmp_path / kind)
    out = Path(run_upscale(UpscaleSpec(base=str(base), method="llama-pro", groups=2, name=f"{kind}-pro"))["path"])
    state = load_state(out)
    for slot in (2, 5):  # the identity copies after each group of two
        fused = [n for n in state if n.startswith(f"model.layers.{slot}.") and ".experts.down_proj" in n]
        assert fused and all(not state[n].any() for n in fused), fused
    ids = torch.tensor([[1, 5, 9, 22, 40]])
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(base).eval()(ids).logits,
                           AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits)


def test_minicpm_depth_scaled_residuals_keep_each_layers_contribution(tmp_path):
    """MiniCPM3 adds each branch times scale_depth / sqrt(num_hidden_layers): the deeper model's scale_depth grows
    with sqrt(s / n), so a LLaMA Pro expansion computes exactly what its base did."""
    import math

    from transformers import MiniCPM3Config, MiniCPM3ForCausalLM

    torch.manual_seed(0)
    cfg = MiniCPM3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, kv_lora_rank=16,
                         q_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, dim_model_base=16,
                         pad_token_id=0)
    base = tmp_path / "mc3"
    MiniCPM3ForCausalLM(cfg).save_pretrained(base)
    out = Path(run_upscale(UpscaleSpec(base=str(base), method="llama-pro", groups=2, name="mc3-pro"))["path"])
    new = json.loads((out / "config.json").read_text())
    assert new["scale_depth"] == pytest.approx(1.4 * math.sqrt(6 / 4))
    ids = torch.tensor([[1, 5, 9, 22, 40]])
    with torch.no_grad():
        want = MiniCPM3ForCausalLM.from_pretrained(base).eval()(ids).logits
        got = MiniCPM3ForCausalLM.from_pretrained(out).eval()(ids).logits
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_llama_pro_refuses_attention_scaled_by_layer_position(tmp_path, workspace):
    from transformers import GPT2Config, GPT2LMHeadModel

    from backend import registry

    torch.manual_seed(0)
    base = tmp_path / "g2"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=4, n_head=4, n_positions=128,
                               scale_attn_by_inverse_layer_idx=True)).save_pretrained(base)
    with pytest.raises(ValueError, match=r"scale_attn_by_inverse_layer_idx=true .* Use method dus or slices"):
        run_upscale(UpscaleSpec(base=str(base), method="llama-pro", groups=2, name="g2-pro"))
    assert registry.get("g2-pro") is None and not (workspace / "models" / "g2-pro").exists()


def test_a_second_minicpm_of_another_depth_is_refused_before_building(tmp_path):
    """MiniCPM scales each residual branch by scale_depth / sqrt(num_hidden_layers): one config holds one scale, so
    the second model's layers (another depth) added 41 % more than in their source. Refused, nothing registered."""
    import pytest
    from transformers import MiniCPM3Config, MiniCPM3ForCausalLM

    from backend import registry
    from backend.specs import SliceRange, UpscaleSpec
    from backend.upscale import MismatchError, run_upscale

    def make(out, layers, seed):
        torch.manual_seed(seed)
        cfg = MiniCPM3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                             kv_lora_rank=16, q_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                             dim_model_base=16, pad_token_id=0)
        MiniCPM3ForCausalLM(cfg).save_pretrained(out)
        return out

    base, second = make(tmp_path / "a", 4, 0), make(tmp_path / "b", 8, 1)
    spec = UpscaleSpec(base=str(base), second=str(second), method="slices", name="mix",
                       slices=[SliceRange(source=0, start=0, end=4), SliceRange(source=1, start=4, end=8)])
    with pytest.raises(MismatchError, match=r"scale their residual branches differently.*0\.7 vs 0\.495"):
        run_upscale(spec)
    assert registry.get("mix") is None
    same = UpscaleSpec(base=str(base), second=str(second), method="slices", name="mix2",
                       slices=[SliceRange(source=0, start=0, end=4), SliceRange(source=0, start=1, end=4)])
    assert json.loads((Path(run_upscale(same)["path"]) / "config.json").read_text())["num_hidden_layers"] == 7
