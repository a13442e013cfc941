"""Review s13, findings 5, 6, 7 and 10 of that session's review, on the memory plan (backend/memplan/): LoRA's
float32 adapters on a bfloat16 model, jobs over several machines, the sharding and offload an accelerate config
asks for, and which GPUs a fit is judged on. Measured values come from tests/test_memplan.py's MemTracker harness;
the sharded layouts' bytes per parameter are the module docstring's table (ZeRO, arXiv 1910.02054; accelerate's
FSDP)."""

from __future__ import annotations

import json

import pytest
import torch

from backend import memplan
from backend.memplan import GiB, Setup, estimate, shape_from_config
from tests.test_memplan import SMALL, _sft, tracked_peak

MISTRAL = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000}
SMOL = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def mistral():
    return shape_from_config(MISTRAL)


# --- finding 5: LoRA adapters are float32 (peft's autocast_adapter_dtype) ---------------------------------------

LORA = {  # name: (tracked_peak kwargs, Setup kwargs besides batch/seq/device)
    "lora r8 fp32": ({"lora": 8}, {"lora_r": 8}),
    "lora r8 bf16": ({"lora": 8, "dtype": torch.bfloat16}, {"lora_r": 8, "bf16": True}),
    "lora r8 bf16 under autocast (a CUDA job's forward)": ({"lora": 8, "dtype": torch.bfloat16, "autocast": True},
                                                           {"lora_r": 8, "bf16": True, "autocast": True}),
    "lora r8 bf16 without dropout": ({"lora": 8, "dtype": torch.bfloat16, "lora_dropout": 0.0},
                                     {"lora_r": 8, "bf16": True, "lora_dropout": 0.0}),
}


@pytest.mark.parametrize("name", list(LORA))
def test_lora_plan_within_5_percent_of_the_tracked_peak(name):
    """Before: bf16 -12.3 %, under autocast -5.4 % (fp32 +1.2 %). The 15 % of test_memplan hid the bf16 gap."""
    extra, setup = LORA[name]
    peak, cfg = tracked_peak(**SMALL, **extra)
    plan = estimate(shape_from_config(cfg), Setup(batch=SMALL["batch"], seq=SMALL["seq"], device="cpu", **setup))
    err = plan.total_bytes / peak - 1
    print(f"{name}: tracked {peak / 2**20:.1f} MiB, estimate {plan.total_bytes / 2**20:.1f} MiB, {err:+.1%}")
    assert abs(err) < 0.05


def test_lora_adapters_gradients_and_states_are_float32_outside_deepspeed(mistral):
    phi, psi = mistral.lora_params(16), mistral.params
    cuda = estimate(mistral, Setup(batch=1, seq=4096, device="cuda", lora_r=16))
    assert cuda.components["weights"] == 2 * psi + 4 * phi  # the frozen bf16 base + the float32 adapters
    assert cuda.components["gradients"] == 4 * phi and cuda.components["optimizer"] == 8 * phi
    assert cuda.setup.uses_autocast and cuda.setup.adapter_bytes == 4
    # under ZeRO-3 trl passes autocast_adapter_dtype=False: bfloat16 adapters, ZeRO's 2 + 2 + 12 bytes, no autocast
    z3 = estimate(mistral, Setup(batch=1, seq=4096, device="cuda", lora_r=16, sharding="zero3", gpus=8))
    assert z3.components["weights"] == 2 * (psi + phi) // 8 and z3.components["gradients"] == 2 * phi // 8
    assert z3.components["optimizer"] == 12 * phi // 8
    assert not z3.setup.uses_autocast and z3.setup.adapter_bytes == 2
    # a CPU job is float32 throughout: 4 bytes as before
    cpu = estimate(mistral, Setup(batch=1, seq=512, device="cpu", lora_r=16))
    assert cpu.components["gradients"] == 4 * phi and cpu.components["optimizer"] == 8 * phi


# --- finding 6: several machines ----------------------------------------------------------------------------------

def _cfg(tmp_path, name, body) -> str:
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_a_multi_machine_job_is_judged_on_this_machines_gpus(tmp_path, mistral):
    fsdp = _cfg(tmp_path, "fsdp", {"distributed_type": "FSDP", "fsdp_config": {"fsdp_sharding_strategy": "FULL_SHARD"}})
    spec = _sft("x", batch_size=1, max_length=2048, accelerate_config=fsdp, num_processes=8, num_machines=2,
                main_process_ip="10.0.0.1")
    st = memplan.setup_for_spec(spec, "cuda")
    plan = estimate(mistral, st)
    assert plan.components["weights"] == 4 * mistral.params // 16  # sharded over all 16 processes
    assert memplan.fits(plan, [80 * GiB] * 8)  # before: False (it asked this machine for 16 GPUs)
    assert not memplan.fits(plan, [80 * GiB] * 7)
    assert (st.gpus, st.machines, st.local_processes) == (16, 2, 8)
    others = memplan.compare_strategies(mistral, st, [80 * GiB] * 8)
    assert memplan.verdict(plan, [80 * GiB] * 8, "H100", others).endswith("fits.")
    # the config's own num_machines (its num_processes is the total, as accelerate reads it)
    both = _cfg(tmp_path, "both", {"distributed_type": "FSDP", "num_processes": 16, "num_machines": 2})
    st = memplan.setup_for_spec(_sft("x", accelerate_config=both), "cuda")
    assert (st.gpus, st.machines, st.local_processes) == (16, 2, 8)
    # a CPU job over two machines, one process each: this machine's RAM holds one process
    one = estimate(mistral, Setup(batch=1, seq=128, device="cpu", lora_r=8))
    two = estimate(mistral, Setup(batch=1, seq=128, device="cpu", lora_r=8, gpus=2, machines=2))
    assert memplan.fits(two, [int(one.needed_bytes * 1.5)])


# --- finding 7: the sharding and offload an accelerate config asks for ------------------------------------------

def _plan(tmp_path, shape, name, body):
    spec = _sft("x", batch_size=1, max_length=2048, accelerate_config=_cfg(tmp_path, name, body))
    st = memplan.setup_for_spec(spec, "cuda")
    return st, estimate(shape, st)


def test_deepspeed_offloads_are_read_one_by_one(tmp_path, mistral):
    P = mistral.params

    def ds(name, **kw):
        return _plan(tmp_path, mistral, name, {"distributed_type": "DEEPSPEED", "num_processes": 8,
                                               "deepspeed_config": kw})

    st, p = ds("z3_opt", zero_stage=3, offload_optimizer_device="cpu", offload_param_device="none")
    assert p.components["weights"] == 2 * P // 8  # before: 0 (read as full offload)
    assert p.components["gradients"] == 0 and p.components["optimizer"] == 0
    assert p.cpu_bytes == 16 * P  # float32 gradients, master weights, momentum, variance for 8 processes; before 18P
    assert (st.sharding, st.offload_params, st.offload_optimizer) == ("zero3", False, True)
    assert p.label == "ZeRO-3 + optimizer offloaded"
    st, p = ds("z3_both", zero_stage=3, offload_optimizer_device="cpu", offload_param_device="cpu")
    assert st.sharding == "zero3_offload" and p.components["weights"] == 0 and p.cpu_bytes == 18 * P
    st, p = ds("z3", zero_stage=3)
    assert [p.components[k] for k in ("weights", "gradients", "optimizer")] == [2 * P // 8, 2 * P // 8, 12 * P // 8]
    st, p = ds("z2_opt", zero_stage=2, offload_optimizer_device="cpu")
    assert st.sharding == "zero2" and st.offload_optimizer
    assert [p.components[k] for k in ("weights", "gradients", "optimizer")] == [2 * P, 0, 0] and p.cpu_bytes == 16 * P
    st, p = ds("z1", zero_stage=1)  # before: read as no sharding at all
    assert st.sharding == "zero1"
    assert [p.components[k] for k in ("weights", "gradients", "optimizer")] == [2 * P, 2 * P, 12 * P // 8]
    # a DeepSpeed JSON with the parameters offloaded and the optimizer on the GPU
    js = tmp_path / "ds.json"
    js.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    st, p = ds("z3_json", deepspeed_config_file=str(js))
    assert (st.sharding, st.offload_params, st.offload_optimizer) == ("zero3", True, False)
    assert p.components["weights"] == 0 and p.components["optimizer"] == 12 * P // 8 and p.cpu_bytes == 2 * P


def test_fsdp_sharding_strategy_and_offload_are_read(tmp_path, mistral):
    P = mistral.params

    def fsdp(name, procs=8, machines=None, **fc):
        body = {"distributed_type": "FSDP", "num_processes": procs, "fsdp_config": fc}
        if machines:
            body["num_machines"] = machines
        return _plan(tmp_path, mistral, name, body)

    full = fsdp("full", fsdp_sharding_strategy="FULL_SHARD")[1]
    st, p = fsdp("no_shard", fsdp_sharding_strategy="NO_SHARD")
    assert [p.components[k] for k in ("weights", "gradients", "optimizer")] == [4 * P, 4 * P, 8 * P]  # before: /8
    assert st.sharding == "fsdp_no_shard"
    st, p = fsdp("numbered", fsdp_sharding_strategy=3)  # accelerate's numbering: 3 = NO_SHARD
    assert st.sharding == "fsdp_no_shard"
    st, p = fsdp("grad_op", fsdp_sharding_strategy="SHARD_GRAD_OP")
    assert st.sharding == "fsdp_grad_op" and p.components["weights"] == 4 * P // 8
    assert p.components["activations"] - full.components["activations"] >= 2 * P * 0.9  # every layer stays gathered
    st, _ = fsdp("v2", fsdp_version=2, fsdp_reshard_after_forward=False)
    assert st.sharding == "fsdp_grad_op"
    st, p = fsdp("offload", fsdp_sharding_strategy="FULL_SHARD", fsdp_offload_params=True)
    assert st.offload_params  # before: planned on the GPU with no host memory
    assert [p.components[k] for k in ("weights", "gradients", "optimizer")] == [0, 0, 0] and p.cpu_bytes == 16 * P
    st, p = fsdp("hybrid", procs=16, machines=2, fsdp_sharding_strategy="HYBRID_SHARD")
    assert (st.sharding, st.shard_over, st.local_processes) == ("fsdp", 8, 8)
    assert p.components["weights"] == 4 * P // 8  # sharded within one machine only; before 4P/16
    assert p.label == "FSDP hybrid full shard" and memplan.fits(p, [80 * GiB] * 8)


def test_nvme_offload_is_not_estimated_and_not_refused(tmp_path, tiny_llama, capsys):
    from backend import training

    nvme = _cfg(tmp_path, "nvme", {"distributed_type": "DEEPSPEED", "num_processes": 2, "deepspeed_config": {
        "zero_stage": 3, "offload_optimizer_device": "nvme", "offload_param_device": "nvme"}})
    spec = _sft(str(tiny_llama), accelerate_config=nvme)
    with pytest.raises(memplan.NotModelled, match="NVMe offload is not modelled"):
        memplan.setup_for_spec(spec, "cuda")
    training.check_memory(spec, tiny_llama)  # no refusal: the plan says it cannot estimate
    assert "memory plan skipped (NotModelled" in capsys.readouterr().out


# --- finding 10: one GPU per process; a single process is judged on GPU 0 ----------------------------------------

def test_ddp_needs_a_gpu_per_process_and_one_process_runs_on_gpu_0():
    shape = shape_from_config(SMOL)
    ddp = estimate(shape, Setup(batch=4, seq=1024, device="cuda", gpus=4))  # 4 processes, no sharding
    assert 4 * GiB < ddp.needed_bytes < 6 * GiB
    assert not memplan.fits(ddp, [80 * GiB])  # before: True
    assert memplan.fits(ddp, [80 * GiB] * 4) and not memplan.fits(ddp, [80 * GiB] * 3 + [1 * GiB])
    others = memplan.compare_strategies(shape, ddp.setup, [80 * GiB])
    assert ("it runs 4 processes on this machine, one GPU each, and this machine has 1 × H100 (80 GiB free)"
            in memplan.verdict(ddp, [80 * GiB], "H100", others))
    v = memplan.verdict(ddp, [80 * GiB] * 3 + [1 * GiB], "H100", others)
    assert "GPUs 0–3 (H100), one a process, have 80, 80, 80, 1 GiB free: does not fit" in v
    one = estimate(shape, Setup(batch=4, seq=1024, device="cuda"))
    assert not memplan.fits(one, [1 * GiB, 80 * GiB])  # before: True (judged on the largest)
    assert memplan.fits(one, [80 * GiB, 1 * GiB])
    avail = [80 * GiB, 1 * GiB]
    v = memplan.verdict(one, avail, "H100", memplan.compare_strategies(shape, one.setup, avail))
    assert "GPU 0 (H100), where it runs, has 80 GiB free: fits." in v and "1 GiB" not in v  # before: "has 1 GiB free"
    # the spec's processes reach the plan
    st = memplan.setup_for_spec(_sft("x", num_processes=4), "cuda")
    assert (st.gpus, st.machines, st.local_processes, st.sharding) == (4, 1, 4, "none")
