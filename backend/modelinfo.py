"""Facts about a model folder read from config.json and safetensors headers only (no weights, no torch).

Depth up-scaling works on any decoder-only model whose weights hold a numbered stack of layers. The stack's prefix
(`model.layers` for Llama, Mistral, Qwen2, Gemma; `transformer.h` for GPT-2 style) is found from the weight names,
not hard-coded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from backend.safetensors_stream import DTYPE_SIZES, CheckpointError, TensorRef, open_checkpoint

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_NUMBERED = re.compile(r"^(?P<prefix>.+?)\.(?P<idx>\d+)\.(?P<rest>.+)$")
# Config fields that may differ between models of one architecture without changing any tensor's meaning.
_IGNORED_FOR_MATCH = {"_name_or_path", "transformers_version", "architectures", "layer_types", "max_window_layers",
                      "torch_dtype", "dtype", "use_cache", *LAYER_COUNT_KEYS}


# transformers 4 wrote these at the top of config.json (as the Hub's configs have them); transformers 5 writes them
# into rope_parameters. rope_settings() reads either form.
_ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor")
_ROPE_WITH_ORIGINAL_LENGTH = ("llama3", "yarn", "longrope")


def rope_settings(config: dict) -> dict:
    """The RoPE settings of a config in one form, {rope_type, rope_theta, …} (one per layer type when the config
    nests them), whichever transformers wrote it: as transformers 5 standardises them on loading
    (modeling_rope_utils.standardize_rope_params). Empty for a model without RoPE."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(params, dict):
        return {}

    def one(p: dict) -> dict:
        p = dict(p)
        kind = p.pop("rope_type", None) or p.pop("type", None) or "default"
        p.pop("type", None)
        p["rope_type"] = kind
        p.setdefault("rope_theta", config.get("rope_theta"))
        if config.get("partial_rotary_factor") is not None:
            p.setdefault("partial_rotary_factor", config["partial_rotary_factor"])
        if kind in _ROPE_WITH_ORIGINAL_LENGTH:
            p.setdefault("original_max_position_embeddings",
                         config.get("original_max_position_embeddings", config.get("max_position_embeddings")))
        return p

    if params and all(isinstance(v, dict) or v is None for v in params.values()):  # per layer type
        return {k: one(v) for k, v in params.items() if v is not None}
    if not params and config.get("rope_theta") is None:
        return {}
    return one(params)


class ArchitectureError(ValueError):
    """The model's layout is not one we can rearrange (no numbered layer stack, unknown layer count...)."""


@dataclass
class ModelInfo:
    folder: Path
    config: dict
    tensors: dict[str, TensorRef]
    layer_prefix: str
    layer_count_key: str
    num_layers: int
    # tensors of layer i: {suffix: TensorRef}; non-layer tensors: embeddings, final norm, lm_head
    layers: list[dict[str, TensorRef]] = field(default_factory=list)
    other: dict[str, TensorRef] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [""]
        return archs[0]

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size") or self.config.get("n_embd") or 0)

    @property
    def dtype(self) -> str:
        counts = Counter(t.dtype for t in self.tensors.values())
        return counts.most_common(1)[0][0] if counts else ""

    @property
    def size_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def layer_params(self, i: int) -> int:
        return sum(t.nbytes // DTYPE_SIZES[t.dtype] for t in self.layers[i].values())

    @property
    def other_params(self) -> int:
        return sum(t.nbytes // DTYPE_SIZES[t.dtype] for t in self.other.values())

    @property
    def num_parameters(self) -> int:
        return self.other_params + sum(self.layer_params(i) for i in range(self.num_layers))

    def layer_tensor_name(self, i: int, suffix: str) -> str:
        return f"{self.layer_prefix}.{i}.{suffix}"

    def arch_signature(self) -> dict:
        """What two models must share for their layers to be stacked or averaged together.

        RoPE settings are compared in one form (rope_settings): a trained model's config, saved by transformers 5,
        holds them in rope_parameters, its Hub base's at the top, so the two were refused as "rope_theta: None vs
        100000"; and rope_parameters, a dict, was skipped, so models with other RoPE bases were combined."""
        cfg = {k: v for k, v in self.config.items() if k not in _IGNORED_FOR_MATCH and not k.startswith("_")
               and not isinstance(v, dict) and k not in ("bos_token_id", "eos_token_id", "pad_token_id")
               and k not in _ROPE_KEYS}
        if rope := rope_settings(self.config):
            cfg["rope"] = rope
        layer0 = {s: (t.dtype, t.shape) for s, t in self.layers[0].items()} if self.layers else {}
        other = {n: (t.dtype, t.shape) for n, t in self.other.items()}
        return {"config": cfg, "layer": layer0, "other": other, "prefix": self.layer_prefix}


def folder_stat(folder: str | Path, missing_ok: bool = False) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the files that define a model (.safetensors, .json): cheap (no weights read), and
    it changes when any does. The recipe's hash of an outside model and the chat cache's check that a loaded copy is
    still the registered model both read it. A folder that is gone: [] with `missing_ok`, else FileNotFoundError."""
    folder = Path(folder)
    if missing_ok and not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json"))
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder} has no config.json: it is not a Hugging Face model folder. Point at the "
                              "folder that holds config.json and the weights, or import a GGUF file instead.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).")


def inspect_model(folder: Path) -> ModelInfo:
    folder = Path(folder)
    config = read_config(folder)
    if "text_config" in config and not any(k in config for k in LAYER_COUNT_KEYS):
        raise ArchitectureError(f"{config.get('model_type', 'this model')} is a multimodal model (its layer count "
                                "sits in text_config). Only decoder-only text models can be up-scaled here.")
    key = next((k for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int)), None)
    if key is None:
        raise ArchitectureError(f"Unknown architecture {config.get('model_type', '?')!r}: config.json has none of "
                                f"{', '.join(LAYER_COUNT_KEYS)}, so the layer count is unknown.")
    tensors = open_checkpoint(folder)
    prefixes = Counter()
    for name in tensors:
        m = _NUMBERED.match(name)
        if m:
            prefixes[m["prefix"]] += 1
    if not prefixes:
        raise ArchitectureError(f"Unknown architecture {config.get('model_type', '?')!r}: no numbered stack of "
                                "layers (like model.layers.0.*) in the weight names.")
    prefix = prefixes.most_common(1)[0][0]
    n = config[key]
    layers: list[dict[str, TensorRef]] = [dict() for _ in range(n)]
    other: dict[str, TensorRef] = {}
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    for name, ref in tensors.items():
        m = pat.match(name)
        if not m:
            other[name] = ref
            continue
        i = int(m[1])
        if i >= n:
            raise CheckpointError(f"{folder}: weight {name} is for layer {i}, but config.json says {key}={n}.")
        layers[i][m[2]] = ref
    empty = [i for i, layer in enumerate(layers) if not layer]
    if empty:
        raise CheckpointError(f"{folder}: config.json says {key}={n} but layers {empty[:5]} have no weights. "
                              "The checkpoint is incomplete.")
    suffixes = set(layers[0])
    for i, layer in enumerate(layers):
        if set(layer) != suffixes:
            raise CheckpointError(f"{folder}: layer {i} holds different tensors from layer 0 "
                                  f"({sorted(set(layer) ^ suffixes)[:4]}); layers must be alike to be stacked.")
    return ModelInfo(folder, config, tensors, prefix, key, n, layers, other)
