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
        """What two models must share for their layers to be stacked or averaged together."""
        cfg = {k: v for k, v in self.config.items() if k not in _IGNORED_FOR_MATCH and not k.startswith("_")
               and not isinstance(v, dict) and k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
        layer0 = {s: (t.dtype, t.shape) for s, t in self.layers[0].items()} if self.layers else {}
        other = {n: (t.dtype, t.shape) for n, t in self.other.items()}
        return {"config": cfg, "layer": layer0, "other": other, "prefix": self.layer_prefix}


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
