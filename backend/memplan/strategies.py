"""Which configuration a training spec runs as (backend/memplan): its accelerate config's sharding (ZeRO stages, FSDP
strategies, offloads), processes and machines, perf's choices, and the strategies the plan compares it with
(checkpointing, LoRA, 8-bit AdamW, FSDP, ZeRO-3 offload)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from backend.memplan.components import MemoryPlan, Setup, estimate
from backend.memplan.shape import NotModelled, load_shape

# accelerate's FSDP1 sharding strategies (accelerate/utils/constants.py FSDP_SHARDING_STRATEGY, numbered from 1):
# (sharding, sharded within one machine only)
FSDP_STRATEGIES = {"FULL_SHARD": ("fsdp", False), "SHARD_GRAD_OP": ("fsdp_grad_op", False),
                   "NO_SHARD": ("fsdp_no_shard", False), "HYBRID_SHARD": ("fsdp", True),
                   "HYBRID_SHARD_ZERO2": ("fsdp_grad_op", True)}


def _accelerate_sharding(path: str | None) -> dict:
    """What an accelerate config runs: sharding, processes (its num_processes: the total over every machine),
    machines, offloads, and whether a shard spans one machine only (FSDP HYBRID_SHARD). FSDP1 reads
    fsdp_sharding_strategy (accelerate's launcher passes it, FULL_SHARD by default, over fsdp_reshard_after_forward);
    FSDP2 (fsdp_version 2) reads fsdp_reshard_after_forward (true: full shard; false: kept from forward to backward,
    SHARD_GRAD_OP's memory). DeepSpeed: zero_stage and its two offload devices, each on its own, from the accelerate
    config or the DeepSpeed JSON it names (zero_optimization.stage / offload_param / offload_optimizer)."""
    out = {"sharding": "none", "procs": None, "machines": None, "offload_params": False, "offload_optimizer": False,
           "hybrid": False}
    if not path:
        return out
    import yaml

    cfg = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    out["procs"], out["machines"] = cfg.get("num_processes"), cfg.get("num_machines")
    kind = str(cfg.get("distributed_type", "")).upper()
    if kind == "FSDP":
        fc = cfg.get("fsdp_config") or {}
        offload = str(fc.get("fsdp_offload_params", False)).lower() == "true"
        if str(fc.get("fsdp_version", 1)) == "2":
            keep = str(fc.get("fsdp_reshard_after_forward", True)).lower() == "false"
            return {**out, "sharding": "fsdp_grad_op" if keep else "fsdp", "offload_params": offload}
        name = str(fc.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        names = list(FSDP_STRATEGIES)  # accelerate also takes the strategy's number, 1 = FULL_SHARD
        name = names[int(name) - 1] if name.isdigit() and 1 <= int(name) <= len(names) else name
        if name not in FSDP_STRATEGIES:
            raise NotModelled(f"fsdp_sharding_strategy {name!r} is not one of {', '.join(names)}.")
        sharding, hybrid = FSDP_STRATEGIES[name]
        return {**out, "sharding": sharding, "hybrid": hybrid, "offload_params": offload}
    if kind == "DEEPSPEED":
        ds = cfg.get("deepspeed_config") or {}
        stage = ds.get("zero_stage")
        devices = {"offload_param": ds.get("offload_param_device"),
                   "offload_optimizer": ds.get("offload_optimizer_device")}
        if ds.get("deepspeed_config_file"):  # a DeepSpeed JSON: zero_optimization.stage / offload_*.device
            z = json.loads(Path(ds["deepspeed_config_file"]).expanduser().read_text()).get("zero_optimization", {})
            stage = z.get("stage", stage)
            devices = {k: (z.get(k) or {}).get("device") for k in devices}
        devices = {k: str(v or "none").lower() for k, v in devices.items()}
        if "nvme" in devices.values():
            raise NotModelled("DeepSpeed NVMe offload is not modelled (its swap buffers are DeepSpeed's own): no "
                              "memory plan for this job.")
        if stage in (1, 2, 3):
            return {**out, "sharding": f"zero{stage}",
                    "offload_params": stage == 3 and devices["offload_param"] == "cpu",
                    "offload_optimizer": devices["offload_optimizer"] == "cpu"}
    return out


def setup_for_spec(spec, device: str | None = None, train_rows: int | None = None) -> Setup:
    """The Setup a training spec runs as (backend/train_entry.py): CUDA when present, else the CPU. train_rows: the
    DPO training set's size, which decides precompute "auto" as the job will (backend/perf.py); unknown, the
    reference copy is counted (the plan errs on the side of refusing less often wrongly)."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    acc = _accelerate_sharding(spec.accelerate_config)
    # the spec's num_machines is passed to accelerate launch over the config's (backend/training.py launch_command)
    machines = spec.num_machines if spec.num_machines > 1 else int(acc["machines"] or 1)
    gpus = max(1, int(acc["procs"] or spec.num_processes * machines))  # accelerate: the total over the machines
    sharding = acc["sharding"]
    if sharding == "zero3" and acc["offload_params"] and acc["offload_optimizer"]:
        sharding = "zero3_offload"
    packing = getattr(spec, "packing", True)
    if packing is None:  # sft's auto: as the job decides it on this device (backend/perf.py)
        from backend import perf

        packing = perf.resolve(spec, cuda=device == "cuda").packing
    precompute = getattr(spec, "precompute_ref_log_probs", None)
    if spec.kind == "dpo" and precompute is None and train_rows is not None:
        from backend import perf

        precompute = perf.resolve(spec, cuda=device == "cuda", train_rows=train_rows).precompute_ref
    attention = spec.perf.attention
    if attention == "auto":  # as the job resolves it: flash attention when installed on CUDA (no padding mask)
        from backend import perf

        attention = perf.resolve(spec, cuda=device == "cuda").attention or "sdpa"
    lora = spec.lora
    return Setup(batch=spec.batch_size, seq=spec.max_length, kind=spec.kind, device=device,
                 lora_r=lora.r if lora else None, lora_targets=lora.target_modules if lora else "all-linear",
                 lora_dropout=lora.dropout if lora else 0.0, checkpointing=spec.gradient_checkpointing,
                 optimizer=spec.perf.optimizer, sharding=sharding, attention=attention, gpus=gpus,
                 machines=machines, shard_over=max(1, gpus // machines) if acc["hybrid"] else None,
                 offload_params=acc["offload_params"] and sharding != "zero3_offload",
                 offload_optimizer=acc["offload_optimizer"] and sharding != "zero3_offload", grad_accum=spec.grad_accum,
                 # precompute "auto" (None) may still score with a loaded reference: counted
                 reference=spec.kind == "dpo" and not lora and precompute is not True,
                 padded=spec.kind == "dpo" or not packing)


def plan_for_spec(spec, model_path, device: str | None = None, train_rows: int | None = None) -> MemoryPlan:
    """The memory of `spec` as the job will run it on `device` ("cuda" | "cpu"; None: this machine)."""
    return estimate(load_shape(model_path), setup_for_spec(spec, device, train_rows))


def strategy_setups(base: Setup, gpus: int) -> dict[str, Setup]:
    """Every strategy applied to the same model, batch, length and kind."""
    # non-sharded strategies keep the processes: on a CPU they share the one RAM (with CUDA each has its own GPU);
    # `gpus` is this machine's GPU count: the sharded rows use every one of them on each of the job's machines
    full = replace(base, lora_r=None, lora_dropout=0.0, checkpointing=False, optimizer="auto", sharding="none",
                   shard_over=None, offload_params=False, offload_optimizer=False)
    machines = max(1, base.machines)
    return {
        "full": full,
        "checkpointing": replace(full, checkpointing=True),
        "lora": replace(full, lora_r=base.lora_r or 16, lora_targets=base.lora_targets,
                        lora_dropout=base.lora_dropout if base.lora_r else 0.05),
        "lora_checkpointing": replace(full, lora_r=base.lora_r or 16, lora_targets=base.lora_targets,
                                      lora_dropout=base.lora_dropout if base.lora_r else 0.05, checkpointing=True),
        "adamw_8bit": replace(full, optimizer="adamw_8bit"),
        "fsdp": replace(full, sharding="fsdp", gpus=max(2, gpus * machines)),
        "zero3_offload": replace(full, sharding="zero3_offload", gpus=max(1, gpus * machines)),
    }
