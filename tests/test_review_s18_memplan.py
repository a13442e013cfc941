"""Review s18 of the memory plan (backend/memplan/) against the published formulas and the libraries' code: a
remote-code config never prompts or runs, peft's LoRA on Conv1D models (GPT-2), the HF Trainer's 32-bit states for
embeddings under bitsandbytes' 8-bit AdamW, DeepSpeed's float32 gradient partition at the step, and Llama-2-7B worked
by hand (ZeRO paper: 2 + 2 + 12 bytes a parameter)."""

from __future__ import annotations

import builtins
import inspect
import json

import pytest

from backend import memplan
from backend.memplan import GiB, Setup, estimate, shape_from_config

LLAMA2_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}
GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000, "n_positions": 128,
        "bos_token_id": 0, "eos_token_id": 0}
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}


def _bnb(n: int) -> int:
    """bitsandbytes' blockwise 8-bit AdamW state bytes of one tensor of n values (32-bit under 4096 values)."""
    return 2 * n + 2 * 4 * -(-n // 256) if n >= 4096 else 8 * n


def test_a_remote_code_config_is_refused_without_a_prompt_or_its_code(tmp_path, monkeypatch):
    """Before: AutoConfig.from_pretrained without trust_remote_code asked on a terminal ("Do you wish to run the
    custom code? [y/N]", `train --plan`), and a "y" ran the folder's configuration module."""
    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "s18_mystery_lm", "auto_map": {"AutoConfig": "configuration_mystery.MysteryConfig"}}))
    (folder / "configuration_mystery.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass MysteryConfig(PretrainedConfig):\n"
        "    model_type = 's18_mystery_lm'\n")
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "y")  # a terminal's "y"
    with pytest.raises(memplan.NotModelled, match="does not run a model's code"):
        memplan.load_shape(folder)
    assert asked == [] and not marker.exists()


def test_gpt2_lora_counts_conv1d_layers_as_peft_does():
    """Before: only nn.Linear was a linear: GPT-2's LoRA counted 0 trainable parameters and target_modules
    "c_attn" raised PlanError, which check_memory turns into a refused job."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = shape_from_config(GPT2)
    cfg = dict(GPT2)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    for targets in ("all-linear", "c_attn", "c_attn,c_fc"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(
            r=8, target_modules=targets if targets == "all-linear" else targets.split(","), task_type="CAUSAL_LM"))
        assert shape.lora_params(8, targets) == model.get_nb_trainable_parameters()[0] > 0, targets
    # c_attn: 64 inputs, 192 outputs (q, k, v) in each of the 2 layers
    assert shape.lora_params(8, "c_attn") == 2 * 8 * (64 + 192)
    plan = estimate(shape, Setup(batch=1, seq=64, lora_r=8))
    assert plan.trainable == shape.lora_params(8) and plan.components["gradients"] == 4 * plan.trainable


def _split_sizes(cfg: dict) -> tuple[int, list[int]]:
    """(values in nn.Embedding modules, numel of every other parameter) of the model built on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(cfg)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
    model.tie_weights()
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    params = list(model.parameters())
    return (sum(p.numel() for p in params if id(p) in embedded),
            [p.numel() for p in params if id(p) not in embedded])


def test_8bit_adamw_keeps_embeddings_32_bit_as_the_hf_trainer_does():
    """transformers' Trainer registers {"optim_bits": 32} for every nn.Embedding's weight under a bitsandbytes 8-bit
    optimizer; before, the plan gave the embeddings 8-bit states (Llama-2-7B: 0.78 GB too few)."""
    from transformers import Trainer

    source = inspect.getsource(Trainer.create_optimizer)
    assert "register_module_override" in source and "nn.Embedding" in source and '"optim_bits": 32' in source
    for cfg in (TINY, {**TINY, "tie_word_embeddings": True}, LLAMA2_7B):
        embed, others = _split_sizes(cfg)
        assert embed == cfg["vocab_size"] * cfg["hidden_size"]
        plan = estimate(shape_from_config(cfg), Setup(batch=1, seq=16, optimizer="adamw_8bit"))
        assert plan.components["optimizer"] == 8 * embed + sum(_bnb(n) for n in others), cfg
    # Llama-2-7B: 131,072,000 embedding values at 8 bytes, the other 6,607,343,616 at 2 + 8/256
    assert sum(others) == 6_607_343_616
    assert 41.4e9 < plan.components["weights"] + plan.components["gradients"] + plan.components["optimizer"] < 41.5e9


def test_8bit_lora_states_are_per_adapter_tensor():
    """bitsandbytes decides per tensor: each LoRA A (r × in) and B (out × r) under 4096 values keeps 32-bit states.
    Before, the adapters counted as one tensor of every trainable value, all 8-bit."""
    shape = shape_from_config(TINY)
    plan = estimate(shape, Setup(batch=1, seq=16, lora_r=8, optimizer="adamw_8bit"))
    expected = sum(_bnb(8 * i) + _bnb(o * 8) for _, i, o in shape.lora_targets())
    assert plan.components["optimizer"] == expected == 8 * plan.trainable  # every tensor here is under 4096 values


def _total(plan: memplan.MemoryPlan, step: int) -> int:
    """weights + reference + optimizer + the larger of (activations, gradients + the step's temporaries)."""
    c = plan.components
    return c["weights"] + c["reference"] + c["optimizer"] + max(c["activations"], c["gradients"] + step)


def test_deepspeed_step_counts_the_float32_gradient_partition():
    """DeepSpeed casts the local gradient partition to float32 for the step (ZeRO-3: one sub-group of at most 1e9
    values at a time); its estimate_zero3_model_states_mem_needs counts 18Ψ/n. Before, the plan's gradient phase
    had the bfloat16 gradients alone (16Ψ/n at most)."""
    shape = shape_from_config(LLAMA2_7B)
    psi = shape.params
    for sharding, n, fp32 in (("zero1", 8, 4 * psi // 8), ("zero2", 8, 4 * psi // 8), ("zero3", 8, 4 * (psi // 8)),
                              ("zero3", 2, 4 * 10 ** 9)):  # 3.37e9 values a GPU: a 1e9 sub-group at a time
        plan = estimate(shape, Setup(batch=1, seq=16, sharding=sharding, gpus=n))
        assert plan.components["gradients"] + fp32 > plan.components["activations"]  # the step is the peak
        # ZeRO-1/2 gather nothing; ZeRO-3's gathered layers are in the activations column and in the step alike
        gathered = 0 if sharding != "zero3" else 2 * shape.layer_params * 2 + shape.layer_params * 4
        assert plan.total_bytes == _total(plan, fp32 + gathered), (sharding, n)
    # ZeRO-Offload steps on the host: nothing more on the GPU
    off = estimate(shape, Setup(batch=1, seq=16, sharding="zero3_offload", gpus=8))
    assert off.total_bytes == _total(off, 2 * shape.layer_params * 2 + 2 * shape.hidden ** 2 * 2)


def test_llama2_7b_by_hand():
    """The known case: Llama-2-7B has 6,738,415,616 parameters; mixed-precision AdamW under ZeRO on one GPU keeps
    2 + 2 + 12 = 16 bytes of each (107.8 GB); the job without sharding trains in bfloat16 throughout (weights,
    gradients and AdamW's two states: 8 bytes); peft's LoRA r 16 on q_proj, v_proj trains 8,388,608 parameters and on
    every linear 39,976,960."""
    shape = shape_from_config(LLAMA2_7B)
    psi = shape.params
    assert psi == 6_738_415_616

    def states(plan):
        return sum(plan.components[c] for c in ("weights", "gradients", "optimizer"))

    z3 = estimate(shape, Setup(batch=1, seq=4096, sharding="zero3", gpus=1))
    assert states(z3) == 16 * psi and round(states(z3) / 1e9, 1) == 107.8
    assert states(estimate(shape, Setup(batch=1, seq=4096))) == 8 * psi
    assert shape.lora_params(16, "q_proj,v_proj") == 8_388_608 and shape.lora_params(16) == 39_976_960
    # eight GPUs: 16Ψ/8 of model states each (ZeRO-3 and FSDP full shard alike)
    z3x8 = estimate(shape, Setup(batch=1, seq=4096, sharding="zero3", gpus=8))
    assert states(z3x8) == 2 * psi // 8 + 2 * psi // 8 + 12 * psi // 8
    fsdp = estimate(shape, Setup(batch=1, seq=4096, sharding="fsdp", gpus=8))
    assert states(fsdp) == 4 * psi // 8 + 4 * psi // 8 + 8 * psi // 8
    # activations, sdpa, batch 1 × 4096 with checkpointing: each layer keeps its bfloat16 input (2sbh, Korthikanti
    # et al.'s full recompute), 32 × 32 MiB
    ckpt = estimate(shape, Setup(batch=1, seq=4096, checkpointing=True))
    full = estimate(shape, Setup(batch=1, seq=4096))
    assert ckpt.components["activations"] > 32 * 4096 * 4096 * 2 and ckpt.components["activations"] < 4 * GiB
    # without: about 45 bytes a token and hidden unit a layer (Korthikanti's 34sbh has a 4h GeLU MLP and dropout;
    # Llama's SwiGLU is 2.7h wide), and no s² term with sdpa
    per = full.components["activations"] / (32 * 4096 * 4096)
    assert 40 < per < 50


def test_the_train_page_says_how_the_bytes_a_parameter_come_about(tiny_llama):
    """The full row's optimizer column is 4 bytes a parameter on CUDA (bfloat16 AdamW states, no float32 master
    copy), the ZeRO and FSDP rows' 12 (or 8 + 4): the page said neither, so a reader checking it against the ZeRO
    paper's 16 saw the full row off by half. The caption also said gradients and activations never peak together,
    which gradient accumulation (counted) breaks."""
    from streamlit.testing.v1 import AppTest

    from backend import registry
    from tests.test_pages import ROOT

    cuda = memplan.precision_note(Setup(device="cuda"))
    assert "8 bytes a parameter" in cuda and "2 + 2 + 12 = 16 bytes a parameter" in cuda
    assert "float32 throughout" in memplan.precision_note(Setup(device="cpu"))
    registry.import_folder(tiny_llama, "tiny")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    caption = next(c.value for c in at.caption if c.value.startswith("GiB per device"))
    assert caption.endswith(memplan.precision_note(Setup(device="cpu"))) and "gradient accumulation" in caption


def test_padded_sdpa_saves_its_mask_per_layer():
    """sdpa converts the boolean padding mask to an additive one in the query's dtype at every call and saves it for
    the backward: (seq × seq) per sequence and layer, as MemTracker sees. Before, a padded bf16 step at 1024 tokens
    was 7 % under the tracked peak (DPO, and SFT unpacked on CUDA without flash-attn, the default now)."""
    import torch

    from tests.test_memplan import tracked_peak

    peak, cfg = tracked_peak(hidden=64, inter=128, layers=4, heads=4, kv=2, vocab=256, batch=1, seq=1024, pad=True,
                             dtype=torch.bfloat16)
    plan = estimate(shape_from_config(cfg), Setup(batch=1, seq=1024, device="cpu", bf16=True, padded=True))
    assert abs(plan.total_bytes / peak - 1) < 0.03, (plan.total_bytes, peak)
    # the term itself: 4 layers × 1 sequence × 1024² × 2 bytes over the unpadded plan's (which has no mask at all)
    flat = estimate(shape_from_config(cfg), Setup(batch=1, seq=1024, device="cpu", bf16=True, padded=False))
    flash = estimate(shape_from_config(cfg), Setup(batch=1, seq=1024, device="cpu", bf16=True, padded=True,
                                                   attention="flash_attention_2"))
    assert plan.components["activations"] - flash.components["activations"] == 4 * 1024 ** 2 * 2
    assert flash.components["activations"] > flat.components["activations"]  # the boolean mask, repeat_kv


def test_attention_auto_is_planned_as_the_job_resolves_it(monkeypatch):
    """perf "auto" on CUDA runs flash attention where flash-attn is installed: no padding mask is saved. The plan
    kept "auto", counted sdpa's mask for such a job (1.4 GiB for a TinyLlama-shaped DPO at batch 4 × 2048) and could
    refuse one that fits."""
    import functools

    from backend import perf
    from backend.specs import DataSource, DpoSpec

    spec = DpoSpec(model="x", data=[DataSource(source="builtin:prefs-mini")], max_length=2048, batch_size=4)
    real = perf.resolve
    monkeypatch.setattr(perf, "resolve", functools.partial(real, installed=lambda module: module == "flash_attn"))
    assert memplan.setup_for_spec(spec, device="cuda").attention == "flash_attention_2"
    monkeypatch.setattr(perf, "resolve", functools.partial(real, installed=lambda module: False))
    assert memplan.setup_for_spec(spec, device="cuda").attention == "sdpa"
    assert memplan.setup_for_spec(spec, device="cpu").attention == "sdpa"  # the CPU: transformers' default
