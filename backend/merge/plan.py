"""Planning a merge before any weight is read: the models must share architecture, tensors, shapes and
vocabulary, not dtypes (a clear error otherwise), and each tensor gets its parameters (SLERP's t along the depth)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from backend import registry
from backend.merge.executor import TORCH_DTYPES, MergeError
from backend.modelinfo import ModelInfo
from backend.specs import MergeSpec
from backend.upscale import check_compatible


def schedule_value(value: float | list[float], frac: float) -> float:
    """A parameter that is a number, or anchors spread evenly along the depth and linearly interpolated — mergekit's
    gradients, with its arithmetic: [0, 1] goes from 0 at the first layer to 1 at the last."""
    if isinstance(value, (int, float)):
        return float(value)
    if len(value) == 1:
        return float(value[0])
    scaled = frac * (len(value) - 1)
    i0 = int(scaled)
    i1 = min(len(value) - 1, i0 + 1)
    f = scaled - i0
    return (1 - f) * value[i0] + f * value[i1]


def tensor_t(spec: MergeSpec, name: str, info: ModelInfo) -> float:
    """t for one tensor: the first filter whose key occurs in its name (or is "*", which mergekit matches with every
    tensor), else the default; evaluated at the tensor's depth, as mergekit 0.1.5 does: layer i of n at i/(n-1) (a
    single layer at 1), every other tensor (embeddings, final norm, head) at 0."""
    m = re.match(rf"^{re.escape(info.layer_prefix)}\.(\d+)\.", name)
    frac = (int(m[1]) / (info.num_layers - 1) if info.num_layers > 1 else 1.0) if m else 0.0
    value = next((v for key, v in spec.filters.items() if key == "*" or key in name), spec.t)
    return schedule_value(value, frac)


def _depths_differ(name_a: str, name_b: str, layers_a: int, layers_b: int) -> MergeError:
    return MergeError(f"{name_a} and {name_b} cannot be merged: they have different layers or tensors "
                      f"({layers_a} vs {layers_b} layers).")


def check_mergeable(infos: list[ModelInfo], names: list[str]) -> None:
    for info, name in zip(infos[1:], names[1:]):
        check_vocab(infos[0], info, names[0], name)
        try:
            check_compatible(infos[0], info)
        except ValueError as exc:
            raise MergeError(f"{names[0]} and {name} cannot be merged: {exc}") from None
        if info.num_layers != infos[0].num_layers or set(info.tensors) != set(infos[0].tensors):
            raise _depths_differ(names[0], name, infos[0].num_layers, info.num_layers)
        for tname, ref in infos[0].tensors.items():  # dtypes may differ: each tensor merges in their promoted one
            other = info.tensors[tname]
            if other.shape != ref.shape:
                raise MergeError(f"{names[0]} and {name} cannot be merged: {tname} has shape {list(ref.shape)} vs "
                                 f"{list(other.shape)}.")


def check_registered(spec: MergeSpec) -> None:
    """Refuse before the job is queued (runner.submit) a merge the registry already shows would fail: its rows hold
    each model's architecture, width and depth, read from the headers at registration, so a 30-layer model
    and a 44-layer one are refused now, with check_mergeable's words, not when the job runs. Nothing is loaded;
    a model not registered yet (a recipe's candidate, made by a job this one waits for) is left to the job."""
    seen: dict[str, str] = {}  # the spec refuses a name listed twice; two names of one model (its name and its
    for ref in spec.models:     # folder, 'builtin' and the built-in's name) are one model merged with itself too
        rec = registry.record(ref)
        folder = Path(rec.path if rec is not None else ref).expanduser()
        key = str(folder.resolve()) if rec is not None or folder.is_dir() else ref
        if rec is None and ref.lower() in ("builtin", registry.BUILTIN_NAME.lower()):  # not imported yet
            key = "the built-in model"
        if key in seen:
            raise MergeError(f"{seen[key]!r} and {ref!r} are one model ({key}); a merge of a model with itself is that "
                             "model: give different models.")
        seen[key] = ref
    refs = list(spec.models) + ([spec.base] if spec.base else [])
    known = [rec for ref in refs if (rec := registry.record(ref)) is not None]
    for rec in known:  # a model of weights no merge reads (F8_E4M3, F64, I8) failed only when the job ran
        check_dtypes({rec.dtype} - {""}, rec.name)
    for b in known[1:]:
        _check_rows(known[0], b)


def check_dtypes(dtypes: set[str], whose: str = "") -> None:
    """Refuse weights of a dtype no merge reads or writes (executor.TORCH_DTYPES): run_merge's refusal, said at
    submit too from a registry row's dtype (its most common tensor dtype, read at registration)."""
    if bad := sorted(set(dtypes) - set(TORCH_DTYPES)):
        raise MergeError(f"{whose + ': ' if whose else ''}cannot merge {', '.join(bad)} weights; only float32, "
                         "bfloat16 and float16 are merged.")


def _check_rows(a, b) -> None:
    """Two registry rows against each other, in check_mergeable's order and words. Only what its checks compare:
    `architectures` may differ (configmatch.IGNORED_FOR_MATCH), model_type and hidden_size may not."""
    differ = [f"{field}: {getattr(a, field)} vs {getattr(b, field)}" for field in ("model_type", "hidden_size")
              if getattr(a, field) and getattr(b, field) and getattr(a, field) != getattr(b, field)]
    if differ:
        raise MergeError(f"{a.name} and {b.name} cannot be merged: the models differ in architecture "
                         f"({'; '.join(differ)}); only models of the same architecture and shapes can be combined.")
    if a.num_layers and b.num_layers and a.num_layers != b.num_layers:
        raise _depths_differ(a.name, b.name, a.num_layers, b.num_layers)
    # dtypes may differ (a GGUF import is float32, its Hub original bfloat16): the merge casts, as mergekit does


def _vocab_size(info: ModelInfo) -> int | None:
    cfg = info.config
    return cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")


def _tokenizer_tables(folder: Path) -> dict[str, dict[str, int]]:
    """token -> id tables of the tokenizer files a folder has: the base vocabulary and the added tokens."""
    tables: dict[str, dict[str, int]] = {}
    tj = folder / "tokenizer.json"
    if tj.is_file():
        data = json.loads(tj.read_text())
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            tables["tokenizer.json vocabulary"] = vocab
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            tables["tokenizer.json vocabulary"] = {p[0]: i for i, p in enumerate(vocab)}
        tables["tokenizer.json added tokens"] = {t["content"]: t["id"] for t in data.get("added_tokens") or []}
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        dec = json.loads(tc.read_text()).get("added_tokens_decoder")
        if isinstance(dec, dict):
            tables["tokenizer_config.json added tokens"] = {v["content"]: int(k) for k, v in dec.items()}
    vj = folder / "vocab.json"
    if vj.is_file():
        tables["vocab.json"] = json.loads(vj.read_text())
    sp = folder / "tokenizer.model"
    if sp.is_file():  # a sentencepiece model is compared by content
        tables["tokenizer.model"] = {hashlib.sha256(sp.read_bytes()).hexdigest(): 0}
    return tables


def check_vocab(a: ModelInfo, b: ModelInfo, name_a: str, name_b: str) -> None:
    """Refuse models whose vocabularies differ: row i of the embeddings must mean the same token in both, or the
    merge averages unrelated tokens. Compares the vocabulary size, then each tokenizer file both folders have."""
    head = f"{name_a} and {name_b} cannot be merged: their vocabularies differ"
    va, vb = _vocab_size(a), _vocab_size(b)
    if va and vb and va != vb:
        raise MergeError(f"{head}: vocab_size {va} vs {vb} (config.json). Merge models that share a tokenizer.")
    ta, tb = _tokenizer_tables(a.folder), _tokenizer_tables(b.folder)
    for part in sorted(set(ta) & set(tb)):
        x, y = ta[part], tb[part]
        if x == y:
            continue
        if part == "tokenizer.model":
            raise MergeError(f"{head}: their tokenizer.model files are not the same file.")
        moved = sorted((t for t in set(x) & set(y) if x[t] != y[t]), key=lambda t: x[t])
        only_a = sorted(set(x) - set(y), key=lambda t: x[t])
        only_b = sorted(set(y) - set(x), key=lambda t: y[t])
        detail = [f"{len(x)} vs {len(y)} entries"] if len(x) != len(y) else []
        if moved:
            t = moved[0]
            detail.append(f"{t!r} is id {x[t]} in {name_a} but {y[t]} in {name_b}"
                          + (f" ({len(moved) - 1} more tokens have other ids)" if len(moved) > 1 else ""))
        if only_a:
            detail.append(f"{only_a[0]!r} (id {x[only_a[0]]}) only in {name_a}"
                          + (f" (+{len(only_a) - 1} more)" if len(only_a) > 1 else ""))
        if only_b:
            detail.append(f"{only_b[0]!r} (id {y[only_b[0]]}) only in {name_b}"
                          + (f" (+{len(only_b) - 1} more)" if len(only_b) > 1 else ""))
        raise MergeError(f"{head} ({part}): {'; '.join(detail)}. Merge models that share a tokenizer.")
