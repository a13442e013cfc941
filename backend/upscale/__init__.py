"""Depth up-scaling: plan a new layer stack, then stream it to disk tensor by tensor.

    python -m backend upscale --base SmolLM2-135M-Instruct --m 8 --out workspace/models/smol-dus-m8

Plan first (no bytes move): resolve sources, check they match, build the layer map, check disk space. Then execute
into a temporary folder and rename it into place; only a complete folder is registered.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend import configmatch, registry
from backend.modelinfo import ModelInfo, inspect_model
from backend.outputs import building, check_companions, copy_companions, output_dir, register_output
from backend.safetensors_stream import DTYPE_SIZES, OutTensor, TensorRef, open_source, write_checkpoint
from backend.specs import UpscaleSpec, parse_size
from backend.upscale import dus, llama_pro, slices
from backend.upscale.plan import Slot

Progress = Callable[[float, str], None]
METHODS = {"dus": dus.plan, "slices": slices.plan, "llama-pro": llama_pro.plan}


class MismatchError(ValueError):
    pass


CAST_BLOCK = 1 << 22  # elements converted at a time when a second model's tensor takes the base's dtype


def cast_copy(ref: TensorRef, dtype: str) -> Callable:
    """A producer (OutTensor.make) of `ref`'s elements converted to `dtype`, CAST_BLOCK at a time: a second model
    stored in another dtype than the base (a float32 GGUF import beside its bfloat16 Hub original) gives its layers
    in the base's dtype, as config.json says, rounded to nearest even as torch's .to() (and mergekit's cast)."""
    import torch

    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    if ref.dtype not in dtypes or dtype not in dtypes:
        raise MismatchError(f"{ref.name} is stored as {ref.dtype}, the base's as {dtype}: only float32, bfloat16 and "
                            "float16 layers can be converted. Build from models stored in one dtype.")

    def make():
        size = DTYPE_SIZES[ref.dtype]
        numel = ref.nbytes // size
        raw = torch.empty(min(numel, CAST_BLOCK) * size, dtype=torch.uint8)
        out = torch.empty(min(numel, CAST_BLOCK), dtype=dtypes[dtype])
        fd = open_source(ref.file)
        try:
            for e0 in range(0, numel, CAST_BLOCK):
                n = min(CAST_BLOCK, numel - e0)
                view, got = memoryview(raw.numpy())[:n * size], 0
                while got < n * size:  # pread may return less than asked
                    step = os.preadv(fd, [view[got:]], ref.offset + e0 * size + got)
                    if step == 0:
                        raise MismatchError(f"{ref.file} ended early reading {ref.name}: the file is truncated. "
                                            "Restore or re-download that model, then build again.")
                    got += step
                yield memoryview(out[:n].copy_(raw[:n * size].view(dtypes[ref.dtype])).view(torch.uint8).numpy())
        finally:
            os.close(fd)

    return make


def is_output_projection(suffix: str) -> bool:
    """A layer tensor that writes into the residual stream: zeroed in a LLaMA Pro identity block."""
    return bool(llama_pro.OUTPUT_PROJECTIONS.search(suffix))


def check_identity_blocks(layer: dict, model_type: str) -> None:
    """Every sub-block of a layer (the first part of a tensor's suffix: self_attn, mlp, attn, ffn…) that holds a
    weight matrix must have an output projection to zero; otherwise that sub-block still writes into the residual
    stream and the inserted block is no identity. Only "some projection was zeroed" was checked, so an
    architecture whose MLP output has a name not in the list (GPT-J's fc_out, before it was added) built a model
    that did not compute what its base did."""
    groups: dict[str, bool] = {}
    for suffix, ref in layer.items():
        parts = suffix.split(".")
        if len(parts) < 3 or len(ref.shape) < 2:  # norms and biases; flat names give no sub-block to check
            continue
        groups[parts[0]] = groups.get(parts[0], False) or is_output_projection(suffix)
    unzeroed = sorted(g for g, zeroed in groups.items() if not zeroed)
    if unzeroed:
        raise ValueError(f"llama-pro: in this {model_type} model, {', '.join(unzeroed)} has no output projection "
                         "this tool knows (o_proj, down_proj, out_proj, c_proj, fc2, fc_out, dense…) to zero, so the "
                         "inserted blocks would not be identities. Use method dus or slices for this model.")


# Config flags under which a block with zeroed output projections is still no identity, as the transformers code of
# each model reads them. Post-LN: OPT's `hidden = LayerNorm(residual + attn)` when do_layer_norm_before is false
# (facebook/opt-350m), BLOOM's and ChatGLM's residual taken after the norm: the block still applies that norm (a tiny
# post-LN OPT with trained-like norms: logits moved by 0.26). GPT-2's scale_attn_by_inverse_layer_idx divides each
# layer's attention scores by its position + 1, so every layer after an inserted block attends differently (0.008
# on a tiny GPT-2 with sharp attention).
NOT_IDENTITY_FLAGS = {"do_layer_norm_before": (False, "normalises on the residual path"),
                      "apply_residual_connection_post_layernorm": (True, "normalises on the residual path"),
                      "scale_attn_by_inverse_layer_idx": (True, "scales each layer's attention by its position")}


def check_identity_config(config: dict, model_type: str) -> None:
    """LLaMA Pro's identity blocks need a pre-norm residual stream, x + f(norm(x)) (arXiv 2401.02415, sec. 2.2),
    whose layers do not depend on where they sit."""
    hits = [(k, why) for k, (bad, why) in NOT_IDENTITY_FLAGS.items() if k in config and config[k] == bad]
    if hits:
        said = "; ".join(f"{why} ({k}={json.dumps(config[k])} in its config.json)" for k, why in hits)
        raise ValueError(f"llama-pro: this {model_type} model {said}, so the expanded model would not compute what "
                         "its base did even with the inserted blocks' output projections zeroed. Use method dus or "
                         "slices for this model.")


@dataclass
class UpscalePlan:
    spec: UpscaleSpec
    sources: list[ModelInfo]
    source_names: list[str]  # registered names, or folder paths
    slots: list[Slot]
    tensors: list[OutTensor]
    casts: dict[str, str] = field(default_factory=dict)  # a second model's dtype -> the base's it was cast to

    @property
    def cast_note(self) -> str:
        """One line when a second model's layers were cast to the base's dtype ("" when none were): the build's
        progress and its model card say it, as the stack's weights are no longer all as their source stored them."""
        if not self.casts:
            return ""
        said = ", ".join(f"{a} to {b}" for a, b in sorted(self.casts.items()))
        return (f"{self.source_names[1]}'s layers were cast to the base's dtype ({said}, rounded to nearest even as "
                "torch's .to()): one model, one dtype, the one its config.json says.")

    @property
    def n(self) -> int:
        return self.sources[0].num_layers

    @property
    def s(self) -> int:
        return len(self.slots)

    @property
    def params_before(self) -> int:
        return self.sources[0].num_parameters

    @property
    def params_after(self) -> int:
        return self.sources[0].other_params + sum(self.sources[sl.source].layer_params(sl.layer) for sl in self.slots)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def pieces(self) -> list[dict]:
        """The stack as runs of consecutive source layers: DUS gives two (copy A, copy B). Ranges are half-open."""
        out: list[dict] = []
        for i, sl in enumerate(self.slots):
            prev = out[-1] if out else None
            if prev and prev["source"] == sl.source and prev["end"] == sl.layer and not sl.identity \
                    and not prev["identity"]:
                prev["end"] += 1
                prev["last_slot"] = i
            else:
                out.append({"source": sl.source, "start": sl.layer, "end": sl.layer + 1, "identity": sl.identity,
                            "first_slot": i, "last_slot": i})
        return out

    @property
    def used_names(self) -> list[str]:
        """The sources some layer comes from (the base always: embeddings, norm and head are its own). A second
        model no slice takes from was registered as a parent and named on the card, so the lineage (and the
        held-out check, backend/heldout.py) counted its training data as this model's."""
        return list(dict.fromkeys(self.source_names[k] for k in sorted({0} | {sl.source for sl in self.slots})))


def layer_slots(spec: UpscaleSpec, depths: list[int]) -> list[Slot]:
    """The up-scaled model's layers from sources of `depths` layers (base first); a ValueError says which m, groups
    or slice does not fit them and what to choose. The build, the check before queueing (backend/runner/queue.py) and the
    recipe plan (backend/recipe/plan.py) all ask here."""
    if spec.method == "dus":
        return dus.plan(depths[0], m=spec.m)
    if spec.method == "llama-pro":
        return llama_pro.plan(depths[0], groups=spec.groups)
    return slices.plan(depths, slices=[(r.source, r.start, r.end) for r in spec.slices])


def check_compatible(a: ModelInfo, b: ModelInfo, per_layer: bool = False) -> None:
    """Refuse two models whose layers cannot sit in one stack (or be averaged). `per_layer`: the layers of the new
    model each come from one source (slices), so the config's per-layer lists (SmolLM3's no_rope_layers, one flag
    per layer) and lists of layer indices (moe_layers) are not compared: new_config takes each slot's entry from
    its own source. Compared, two SmolLM3 models of other depths were refused ("no_rope_layers: [1, 0] vs
    [1, 0, 1, 0]"). A merge averages layer i with layer i, so it keeps comparing them."""
    sa, sb = a.arch_signature(), b.arch_signature()
    for s in (sa, sb):  # names and shapes, not dtypes: a merge casts (as mergekit), a stack takes the base's dtypes
        s["layer"] = {k: shape for k, (_, shape) in s["layer"].items()}
        s["other"] = {k: shape for k, (_, shape) in s["other"].items()}
    skip = per_layer_keys(a) & per_layer_keys(b) if per_layer else set()
    for key in skip:
        sa["config"].pop(key, None)
        sb["config"].pop(key, None)
    for part in ("prefix", "config", "layer", "other"):
        if sa[part] != sb[part]:
            if part == "config":  # config.json as written differs: compared again as transformers reads each
                differ = configmatch.loaded_difference(a.config, b.config, skip)
                if not differ:
                    continue
                detail = "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in list(differ.items())[:4])
            elif isinstance(sa[part], dict):
                keys = sorted(k for k in set(sa[part]) | set(sb[part]) if sa[part].get(k) != sb[part].get(k))
                detail = "; ".join(f"{k}: {sa[part].get(k)} vs {sb[part].get(k)}" for k in keys[:4])
            else:
                detail = f"{sa[part]} vs {sb[part]}"
            raise MismatchError(f"The models differ in architecture ({part}: {detail}); only models of the same "
                                "architecture and shapes can be combined.")


def plan_upscale(spec: UpscaleSpec) -> UpscalePlan:
    folders, names = [], []
    for ref in [spec.base] + ([spec.second] if spec.second else []):
        folder, name = registry.resolve(ref)
        folders.append(folder)
        names.append(name or str(folder))
    sources = [inspect_model(f) for f in folders]
    if len(sources) == 2:
        check_compatible(sources[0], sources[1], per_layer=True)
    slots = layer_slots(spec, [s.num_layers for s in sources])
    base = sources[0]
    tensors: list[OutTensor] = []
    casts: dict[str, str] = {}
    emb_names = [n for n in base.other if "embed" in n or n.endswith("wte.weight") or n.endswith("wpe.weight")]
    # Embeddings first, final norm and head last: the order a reader of the shards expects.
    for name in emb_names:
        ref = base.other[name]
        tensors.append(OutTensor(name, ref.dtype, ref.shape, ref.nbytes, ref))
    for i, slot in enumerate(slots):
        src = sources[slot.source]
        for suffix, ref in src.layers[slot.layer].items():
            zero = slot.identity and is_output_projection(suffix)
            # a second model's layer takes the dtype the base keeps that tensor in (check_compatible compares
            # names and shapes only): one model, one dtype, the one its config.json (the base's) says
            want = base.layers[0][suffix].dtype if suffix in base.layers[0] else base.dtype
            if ref.dtype != want and not zero:
                casts[ref.dtype] = want
                tensors.append(OutTensor(base.layer_tensor_name(i, suffix), want, ref.shape,
                                         ref.nbytes // DTYPE_SIZES[ref.dtype] * DTYPE_SIZES[want], None,
                                         make=cast_copy(ref, want)))
                continue
            tensors.append(OutTensor(base.layer_tensor_name(i, suffix), ref.dtype, ref.shape, ref.nbytes,
                                     None if zero else ref))
    if spec.method == "llama-pro":
        zeroed = {t.name.split(".", 3)[-1] for t in tensors if t.source is None}
        if not zeroed:
            raise ValueError("llama-pro: found no attention/MLP output projections (o_proj, down_proj…) to zero in "
                             f"this {base.model_type} model, so the inserted blocks would not be identities.")
        check_identity_blocks(base.layers[0], base.model_type)
        check_identity_config(base.config, base.model_type)
    for name, ref in base.other.items():
        if name not in emb_names:
            tensors.append(OutTensor(name, ref.dtype, ref.shape, ref.nbytes, ref))
    return UpscalePlan(spec, sources, names, slots, tensors, casts)


def _is_layer_list(key: str, value, n: int) -> bool:
    """One value per layer (layer_types, no_rope_layers). Token-id lists (Llama 3's eos_token_id has three ids) are
    none, whatever their length: on a 3-layer model the eos ids were re-mapped like layers ([a, b, c, c])."""
    return isinstance(value, list) and len(value) == n and key != "architectures" \
        and not key.endswith(("_token_id", "_token_ids")) and not _is_layer_indices(key, value, n)


def _is_layer_indices(key: str, value, n: int) -> bool:
    """A list that names layers by index (Llama 4's moe_layers, Qwen2-MoE's mlp_only_layers): increasing indices
    below n, shorter than n or all of them. A one-per-layer list of flags is never increasing past [0, 1]."""
    if not (key.endswith("_layers") and isinstance(value, list) and all(type(v) is int for v in value)):
        return False
    if any(not 0 <= v < n for v in value) or any(a >= b for a, b in zip(value, value[1:])):
        return False
    return len(value) < n or (n >= 3 and value == list(range(n)))


def layer_lists(info: ModelInfo) -> tuple[dict[str, list], dict[str, list]]:
    """A model's per-layer config lists (layer_types, no_rope_layers…) and its lists of layer indices (moe_layers),
    as transformers reads them: those config.json holds, and those its config class derives on loading when
    config.json leaves them out. Gemma 3's Hub configs (as Gemma 2's, Cohere 2's and some 80 others) give only a
    pattern, "sliding_window_pattern": 6, and transformers makes every sixth layer global counted from layer 0 of
    whatever stack it loads; a deeper stack left without the list gave copied layers the type of the slot they
    landed in (DUS m=1 on 6 layers: the global layer 5 became sliding, layer 1 global)."""
    n = info.num_layers
    values: dict[str, list] = {}
    indices: dict[str, list] = {}
    from transformers import CONFIG_MAPPING, AutoConfig

    derived = {}
    model_type = info.config.get("model_type")
    # a type transformers does not know (remote code, or none named): config.json's lists only. A type it knows
    # whose config class refuses this config.json (a list entry it does not know, a hidden size no head count
    # divides) became an empty config, silently: the up-scaled model fails to load the same way, so it is said here.
    if model_type in CONFIG_MAPPING:
        try:
            # trust_remote_code False, not left out: left out, transformers asks on the terminal whether to run a
            # remote-code model's configuration module (a CLI user answering "y" ran it) before it refuses
            derived = AutoConfig.from_pretrained(info.folder, trust_remote_code=False).to_dict()
        except Exception as exc:  # noqa: BLE001 - said, not swallowed: StrictDataclassError, ValueError, OSError…
            raise ValueError(f"{info.folder}: transformers cannot read its config.json as a {model_type} "
                             f"configuration ({type(exc).__name__}: {' '.join(str(exc).split())}); fix config.json "
                             "so that transformers loads the model, then up-scale it.") from exc
    for source in (derived, info.config):
        values.update({k: v for k, v in source.items() if _is_layer_list(k, v, n)})
        indices.update({k: v for k, v in source.items() if k not in values and _is_layer_indices(k, v, n)})
    return values, indices


def per_layer_keys(info: ModelInfo) -> set[str]:
    """The config keys that hold one entry per layer, or layer indices, for this model's own depth (layer_lists:
    config.json's, or derived by its config class)."""
    values, indices = layer_lists(info)
    return set(values) | set(indices)


def new_config(plan: UpscalePlan) -> dict:
    base = plan.sources[0]
    cfg = {k: v for k, v in base.config.items() if k != "_name_or_path"}
    cfg[base.layer_count_key] = plan.s
    # Per-layer lists (layer_types in Qwen2 / Gemma / Mistral configs) follow the layer map: a stale list would
    # give a copied layer the attention type of whatever layer used to sit in its slot. Each slot takes the entry of
    # its own source: the base's list indexed by a deeper second model's layer failed (IndexError) or named the
    # base's layer. A list of layer indices names the slots whose source layer it named: Llama 4's moe_layers
    # [0..5] re-mapped as values gave [0, 1, 2, 3, 2, 3, 4, 5], and slots 6 and 7 were built as dense MLPs, their
    # experts dropped and the MLP initialised at random.
    lists = [layer_lists(src) for src in plan.sources]
    used = sorted({sl.source for sl in plan.slots})
    for kind in (0, 1):
        for key in lists[0][kind]:
            missing = [plan.source_names[k] for k in used if key not in lists[k][kind]]
            if missing:
                raise MismatchError(f"{plan.source_names[0]} gives its layers a {key!r} list in its config, "
                                    f"{', '.join(missing)} does not: the new model's layers cannot all be described. "
                                    "Add the list to that model's config.json, or build from models of one "
                                    "configuration.")
            if kind == 0:
                cfg[key] = [lists[sl.source][0][key][sl.layer] for sl in plan.slots]
            else:
                cfg[key] = [i for i, sl in enumerate(plan.slots) if sl.layer in lists[sl.source][1][key]]
    depth = base.config.get("scale_depth")
    if isinstance(depth, (int, float)) and not isinstance(depth, bool):
        used = sorted({sl.source for sl in plan.slots})
        branch = {i: plan.sources[i].config.get("scale_depth", 0) / math.sqrt(plan.sources[i].num_layers)
                  for i in used}
        if len(used) > 1 and not math.isclose(branch[used[0]], branch[used[1]], rel_tol=1e-9):
            # one scale_depth scales every layer alike: two sources of other depths cannot both keep theirs
            raise MismatchError(f"the two models scale their residual branches differently (MiniCPM's scale_depth / "
                                f"sqrt(num_hidden_layers): {branch[used[0]]:.4g} vs {branch[used[1]]:.4g}), and one "
                                "config holds one scale for every layer: build from models of one depth and "
                                "scale_depth.")
        # MiniCPM (arXiv 2404.06395) scales every residual branch by scale_depth / sqrt(num_hidden_layers): kept as
        # is, a deeper stack shrank every copied layer's branch (a tiny MiniCPM3's LLaMA Pro expansion, meant to be
        # an identity, moved logits by 0.045). Scaled with the depth, each layer adds what it added in its source.
        cfg["scale_depth"] = depth * math.sqrt(plan.s / base.num_layers)
    if "max_window_layers" in cfg and "layer_types" not in base.config:
        if not (base.config.get("use_sliding_window") and base.config.get("sliding_window") is not None):
            cfg["max_window_layers"] = plan.s  # no window: every layer is full, as in the base
        elif "layer_types" not in cfg:
            # Qwen2-style, where transformers could not read the config: layers >= max_window_layers slide; a copied
            # layer keeps its own type, which no single threshold over the new stack can say, so the list is written
            def sliding(sl) -> bool:
                return sl.layer >= plan.sources[sl.source].config.get("max_window_layers", base.num_layers)

            cfg["layer_types"] = ["sliding_attention" if sliding(sl) else "full_attention" for sl in plan.slots]
    return cfg


def model_card(plan: UpscalePlan, name: str, out_dir: Path) -> str:
    spec = plan.spec
    ranges = []
    for p in plan.pieces():
        tag = " (identity copy: o_proj/down_proj zeroed)" if p["identity"] else ""
        ranges.append(f"| {p['first_slot']}–{p['last_slot']} | {plan.source_names[p['source']]} | "
                      f"[{p['start']}, {p['end']}){tag} |")
    args = {"dus": f"--m {spec.m}", "llama-pro": f"--groups {spec.groups}",
            "slices": " ".join(f"--slice {r.source}:{r.start}:{r.end}" for r in spec.slices)}[spec.method]
    second = f" --second {plan.source_names[1]}" if spec.second else ""
    return f"""---
base_model: {plan.source_names[0]}
tags: [depth-up-scaling, dus-studio]
---
# {name}

Built by DUS Studio with **{spec.method}** from {' and '.join(f"`{n}`" for n in plan.used_names)}.
{f"Depth up-scaling (SOLAR, arXiv 2312.15166): n = {plan.n}, m = {spec.m}, s = 2·(n−m) = {plan.s}." if spec.method == "dus" else ""}
{f"LLaMA Pro block expansion (arXiv 2401.02415): {spec.groups} identity blocks inserted." if spec.method == "llama-pro" else ""}

Layers: {plan.n} → {plan.s}; parameters: {plan.params_before:,} → {plan.params_after:,}; dtype {plan.sources[0].dtype}.
{plan.cast_note}

## Layer map (ranges are half-open)
| new layers | source | source layers |
|---|---|---|
{chr(10).join(ranges)}

## Rebuild
```
python -m backend upscale --base {plan.source_names[0]}{second} --method {spec.method} {args} --out {out_dir}
```
"""


def run_upscale(spec: UpscaleSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    """Build the up-scaled model into `out_dir` (default workspace/models/NAME) and register it."""
    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    plan = plan_upscale(spec)
    config = new_config(plan)  # before any byte is written: a config that cannot be made fails the job at once
    name = spec.name or spec.default_name()
    check_companions(plan.sources[0].folder)  # no link out of it is copied (before the weights, not after)
    out_dir = output_dir(out_dir, spec.out, name, needed=plan.nbytes)
    progress(0.0, f"{plan.n} → {plan.s} layers, {plan.params_after:,} parameters"
             + (f"; {plan.cast_note}" if plan.cast_note else ""))
    with building(out_dir, "build") as tmp:
        write_checkpoint(plan.tensors, tmp, parse_size(spec.shard_size), lambda f, m: progress(0.98 * f, m))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        copy_companions(plan.sources[0].folder, tmp)
        (tmp / "README.md").write_text(model_card(plan, name, out_dir))
    rec = register_output(out_dir, name, "upscaled", parents=plan.used_names,
                          recipe=spec.model_dump(mode="json"), source=spec.method)
    seconds = time.perf_counter() - t0
    progress(1.0, f"registered {name} in {seconds:.1f} s")
    return {"model": rec.name, "path": str(out_dir), "layers": plan.s, "parameters": plan.params_after,
            "seconds": round(seconds, 2)}
