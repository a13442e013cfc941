"""What every spec shares (backend/specs.py is where the kinds are looked up): the base class with its cluster
resources and YAML form, the size and name checks, and the default-name helpers the model-making specs use."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from backend.names import check_name, safe_name

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.I)


def _valid_name(cls, v: str | None) -> str | None:
    """Every spec's `name` field goes through the one check in backend/names.py (None: a default is derived)."""
    return v if v is None else check_name(v)


def parse_size(text: str) -> int:
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"shard_size {text!r} is not a size like 500MB or 2GB.")
    return int(float(m[1]) * 1000 ** "_KMGT".index((m[2] or "_").upper()))


class Resources(BaseModel):
    """What one process of a job asks the cluster for (Ray: the job's entrypoint, or each Ray Train worker). Ignored
    by the local worker, whose slots share this machine."""
    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, ge=0, description="CPU cores")
    gpus: float = Field(0.0, ge=0, description="GPUs (fractions share one)")
    memory_gb: float | None = Field(None, gt=0, description="memory to reserve, GiB (default: none reserved)")
    custom: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {\"a100\": 1} "
                                     "for nodes started with `ray start --resources '{\"a100\": 4}'`")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resources: Resources = Field(default_factory=Resources, description="on a Ray cluster (DUS_RAY_ADDRESS): what "
                                 "the job asks for; a training job with ray_workers > 1: what each worker asks for")

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        # what the job does first, where it runs last
        return yaml.safe_dump({"kind": data.pop("kind"), **data, "resources": data.pop("resources")},
                              sort_keys=False, allow_unicode=True)


def _short(model: str) -> str:
    """A model reference as a default name starts it: a folder's own name, a registered name as it is."""
    return Path(model).name if "/" in model else model


def _tagged(base: str, tag: str) -> str:
    """`BASE-TAG` as a valid name (a folder or Hub-style base may hold any character), the tag kept whole:
    safe_name's cut at 100 characters took it off a long base (an up-scale by m 4 and by m 8, a dpo and a dus, of
    one model got one name; at 100 characters the base's own). A base too long for both is cut and given a digest of
    itself, a tag too long (many slices) a digest of itself, so different specs keep different names."""
    if len(tag) > 60:
        tag = f"{tag[:53].rstrip(SEPARATORS)}-{hashlib.sha1(tag.encode()).hexdigest()[:6]}"
    short = safe_name(base, fallback="")
    if len(short) + 1 + len(tag) > 100:
        short = f"{short[:100 - len(tag) - 8].rstrip(SEPARATORS)}-{hashlib.sha1(base.encode()).hexdigest()[:6]}"
    return safe_name(f"{short}-{tag}")


SEPARATORS = "-_."


def begins(name: str, start: str) -> bool:
    """`name` is `start` and more words ("m-sft" begins with "m"; "m2" does not)."""
    return len(name) > len(start) and name.startswith(start) and name[len(start)] in SEPARATORS


def distinct_tail(first: str, other: str) -> str:
    """What `other` adds to `first` after the start they share, cut at a separator, so a merge of a model and its
    fine-tune reads "…-dus-m8_cpt" for "…-dus-m8" and "…-dus-m8-cpt"; `other` whole when they share no word, and
    when it is the start of `first` (the model `first` was named after): it adds nothing, and its last word alone
    ("Instruct" for "SmolLM2-135M-Instruct" beside "SmolLM2-135M-Instruct-sft") read as another model."""
    if begins(first, other):
        return other
    shared = os.path.commonprefix([first, other])
    if not (shared == first and other[len(shared):len(shared) + 1] in tuple(SEPARATORS)):
        shared = shared[:max(shared.rfind(c) for c in SEPARATORS) + 1]
    return other[len(shared):].lstrip(SEPARATORS) or other
