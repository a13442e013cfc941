"""The specs of work that makes or ships a model: depth up-scaling, import, Hub push and merge (re-exported by
backend/specs.py, where the kinds are looked up)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.names import safe_name
from backend.spec_base import (SEPARATORS, _short, _Spec, _tagged, _valid_name, begins, distinct_tail,
                               parse_size)

class SliceRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: int = Field(0, ge=0, le=1, description="0: the base model, 1: the second model")
    start: int = Field(ge=0, description="first layer kept")
    end: int = Field(gt=0, description="first layer NOT kept (half-open range)")


# The fields only one up-scaling method reads, with their command-line flags: given to another method they were
# ignored without a word (`--method llama-pro --m 4` built a llama-pro model, and the 4 was lost).
METHOD_ONLY_FIELDS = {"m": ("dus", "--m"), "slices": ("slices", "--slice"), "second": ("slices", "--second"),
                      "groups": ("llama-pro", "--groups")}


class UpscaleSpec(_Spec):
    kind: Literal["upscale"] = "upscale"
    base: str = Field(description="registered model name, or a folder with config.json and safetensors")
    method: Literal["dus", "slices", "llama-pro"] = "dus"
    m: int | None = Field(None, description="dus: layers removed from each copy; s = 2·(n-m)")
    slices: list[SliceRange] = Field(default_factory=list, description="slices: half-open ranges, stacked in order")
    second: str | None = Field(None, description="slices: an optional second source of the same architecture")
    groups: int | None = Field(None, description="llama-pro: number of groups, one identity block added per group")
    name: str | None = Field(None, description="name to register; default derived from base and method")
    out: str | None = Field(None, description="folder to write the model to; default $DUS_WORKSPACE/models/NAME")
    shard_size: str = Field("2GB", description="largest safetensors shard")

    _name = field_validator("name")(_valid_name)

    @field_validator("shard_size")
    @classmethod
    def _shard(cls, v: str) -> str:
        if parse_size(v) < 1000:
            raise ValueError("shard_size must be at least 1KB.")
        return v

    @model_validator(mode="after")
    def _method_fields(self) -> "UpscaleSpec":
        for field, (method, flag) in METHOD_ONLY_FIELDS.items():
            if self.method != method and getattr(self, field) not in (None, []):
                raise ValueError(f"{field} ({flag} on the command line) is for method {method!r}; method "
                                 f"{self.method!r} does not use it: leave it out, or choose method {method!r}.")
        if self.method == "dus" and self.m is None:
            raise ValueError("method 'dus' needs m (--m on the command line), the number of layers removed from each "
                             "copy.")
        if self.method == "dus" and self.m < 1:
            raise ValueError(f"m={self.m}: m must be at least 1.")
        if self.method == "slices" and not self.slices:
            raise ValueError("method 'slices' needs slices: a list of half-open ranges {source, start, end} (--slice "
                             "SOURCE:START:END on the command line, once per slice).")
        if self.method == "slices" and any(s.source == 1 for s in self.slices) and not self.second:
            raise ValueError("slices use source 1 but no second model is given: give second (--second on the command "
                             "line), the model of source 1.")
        if self.method == "llama-pro" and self.groups is None:
            raise ValueError("method 'llama-pro' needs groups (--groups on the command line), the number of identity "
                             "blocks to insert.")
        if self.method == "llama-pro" and self.groups < 1:
            raise ValueError(f"groups={self.groups}: groups must be at least 1.")
        return self

    def default_name(self) -> str:
        base = _short(self.base)
        if self.method == "slices" and any(s.source == 1 for s in self.slices):  # the models joined, as a merge's:
            base += f"_{_short(self.second)}"  # the same ranges of two other second models had one name
        tag = {"dus": f"dus-m{self.m}", "llama-pro": f"pro-g{self.groups}",
               "slices": "slices-" + "_".join(f"{s.source}.{s.start}-{s.end}" for s in self.slices)}[self.method]
        return _tagged(base, tag)


class ImportSpec(_Spec):
    kind: Literal["import"] = "import"
    target: str = Field(description="'builtin', a model folder, a .gguf file, or a Hub id owner/name")
    name: str | None = Field(None, description="name to register; default derived from the target")
    allow_pickle: bool = Field(False, description="convert pickle (.bin) weights with torch.load(weights_only=True)")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give what to import: 'builtin', a folder, a .gguf file or a Hub id (owner/name).")
        return v.strip()

    _name = field_validator("name")(_valid_name)


class PushSpec(_Spec):
    """Upload a registered model to a Hugging Face Hub model repo with a card of its lineage and scores
    (backend/hubpush.py)."""
    kind: Literal["push"] = "push"
    model: str = Field(description="registered model name")
    repo: str = Field(description="the Hub model repo, owner/name (made if missing)")
    private: bool = Field(False, description="make the repo private if this push makes it")
    license_name: str | None = Field(None, description="for a licence `other` whose base models name none: the id "
                                                       "the card gives it (the Hub's license_name, e.g. my-license-1.0)")
    license_link: str | None = Field(None, description="for a licence `other`: its file in the repo (LICENSE) or "
                                                       "its URL (the Hub's license_link)")

    @field_validator("license_name", "license_link")
    @classmethod
    def _licence(cls, v: str | None) -> str | None:
        return (v.strip() or None) if v is not None else None

    @field_validator("license_name")
    @classmethod
    def _licence_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", v):
            raise ValueError(f"{v!r}: a licence name is an id of lower-case letters, digits, '.' and '-' "
                             "(e.g. my-license-1.0), as the Hub's model card spec asks.")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", v.strip()):
            raise ValueError(f"{v!r}: a Hub repo id is owner/name, e.g. your-name/my-model.")
        return v.strip()


# The merge methods, mergekit 0.1.5's, in one table: adding a method is a row here (and its function in
# backend/merge/methods.py's METHODS); the spec's choices, its checks, the name's tag and the Compare page's
# inputs are read from it. Each row: mergekit's defaults (normalize, rescale), then the fields of MergeSpec the
# method reads. linear normalizes its weights; TIES divides by the weights of the entries that agree with the elected
# sign; DARE rescales what it keeps by ‖delta‖₁ / ‖kept‖₁. base: relative to a base (a task vector per model, which
# lambda scales); density: drops entries (what rescale rescales); seed: drops them at random.
_MERGE_METHODS = {
    "average": ((True, False), ("weights",)),
    "slerp": ((False, False), ("t", "filters")),
    "task_arithmetic": ((False, False), ("weights", "base")),
    "ties": ((True, False), ("weights", "base", "density")),
    "dare_linear": ((False, True), ("weights", "base", "density", "seed")),
    "dare_ties": ((False, True), ("weights", "base", "density", "seed")),
}
MERGE_DEFAULTS = {method: defaults for method, (defaults, _) in _MERGE_METHODS.items()}
MergeMethod = Literal[tuple(MERGE_DEFAULTS)]  # MergeSpec.method's choices, in the table's order
MERGE_ALIASES = {"linear": "average", "dare": "dare_linear"}  # mergekit's name; "dare" of specs saved before
# The fields only some merge methods read, with those methods and the command-line flag: given to another method
# they were ignored without a word (`--method slerp --weights 0.2 0.8` merged a plain SLERP at t 0.5), as
# METHOD_ONLY_FIELDS was for upscale. lambda, rescale and normalize are checked in MergeSpec._method.
MERGE_METHOD_FIELDS = {field: (tuple(m for m, (_, reads) in _MERGE_METHODS.items() if field in reads), flag)
                       for field, flag in (("weights", "--weights"), ("t", "--t"), ("filters", None),
                                           ("density", "--density"), ("seed", "--seed"), ("base", "--base"))}
_RELATIVE = MERGE_METHOD_FIELDS["base"][0]  # task_arithmetic, ties, dare_linear, dare_ties
_DROPPING = MERGE_METHOD_FIELDS["density"][0]  # ties, dare_linear, dare_ties

OLD_DENSITY_DEFAULT = 0.5  # density's default before it became mergekit's 1.0 (every entry kept)


def weights_sum_to_zero(weights: list[float]) -> bool:
    """Whether `weights` sum to zero as written (within 1e-6 of the largest: 0.3, -0.1, -0.2 does, though its
    float sum is -2.8e-17): normalized by that sum, a merge is infinite or nonsense."""
    return abs(math.fsum(weights)) <= 1e-6 * max(map(abs, weights), default=0.0)


class MergeSpec(_Spec):
    """Merge candidates: SOLAR's Average(a, b) and SLERP, plus task arithmetic, TIES and DARE relative to a base —
    mergekit 0.1.5's definitions and defaults (average is its `linear`)."""
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)
    kind: Literal["merge"] = "merge"
    models: list[str] = Field(min_length=2, description="candidates: registered names or folders")
    method: MergeMethod = "average"
    weights: list[float] | None = Field(None, description="average / task vectors: one per model (default 1 each)")
    normalize: bool | None = Field(None, description="divide by the sum of the weights (ties: of those that agree "
                                                     "with the elected sign); default: mergekit's for the method")
    rescale: bool | None = Field(None, description="ties / dare: multiply what is kept by ‖delta‖₁ / ‖kept‖₁; "
                                                   "default: on for dare, off for ties")
    lambda_: float = Field(1.0, alias="lambda", description="task_arithmetic / ties / dare: scales the merged "
                                                             "task vector")
    t: float | list[float] = Field(0.5, description="slerp: 0 = first model, 1 = second; a list is a schedule "
                                                    "interpolated along the depth")
    filters: dict[str, float | list[float]] = Field(default_factory=dict,
                                                    description="slerp: t per module, e.g. {self_attn: [0, 1], "
                                                                "mlp: [1, 0]} (first matching key wins)")
    base: str | None = Field(None, description="task_arithmetic / ties / dare: the common base model")
    density: float = Field(1.0, gt=0, le=1, description="ties / dare: share of each task vector kept (default 1, "
                                                         "mergekit's: every entry)")
    seed: int = Field(0, ge=0, description="dare: seed of the random drop mask (the same seed gives the same model)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="the dtype every input is read in and the output is written in, as mergekit's dtype; "
                "auto: the inputs' promoted dtype (F32 with BF16 gives F32)")
    tokenizer_source: str | None = Field(
        None, description="the model whose tokenizer files, chat template and generation config the merge gets: "
                          "'base' or one of the models (default, mergekit's: the base when there is one, else the "
                          "first model; config.json always comes from that default)")
    chat_template: str | None = Field(
        None, description="'auto' (the template most of the models share, mergekit's auto) or a Jinja template; "
                          "default: the tokenizer source's own")
    name: str | None = None
    out: str | None = None
    shard_size: str = "2GB"

    _name = field_validator("name")(_valid_name)
    _shard = field_validator("shard_size")(UpscaleSpec._shard.__func__)

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v):
        # mergekit's test of a template (merge.py, _set_chat_template); its built-in names (chatml, llama3…) are
        # files of its package, not of this one
        if v is not None and v != "auto" and (len(v) < 20 or "{" not in v):
            raise ValueError(f"chat_template: 'auto' or a Jinja chat template, not {v[:40]!r} (a named template such "
                             "as chatml is mergekit's file: paste its text).")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _alias(cls, v):
        return MERGE_ALIASES.get(v, v) if isinstance(v, str) else v

    @staticmethod
    def reads(method: str, field: str) -> bool:
        """Whether `method` reads `field` (weights, t, filters, base, density, seed): the merge methods' table says,
        for the spec's checks and the Compare page's inputs alike."""
        return field in _MERGE_METHODS[method][1]

    @property
    def resolved_normalize(self) -> bool:
        return MERGE_DEFAULTS[self.method][0] if self.normalize is None else self.normalize

    @property
    def resolved_rescale(self) -> bool:
        return MERGE_DEFAULTS[self.method][1] if self.rescale is None else self.rescale

    @model_validator(mode="after")
    def _method(self) -> "MergeSpec":
        relative = self.method in _RELATIVE
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"weights (--weights on the command line): give one per model ({len(self.models)}), "
                             f"not {len(self.weights)}.")
        if self.weights is not None and not all(math.isfinite(w) for w in self.weights):
            raise ValueError("weights: finite numbers only.")
        for field, (methods, flag) in MERGE_METHOD_FIELDS.items():
            # given (a default the page's model_dump or a stored job's spec carries is not) and not the default
            default = type(self).model_fields[field].get_default(call_default_factory=True)
            if self.method not in methods and field in self.model_fields_set and getattr(self, field) != default \
                    and not (field == "density" and self.density == OLD_DENSITY_DEFAULT):
                # (a spec stored before density's default became mergekit's 1.0 carries 0.5 whatever its method)
                raise ValueError(f"{field}{f' ({flag} on the command line)' if flag else ''} is for "
                                 f"{' / '.join(methods)}; method {self.method!r} does not use it: leave it out, or "
                                 f"choose one of those methods.")
        if self.resolved_normalize and self.weights and weights_sum_to_zero(self.weights):
            # every method that normalizes divides by the weights' sum: by zero, or by a rounding error of it (0.3,
            # -0.1, -0.2 sums to 1.5e-8 in float32, 1.2e-4 in float16), which scales the merge to inf or nonsense;
            # mergekit's own guard (|sum| < 1e-8 counts as 1) compares in the merge's dtype, where float16 cannot
            # hold 1e-8, and every tensor of a float16 merge came out inf
            raise ValueError("weights: they sum to zero, so they cannot be normalized by their sum; change a weight, "
                             "or untick \"Normalize by the weights' sum\" (normalize: false in a spec, "
                             "--no-normalize on the command line).")
        if self.method == "slerp" and len(self.models) != 2:
            raise ValueError("slerp merges exactly two models.")
        ts = [self.t] + list(self.filters.values())
        for v in ts:
            vals = v if isinstance(v, list) else [v]
            if not vals or any(not 0 <= x <= 1 for x in vals):
                raise ValueError("t: values between 0 and 1 (a schedule needs at least one value).")
        if relative and not self.base:
            raise ValueError(f"{self.method} is relative to a base: give base (--base on the command line), the model "
                             "the candidates started from.")
        if not math.isfinite(self.lambda_):
            raise ValueError("lambda: a finite number.")
        if self.lambda_ != 1 and not relative:
            raise ValueError(f"lambda scales a task vector: use it with task_arithmetic, ties or dare, not "
                             f"{self.method}.")
        if self.rescale and self.method not in _DROPPING:
            raise ValueError(f"rescale: only ties and dare drop entries to rescale, not {self.method}.")
        if self.normalize is not None and self.method == "slerp":
            raise ValueError("normalize: slerp has no weights to normalize.")
        if self.tokenizer_source == "base" and not self.base:
            raise ValueError("tokenizer_source (--tokenizer-source on the command line): 'base' needs a base "
                             "(task_arithmetic, ties, dare); name one of the models instead.")
        if self.tokenizer_source not in (None, "base", self.base, *self.models):
            raise ValueError(f"tokenizer_source (--tokenizer-source on the command line): {self.tokenizer_source!r} is "
                             "not one of the models"
                             f"{' or the base' if self.base else ''}; give 'base' or one of "
                             f"{', '.join(self.models)}.")
        twice = sorted({m for m in self.models if self.models.count(m) > 1})
        if twice:  # `merge --models tiny tiny` registered a copy of tiny as tiny_tiny-average. mergekit keys the
            # candidates' tensors by model (a dict: merge_methods/linear.py), so a repeat collapses into one entry and
            # its merge is the model itself; here the weights would count it twice (weights 1, 2 unnormalized: 3×)
            raise ValueError(f"models: {', '.join(map(repr, twice))} listed twice; a merge of a model with itself is "
                             "that model: give different models.")
        return self

    def default_name(self) -> str:
        """The candidates joined, then the method's tag (method, weights or t, density, and a digest of any other
        setting changed from its default: a schedule, filters, lambda…). Past DEFAULT_NAME_CHARS:
        the first candidate whole, what each other one adds to it, and the tag never cut (names.safe_name keeps 100
        characters, which cut the tag off long names, so an average and a SLERP of the same models got the same
        name); a name that still does not fit is cut and given a digest of the candidates, so different candidates
        keep different names."""
        short = [Path(m).name if "/" in m else m for m in self.models]
        tag = f"slerp{self.t if not isinstance(self.t, list) else 'sched'}" if self.method == "slerp" else \
            self.method + ("" if not self.weights else "-" + "-".join(f"{w:g}" for w in self.weights))
        if self.method in _DROPPING:
            tag += f"-d{self.density:g}"
        if unnamed := self._unnamed_settings():  # settings the tag does not spell: two merges differing only
            tag += "-" + hashlib.sha1(json.dumps(unnamed, sort_keys=True).encode()).hexdigest()[:4]  # there differ
        joined = f"{'_'.join(short)}-{tag}"
        full = safe_name(joined)
        # a candidate that is the start of the first (a model beside its own fine-tune) has nothing to shorten to
        # (distinct_tail): whole, past DEFAULT_NAME_CHARS if need be (tables cut long names in the middle), up to
        # safe_name's 100; "SmolLM2-135M-Instruct-sft_Instruct" read as a merge with another model
        if len(full) <= DEFAULT_NAME_CHARS or len(joined) <= 100 and any(begins(short[0], o) for o in short[1:]):
            return full
        ids = [short[0]] + [distinct_tail(short[0], o) for o in short[1:]]
        room = max(DEFAULT_NAME_CHARS - len(tag) - 1, 16)
        # past room, every candidate keeps a share (a cut of the joined names dropped the second one whole), then a
        # digest of the candidates AND the tag: a tag too long for the name (8 weights) is cut by safe_name's 100
        # characters, and merges differing only there (the last weight) got one name
        if len("_".join(ids)) > room or len("_".join(ids)) + 1 + len(tag) > 100:  # safe_name keeps 100
            digest = hashlib.sha1("\n".join([*self.models, tag]).encode()).hexdigest()[:6]
            share = max((room - 7) // len(ids) - 1, 4)
            later = [_cut_at_separator(i, share) for i in ids[1:]]
            ids = [_cut_at_separator(ids[0], max(room - 7 - sum(len(i) + 1 for i in later), 4)), *later, digest]
        return safe_name(f"{'_'.join(ids[:len(short)])}{''.join('-' + i for i in ids[len(short):])}-{tag}")

    def _unnamed_settings(self) -> dict:
        """The settings of this method that change the merged weights, are not spelled in the name's tag and differ
        from their defaults (a SLERP schedule or filters, lambda, normalize, rescale, DARE's seed, dtype). The base is
        left out: a merge relative to another base is rare, and refused under a taken name rather than overwriting."""
        reads = _MERGE_METHODS[self.method][1]  # lambda scales a task vector (relative to a base), normalize
        # divides by the weights, rescale rescales what density drops
        keys = [k for k in ("t", "filters", "seed") if k in reads] + ["lambda_"] * ("base" in reads) + \
            ["normalize"] * ("weights" in reads) + ["rescale"] * ("density" in reads)
        value = {k: getattr(self, k) for k in keys + ["dtype"] if k != "t" or isinstance(self.t, list)}
        default = {k: type(self).model_fields[k].get_default(call_default_factory=True) for k in value}
        value.update({k: getattr(self, f"resolved_{k}") for k in ("normalize", "rescale") if k in value})
        default.update(zip(("normalize", "rescale"), MERGE_DEFAULTS[self.method]))  # None means the method's own
        return {k: v for k, v in value.items() if v != default[k]}


def _cut_at_separator(name: str, chars: int) -> str:
    """`name` in at most `chars` characters, cut back to its last separator when one is in the second half."""
    if len(name) <= chars:
        return name
    cut = name[:chars]
    at = max(cut.rfind(c) for c in SEPARATORS)
    return (cut[:at] if at >= chars // 2 else cut).rstrip(SEPARATORS) or cut


DEFAULT_NAME_CHARS = 60  # longer default merge names (82 characters) hid the scores table's numbers
