"""Facts about a model folder read from config.json and safetensors headers only (no tensor data read).

Depth up-scaling works on any decoder-only model whose weights hold a numbered stack of layers. The stack's prefix
(`model.layers` for Llama, Mistral, Qwen2, Gemma; `transformer.h` for GPT-2 style) is found from the weight names,
not hard-coded. That the weight names fit the architecture config.json names is checked on a model built on the
meta device (weights_problem): no weights read, nothing allocated.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# float32_shortest and rope_settings lived here, and are still imported from here (import_convert, tests)
from backend.configmatch import LAYER_COUNT_KEYS, comparable, float32_shortest, rope_settings  # noqa: F401
from backend.safetensors_stream import DTYPE_SIZES, CheckpointError, TensorRef, open_checkpoint

_NUMBERED = re.compile(r"^(?P<prefix>.+?)\.(?P<idx>\d+)\.(?P<rest>.+)$")


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
        100000"; and rope_parameters, a dict, was skipped, so models with other RoPE bases were combined. Floats
        are compared at float32 precision (float32_shortest): a GGUF import of a model, imported before its config
        was written so, said "rms_norm_eps: 1e-05 vs 9.999999747378752e-06"."""
        cfg = comparable(self.config)
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


def config_or_problem(folder: str | Path) -> tuple[dict | None, str]:
    """(folder's config.json as a dict, ""), or (None, what is wrong with it): the one reader of a model's config.
    read_config raises the problem; the model tables (config_facts) show a folder gone or broken without one."""
    path = Path(folder) / "config.json"
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, (f"{folder} has no config.json: it is not a Hugging Face model folder. Point at the folder "
                      "that holds config.json and the weights, or import a GGUF file instead.")
    except OSError as exc:  # unreadable (permissions), or a folder named config.json
        return None, f"{path} cannot be read ({exc.strerror or exc})."
    try:
        config = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or bytes that are no text
        return None, f"{path} is not valid JSON ({exc})."
    if not isinstance(config, dict):
        return None, f"{path} is not valid JSON for a config: it holds a {type(config).__name__}, not an object."
    return config, ""


def read_config(folder: Path) -> dict:
    config, problem = config_or_problem(folder)
    if config is None:
        raise CheckpointError(problem)
    return config


def config_facts(folder: str | Path) -> tuple[str, str, int | None] | None:
    """(first of `architectures`, model_type, vocabulary size) from a model's config.json alone (a text model inside
    a multimodal config: its text_config's vocabulary); None when it does not read (its folder gone). Kept by the
    file's path, mtime and size: the Models page asks for every model's at each rerun, and parsed every file each
    time; a rewritten config (another mtime or size) is read again."""
    path = Path(folder) / "config.json"
    try:
        stat = path.stat()
    except OSError:
        return None
    return _config_facts(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _config_facts(path: str, mtime_ns: int, size: int) -> tuple[str, str, int | None] | None:
    config, _ = config_or_problem(Path(path).parent)
    if config is None:
        return None
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) and isinstance(config.get("text_config"), dict):
        vocab = config["text_config"].get("vocab_size")
    return arch, str(config.get("model_type") or ""), vocab if isinstance(vocab, int) and not isinstance(vocab, bool) \
        else None


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
    if problem := weights_problem(config, tensors):
        raise ArchitectureError(f"{folder}: {problem}")
    return ModelInfo(folder, config, tensors, prefix, key, n, layers, other)


def weights_problem(config: dict, names) -> str | None:
    """Why the weights named `names` ({name: TensorRef} as open_checkpoint reads them, or bare names) are not the
    architecture config.json names, if so: a folder whose config says bert over a Llama's weights was imported,
    chatted with, up-scaled and evaluated with every weight random (transformers builds the config's class and only
    warns of the 108 tensors it finds no weights for); one whose intermediate_size was edited was imported, and
    transformers refused to load it ("size mismatch") at the first chat. Remembered per config, names and shapes,
    so register after import, or a job's second look at its model, costs nothing."""
    return _weights_problem(json.dumps(config, sort_keys=True), tuple(sorted(_shapes(names).items())))


def _shapes(names) -> dict[str, tuple[int, ...] | None]:
    """{name: shape} of a checkpoint's {name: TensorRef} (or {name: shape}); bare names have no shape to compare."""
    if isinstance(names, dict):
        return {n: tuple(getattr(v, "shape", v)) if v is not None else None for n, v in names.items()}
    return dict.fromkeys(names)


# in the marker's key: a stricter check (or a fixed one) checks every model again. 3: shapes are compared and in
# the key (2's markers were made from names alone, so an edited intermediate_size found its original's)
WEIGHTS_CHECK = "3"


@functools.lru_cache(maxsize=64)
def _weights_problem(config_json: str, names: tuple[tuple[str, tuple[int, ...] | None], ...]) -> str | None:
    # A fit found once is kept as an empty file in the workspace, named by what it depends on: building the model
    # takes 60 ms, but the first build in a process imports torch and transformers' modeling code (seconds), which
    # a page's up-scale preview or a merge job would otherwise pay for a model checked when it was registered.
    import hashlib
    import os
    from importlib.metadata import version

    config_key, names_key = _depth_free(json.loads(config_json), names)
    key = hashlib.sha256("\n".join((WEIGHTS_CHECK, version("transformers"), config_key, *names_key)).encode()
                         ).hexdigest()
    # storage.db.workspace()'s folder, not imported: sqlalchemy alone costs a page or a job more than the check
    fits = Path(os.environ.get("DUS_WORKSPACE", "workspace")).resolve() / ".cache" / "weights-fit"
    # one folder per check and transformers version (both are in the key too): a marker of another can never be
    # found again, so those folders are what _sweep removes
    marker = fits / f"{WEIGHTS_CHECK}-{version('transformers')}" / key
    if marker.exists():
        return None
    problem = _check_weights(json.loads(config_json), dict(names))
    if problem is None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only workspace: checked again next time
            pass
        else:
            _sweep(fits, marker.parent.name)
    return problem


SWEEP_AFTER_S = 7 * 86400  # another version's markers unwritten this long: its workspace's workers upgraded


def _sweep(fits: Path, current: str) -> None:
    """Remove the markers of other checks and transformers versions (and the flat files of the first layout) that no
    process has added to in SWEEP_AFTER_S: markers are one empty file per model family checked (a model up-scaled,
    merged or trained from a checked one shares it), but each upgrade of transformers left every one of them
    behind, never to be read again. Run only after a check that built a model (60 ms and up): a hit costs one
    `exists` as before. A folder's time moves only when a marker is added to it: a machine sharing the workspace on
    another version whose checks all hit for SWEEP_AFTER_S may find its folder swept, and checks its models again
    (time, never a wrong answer)."""
    import shutil
    import time

    cutoff = time.time() - SWEEP_AFTER_S
    try:
        old = [p for p in fits.iterdir() if p.name != current and p.stat().st_mtime < cutoff]
    except OSError:
        return
    for p in old:
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:  # another process swept it first, or a read-only entry: the next sweep tries again
            pass


def _depth_free(config: dict, names) -> tuple[str, list[str]]:
    """The config and (name, shape) pairs as the check sees them whatever the depth: the layer count and per-layer
    lists left out of the config, each layer's index out of its names. A fit does not depend on the depth
    (inspect_model has found every layer's names alike and numbered 0..n-1 before asking; a layer of other shapes
    adds a pair of its own), so a model up-scaled or merged from a checked one finds its parent's marker: the check's
    first model build in a process imports torch and transformers' modeling code (about 2 s of every up-scale job,
    which streams its tensors without them)."""
    n = next((config[k] for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int)), None)
    kept = {k: v for k, v in config.items()
            if k not in LAYER_COUNT_KEYS and not (isinstance(v, list) and n is not None and len(v) == n)}
    shown = sorted({f"{_layer_free(x)} {list(shape) if shape is not None else '-'}" for x, shape in names})
    return json.dumps(kept, sort_keys=True), shown


def _layer_free(name: str) -> str:  # model.layers.3.mlp.up_proj.weight → model.layers.N.mlp.up_proj.weight
    return f"{m['prefix']}.N.{m['rest']}" if (m := _NUMBERED.match(name)) else name


def _check_weights(config: dict, names: dict[str, tuple[int, ...] | None]) -> str | None:
    if config.get("auto_map") or config.get("quantization_config"):
        # a remote-code model's own modules define its weights (kept as files, never run here), and a quantized
        # checkpoint's names are its quantizer's (qweight, scales): evaldevice.load_model checks what transformers'
        # loader reports for them instead (it refuses a remote-code model whose model_type it does not know)
        return None
    if unknown_type_problem(config):
        # nothing to compare against; up-scaling and merging read tensors by name and need no class. An import of
        # such a folder is refused (import_checks), and evaldevice.load_model refuses it in these words.
        return None
    fit = weights_fit(config, names)
    if isinstance(fit, str):
        return fit
    if not fit.missing and not fit.mismatched:  # extra tensors (an old checkpoint's buffers, a draft head) are left
        return None                            # unread: none is random
    if not fit.missing:
        return shape_message(config, fit, _edited_field(config, names, fit))
    return mismatch_message(config, fit)


def unknown_type_problem(config: dict) -> str | None:
    """Why transformers cannot tell which model config.json describes, if so: no model_type, or one this
    transformers does not know (and no auto_map: a remote-code model names its own classes)."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if config.get("auto_map") or (isinstance(model_type, str) and model_type in CONFIG_MAPPING):
        return None
    said = (f"has model_type {model_type!r}, which transformers {transformers.__version__} does not know"
            if model_type else "has no model_type")
    return (f"config.json {said}: nothing can build the model to check or load its weights. Set model_type to the "
            "architecture the weights are from (as the model's published config.json has it), or upgrade "
            "transformers if the architecture is newer than this one.")


@dataclass
class Fit:
    model_class: str       # what AutoModelForCausalLM builds from the config
    needed: int            # its tensors (state_dict)
    missing: list[str]     # of those, the ones the checkpoint lacks (left random by a load)
    unexpected: list[str]  # the checkpoint's tensors it has no place for
    # (name, shape in the checkpoint, shape the config implies): transformers' loader refuses these ("size mismatch")
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def weights_fit(config: dict, names) -> Fit | str:
    """How the checkpoint's tensor names fit the class AutoModelForCausalLM builds from `config` (what chat,
    evaluation and training load), counted as transformers' loader counts them: checkpoint names renamed by the
    model's conversion mapping (fused experts, legacy names), the base-model prefix added or dropped, tied weights
    and the names the class declares optional (_keys_to_ignore_on_load_missing/_unexpected, rotary inv_freq) left
    out. Given {name: TensorRef or shape}, each tensor's shape is compared with the one the config implies, as the
    loader compares them (it refuses any difference, a larger vocabulary too), except a tensor a WeightConverter
    fuses or splits (its shape is the converter's business). Built on the meta device: nothing allocated. A string:
    why no such class can be built."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config["model_type"]  # one transformers knows: _weights_problem and import_checks see to it
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return (f"config.json says {_says(config)}, which is no causal language model transformers can load "
                "(AutoModelForCausalLM has no class for it): chat, evaluation and training need one. Import a "
                "decoder-only text model.")
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(config, attn_implementation="eager"))
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # bert's "add is_decoder=True" and the like: the refusal says it
        try:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False)
        finally:
            transformers.logging.set_verbosity(verbosity)
    except Exception as exc:  # noqa: BLE001 - a config its own class rejects (a head count that does not divide...)
        return (f"config.json says {_says(config)}, but transformers cannot build that model from it "
                f"({type(exc).__name__}: {exc}). Fix config.json, or import the folder the model was published in.")
    expected = model.state_dict()
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    found, unexpected, mismatched = set(), set(), []
    for name, shape in _shapes(names).items():  # as core_model_loading.convert_and_load_state_dict_in_model does
        key, converted = rename_source_key(name, renamings, converters, model.base_model_prefix, expected)
        if key not in expected and name in expected:
            key, converted = rename_source_key(name, [], [], model.base_model_prefix, expected)
        (found if key in expected else unexpected).add(key if key in expected else name)
        if key in expected and converted is None and shape is not None and shape != tuple(expected[key].shape):
            mismatched.append((key, shape, tuple(expected[key].shape)))  # set_param_for_module's check
    tied = model.all_tied_weights_keys  # {lm_head.weight: model.embed_tokens.weight} where the config ties them
    # either name of a tie may hold it: safetensors' save_model (and a sorted .bin) keep lm_head.weight alone
    held = found | {src for t, src in tied.items() if t in found}
    missing = {k for k in set(expected) - found if not (k in tied and tied[k] in found) and k not in held}
    info = _LoadingInfo(missing, unexpected)
    model._adjust_missing_and_unexpected_keys(info)  # the class's optional names, as from_pretrained drops them
    return Fit(type(model).__name__, len(expected), sorted(info.missing_keys, key=natural_order),
               sorted(info.unexpected_keys, key=natural_order), sorted(mismatched, key=lambda m: natural_order(m[0])))


@dataclass
class _LoadingInfo:  # the two fields of transformers' LoadStateDictInfo that _adjust_missing_and_unexpected_keys reads
    missing_keys: set[str]
    unexpected_keys: set[str]


def natural_order(name: str) -> list:  # layer 2 before layer 10
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split(".")]


def _says(config: dict) -> str:
    archs = config.get("architectures") or []
    return f"{config.get('model_type')}" + (f" ({archs[0]})" if archs else "")


def _examples(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", …" if len(names) > n else "")


def mismatch_message(config: dict, fit: Fit) -> str:
    """The refusal of weights that do not fit config.json: what it says, what is missing, what is not its."""
    lacking = (f"none of the {fit.needed} tensors a {fit.model_class} needs is in the weights"
               if len(fit.missing) == fit.needed else
               f"{len(fit.missing)} of the {fit.needed} tensors a {fit.model_class} needs are not in the weights")
    other = (f"; {len(fit.unexpected)} of theirs have no place in it ({_examples(fit.unexpected)})"
             if fit.unexpected else "")
    said = f"config.json says {_says(config)}, but the weights do not fit it: {lacking} ({_examples(fit.missing)})"
    if any(".lora_" in n or n.startswith("base_model.model.") for n in fit.unexpected):  # a PEFT adapter's folder
        return (f"{said}{other}: these are a LoRA adapter's weights, not a model's. Merge the adapter into its base "
                "model (peft's merge_and_unload, then save_pretrained) and import the merged folder.")
    return (f"{said}{other}. Loaded, the missing ones would be random. Fix config.json (model_type, architectures) "
            "to the model the weights are from, or import the right folder.")


def shape_message(config: dict, fit: Fit, edited: tuple[str, int] | None = None) -> str:
    """The refusal of weights whose shapes are not the ones config.json implies (a size field edited, or another
    model's config): a few tensors, one per layer-free name, each shape in the weights against config.json's, and
    `edited` (field, value), the size field that set to `value` makes every shape fit, if one does."""
    by_name: dict[str, tuple] = {}
    for name, got, want in fit.mismatched:
        by_name.setdefault(_layer_free(name), (list(got), list(want)))
    shown = [f"{n}: {got} in the weights, {want} by config.json" for n, (got, want) in by_name.items()]
    count = (f"1 of the {fit.needed} tensors a {fit.model_class} needs has another shape" if len(fit.mismatched) == 1
             else f"{len(fit.mismatched)} of the {fit.needed} tensors a {fit.model_class} needs have other shapes")
    todo = (f"They fit config.json's {edited[0]} {edited[1]} (it says {config[edited[0]]}): set it back if it was "
            "edited, or import the folder the model was published in." if edited else
            "Import the folder the model was published in, or fix config.json's sizes to the weights'.")
    return (f"config.json says {_says(config)}, but the weights do not fit it: {count} in the weights "
            f"({'; '.join(shown[:3])}{'; …' if len(shown) > 3 else ''}). transformers refuses to load such weights "
            f"(size mismatch). {todo}")


# the fields whose edit changes tensor shapes in most decoder-only configs: _edited_field tries each
_SIZE_FIELDS = ("hidden_size", "intermediate_size", "vocab_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "n_embd", "n_inner", "n_head")


def _edited_field(config: dict, names, fit: Fit) -> tuple[str, int] | None:
    """The size field and value that make every shape fit, if one does: each value the shapes suggest (a differing
    dimension scaled to the field: 32 rows for 4 KV heads, 16 in the weights: 2) is tried on a model built on the
    meta device, so no guess is said unproven."""
    dims = {(w, g) for _, got, want in fit.mismatched if len(got) == len(want) for g, w in zip(got, want) if g != w}
    tries = [(key, g * v // w) for key in _SIZE_FIELDS if type(v := config.get(key)) is int and v > 0
             for w, g in sorted(dims) if w % v == 0 and (g * v) % w == 0 and g * v // w not in (0, v)]
    for key, guess in list(dict.fromkeys(tries))[:8]:  # a meta-device build each, on a refusal only
        fit2 = weights_fit(dict(config, **{key: guess}), names)
        if isinstance(fit2, Fit) and not fit2.missing and not fit2.mismatched:
            return key, guess
    return None
