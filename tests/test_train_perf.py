"""Training performance options (backend/perf.py): the decision for CPU and simulated CUDA, the trl configs each
choice produces, errors before launch, DPO's precomputed reference against the per-step one, and CPU runs that
stay exactly as they were."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from backend import perf, registry
from backend.specs import CptSpec, DataSource, DpoSpec, PerfOptions, SftSpec
from backend.training import run_train
from tests.conftest import load_state

DATA = [DataSource(source="builtin:alpaca-mini")]
PREFS = [DataSource(source="builtin:prefs-mini")]
FAST = dict(max_steps=6, save_steps=3, eval_steps=3, batch_size=2, max_length=64, max_rows=40)
ALL = lambda module: True  # noqa: E731 - every optional package "installed"
NONE = lambda module: False  # noqa: E731


def metrics_of(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def test_auto_on_a_cpu_keeps_everything_as_before():
    for spec in (SftSpec(model="m", data=DATA), CptSpec(model="m", data=DATA)):
        r = perf.resolve(spec, cuda=False, installed=ALL)  # even with every package present
        assert (r.compile, r.liger, r.optim, r.attention, r.packing_strategy, r.padding_free) == \
            ("off", False, None, None, "wrapped", False)
        assert r.packing is (spec.kind == "cpt")  # sft packs by default only with CUDA, as before
        assert r.precompute_ref is None and all("auto" in why for why in r.reasons.values())


def test_auto_on_cuda_depends_on_what_is_installed():
    spec = SftSpec(model="m", data=DATA)
    r = perf.resolve(spec, cuda=True, installed=ALL)
    assert (r.compile, r.liger, r.optim, r.attention, r.packing, r.packing_strategy, r.padding_free) == \
        ("regional", True, "adamw_torch_fused", "flash_attention_2", True, "bfd", True)
    r = perf.resolve(spec, cuda=True, installed=NONE)
    assert (r.compile, r.liger, r.optim, r.attention, r.packing_strategy, r.padding_free) == \
        ("regional", False, "adamw_torch_fused", "sdpa", "wrapped", False)
    # only flash-attn missing: Liger on, but no padding-free packing without a flash kernel
    r = perf.resolve(spec, cuda=True, installed=lambda m: m != "flash_attn")
    assert (r.liger, r.attention, r.packing_strategy) == (True, "sdpa", "wrapped")


def test_explicit_choices_are_honoured_and_explained():
    spec = CptSpec(model="m", data=DATA, perf=PerfOptions(compile="full", liger=False, optimizer="adamw_8bit",
                                                          attention="eager", packing_strategy="bfd"))
    r = perf.resolve(spec, cuda=True, installed=ALL)
    assert (r.compile, r.liger, r.optim, r.attention, r.packing_strategy, r.padding_free) == \
        ("full", False, "adamw_bnb_8bit", "eager", "bfd_split", True)  # CPT: "bfd" cut each document at max_length
    assert "slower" in r.reasons["packing"]  # bfd without a flash kernel: said in the log
    lines = r.lines()
    assert "perf: compile = full (asked for)" in lines and any(ln.startswith("perf: packing = bfd_split")
                                                               for ln in lines)
    # DPO does not pack, whatever the block says
    d = perf.resolve(DpoSpec(model="m", data=PREFS, perf=PerfOptions(packing_strategy="bfd")), cuda=True,
                     installed=ALL)
    assert (d.packing, d.padding_free) == (False, False) and "does not pack" in d.reasons["packing"]


@pytest.mark.parametrize("rows, processes, expected", [(20, 1, True), (21, 1, False), (21, 2, True), (None, 1, False)])
def test_dpo_precompute_auto_when_the_run_sees_every_row(rows, processes, expected):
    spec = DpoSpec(model="m", data=PREFS, max_steps=5, batch_size=2, grad_accum=2)  # 20 rows seen per process
    r = perf.resolve(spec, cuda=True, installed=NONE, train_rows=rows, processes=processes)
    assert r.precompute_ref is expected and f"sees {20 * processes} rows" in r.reasons["precompute_ref_log_probs"]
    forced = spec.model_copy(update={"precompute_ref_log_probs": False})
    assert perf.resolve(forced, cuda=True, installed=NONE, train_rows=1).precompute_ref is False


@pytest.mark.parametrize("options, cuda, installed, message", [
    (dict(liger=True), True, NONE, r"perf.liger: liger needs the package liger_kernel.*pip install liger-kernel"),
    (dict(liger=True), False, ALL, r"perf.liger: liger runs GPU kernels only"),
    (dict(attention="flash_attention_2"), True, NONE,
     r"perf.attention: flash_attention_2 needs the package flash_attn"),
    (dict(attention="flash_attention_3"), False, ALL, r"perf.attention: flash_attention_3 runs GPU kernels only"),
    (dict(optimizer="adamw_8bit"), True, NONE, r"perf.optimizer: adamw_8bit needs the package bitsandbytes"),
])
def test_check_refuses_what_cannot_run(options, cuda, installed, message):
    with pytest.raises(ValueError, match=message):
        perf.check(SftSpec(model="m", data=DATA, perf=PerfOptions(**options)), cuda=cuda, installed=installed)


def test_check_accepts_what_runs_on_a_cpu():
    # inductor and torch's fused AdamW have CPU implementations: honoured, not refused
    perf.check(SftSpec(model="m", data=DATA, perf=PerfOptions(compile="regional", optimizer="adamw_fused")),
               cuda=False, installed=NONE)
    perf.check(SftSpec(model="m", data=DATA, perf=PerfOptions(liger=True, attention="flash_attention_2")),
               cuda=True, installed=ALL)


def test_trl_configs_carry_the_choices(tmp_path):
    from backend.train_entry import make_config

    sft = SftSpec(model="m", data=DATA, perf=PerfOptions(compile="full"))
    args = make_config(sft, tmp_path, False, perf.resolve(sft, cuda=True, installed=ALL))
    assert (args.use_liger_kernel, args.torch_compile, args.optim.value, args.packing, args.packing_strategy,
            args.padding_free) == (True, True, "adamw_torch_fused", True, "bfd", True)
    cpu = make_config(sft.model_copy(update={"perf": PerfOptions()}), tmp_path, False,
                      perf.resolve(sft.model_copy(update={"perf": PerfOptions()}), cuda=False))
    default = type(args)(output_dir=str(tmp_path), use_cpu=True, bf16=False)  # the default optimizer, kept on a CPU
    assert (cpu.use_liger_kernel, cpu.torch_compile, cpu.optim, cpu.packing, cpu.packing_strategy,
            cpu.padding_free) == (False, False, default.optim, False, "wrapped", False)
    dpo = DpoSpec(model="m", data=PREFS, max_steps=10, batch_size=2)
    on = make_config(dpo, tmp_path, False, perf.resolve(dpo, cuda=True, installed=NONE, train_rows=20))
    off = make_config(dpo, tmp_path, False, perf.resolve(dpo, cuda=True, installed=NONE, train_rows=21))
    assert on.precompute_ref_log_probs is True and off.precompute_ref_log_probs is False


def test_flops_per_token_and_gpu_peaks(tiny_llama):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny_llama)  # 6 layers, hidden 32, vocab 300, tied
    n = AutoModelForCausalLM.from_pretrained(tiny_llama).num_parameters()
    assert perf.flops_per_token(cfg, n, 64) == 6 * n + 12 * 6 * 32 * 64  # tied: the embedding is the LM head
    cfg.tie_word_embeddings = False
    assert perf.flops_per_token(cfg, n, 64) == 6 * (n - 300 * 32) + 12 * 6 * 32 * 64
    assert perf.gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12 == perf.gpu_peak_flops("NVIDIA H200")
    assert perf.gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert perf.gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and perf.gpu_peak_flops("Tesla T4") is None


def test_regional_compile_compiles_every_layer_in_place(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    keys = list(model.state_dict())
    assert perf.compile_layers(model) == 6
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert list(model.state_dict()) == keys  # checkpoints and saved models keep their names


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_a_bad_choice_fails_before_launch_and_registers_nothing(tiny):
    with pytest.raises(ValueError, match="perf.liger"):
        run_train(SftSpec(model="tiny", data=DATA, name="never", perf=PerfOptions(liger=True), **FAST))
    assert registry.get("never") is None


def test_dpo_precomputed_reference_gives_the_same_run(tiny, tiny_llama, capfd):
    """The reference scored once before training equals the per-step reference forward: every logged loss and
    reward, also after the policy has moved (where a wrong reference would change them), is the same."""
    runs, rows = {}, {}
    for precompute in (True, False):
        result = run_train(DpoSpec(model="tiny", data=PREFS, learning_rate=1e-2, name=f"dpo-{precompute}",
                                   precompute_ref_log_probs=precompute, logging_steps=1, **FAST))
        rows[precompute] = metrics_of(result["run_dir"])
        runs[precompute] = [m for m in rows[precompute] if "loss" in m]
        log = "".join(capfd.readouterr())
        assert f"perf: precompute_ref_log_probs = {precompute} (asked for)" in log
        assert ("Computing reference log probs for train dataset" in log) is precompute  # trl's precompute ran
    on, off = runs[True], runs[False]
    assert len(on) == len(off) == 6 and abs(on[0]["loss"] - math.log(2)) < 1e-4
    # DPO's own checks, on the run without precomputing (a CPU's default), once a test of its own in
    # test_training.py: the first loss is ln 2 (the reference is the start model), DPO's rewards are logged,
    # and the weights moved
    assert off[0]["step"] == 1 and abs(off[0]["loss"] - math.log(2)) < 1e-3
    assert any("rewards/margins" in m for m in rows[False]) and any("rewards/accuracies" in m for m in rows[False])
    start, trained = load_state(tiny_llama), load_state(registry.get("dpo-False").path)
    assert sum(not torch.equal(start[k], trained[k]) for k in start) > 10
    assert abs(on[-1]["loss"] - math.log(2)) > 1e-3  # the policy moved: the reference matters from here on
    for a, b in zip(on, off):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)


def test_sft_auto_on_a_cpu_is_exactly_the_explicit_off_and_regional_compile_trains_like_it(tiny, capfd):
    """Auto on a CPU is exactly the explicit "off". Regional compile, CUDA's default, run here on inductor's CPU
    backend: the compiled layers give the eager losses, and the saved model has the eager parameter names (nothing
    like `_orig_mod.` leaks into the checkpoint). Two tests until session 21; the auto run is now also the eager
    run the compiled one is compared with (it had a 3-step eager run of its own)."""
    from safetensors import safe_open

    off = PerfOptions(compile="off", liger=False, optimizer="adamw_fused", attention="sdpa",
                      packing_strategy="wrapped")
    losses, summaries = {}, {}
    for label, options in (("auto", PerfOptions()), ("off", off), ("regional", PerfOptions(compile="regional"))):
        result = run_train(SftSpec(model="tiny", data=DATA, learning_rate=1e-3, name=f"sft-{label}", perf=options,
                                   logging_steps=1, **FAST))
        rows = metrics_of(result["run_dir"])
        losses[label] = [m["loss"] for m in rows if "loss" in m]
        summaries[label] = json.loads(Path(result["run_dir"], "summary.json").read_text())
        assert all(m["peak_memory_gib"] > 0.05 for m in rows if "loss" in m)  # peak RSS: a Python with torch
        assert not any("mfu" in m for m in rows)  # no GPU, no peak to divide by
        if label != "off":
            (shard,) = Path(result["path"]).glob("*.safetensors")
            with safe_open(shard, "pt") as f:
                assert not [k for k in f.keys() if "orig_mod" in k] and "model.layers.0.mlp.up_proj.weight" in f.keys()
    err = capfd.readouterr().err
    assert "perf: compile = off (auto on a CPU: eager PyTorch, as before)" in err
    assert "perf: compile = regional (asked for)" in err
    assert len(losses["auto"]) == 6 and losses["auto"] == losses["off"]
    s = summaries["auto"]
    assert s["peak_memory_gib"] > 0.05 and s["perf"]["compile"] == "off" and s["perf"]["optim"] is None
    assert summaries["off"]["perf"]["optim"] == "adamw_torch_fused"
    assert len(losses["regional"]) == 6 and losses["regional"] == pytest.approx(losses["auto"], rel=1e-4)
