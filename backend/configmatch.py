"""Whether two config.json files describe one architecture: the settings compared when models are merged or their
layers stacked (backend/upscale's check_compatible), in the form every writer of a config agrees on.

Two forms are compared. First config.json as written, without bookkeeping (comparable): cheap, and it settles
models made from one another. Where that finds a difference, each config is read as transformers reads it
(loaded_difference): its config class fills in the defaults an older transformers left out and drops the keys it
replaced, so the Hub's SmolLM2 config.json (transformers 4.42: is_llama_config, rope_interleaved, pretraining_tp,
no head_dim, no mlp_bias) and an import of the same model from GGUF (transformers 5: head_dim 64, mlp_bias false)
were "different architectures" and could not be merged.
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import contextmanager

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Config fields that may differ between models of one architecture without changing any tensor's meaning.
# initializer_range: the std of new weights' initialisation, which no GGUF file stores: an import of one got
# transformers' 0.02 where its source said SmolLM2's 1/24, and the two were "different architectures". The
# output_* / return_dict / problem_type / chunk_size_feed_forward fields: what a forward returns (or how it is
# chunked), every config class's defaults, which a config read by transformers always holds.
IGNORED_FOR_MATCH = {"_name_or_path", "transformers_version", "architectures", "layer_types", "max_window_layers",
                     "torch_dtype", "dtype", "use_cache", "initializer_range", "output_attentions",
                     "output_hidden_states", "return_dict", "problem_type", "chunk_size_feed_forward",
                     *LAYER_COUNT_KEYS}
# The tokenizer's ids, which check_vocab compares in the tokenizer files. unk_token_id: transformers' GGUF loader
# writes the file's tokenizer.ggml.unknown_token_id into a config whose class has no such field (integrations/ggml.py),
# so an import of a GGUF file differed from its source model in "unk_token_id: None vs 0".
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def float32_shortest(value, *, exact_only: bool = True):
    """`value` with each float that is a float32 value written as the shortest decimal that reads back as that
    float32, in dicts and lists too: GGUF stores a config's floats as float32, and transformers reads rms_norm_eps
    1e-05 from it as 9.999999747378752e-06. Other floats (1e-05 itself) stay as they are, unless not `exact_only`:
    then every float is rounded to float32 first, which is how two configs' floats are compared."""
    import numpy as np

    if isinstance(value, dict):
        return {k: float32_shortest(v, exact_only=exact_only) for k, v in value.items()}
    if isinstance(value, list):
        return [float32_shortest(v, exact_only=exact_only) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        with np.errstate(over="ignore"):  # a float64 past float32's range is no float32 value: kept
            single = np.float32(value)
        if np.isfinite(single) and (float(single) == value or not exact_only):
            return float(np.format_float_scientific(single, unique=True))
    return value


# transformers 4 wrote these at the top of config.json (as the Hub's configs have them); transformers 5 writes them
# into rope_parameters. rope_settings() reads either form.
ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor")
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


def comparable(config: dict) -> dict:
    """The settings of `config` two models must share: no bookkeeping, no tokenizer ids, RoPE in one form
    (rope_settings), floats at float32 precision (a GGUF import said "rms_norm_eps: 1e-05 vs
    9.999999747378752e-06"). Nested dicts other than RoPE's (quantization_config, transformers.js_config) are not
    compared."""
    cfg = {k: v for k, v in config.items() if k not in IGNORED_FOR_MATCH and not k.startswith("_")
           and not isinstance(v, dict) and k not in TOKEN_IDS and k not in ROPE_KEYS}
    if rope := rope_settings(config):
        cfg["rope"] = rope
    return float32_shortest(cfg, exact_only=False)


@functools.lru_cache(maxsize=32)
def _class_keys(model_type: str) -> frozenset[str] | None:
    """The fields the config class of `model_type` defines (a default instance's), or None if it has no default."""
    from transformers import CONFIG_MAPPING

    try:
        with _quiet_transformers():
            return frozenset(CONFIG_MAPPING[model_type]().to_dict())
    except Exception:  # noqa: BLE001 - a class that needs arguments: every key of a config counts as its own
        return None


@contextmanager
def _quiet_transformers():
    """transformers' logger kept to errors while a config is read for a comparison: a llama3 RoPE config printed
    "original_max_position_embeddings field must be less than max_position_embeddings" in a merge's check, a
    warning about a model nobody was loading (the comparison's result says what matters)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _read_by_class(config: dict) -> tuple[dict, set[str]] | None:
    """as_loaded's reading, or None where transformers cannot read `config` (a model type it does not know, remote
    code; a config its class refuses)."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        return None
    try:
        with _quiet_transformers():
            loaded = CONFIG_MAPPING[model_type].from_dict(copy.deepcopy(config)).to_dict()
    except Exception:  # noqa: BLE001 - compared as written; loading the model would fail the same way, and says why
        return None
    known = _class_keys(model_type)
    return loaded, (set(loaded) - known if known is not None else set())


def as_loaded(config: dict) -> tuple[dict, set[str]]:
    """`config` as transformers reads it (its model type's config class, from the dict: no weights, no files), with
    the defaults an older writer left out filled in, and the keys the class does not define (is_llama_config,
    rope_interleaved: kept by transformers as loose attributes, read by no Llama code). A model type transformers
    does not know (remote code), or a config its class refuses: config.json as it is, every key its own."""
    return _read_by_class(config) or (dict(config), set())


def loaded_difference(a: dict, b: dict, skip=()) -> dict[str, tuple]:
    """{setting: (a's value, b's value)} for each setting in which configs `a` and `b` differ as transformers reads
    them (comparable of as_loaded), `skip` left out. A key the config class does not define (is_llama_config,
    rope_interleaved) is left out, whether one config holds it or both (with different values): the class keeps it
    as a loose attribute that no modeling code of the model type reads, so the two models are built alike. Where
    transformers cannot read one of the two (remote code, a config its class refuses), both are compared as written,
    every key their own: one read and one as written differed in the defaults the class fills in ("head_dim: None
    vs 64", "is_encoder_decoder: None vs False") beside the setting that really differed. Settings both config.json
    files name come first, then those the classes filled in."""
    read_a, read_b = _read_by_class(a), _read_by_class(b)
    if read_a is None or read_b is None:
        read_a, read_b = (dict(a), set()), (dict(b), set())
    (la, unknown_a), (lb, unknown_b) = read_a, read_b
    ca, cb = comparable(la), comparable(lb)
    for key in [*skip, *(unknown_a | unknown_b)]:
        ca.pop(key, None)
        cb.pop(key, None)
    keys = [k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)]
    keys.sort(key=lambda k: (not (k in a and k in b), k))
    return {k: (ca.get(k), cb.get(k)) for k in keys}
