"""The model's shape for the memory plan (backend/memplan): exact parameter counts from config.json, the model built on
the meta device (no weights read), and the linear layers LoRA adapts. A shape is kept on disk in the workspace, keyed
by the config's text: building the model on the meta device imported transformers' modeling code, accelerate and
torch._dynamo (~2 s of CPU, ~130 MB) into the dashboard on the Train page's first visit of every server."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from storage import db


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


SHAPE_VERSION = 1  # raised when ModelShape's fields or their meaning change: older files are then not read


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """This module's own source: a fix of how a shape is built (a Conv1D counted as a Linear once) must not leave the
    kept shapes of before it in use, whether or not SHAPE_VERSION was raised with it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _shape_file(config_text: str) -> Path:
    """Where the shape of a config with this text is kept: the text, this module's code and the transformers version
    (a model class may gain or lose parameters between versions) name the file."""
    key = f"{SHAPE_VERSION}\n{_code_digest()}\n{importlib.metadata.version('transformers')}\n{config_text}"
    return db.workspace() / "cache" / "shapes" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_shape(path: Path) -> ModelShape | None:
    """The kept shape, or None when there is none or it cannot be read (then it is built again and rewritten)."""
    try:
        fields = json.loads(path.read_text())
        return ModelShape(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                             for k, v in fields.items()})
    except (OSError, ValueError, TypeError):
        return None


def _write_shape(path: Path, shape: ModelShape) -> None:
    """Best effort (a read-only workspace only loses the shortcut), written whole: a file a reader sees is complete."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(asdict(shape)))
        os.replace(part, path)
    except OSError:
        pass


@lru_cache(maxsize=32)
def _shape_cached(folder: str, config_text: str) -> ModelShape:  # the text is the key: an edited config is re-read
    kept = _shape_file(config_text)
    if (shape := _read_shape(kept)) is not None:
        return shape
    shape = _build_shape(folder)
    _write_shape(kept, shape)
    return shape


def _build_shape(folder: str) -> ModelShape:
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
