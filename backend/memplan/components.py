"""The bytes of one training configuration, term by term (backend/memplan): weights, gradients, optimizer states,
activations and the DPO reference, per device, and the peak they make together. The model of each term, the sharded
and offloaded strategies' table and the measurements behind it are in backend/memplan/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from backend.memplan.shape import ModelShape

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
    """The memory of one training configuration, per device, in bytes: the model's states (weights, gradients,
    optimizer states, sharded or offloaded), the activations, and the peak of the two phases they make together."""
    s, st = shape, setup
    b = st.bytes_per_value
    tokens = st.batch * st.seq * (2 if st.kind == "dpo" else 1)
    padded = st.padded if st.padded is not None else st.kind == "dpo"
    trainable = s.lora_params(st.lora_r, st.lora_targets) if st.lora_r else s.params
    reference = st.reference if st.reference is not None else (st.kind == "dpo" and not st.lora_r)
    optimizer = st.optimizer if st.optimizer != "auto" else "adamw_fused"
    given = st
    if st.sharding == "zero3_offload":  # the strategy row's name for ZeRO-3 with both offloads
        st = replace(st, sharding="zero3", offload_params=True, offload_optimizer=True)
    # LoRA: the adapters, their gradients and AdamW states in the adapters' dtype (float32 but under DeepSpeed)
    tb = st.adapter_bytes if st.lora_r else b
    m = _model_states(s, st, trainable, optimizer, tb)
    activations = _activations(s, st, tokens, padded)

    # gradient phase: all gradients + the optimizer step's temporaries (foreach AdamW: one copy; fused: none)
    opt_temp = trainable * tb if optimizer == "adamw" and st.device == "cuda" else 0
    if st.sharding.startswith("fsdp") or st.sharding == "zero3":
        opt_temp = 0
    opt_temp += m.step_temp
    if st.lora_r and st.uses_autocast and st.adapter_bytes != b:
        # autocast's bfloat16 casts of the float32 adapters, which A and B save for the backward
        activations += trainable * b
    grad_phase = m.grads + opt_temp + m.gathered
    act_phase = activations + m.gathered + (m.grads if st.grad_accum > 1 else 0)
    ref_bytes = s.params * b if reference else 0
    if reference and (st.sharding.startswith("fsdp") or st.sharding == "zero3"):
        ref_bytes //= m.shards
    total = int(m.weights + ref_bytes + m.states + max(act_phase, grad_phase))
    if st.device == "cuda":
        overhead = int(CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * total)
    else:
        overhead = CPU_PROCESS_BYTES
    comps = {"weights": int(m.weights), "gradients": int(m.grads), "optimizer": int(m.states),
             "activations": int(activations + m.gathered), "reference": int(ref_bytes)}
    return MemoryPlan(strategy=strategy or describe(given), setup=given, components=comps, total_bytes=total,
                      overhead_bytes=overhead, cpu_bytes=int(m.cpu_bytes), trainable=trainable)


@dataclass
class _ModelStates:
    """What the model's parameters take on each device (and offloaded, on the host) outside the activations."""
    weights: int
    grads: int
    states: int  # the optimizer's
    shards: int  # the processes a shard spans (1: unsharded)
    cpu_bytes: int = 0
    gathered: int = 0  # sharded: the gathered layers (and buckets) the forward and backward need on the device
    step_temp: int = 0  # what the optimizer step adds on the GPU, beside the gradients (DeepSpeed: float32 casts)


def _model_states(s: ModelShape, st: Setup, trainable: int, optimizer: str, tb: int) -> _ModelStates:
    """Weights, gradients and optimizer states: each process's whole copy, then (sharded) divided among the
    processes or offloaded to the host, as the table in backend/memplan/__init__.py says."""
    b = st.bytes_per_value
    weights, grads = s.params * b + (trainable * tb if st.lora_r else 0), trainable * tb
    states = _adamw_8bit_states(s, st, trainable) if optimizer == "adamw_8bit" else 2 * trainable * tb
    n = 1 if st.sharding == "fsdp_no_shard" else max(1, st.shard_over or st.gpus)
    m = _ModelStates(weights, grads, states, n)
    if st.sharding.startswith("fsdp"):
        _fsdp_states(m, s, st, trainable)
    elif st.deepspeed:
        _zero_states(m, s, st, trainable)
    return m


def _adamw_8bit_states(s: ModelShape, st: Setup, trainable: int) -> int:
    """bitsandbytes AdamW8bit's states, per tensor (it decides 8 or 32 bits per parameter): LoRA's A (r × in) and B
    (out × r) of each adapted linear; in full training the embeddings' states are 32-bit (the HF Trainer's
    override; see BNB_BLOCK)."""
    sizes, wide = (([n for _, i, o in s.lora_targets(st.lora_targets) for n in (st.lora_r * i, o * st.lora_r)], [])
                   if st.lora_r else (list(s.param_sizes), list(s.embedding_sizes)))
    if not sizes and not wide:  # a shape made by hand, without per-tensor sizes
        sizes = [trainable]
    return sum(2 * n + 2 * 4 * -(-n // BNB_BLOCK) if n >= BNB_MIN_8BIT else 8 * n for n in sizes) + 8 * sum(wide)


def _fsdp_states(m: _ModelStates, s: ModelShape, st: Setup, trainable: int) -> None:
    """FSDP (any of its shardings): float32 shards, the gathered layers, and torch's CPUOffload."""
    b, n, unit = st.bytes_per_value, m.shards, max(s.layer_params, s.embed_params)
    allp = s.params + (trainable if st.lora_r else 0)  # every parameter the sharding splits
    # accelerate upcasts bf16 weights to float32 shards under mixed precision; AdamW states in float32
    m.weights, m.grads, m.states = 4 * allp // n, 4 * trainable // n, 8 * trainable // n
    # the gathered bfloat16 copy of the running layer and the next (prefetch), and its unsharded gradient;
    # SHARD_GRAD_OP keeps every layer's gathered copy from its forward to its backward
    m.gathered = (allp * b if st.sharding == "fsdp_grad_op" else 2 * unit * b) + unit * 4
    if st.offload_params:  # torch's CPUOffload: parameter and gradient shards on the host, the step there too
        m.cpu_bytes = (m.weights + m.grads + m.states) * st.local_processes  # the host's: every process on it
        m.weights, m.grads, m.states = 0, 0, 0


def _zero_states(m: _ModelStates, s: ModelShape, st: Setup, trainable: int) -> None:
    """DeepSpeed ZeRO stages 1–3: what each stage partitions, the step's float32 casts, and the offloads."""
    b, n, unit = st.bytes_per_value, m.shards, max(s.layer_params, s.embed_params)
    allp = s.params + (trainable if st.lora_r else 0)  # every parameter the sharding splits
    here = st.local_processes  # host memory is the machine's: every process on it
    stage = int(st.sharding[-1])
    # ZeRO (arXiv 1910.02054): bf16 weights and gradients, 12 bytes of float32 master + momentum + variance
    m.weights = allp * b // n if stage == 3 else allp * b
    m.grads = trainable * b // n if stage >= 2 else trainable * b
    m.states = 12 * trainable // n
    if stage == 3:
        m.gathered = 2 * unit * b + unit * 4
    # the step casts the local gradient partition to float32 for the float32 master weights (stage_1_and_2.py
    # step; stage3.py _prepare_fp32_grad_for_sub_group, one sub-group at a time, sub_group_size 1e9 by
    # default): DeepSpeed's own estimates count these 4 bytes (estimate_zero3_model_states_mem_needs: 18Ψ/n =
    # 2 + 4 + 12; estimate_zero2_…: 4Ψ + 16Ψ/n, 16 = 4 + 12)
    m.step_temp = 4 * (min(trainable // n, DS_SUB_GROUP) if stage == 3 else trainable // n)
    if st.offload_optimizer:  # ZeRO-Offload: float32 gradients, master weights and states on the host
        m.cpu_bytes += 16 * trainable // n * here
        m.states, m.grads, m.step_temp = 0, (m.grads if stage == 1 else 0), 0
    if st.offload_params and stage == 3:  # the bf16 parameter shards on the host
        m.cpu_bytes += allp * b // n * here
        m.weights = 0
    if st.offload_optimizer or st.offload_params:
        # the GPU keeps the gathered layers and DeepSpeed's reduce/prefetch buckets ("auto": hidden²)
        m.gathered = 2 * unit * b + 2 * s.hidden ** 2 * b


def _activations(s: ModelShape, st: Setup, tokens: int, padded: bool) -> float:
    """The activations' peak: the decoder layers' saved tensors, the padding mask, then the larger of the fused LM
    head on top of them and (checkpointing) one layer's recomputation."""
    b = st.bytes_per_value
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
    return saved + mask + max(head, recompute)


def describe(st: Setup) -> str:
    if st.sharding != "none":
        return st.sharding
    if st.lora_r:
        return "lora_checkpointing" if st.checkpointing else "lora"
    if st.optimizer == "adamw_8bit":
        return "adamw_8bit"
    return "checkpointing" if st.checkpointing else "full"
