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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

GiB = 1024 ** 3
MiB = 1024 ** 2
# Not counted by max_memory_allocated: the CUDA context with cuBLAS/cuDNN workspaces (about 0.5–0.8 GiB on an H100
# with torch 2.x) and the caching allocator's fragmentation (a few % of the peak).
CUDA_CONTEXT_BYTES = 768 * MiB
ALLOCATOR_SLACK = 0.05
# A CPU job's process before any tensor: Python, torch, transformers, trl, datasets.
CPU_PROCESS_BYTES = 1 * GiB
# trl 1.16's fused LM head (trl/kernels/chunked_logprob.py): tiles of TOKEN_TILE tokens × VOCAB_TILE columns.
TOKEN_TILE, VOCAB_TILE = 4096, 32768
# The torch fallback of that head (no Triton: every CPU) keeps several fp32 tile-sized temporaries alive at once
# (logits, exp, probabilities, the gradient); Triton works in place. Measured with MemTracker (tests/test_memplan.py).
CPU_HEAD_TILE_TEMPS = 7
# bitsandbytes AdamW8bit: two 1-byte states + one float32 absmax per 256-value block each; tensors under 4096 values
# keep 32-bit states (min_8bit_size), and so does every nn.Embedding under the HF Trainer (its override).
BNB_BLOCK, BNB_MIN_8BIT = 256, 4096
# DeepSpeed ZeRO-3's default sub_group_size: the optimizer steps this many values of a partition at a time
DS_SUB_GROUP = 10 ** 9

STRATEGIES = {
    "full": "full fine-tuning",
    "checkpointing": "full + activation checkpointing",
    "lora": "LoRA",
    "lora_checkpointing": "LoRA + checkpointing",
    "adamw_8bit": "8-bit optimizer",
    "fsdp": "FSDP full shard",
    "zero3_offload": "ZeRO-3 + CPU offload",
    # from an accelerate config only (not offered as rows)
    "fsdp_grad_op": "FSDP shard grad/optimizer",
    "fsdp_no_shard": "FSDP no shard",
    "zero3": "ZeRO-3",
    "zero2": "ZeRO-2",
    "zero1": "ZeRO-1",
}
# accelerate's FSDP1 sharding strategies (accelerate/utils/constants.py FSDP_SHARDING_STRATEGY, numbered from 1):
# (sharding, sharded within one machine only)
FSDP_STRATEGIES = {"FULL_SHARD": ("fsdp", False), "SHARD_GRAD_OP": ("fsdp_grad_op", False),
                   "NO_SHARD": ("fsdp_no_shard", False), "HYBRID_SHARD": ("fsdp", True),
                   "HYBRID_SHARD_ZERO2": ("fsdp_grad_op", True)}


class NotModelled(RuntimeError):
    """A configuration the plan does not estimate (not a PlanError: the job is not refused for it)."""


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params: int  # every parameter once (tied embeddings counted once)
    layer_params: int  # the largest decoder layer
    embed_params: int  # the input embedding
    # (name, in, out): every layer peft's LoRA adapts as a linear (nn.Linear, transformers' Conv1D) but the LM head
    linears: tuple[tuple[str, int, int], ...] = field(repr=False)
    param_sizes: tuple[int, ...] = field(repr=False, default=())  # numel of every parameter outside nn.Embedding
    embedding_sizes: tuple[int, ...] = field(repr=False, default=())  # numel of every nn.Embedding's parameters

    def lora_targets(self, target_modules: str = "all-linear") -> list[tuple[str, int, int]]:
        """The linears peft adapts: all-linear = every nn.Linear and Conv1D but the output layer (peft's
        _maybe_include_all_linear_layers); else a module whose name is a listed name or ends with '.' + one."""
        if target_modules == "all-linear":
            return list(self.linears)
        keys = [k.strip() for k in target_modules.split(",") if k.strip()]
        chosen = [t for t in self.linears if any(t[0] == k or t[0].endswith("." + k) for k in keys)]
        if not chosen:
            names = ", ".join(sorted({t[0].rsplit(".", 1)[-1] for t in self.linears}))
            raise PlanError(f"lora.target_modules {target_modules!r} matches no linear layer of this model (its "
                            f"linear layers are named: {names}).")
        return chosen

    def lora_params(self, r: int, target_modules: str = "all-linear") -> int:
        """Trainable LoRA parameters: r × (in + out) for every adapted linear (A is r × in, B is out × r)."""
        return sum(r * (i + o) for _, i, o in self.lora_targets(target_modules))


def shape_from_config(config) -> ModelShape:
    """Exact counts from a config (dict or PretrainedConfig): the model is built on the meta device, no weights."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    if isinstance(config, dict):
        data = dict(config)
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    with init_empty_weights(), torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)  # never a folder's code
    model.tie_weights()  # not done on the meta device; follows config.tie_word_embeddings
    head = model.get_output_embeddings()
    # peft adapts transformers' Conv1D (GPT-2's c_attn, c_fc, c_proj) as a linear of nx inputs and nf outputs: left
    # out, a GPT-2 LoRA counted no trainable parameter and target_modules "c_attn" refused the job
    linears = tuple((n, m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else (n, m.nx, m.nf)
                    for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head)
    # the HF Trainer gives every nn.Embedding's weight 32-bit states under a bitsandbytes 8-bit optimizer
    # (trainer.py create_optimizer: register_module_override(module, "weight", {"optim_bits": 32}))
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = next(m for m in base.children() if isinstance(m, torch.nn.ModuleList))
    text = config.get_text_config()
    heads = text.num_attention_heads
    return ModelShape(
        layers=len(layers), hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        heads=heads, kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads, vocab=text.vocab_size,
        tied=head is not None and head.weight is model.get_input_embeddings().weight,
        params=sum(p.numel() for p in model.parameters()),
        layer_params=max(sum(p.numel() for p in layer.parameters()) for layer in layers),
        embed_params=model.get_input_embeddings().weight.numel(), linears=linears,
        param_sizes=tuple(p.numel() for p in model.parameters() if id(p) not in embedded),
        embedding_sizes=tuple(p.numel() for p in model.parameters() if id(p) in embedded))


@lru_cache(maxsize=32)
def _shape_cached(folder: str, config_text: str) -> ModelShape:  # the text is the key: an edited config is re-read
    from transformers import AutoConfig

    # trust_remote_code False, not left out: left out, a model type transformers does not know whose config.json has
    # an auto_map made transformers ask on the terminal whether to run the folder's code (`train --plan`), and run it
    # on a "y". The plan never runs a model's code: such a model gets no plan (NotModelled; the job is not refused).
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise NotModelled(f"{folder} is a model type transformers does not know, defined by the folder's own code "
                          "(config.json's auto_map): the memory plan does not run a model's code.") from None
    return shape_from_config(config)


def load_shape(model_path: str | Path) -> ModelShape:
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        raise PlanError(f"{model_path} has no config.json: the memory plan needs the model's configuration.")
    return _shape_cached(str(Path(model_path).resolve()), cfg.read_text())


@dataclass(frozen=True)
class Setup:
    """One training configuration: what the job will run, per device."""
    batch: int = 1
    seq: int = 512
    kind: str = "sft"  # dpo runs chosen + rejected: twice the sequences
    device: str = "cuda"  # cuda: bfloat16 weights; cpu: float32 (as train_entry.load_model)
    lora_r: int | None = None
    lora_targets: str = "all-linear"
    lora_dropout: float = 0.05
    checkpointing: bool = False
    optimizer: str = "auto"  # auto | adamw | adamw_fused | adamw_8bit
    # none | fsdp | fsdp_grad_op | fsdp_no_shard | zero1 | zero2 | zero3 | zero3_offload (= zero3 + both offloads)
    sharding: str = "none"
    gpus: int = 1  # every process of the job, on all machines (FSDP / ZeRO shard over them); each its own micro-batch
    machines: int = 1  # the machines those processes span: each runs gpus // machines, one GPU each
    shard_over: int | None = None  # processes a shard spans: None = all `gpus` (HYBRID_SHARD: one machine's)
    offload_params: bool = False  # DeepSpeed offload_param / FSDP fsdp_offload_params (FSDP: gradients and step too)
    offload_optimizer: bool = False  # DeepSpeed offload_optimizer: float32 gradients, master weights and states
    autocast: bool | None = None  # the forward under bf16 autocast: None = as the job (CUDA, except DeepSpeed)
    grad_accum: int = 1
    reference: bool | None = None  # dpo: a frozen reference copy (None: unless LoRA)
    padded: bool | None = None  # an attention mask (padding): None = dpo or unpacked sft
    bf16: bool | None = None  # None: as the job (bfloat16 on CUDA, float32 on a CPU)
    # sdpa keeps no (seq × seq) probabilities (padded: its additive mask, per layer), flash none; eager keeps them
    attention: str = "sdpa"

    @property
    def bytes_per_value(self) -> int:
        return 2 if (self.device == "cuda" if self.bf16 is None else self.bf16) else 4

    @property
    def local_processes(self) -> int:
        """The job's processes on this machine (and the GPUs they take here, one each, on CUDA)."""
        return max(1, self.gpus // max(1, self.machines))

    @property
    def deepspeed(self) -> bool:
        return self.sharding.startswith("zero")

    @property
    def uses_autocast(self) -> bool:
        """accelerate wraps the forward in torch.autocast under bf16 mixed precision, except under DeepSpeed (its own
        bf16 engine); train_entry asks for bf16 on CUDA only."""
        return (self.device == "cuda" and not self.deepspeed) if self.autocast is None else self.autocast

    @property
    def adapter_bytes(self) -> int:
        """Bytes a LoRA adapter value takes as the forward uses it: float32 (peft's autocast_adapter_dtype), except
        under DeepSpeed (trl keeps them bfloat16 under ZeRO-3; DeepSpeed casts the module at every stage) and FSDP
        (mixed precision gathers them in bfloat16)."""
        return self.bytes_per_value if self.sharding != "none" else 4


@dataclass
class MemoryPlan:
    strategy: str
    setup: Setup
    components: dict[str, int]  # weights, gradients, optimizer, activations, reference (bytes, on each device)
    total_bytes: int  # peak allocated tensor memory on each device (what max_memory_allocated measures)
    overhead_bytes: int  # CUDA context + allocator slack (CPU: the process itself), only for the fit check
    cpu_bytes: int = 0  # offloaded optimizer states and master weights (ZeRO-3 offload), on the host
    supported: str = ""  # why this strategy cannot run here ("" when it can)
    trainable: int = 0

    @property
    def needed_bytes(self) -> int:
        return self.total_bytes + self.overhead_bytes

    @property
    def label(self) -> str:
        st, label = self.setup, STRATEGIES.get(self.strategy, self.strategy)
        if self.strategy not in STRATEGIES or self.strategy == "zero3_offload" or st.sharding == "none":
            return label
        if st.shard_over and st.sharding.startswith("fsdp"):
            label = label.replace("FSDP", "FSDP hybrid")  # sharded within each machine, replicated across them
        offloaded = [w for w, on in (("parameters", st.offload_params), ("optimizer", st.offload_optimizer)) if on]
        return label + (f" + {' and '.join(offloaded)} offloaded" if offloaded else "")

    def summary(self) -> str:
        parts = ", ".join(f"{k} {_gib(v)}" for k, v in self.components.items() if v)
        where = "on each GPU" if self.setup.device == "cuda" else "of RAM"
        extra = f"; {self.cpu_bytes / GiB:.1f} GiB of CPU RAM for the offloaded states" if self.cpu_bytes else ""
        return f"needs {self.needed_bytes / GiB:.1f} GiB {where} ({parts}, overhead {_gib(self.overhead_bytes)}){extra}"


def _gib(n: int) -> str:
    """GiB with one decimal, as the table; small parts in MiB so that they do not read as zero."""
    return f"{n / GiB:.1f}" if n >= GiB / 10 else f"{n / MiB:.0f} MiB"


def _layer_activation_bytes(s: ModelShape, st: Setup, padded: bool) -> float:
    """Saved tensors of one decoder layer per token (Llama block, sdpa), bytes."""
    b, h, kv = st.bytes_per_value, s.hidden, s.kv_heads * s.head_dim
    qd = s.heads * s.head_dim
    frozen = bool(st.lora_r)  # LoRA: the base weights need no gradient, so what only their gradient needs is not saved
    # RMSNorm keeps its float32 input (a copy when the weights are bfloat16) and, for its weight's gradient, its
    # output in the weights' dtype
    norm = 4 * h if frozen else (4 + b) * h
    # Measured with MemTracker (the rotary products save only cos/sin, which need no gradient): four query-sized
    # tensors (rotated q, sdpa output, o_proj's contiguous input, one more inside sdpa; frozen: the first two), rotated
    # k and v, the float32 log-sum-exp. With a padding mask transformers expands k and v to every head (repeat_kv).
    attn = ((2 if frozen else 4) * qd + 2 * kv + (2 * qd if padded else 0)) * b + 4 * s.heads + 8
    # gate, silu(gate), up, and (for down's weight gradient) silu(gate) * up
    mlp = (3 if frozen else 4) * s.intermediate * b
    per = 2 * norm + attn + mlp
    if st.attention == "eager":  # softmax in float32 (+ its cast back) over seq keys, per head and query token
        per += s.heads * st.seq * (4 + (b if b < 4 else 0))
    elif padded and st.attention not in ("flash_attention_2", "flash_attention_3"):
        # sdpa turns the boolean padding mask into an additive one in the query's dtype at every call
        # (convert_boolean_attn_mask) and its flash (CPU) or memory-efficient (CUDA) kernel saves it for the
        # backward: one (seq × seq) matrix per sequence and layer. Flash-attn unpads instead.
        per += st.seq * b
    if st.lora_r:
        # peft casts each adapted linear's input x to the adapters' dtype (a new tensor when that is not the
        # weights'); lora_dropout(x) is a new tensor, which A saves, with its mask (CUDA's fused dropout: a boolean
        # mask; the CPU's: a noise tensor in x's dtype); without dropout A saves the cast copy. B saves A's output.
        # Under autocast A and B save bfloat16 casts instead. Measured with saved_tensors_hooks (fp32, bf16, bf16
        # under autocast, no dropout: within 1 % of this per layer).
        a = st.adapter_bytes
        c = b if st.uses_autocast else a  # the dtype A and B compute (and save) in
        mask = 1 if st.device == "cuda" else a
        saved_input = (c + mask) if st.lora_dropout > 0 else (c if a != b else 0)
        targets = s.lora_targets(st.lora_targets)
        per += sum(i * saved_input + st.lora_r * c for _, i, _ in targets) / s.layers  # one layer's adapted linears
    return per


def estimate(shape: ModelShape, setup: Setup, strategy: str | None = None) -> MemoryPlan:
    """The memory of one training configuration, per device, in bytes."""
    s, st = shape, setup
    b = st.bytes_per_value
    tokens = st.batch * st.seq * (2 if st.kind == "dpo" else 1)
    padded = st.padded if st.padded is not None else st.kind == "dpo"
    trainable = s.lora_params(st.lora_r, st.lora_targets) if st.lora_r else s.params
    reference = st.reference if st.reference is not None else (st.kind == "dpo" and not st.lora_r)
    optimizer = st.optimizer if st.optimizer != "auto" else "adamw_fused"

    # --- weights, gradients, optimizer states (sharded ones divided among the processes; the table in the docstring)
    given = st
    if st.sharding == "zero3_offload":  # the strategy row's name for ZeRO-3 with both offloads
        st = replace(st, sharding="zero3", offload_params=True, offload_optimizer=True)
    # LoRA: the adapters, their gradients and AdamW states in the adapters' dtype (float32 but under DeepSpeed)
    tb = st.adapter_bytes if st.lora_r else b
    weights, grads = s.params * b + (trainable * tb if st.lora_r else 0), trainable * tb
    if optimizer == "adamw_8bit":
        # per tensor (bitsandbytes decides 8 or 32 bits per parameter): LoRA's A (r × in) and B (out × r) of each
        # adapted linear; in full training the embeddings' states are 32-bit (the HF Trainer's override, above)
        sizes, wide = (([n for _, i, o in s.lora_targets(st.lora_targets) for n in (st.lora_r * i, o * st.lora_r)], [])
                       if st.lora_r else (list(s.param_sizes), list(s.embedding_sizes)))
        if not sizes and not wide:  # a shape made by hand, without per-tensor sizes
            sizes = [trainable]
        states = sum(2 * n + 2 * 4 * -(-n // BNB_BLOCK) if n >= BNB_MIN_8BIT else 8 * n for n in sizes) + 8 * sum(wide)
    else:
        states = 2 * trainable * tb
    cpu_bytes = 0
    gathered = 0
    step_temp = 0  # what the optimizer step adds on the GPU, beside the gradients (DeepSpeed: below)
    allp = s.params + (trainable if st.lora_r else 0)  # every parameter the sharding splits
    n = 1 if st.sharding == "fsdp_no_shard" else max(1, st.shard_over or st.gpus)
    here = st.local_processes  # host memory is the machine's: every process on it
    unit = max(s.layer_params, s.embed_params)
    if st.sharding.startswith("fsdp"):
        # accelerate upcasts bf16 weights to float32 shards under mixed precision; AdamW states in float32
        weights, grads, states = 4 * allp // n, 4 * trainable // n, 8 * trainable // n
        # the gathered bfloat16 copy of the running layer and the next (prefetch), and its unsharded gradient;
        # SHARD_GRAD_OP keeps every layer's gathered copy from its forward to its backward
        gathered = (allp * b if st.sharding == "fsdp_grad_op" else 2 * unit * b) + unit * 4
        if st.offload_params:  # torch's CPUOffload: parameter and gradient shards on the host, the step there too
            cpu_bytes = (weights + grads + states) * here
            weights, grads, states = 0, 0, 0
    elif st.deepspeed:
        stage = int(st.sharding[-1])
        # ZeRO (arXiv 1910.02054): bf16 weights and gradients, 12 bytes of float32 master + momentum + variance
        weights = allp * b // n if stage == 3 else allp * b
        grads = trainable * b // n if stage >= 2 else trainable * b
        states = 12 * trainable // n
        if stage == 3:
            gathered = 2 * unit * b + unit * 4
        # the step casts the local gradient partition to float32 for the float32 master weights (stage_1_and_2.py
        # step; stage3.py _prepare_fp32_grad_for_sub_group, one sub-group at a time, sub_group_size 1e9 by
        # default): DeepSpeed's own estimates count these 4 bytes (estimate_zero3_model_states_mem_needs: 18Ψ/n =
        # 2 + 4 + 12; estimate_zero2_…: 4Ψ + 16Ψ/n, 16 = 4 + 12)
        step_temp = 4 * (min(trainable // n, DS_SUB_GROUP) if stage == 3 else trainable // n)
        if st.offload_optimizer:  # ZeRO-Offload: float32 gradients, master weights and states on the host
            cpu_bytes += 16 * trainable // n * here
            states, grads, step_temp = 0, (grads if stage == 1 else 0), 0
        if st.offload_params and stage == 3:  # the bf16 parameter shards on the host
            cpu_bytes += allp * b // n * here
            weights = 0
        if st.offload_optimizer or st.offload_params:
            # the GPU keeps the gathered layers and DeepSpeed's reduce/prefetch buckets ("auto": hidden²)
            gathered = 2 * unit * b + 2 * s.hidden ** 2 * b

    # --- activations: the decoder layers' saved tensors, then the fused LM head on top of them
    per_layer = _layer_activation_bytes(s, st, padded) * tokens
    # with checkpointing each layer keeps only its input; one layer is recomputed at a time in the backward, after
    # the head's buffers are gone
    saved = s.layers * (tokens * s.hidden * b if st.checkpointing else per_layer)
    mask = st.batch * (2 if st.kind == "dpo" else 1) * st.seq ** 2 if padded else 0
    # final norm + the fused head's saved input (a contiguous copy of the shifted hidden states)
    final = tokens * ((4 + b) * s.hidden + s.hidden * b)
    rows = min(tokens, TOKEN_TILE)
    tile = rows * VOCAB_TILE * b  # the head's projection buffer (always VOCAB_TILE wide)
    if st.device == "cpu":
        tile += CPU_HEAD_TILE_TEMPS * rows * min(s.vocab, VOCAB_TILE) * 4
    head_trainable = not st.lora_r
    # head backward: float32 accumulators for the hidden-state gradient and (full training) the head's weight
    head_bwd = tokens * s.hidden * (4 + b) + (s.vocab * s.hidden * (4 + b) if head_trainable else 0)
    head = final + tile + head_bwd
    recompute = per_layer + (s.vocab * s.hidden * b if head_trainable else 0) if st.checkpointing else 0
    activations = saved + mask + max(head, recompute)

    # gradient phase: all gradients + the optimizer step's temporaries (foreach AdamW: one copy; fused: none)
    opt_temp = trainable * tb if optimizer == "adamw" and st.device == "cuda" else 0
    if st.sharding.startswith("fsdp") or st.sharding == "zero3":
        opt_temp = 0
    opt_temp += step_temp
    if st.lora_r and st.uses_autocast and st.adapter_bytes != b:
        # autocast's bfloat16 casts of the float32 adapters, which A and B save for the backward
        activations += trainable * b
    grad_phase = grads + opt_temp + gathered
    act_phase = activations + gathered + (grads if st.grad_accum > 1 else 0)
    ref_bytes = s.params * b if reference else 0
    if reference and (st.sharding.startswith("fsdp") or st.sharding == "zero3"):
        ref_bytes //= n
    total = int(weights + ref_bytes + states + max(act_phase, grad_phase))
    if st.device == "cuda":
        overhead = int(CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * total)
    else:
        overhead = CPU_PROCESS_BYTES
    comps = {"weights": int(weights), "gradients": int(grads), "optimizer": int(states),
             "activations": int(activations + gathered), "reference": int(ref_bytes)}
    return MemoryPlan(strategy=strategy or describe(given), setup=given, components=comps, total_bytes=total,
                      overhead_bytes=overhead, cpu_bytes=int(cpu_bytes), trainable=trainable)


def describe(st: Setup) -> str:
    if st.sharding != "none":
        return st.sharding
    if st.lora_r:
        return "lora_checkpointing" if st.checkpointing else "lora"
    if st.optimizer == "adamw_8bit":
        return "adamw_8bit"
    return "checkpointing" if st.checkpointing else "full"


# --- the spec as the job runs it, and the strategies that would fit ---------------------------------------------

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


def available_memory(device: str) -> tuple[list[int], str]:
    """(bytes per device, what they are): each visible GPU's free memory, or this machine's total RAM."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
            return free, torch.cuda.get_device_name(0)
        return [], "no GPU"
    import psutil

    return [psutil.virtual_memory().total], "RAM"


def _host_ram() -> int:
    import psutil

    return psutil.virtual_memory().total


def judged_gpus(setup: Setup, avail: list[int]) -> list[int]:
    """The free memory of the GPUs the job's processes on this machine use: GPUs 0 … local_processes − 1 (accelerate
    gives local rank i cuda:i; one process runs on GPU 0), whatever the sharding: DDP too needs one GPU a process.
    Fewer than that: the GPUs there are (fits says no)."""
    return avail[:setup.local_processes]


def fits(plan: MemoryPlan, avail: list[int]) -> bool:
    if plan.supported:
        return False
    local = plan.setup.local_processes
    if plan.setup.device == "cpu":  # every process of a CPU job on this machine takes its share of the one RAM
        return bool(avail) and plan.needed_bytes * local <= avail[0]
    if len(avail) < local:
        return False
    if plan.cpu_bytes and plan.cpu_bytes > _host_ram():
        return False
    return plan.needed_bytes <= min(judged_gpus(plan.setup, avail))


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


def compare_strategies(shape: ModelShape, base: Setup, avail: list[int] | None = None,
                       ) -> list[tuple[MemoryPlan, bool]]:
    """Each strategy's plan and whether it fits `avail` (default: this machine's GPUs or RAM)."""
    avail = available_memory(base.device)[0] if avail is None else avail
    out = []
    for name, st in strategy_setups(base, len(avail)).items():
        plan = estimate(shape, st, name)
        if base.device != "cuda" and name in ("adamw_8bit", "fsdp", "zero3_offload"):
            plan.supported = "needs CUDA GPUs"
        elif name == "fsdp" and len(avail) < st.local_processes:
            plan.supported = f"needs {st.local_processes} GPUs"
        out.append((plan, fits(plan, avail)))
    return out


def precision_note(setup: Setup) -> str:
    """How the bytes a parameter come about, for a reader checking the table against the ZeRO paper's 16."""
    if setup.bytes_per_value == 2:
        return ("Full training with AdamW, without sharding, is bfloat16 throughout (weights, gradients and AdamW's "
                "two states: 8 bytes a parameter, no float32 master copy); FSDP and ZeRO keep float32 master weights "
                "and states (2 + 2 + 12 = 16 bytes a parameter, divided among the GPUs; DeepSpeed adds a float32 "
                "copy of each GPU's gradient share at the step). LoRA adapters train in float32 (16 bytes a trainable "
                "value), 8-bit AdamW keeps about 2 bytes of state a value (32-bit for embeddings and small tensors).")
    return ("On a CPU the job trains in float32 throughout (weights, gradients and AdamW's two states: 16 bytes a "
            "parameter; 8-bit AdamW: about 2 bytes of state a value).")


def verdict(plan: MemoryPlan, avail: list[int], what: str, others: list[tuple[MemoryPlan, bool]]) -> str:
    """One sentence: what is needed, what there is, fits or which strategy would."""
    local = plan.setup.local_processes
    if plan.setup.device == "cuda":  # the GPUs fits() judged, by index
        judged = judged_gpus(plan.setup, avail)
        free = ", ".join(f"{a / GiB:.0f}" for a in judged)
        if not avail:
            have = "no GPU is visible"
        elif len(avail) < local:
            have = (f"it runs {local} processes on this machine, one GPU each, and this machine has {len(avail)} × "
                    f"{what} ({', '.join(f'{a / GiB:.0f}' for a in avail)} GiB free)")
        elif local == 1:
            have = f"GPU 0 ({what}), where it runs, has {free} GiB free"
        else:
            have = f"GPUs 0–{local - 1} ({what}), one a process, have {free} GiB free"
    else:
        have = f"this machine has {avail[0] / GiB:.0f} GiB of RAM" if avail else "no memory information"
    procs = f", for each of {local} processes" if plan.setup.device == "cpu" and local > 1 else ""
    text = f"{plan.label} {plan.summary()}{procs}; {have}: "
    if fits(plan, avail):
        return text + "fits."
    would = [f"{p.label} ({p.needed_bytes / GiB:.1f} GiB)" for p, ok in others if ok and p.strategy != plan.strategy]
    hint = (" precompute_ref_log_probs: true (--precompute-ref) drops the reference copy."
            if plan.components.get("reference") else "")
    return text + ("does not fit: " + " or ".join(would) + " would." if would else
                   "does not fit, and no strategy here would: shorten max_length, lower batch_size, or use more "
                   "GPUs.") + hint


@dataclass
class SpecReport:
    """A spec's own plan against the memory it would run on, beside every other strategy: what the Train page
    shows, `train --plan` prints and the check before launch decides on."""
    shape: ModelShape
    setup: Setup
    plan: MemoryPlan
    ok: bool
    avail: list[int]
    what: str
    others: list[tuple[MemoryPlan, bool]]

    def rows(self) -> list[dict]:
        rows = plan_rows([(self.plan, self.ok)]) + plan_rows(self.others)
        rows[0]["strategy"] += " (this spec)"
        return rows

    def sentence(self) -> str:
        return verdict(self.plan, self.avail, self.what, self.others)


def report_for_spec(spec, model_path, device: str | None = None, avail: list[int] | None = None,
                    what: str | None = None) -> SpecReport:
    """The spec as the job runs it on `device` (None: this machine), against `avail` bytes per device (None: this
    machine's free GPU memory, or its RAM)."""
    base = setup_for_spec(spec, device)
    shape = load_shape(model_path)
    if avail is None:
        avail, what = available_memory(base.device)
    plan = estimate(shape, base)
    return SpecReport(shape, base, plan, fits(plan, avail), avail,
                      what or ("GPU" if base.device == "cuda" else "RAM"), compare_strategies(shape, base, avail))


def check_spec(spec, model_path, device: str | None = None, avail: list[int] | None = None) -> str | None:
    """None when the job fits this machine; else the sentence saying what it needs and what would fit."""
    report = report_for_spec(spec, model_path, device, avail)
    return None if report.ok else report.sentence()


COLUMNS = ("weights", "gradients", "optimizer", "activations", "reference")


def plan_rows(plans: list[tuple[MemoryPlan, bool]]) -> list[dict]:
    """The table the CLI prints and the page shows: GiB per component, per strategy."""
    rows = []
    for p, ok in plans:
        row = {"strategy": p.label, **{c: round(p.components[c] / GiB, 2) for c in COLUMNS},
               "overhead": round(p.overhead_bytes / GiB, 2), "total": round(p.needed_bytes / GiB, 2),
               "cpu_ram": round(p.cpu_bytes / GiB, 2), "fits": "n/a: " + p.supported if p.supported else
               "yes" if ok else f"no: {_host_ram() / GiB:.0f} GiB host RAM" if p.cpu_bytes > _host_ram() else "no"}
        rows.append(row)
    return rows
