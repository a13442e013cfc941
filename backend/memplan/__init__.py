"""The GPU (or RAM) memory a training job needs, worked out before anything is loaded (issue 13).

    python -m backend train sft --model M --data D --batch-size 1 --max-length 4096 --plan

Counts come from the model's config.json: the model is built on the meta device (no weights read), so parameter
counts are exact. The activation model follows what the job runs (backend/train_entry.py): a Llama-style decoder
with sdpa attention, weights in bfloat16 on CUDA and float32 on a CPU, trl's fused LM head (trl 1.16 never builds the
full (tokens × vocab) logits: it projects 4096-token × 32768-vocabulary tiles), AdamW states in the parameter dtype,
and the HF Trainer's `zero_grad(set_to_none=True)`, so gradients and activations do not peak together: the backward
frees each layer's saved tensors as it writes that layer's gradients. The total is therefore
weights + reference + optimizer states + the larger of (activations, gradients + optimizer temporaries), with
gradient accumulation (> 1) keeping the gradients alive through the next forward.

`total_bytes` is the peak of allocated tensor memory — what `torch.cuda.max_memory_allocated()` reports; the CUDA
context and the caching allocator's slack are a separate, fixed `overhead_bytes`, added only for the fit check.
tests/test_memplan.py checks the total against torch's MemTracker on real training steps on the CPU.

LoRA: peft's get_peft_model makes the adapters float32 on a bfloat16 model (autocast_adapter_dtype=True, its
default); trl 1.16 passes False, keeping them bfloat16, only under DeepSpeed ZeRO-3 (sft_trainer.py / dpo_trainer.py,
"ZeRO-3 + PEFT"), DeepSpeed's engine casts the module to bfloat16 at every stage, and FSDP's mixed precision computes
in bfloat16 (from float32 shards). So without sharding the adapters, their gradients and their AdamW states are 4
bytes a value. peft casts each adapted linear's input to the adapters' dtype before dropout and A: without autocast
A saves the float32 dropout output, dropout its mask (CUDA's fused kernel: booleans; the CPU's: a noise tensor of
x's dtype); a CUDA job runs its forward under accelerate's bf16 autocast (mixed precision, not under DeepSpeed), so
A and B save bfloat16 casts of their inputs and of the adapters instead. The frozen base saves less than full
training (no norm outputs, o_proj or down_proj inputs for weight gradients). Measured with MemTracker
(tests/test_memplan.py: "lora r8 bf16" and its autocast row, torch.autocast on the CPU; tests/test_review_s13_memplan.py
also without dropout): within 2 %.

Several processes and machines. `gpus` counts every process of the job, `machines` the machines they span
(accelerate: the config's num_processes is the total); each machine runs gpus // machines of them, one GPU each,
on its GPUs 0, 1, … in order (accelerate gives local rank i cuda:i), so a fit is judged on those GPUs of THIS
machine, whatever the sharding (DDP also needs a GPU a process), and the sentence quotes them.

Sharded and offloaded strategies, per process, Ψ = every parameter (LoRA: with the adapters), Φ = the trainable ones,
n = the processes a shard spans, b = 2 (bfloat16):

    strategy (accelerate config)                     GPU weights  GPU gradients  GPU optimizer   host RAM
    DeepSpeed ZeRO-1 (zero_stage 1)                  bΨ           bΦ             12Φ/n           -
    DeepSpeed ZeRO-2                                 bΨ           bΦ/n           12Φ/n           -
    DeepSpeed ZeRO-3                                 bΨ/n         bΦ/n           12Φ/n           -
      + offload_optimizer (cpu)                      as above     0 (stage ≥ 2)  0               16Φ/n
      + offload_param (cpu, stage 3)                 0            as above       as above        + bΨ/n
    FSDP FULL_SHARD (fsdp_version 2: reshard true)   4Ψ/n         4Φ/n           8Φ/n            -
    FSDP SHARD_GRAD_OP (version 2: reshard false)    4Ψ/n, + bΨ unsharded from the forward to the backward
    FSDP NO_SHARD                                    4Ψ           4Φ             8Φ              -
    FSDP HYBRID_SHARD (_ZERO2)                       FULL_SHARD (SHARD_GRAD_OP) with n = one machine's processes
    FSDP + fsdp_offload_params: true                 0            0              0               (4Ψ + 12Φ)/n

ZeRO's 2 + 2 + 12 bytes (bfloat16 weights and gradients; float32 master weights, momentum and variance) are the ZeRO
paper's (arXiv 1910.02054, section 3.1); DeepSpeed's step adds a float32 copy of the local gradient partition (4Φ/n;
ZeRO-3 one sub-group of at most 10⁹ values at a time), which its own estimators count (ZeRO-3: 18Ψ/n); the offload
columns follow ZeRO-Offload (arXiv 2101.06840: float32 gradients and optimizer on the host, bfloat16 parameters on
the GPU unless offload_param). Without sharding the job has no float32 master copy: bfloat16 weights, gradients and
AdamW states, 8 bytes a parameter (the ZeRO paper's 16 are its mixed precision). FSDP's 4 bytes: accelerate upcasts
bfloat16 weights to float32 shards under mixed precision (accelerator.py, "Upcasted low precision parameters"),
AdamW's two states follow them; with offload the parameter and gradient shards live on the host and the step runs
there (torch's CPUOffload). Every sharded GPU also holds the gathered bfloat16 copy of the running layer and the next
(prefetch) and that layer's unsharded gradient. The host figure is for the machine (every process on it). NVMe
offload is not modelled (its swap buffers are DeepSpeed's own): the plan refuses to estimate it (NotModelled) rather
than guess, and the job is not refused for it.

What it does not model: torch.compile and Liger's kernels (the CUDA defaults of backend/perf.py) save fewer
activations than eager PyTorch, so there the plan errs high; peft's LoRA dropout copies every adapted linear's input
(LoRA without checkpointing can need more activation memory than full training: measured, not a slip); the sharded
and offloaded strategies above are from the papers and the libraries' code, not measured here (no GPU); an
accelerate config's gpu_ids (GPUs other than 0, 1, …) is not read.

The package, by step: `shape` reads the model (config.json on the meta device), `components` works out the bytes of
one Setup (the terms above), `strategies` reads the spec and its accelerate config into a Setup and lists the
strategies compared, `report` judges a plan against this machine's memory and words the verdict and the table.
"""

from backend.memplan.components import (ALLOCATOR_SLACK, BNB_BLOCK, BNB_MIN_8BIT, CPU_HEAD_TILE_TEMPS,
                                        CPU_PROCESS_BYTES, CUDA_CONTEXT_BYTES, DS_SUB_GROUP, STRATEGIES, TOKEN_TILE,
                                        VOCAB_TILE, GiB, MemoryPlan, MiB, Setup, describe, estimate)
from backend.memplan.report import (COLUMNS, SpecReport, available_memory, check_spec, compare_strategies, fits,
                                    judged_gpus, plan_rows, precision_note, report_for_spec, verdict)
from backend.memplan.shape import ModelShape, NotModelled, PlanError, load_shape, shape_from_config
from backend.memplan.strategies import FSDP_STRATEGIES, plan_for_spec, setup_for_spec, strategy_setups

__all__ = [
    "ALLOCATOR_SLACK", "BNB_BLOCK", "BNB_MIN_8BIT", "COLUMNS", "CPU_HEAD_TILE_TEMPS", "CPU_PROCESS_BYTES",
    "CUDA_CONTEXT_BYTES", "DS_SUB_GROUP", "FSDP_STRATEGIES", "STRATEGIES", "TOKEN_TILE", "VOCAB_TILE", "GiB", "MiB",
    "MemoryPlan", "ModelShape", "NotModelled", "PlanError", "Setup", "SpecReport", "available_memory", "check_spec",
    "compare_strategies", "describe", "estimate", "fits", "judged_gpus", "load_shape", "plan_for_spec", "plan_rows",
    "precision_note", "report_for_spec", "setup_for_spec", "shape_from_config", "strategy_setups", "verdict",
]
