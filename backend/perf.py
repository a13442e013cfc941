"""How a training job uses the hardware: one pure decision from the spec's `perf` block and the machine.

    from backend import perf
    perf.check(spec)                                   # before launch: impossible choices fail with the field
    r = perf.resolve(spec, cuda=True, train_rows=1000) # what train_entry applies; r.lines() goes to the job log

"auto" takes the default measured for the device (issue 13, one H200, TinyLlama-1.1B shape, sequence 2048, bf16):
trl's padding-free "bfd" packing with sdpa ran at 7.6k tokens/s against 37.5k for "wrapped"; a plain bf16 loop
54.4k, with torch.compile 61.6k. So on CUDA: each decoder layer compiled (regional: one graph, reused by every
layer, compiled in seconds rather than the whole model's minutes), Liger's Triton kernels when installed, fused
AdamW, flash attention when installed else sdpa, and bfd packing only with a flash kernel (without one, SFT is not
packed unless asked: "wrapped" would cut its conversations; CPT packs "wrapped", as pretraining does). On a CPU
every choice stays what it was before these options existed (float32, eager PyTorch, transformers' default
attention and optimizer, wrapped packing).

Which explicit choices fail and which are honoured on a CPU: Liger (Triton) and flash attention have no CPU kernels
and a package that is missing cannot be used — those fail in check() before anything is launched, naming the field.
torch.compile (inductor has a CPU backend) and fused AdamW (torch has a CPU implementation) are honoured.
"""

from __future__ import annotations

import importlib.util
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

# The import name each optional kernel package provides (what transformers itself checks for).
PACKAGES = {"liger": "liger_kernel", "flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface",
            "adamw_8bit": "bitsandbytes"}
PIP = {"liger_kernel": "liger-kernel==0.8.5", "flash_attn": "flash-attn", "flash_attn_interface": "flash-attn-3",
       "bitsandbytes": "bitsandbytes"}
OPTIM = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit"}
FLASH = ("flash_attention_2", "flash_attention_3")

# Datasheet dense bf16 peaks (FLOP/s, no sparsity), matched as substrings of torch.cuda.get_device_name() in this
# order (the more specific first). An unknown GPU gets no MFU rather than a made-up one.
GPU_PEAKS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12),
             ("RTX 4090", 165e12), ("A6000", 155e12)]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Resolved:
    compile: str                 # "off", "regional" (each decoder layer, in place) or "full" (torch_compile)
    liger: bool                  # TrainingArguments use_liger_kernel
    optim: str | None            # TrainingArguments optim; None: transformers' default
    attention: str | None        # from_pretrained attn_implementation; None: transformers' default
    packing: bool                # SFTConfig packing (cpt: the spec's, on; sft: the spec's, default on with CUDA and
    #                              a flash kernel: padding-free bfd keeps each conversation whole and on its own)
    packing_strategy: str        # SFTConfig packing_strategy (cpt/sft)
    padding_free: bool           # bfd / bfd_split packing is padding-free (trl turns it on with them)
    precompute_ref: bool | None  # DPOConfig precompute_ref_log_probs; None for cpt/sft
    reasons: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """For the job log: one line per choice with why it was made."""
        values = {"compile": self.compile, "liger": self.liger, "optimizer": self.optim or "transformers default",
                  "attention": self.attention or "transformers default",
                  "packing": self.packing_strategy if self.packing else "off",
                  "precompute_ref_log_probs": self.precompute_ref}
        return [f"perf: {k} = {values[k]} ({why})" for k, why in self.reasons.items()]

    def as_dict(self) -> dict:
        return {"compile": self.compile, "liger": self.liger, "optim": self.optim, "attention": self.attention,
                "packing": self.packing, "packing_strategy": self.packing_strategy, "padding_free": self.padding_free,
                "precompute_ref_log_probs": self.precompute_ref}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check(spec, cuda: bool | None = None, installed: Callable[[str], bool] = _installed) -> None:
    """Choices that cannot work here fail before launch, with the field and what to do."""
    p = spec.perf
    cuda = _cuda() if cuda is None else cuda
    wanted = (["liger"] if p.liger else []) + ([p.attention] if p.attention in FLASH else []) + \
        (["adamw_8bit"] if p.optimizer == "adamw_8bit" else [])
    for choice in wanted:
        module = PACKAGES[choice]
        fld = {"liger": "perf.liger", "adamw_8bit": "perf.optimizer"}.get(choice, "perf.attention")
        if not installed(module):
            raise ValueError(f"{fld}: {choice} needs the package {module}, which is not installed; "
                             f"`pip install {PIP[module]}` or set {fld} to auto.")
        if not cuda and choice != "adamw_8bit":
            raise ValueError(f"{fld}: {choice} runs GPU kernels only and this machine has no CUDA device; "
                             f"set {fld} to auto (off on a CPU).")


def resolve(spec, cuda: bool, installed: Callable[[str], bool] = _installed, train_rows: int | None = None,
            processes: int | None = None) -> Resolved:
    """The choices a job applies. train_rows: rows of the DPO training set (for precompute "auto"); processes:
    data-parallel processes in all (default: the spec's num_processes × num_machines, or its Ray workers)."""
    p = spec.perf
    why: dict[str, str] = {}

    if p.compile != "auto":
        compile_, why["compile"] = p.compile, "asked for"
    elif cuda:
        compile_, why["compile"] = "regional", "auto on CUDA: each decoder layer compiled once, reused by all"
    else:
        compile_, why["compile"] = "off", "auto on a CPU: eager PyTorch, as before"

    if p.liger is not None:
        liger, why["liger"] = p.liger, "asked for"
    elif cuda and installed(PACKAGES["liger"]):
        liger, why["liger"] = True, "auto on CUDA: liger-kernel is installed (RMSNorm, SwiGLU, RoPE kernels)"
    else:
        liger, why["liger"] = False, ("auto: off, liger-kernel is not installed" if cuda else  # said for its value
                                      "auto on a CPU: off, Liger's kernels run on CUDA only")

    if p.optimizer != "auto":
        optim, why["optimizer"] = OPTIM[p.optimizer], "asked for"
    elif cuda:
        optim, why["optimizer"] = "adamw_torch_fused", "auto on CUDA: one fused kernel for all parameters"
    else:
        optim, why["optimizer"] = None, "auto on a CPU: transformers' default, as before"

    if p.attention != "auto":
        attention, why["attention"] = p.attention, "asked for"
    elif cuda and installed(PACKAGES["flash_attention_2"]):
        attention, why["attention"] = "flash_attention_2", "auto on CUDA: flash-attn is installed"
    elif cuda:
        attention, why["attention"] = "sdpa", "auto on CUDA: PyTorch's fused attention (flash-attn not installed)"
    else:
        attention, why["attention"] = None, "auto on a CPU: transformers' default, as before"

    flash = attention in FLASH
    if spec.kind == "dpo":
        strategy, why["packing"] = "wrapped", "not used: trl's DPO does not pack"
    elif p.packing_strategy != "auto":
        strategy = p.packing_strategy
        why["packing"] = "asked for" + ("" if strategy != "bfd" or flash else
                                        "; without a flash kernel padding-free packing ran 5x slower on an H200")
    elif cuda and flash:
        strategy, why["packing"] = "bfd", "auto: padding-free, the flash kernel attends within each sequence"
    else:
        strategy, why["packing"] = "wrapped", ("auto: rows run together and cut into full max_length sequences; "
                                               "padding-free bfd needs a flash kernel to be fast")

    if spec.kind == "cpt" and strategy == "bfd":  # padding-free alike; "bfd" keeps each document's first max_length
        strategy = "bfd_split"  # tokens only (13 % of a set of 240-token documents trained at max_length 32)
        why["packing"] += ("; bfd_split for continued pretraining: a document past max_length goes on in the next "
                           "sequence")
    precompute = None
    if spec.kind == "dpo":
        if spec.precompute_ref_log_probs is not None:
            precompute, why["precompute_ref_log_probs"] = spec.precompute_ref_log_probs, "asked for"
        else:
            procs = processes or (spec.ray_workers if spec.ray_workers > 1 else spec.num_processes * spec.num_machines)
            seen = spec.max_steps * spec.batch_size * spec.grad_accum * procs
            precompute = train_rows is not None and seen >= train_rows
            why["precompute_ref_log_probs"] = (
                f"auto: the run sees {seen} rows, the data has {train_rows if train_rows is not None else '?'}; "
                + ("scoring every row once is cheaper than a reference forward per step" if precompute else
                   "scoring the whole set first would cost more than it saves"))
    asked = getattr(spec, "packing", None)
    packing = spec.kind != "dpo" and (cuda if asked is None else asked)
    # the reason said for the value the log prints: "packing = off (auto: full rows (padding-free packing needs a
    # flash kernel …))" described the packing an SFT run on a CPU did not do
    if spec.kind == "sft" and asked is None and p.packing_strategy == "auto" and strategy != "bfd":
        # "wrapped" cuts the concatenated conversations every max_length tokens and runs them together: a sequence
        # began mid-conversation ('ompute the result.\n\n4 times 3<|im_end|>'), its reply learned without its
        # question, attending to the conversation before it. Unpacked, as trl's default, unless padding-free.
        packing = False
        why["packing"] = ("auto for sft: off without a flash kernel here; padding-free packing is slow without one, "
                          "and wrapped packing cuts conversations at max_length and runs them together")
    elif spec.kind != "dpo" and not packing:
        why["packing"] = ("packing: false asked for" if asked is False else
                          "auto on a CPU: off, packing is on by default with CUDA only; packing: true packs here")
    elif spec.kind == "sft" and asked:
        why["packing"] = f"packing: true asked for; {why['packing']}"
    return Resolved(compile_, liger, optim, attention, packing, strategy, packing and strategy.startswith("bfd"),
                    precompute, why)


def gpu_peak_flops(device_name: str) -> float | None:
    """The bf16 dense datasheet peak of a GPU by name, or None when it is not in the table."""
    return next((peak for key, peak in GPU_PEAKS if key.lower() in device_name.lower()), None)


def _matmul_params(config, num_parameters: int) -> int:
    """N of 2·N: the parameters in matrix products, without the input embedding (a lookup, no FLOPs). A tied
    embedding is also the LM head, a real product: it stays counted."""
    embed = config.vocab_size * config.hidden_size
    return num_parameters - (0 if getattr(config, "tie_word_embeddings", False) else embed)


def flops_per_token(config, num_parameters: int, seq_len: int, trainable: int | None = None) -> float:
    """Training FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B): 6·N for the matrix products of forward
    and backward, N without the input embedding, plus 12·L·d·s for attention scores and values.
    The 6 is 2 (forward) + 2 (the backward's gradient of each product's input) + 2 (of its weight): a frozen weight
    has no weight gradient, so with LoRA (num_parameters: base and adapters; trainable: the adapters) it is
    4·N + 2·trainable. Counted as 6·N, a LoRA run's MFU read 1.5 times what the GPU did."""
    n = _matmul_params(config, num_parameters)
    return 4 * n + 2 * (n if trainable is None else trainable) + \
        12 * config.num_hidden_layers * config.hidden_size * seq_len


def forward_flops_per_token(config, num_parameters: int, seq_len: int) -> float:
    """FLOPs per token of a forward pass alone (no gradient): 2·N + 4·L·d·s, the forward third of flops_per_token.
    What DPO's frozen reference costs: run on every step's tokens beside the policy, or once over the data before
    training (trl's precompute_ref_log_probs). num_parameters: the reference's (with LoRA the base, adapters off)."""
    return 2 * _matmul_params(config, num_parameters) + 4 * config.num_hidden_layers * config.hidden_size * seq_len


@dataclass
class ForwardCount:
    tokens: int = 0               # input tokens (padding included: it is computed) over all forwards
    first: float | None = None    # time.perf_counter() when the first forward began
    last: float | None = None     # and when the last one ended

    @property
    def seconds(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last is not None else 0.0


@contextmanager
def count_reference_forwards() -> Iterator[ForwardCount]:
    """The tokens and seconds of trl's reference forwards inside the block (DPOTrainer.compute_ref_log_probs wrapped,
    put back after it): for the DPO reference precompute, which trl runs inside DPOTrainer() (train and held-out
    sets), outside every training step, so no step's tokens/s holds it. Counted where trl runs the reference,
    whichever model that is: the policy (adapters off with LoRA), or the copy trl loads itself under FSDP, which
    hooks on the policy never saw."""
    from trl import DPOTrainer

    count, real = ForwardCount(), DPOTrainer.compute_ref_log_probs

    def counted(self, model, inputs):
        begun = time.perf_counter()
        out = real(self, model, inputs)
        count.tokens += int(inputs["input_ids"].numel())
        count.first = begun if count.first is None else count.first
        count.last = time.perf_counter()
        return out

    DPOTrainer.compute_ref_log_probs = counted
    try:
        yield count
    finally:
        DPOTrainer.compute_ref_log_probs = real


def compile_layers(model) -> int:
    """Regional compilation: every decoder layer compiled in place (nn.Module.compile keeps parameter names, so
    checkpoints and saving are unchanged). The layers share one code path, so the graph is traced once and reused.
    Returns how many modules were compiled."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", base), "layers", None)
    if layers is None:
        raise ValueError(f"perf.compile: regional compilation needs decoder layers at model.model.layers; "
                         f"{type(base).__name__} has none. Use compile: full or off.")
    for layer in layers:
        layer.compile()
    return len(layers)
