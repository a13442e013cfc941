"""Where and how an evaluation runs: device, dtype, attention and batch size, decided BEFORE any weights load.

On CUDA: bfloat16 with PyTorch's scaled-dot-product attention, and a batch fitted to the free memory that
torch.cuda.mem_get_info reports after the weights and the KV cache of every sequence (prompt + new tokens) are
counted, and a second batch for scoring whole texts (perplexity), whose logits over every position and the whole
vocabulary outweigh the KV cache many times (Qwen2.5's 152k vocabulary: 0.4 GB per 256-token text). A model whose
weights cannot fit is refused with the numbers. On the CPU: float32 (bfloat16 matmuls are
slow on most CPUs) and the batch size asked for. These are pure functions so tests check them without a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from backend.names import human_bytes

GIB = 1024 ** 3
CPU_BATCH = 8
MAX_BATCH = 256
RESERVE = 1 * GIB  # CUDA context, allocator slack and activations outside the KV cache
WEIGHT_SLACK = 1.10  # buffers and non-persistent tensors beside the safetensors weights
# bytes per position and vocabulary entry when a whole text is scored: the bfloat16 logits, their float32 copy and
# cross-entropy's float32 log-softmax, alive together (backend/evalscore.py: perplexity_items)
SCORING_LOGITS_BYTES = 2 + 4 + 4


class DeviceError(ValueError):
    pass


@dataclass(frozen=True)
class ModelShape:
    """What sizing needs, read from config.json and safetensors headers (no weights loaded)."""
    num_parameters: int
    num_layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(frozen=True)
class DevicePlan:
    device: str  # cpu / cuda
    dtype: str  # float32 / bfloat16
    attn: str | None  # sdpa on CUDA; None: transformers' default
    batch_size: int  # generation: prompt + new tokens
    weights_bytes: int
    note: str
    scoring_batch_size: int = CPU_BATCH  # whole-text scoring (perplexity) of score_len tokens


def model_shape(folder: Path) -> ModelShape:
    from backend.modelinfo import inspect_model

    info = inspect_model(Path(folder))
    cfg = json.loads((Path(folder) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg) if "num_hidden_layers" not in cfg else cfg
    heads = cfg.get("num_attention_heads", 1)
    head_dim = cfg.get("head_dim") or cfg.get("hidden_size", 0) // max(heads, 1)
    return ModelShape(info.num_parameters, info.num_layers, cfg.get("num_key_value_heads") or heads, head_dim,
                      cfg.get("vocab_size", 0))


def kv_bytes_per_sequence(shape: ModelShape, seq_len: int, dtype_bytes: int = 2) -> int:
    """Keys and values of every layer for one sequence, plus its float32 logits row at each step."""
    return 2 * shape.num_layers * shape.kv_heads * shape.head_dim * dtype_bytes * seq_len + 4 * shape.vocab_size


def scoring_bytes_per_sequence(shape: ModelShape, seq_len: int, dtype_bytes: int = 2) -> int:
    """One text scored whole: its keys and values plus the logits of every position over the whole vocabulary."""
    return (2 * shape.num_layers * shape.kv_heads * shape.head_dim * dtype_bytes * seq_len
            + SCORING_LOGITS_BYTES * seq_len * shape.vocab_size)


def plan(shape: ModelShape, *, cuda: bool, free_bytes: int | None = None, seq_len: int = 512,
         batch_size: int | None = None, device: str = "auto", score_len: int = 256,
         on_cpu: str = "evaluate on the CPU (device: cpu)") -> DevicePlan:
    """Decide device, dtype and the batches: generating seq_len tokens (prompt + new) and scoring texts of score_len
    tokens whole. Raises DeviceError when the weights cannot fit in free GPU memory, saying `on_cpu`: how the
    caller's user runs it on the CPU instead."""
    if device == "cuda" and not cuda:
        raise DeviceError("device: cuda was asked for, but torch sees no CUDA device; use auto or cpu.")
    use_cuda = cuda and device != "cpu"
    if not use_cuda:  # the note names the batch as on CUDA: sampled answers (consistency) depend on it
        batch = batch_size or CPU_BATCH
        return DevicePlan("cpu", "float32", None, batch, shape.num_parameters * 4,
                          f"CPU: float32, batch {batch}" + (" (CUDA ignored: device=cpu)" if cuda else ""), batch)
    weights = int(shape.num_parameters * 2 * WEIGHT_SLACK)
    free = int(free_bytes or 0)
    if weights + RESERVE > free:
        # human_bytes: a small model's "needs about 0.0 GiB" read as nothing needed (names.human_bytes says MiB)
        raise DeviceError(f"the model needs about {human_bytes(weights)} in bfloat16 (+{human_bytes(RESERVE)} "
                          f"working memory) but the GPU has {human_bytes(free)} free; free the GPU or {on_cpu}.")
    room = free - weights - RESERVE

    def fitted(per_seq: int) -> tuple[int, int]:
        fit = max(1, min(MAX_BATCH, room // max(per_seq, 1)))
        return int(min(batch_size, fit) if batch_size else fit), int(fit)

    per_seq, per_text = kv_bytes_per_sequence(shape, seq_len), scoring_bytes_per_sequence(shape, score_len)
    (chosen, fit), (scoring, _) = fitted(per_seq), fitted(per_text)
    return DevicePlan("cuda", "bfloat16", "sdpa", chosen, weights,
                      f"CUDA: bfloat16 + sdpa, batch {chosen} (fits {fit}: {human_bytes(free)} free, "
                      f"{human_bytes(per_seq)} per sequence of {seq_len} tokens; scoring whole texts: batch "
                      f"{scoring}, {human_bytes(per_text)} per text of {score_len} tokens)", scoring)


def plan_for(folder: Path, *, seq_len: int, batch_size: int | None, device: str = "auto",
             score_len: int = 256, on_cpu: str = "evaluate on the CPU (device: cpu)") -> DevicePlan:
    """The plan for this machine: asks torch whether CUDA is there and how much of it is free."""
    import torch

    cuda = torch.cuda.is_available()
    free = torch.cuda.mem_get_info()[0] if cuda and device != "cpu" else None
    return plan(model_shape(folder), cuda=cuda, free_bytes=free, seq_len=seq_len, batch_size=batch_size,
                device=device, score_len=score_len, on_cpu=on_cpu)


def release_memory() -> None:
    """Give the memory of models let go back to the GPU, so that `plan_for` sees it free: Python's reference cycles
    collected first, then PyTorch's caching allocator emptied (it keeps a freed tensor's blocks reserved for reuse,
    and torch.cuda.mem_get_info counts them as taken). Nothing to do without CUDA."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_model(folder: Path, plan: DevicePlan | None = None):
    """(tokenizer, model) loaded as the plan says — the one loader of evaluation and chat. Without a plan:
    float32 on the CPU. trust_remote_code is off, said (left to decide, transformers asks on a terminal whether to run
    a remote-code model's own code, and a "y" ran it): no code from a model folder runs, such a model is refused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.modelinfo import ArchitectureError, Fit, mismatch_message, natural_order, unknown_type_problem

    # read as transformers reads it: a folder gone since the plan raises the OSError evaljob explains
    config = json.loads((Path(folder) / "config.json").read_text())
    if problem := unknown_type_problem(config):  # transformers' own "Unrecognized model": said what to do
        raise ArchitectureError(f"{folder}: {problem}")
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    kw = {"dtype": getattr(torch, plan.dtype) if plan else torch.float32, "trust_remote_code": False}
    if plan and plan.attn:
        kw["attn_implementation"] = plan.attn
    try:
        model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **kw)
    except RuntimeError as exc:  # "size mismatch": a model registered before the import compared shapes, whose
        # config.json was edited since (its report of every tensor ends "You set `ignore_mismatched_sizes` to False")
        if "ignore_mismatched_sizes" not in str(exc):
            raise
        from backend.modelinfo import weights_problem
        from backend.safetensors_stream import open_checkpoint

        problem = weights_problem(config, open_checkpoint(Path(folder)))
        raise ArchitectureError(f"{folder}: {problem or 'its weights do not fit config.json (size mismatch)'}"
                                ) from None
    # transformers only warns of the weights it found none for and leaves them random: a model registered before
    # modelinfo.inspect_model checked that its weights fit config.json (or one whose quantizer it skipped) would be
    # chatted with and scored as noise
    if missing := sorted(info["missing_keys"], key=natural_order):
        fit = Fit(type(model).__name__, len(model.state_dict()), missing,
                  sorted(info["unexpected_keys"], key=natural_order))
        del model
        raise ArchitectureError(f"{folder}: {mismatch_message(config, fit)}")
    configure_pad_token(tok, model, folder)
    model.eval()
    if plan and plan.device != "cpu":
        model = model.to(plan.device)
    return tok, model


PAD_TOKEN = "<|pad|>"  # the token lm-eval adds when a tokenizer names no pad, unk or eos token


def configure_pad_token(tok, model, folder: Path | str = "") -> None:
    """Give `tok` a padding token, as lm-eval does (lm_eval/models/utils.py, configure_pad_token): its own pad
    token, else its unk, else its eos, else an added "<|pad|>". Batched scoring pads (perplexity on the right,
    generation on the left) and transformers refuses ("Asking to pad but the tokenizer does not have a padding
    token") a tokenizer with none: a folder with only tokenizer.json (no tokenizer_config.json) names no special
    token at all. The padded positions are masked (attention mask, and no loss on them), so which token pads
    changes no score; it must only be one the model has an embedding row for, because our batches feed the pad id
    to the model (lm-eval's loglikelihood pads with zeros itself). So before adding a token, the model's own
    pad_token_id, then eos_token_id (generation_config.json, then config.json) is taken, as transformers' generate
    pads with the eos id when the tokenizer has no pad; an added "<|pad|>" with no row is refused, saying what to
    do."""
    if tok.pad_token is not None:
        return
    if tok.unk_token is not None:
        tok.pad_token = tok.unk_token
        return
    if tok.eos_token is not None:
        tok.pad_token = tok.eos_token
        return
    rows = model.get_input_embeddings().num_embeddings
    for src in (getattr(model, "generation_config", None), model.config):
        for key in ("pad_token_id", "eos_token_id"):
            ids = getattr(src, key, None)
            ids = ids if isinstance(ids, list) else [ids]
            for i in ids:
                token = tok.convert_ids_to_tokens(i) if isinstance(i, int) and 0 <= i < min(rows, len(tok)) else None
                if token is not None:
                    tok.pad_token = token
                    return
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    if tok.pad_token_id >= rows:
        raise DeviceError(f"{folder}: the tokenizer names no pad, unk or eos token, the model's config no "
                          f"pad_token_id or eos_token_id, and an added {PAD_TOKEN} (id {tok.pad_token_id}) has no "
                          f"embedding row (the model has {rows}), so batches cannot be padded. Add \"pad_token\" (or "
                          "\"eos_token\") to the folder's tokenizer_config.json, or eos_token_id to its config.json.")
