"""A recipe: the whole SOLAR experiment (arXiv 2312.15166, sections 2–3) as one typed YAML file.

    kind: recipe
    name: solar-mini
    base: SmolLM2-135M-Instruct
    upscale: {method: dus, m: 8}          # m: [4, 8, 12] runs the recipe once per value
    stages:
      - {name: cpt, kind: cpt, model: upscaled, data: [{source: builtin:facts-corpus}]}
      - {name: sft-v1, kind: sft, model: cpt, data: [{source: builtin:alpaca-mini}], label: SFT v1}
      - {name: avg, kind: merge, models: [cand1, cand2], weights: [0.5, 0.5]}
    eval: {tasks: [perplexity, synth-math], limit: 20}   # every model the recipe makes is evaluated alike
    budget: {steps_scale: 0.5}

A stage is the body of a cpt / sft / dpo / merge / synth-math / eval spec (backend/specs.py) plus `name`, and
refers to other stages by name: `model: sft-v3`, `models: [cand1, cand2]`, data `stage:math/instruct`. `base`
and `upscaled` name the base model and the up-scaled one. Validation here needs no model or data file; the
checks that do (m against the base's depth, data sets present, merge depths) are in backend/recipe/plan.py and
backend/recipe/inputs.py.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backend.names import check_name
from backend.specs import SPECS, EvalSpec, UpscaleSpec, did_you_mean_kind, explain

STAGE_KINDS = ("cpt", "sft", "dpo", "merge", "synth-math", "eval")
RESERVED = ("base", "upscaled")
# Keys of a stage that belong to the recipe, not to the work spec.
STAGE_KEYS = ("name", "kind", "label", "tables", "sweep", "sweep_of")
TABLES = ("sft", "dpo", "merge")
_RANGE = re.compile(r"^\s*(-?[\d.]+)\s*\.\.\s*(-?[\d.]+)\s+step\s+([\d.]+)\s*$")
STAGE_REF = re.compile(r"^stage:([A-Za-z0-9][A-Za-z0-9._-]*)/(instruct|alignment)$")
# What one sweep and one recipe may plan: each sweep point is a model trained or merged, then evaluated, and each
# stage one job queued (under 3 a second on a busy 2-core machine). A step typed 0.001 for 0.1 planned 1,001 merges
# (2,009 stages with their evaluations), 0.0001 10,001: a Run queueing jobs for many minutes. 101 points is 0..1
# step 0.01, ten times as fine as a merge sweep of step 0.1; 200 stages: two such sweeps, or m swept over a
# ten-stage recipe twenty times.
MAX_SWEEP_POINTS = 101
MAX_STAGES = 200


class RecipeError(ValueError):
    pass


def parse_values(value: Any, field: str) -> list:
    """A sweep's values: a list, or 'A..B step S' (both ends included, rounded to hide float noise)."""
    if isinstance(value, list):
        if not value:
            raise RecipeError(f"{field}: a sweep needs at least one value.")
        _check_points(field, value, len(value))
        return value
    m = _RANGE.match(str(value))
    if not m:
        raise RecipeError(f"{field}: {value!r} is neither a list nor a range like '0.0..1.0 step 0.1'.")
    lo, hi, step = (float(x) for x in m.groups())
    if step <= 0 or hi < lo:
        raise RecipeError(f"{field}: a range needs A <= B and a positive step.")
    n = int(round((hi - lo) / step)) + 1
    _check_points(field, value, n)  # before the list is made: a step of 1e-12 is a trillion values
    return [round(lo + i * step, 10) for i in range(n) if lo + i * step <= hi + 1e-9]


def _check_points(field: str, value: Any, n: int) -> None:
    if n > MAX_SWEEP_POINTS:
        shown = f"{value!r}" if isinstance(value, str) else "its list"
        raise RecipeError(f"{field}: {shown} is a sweep of {n:,} points; one sweep may plan at most "
                          f"{MAX_SWEEP_POINTS} (each point is a model made and evaluated). Check the step (0..1 "
                          "step 0.1 is 11 points), or split the sweep over several recipes.")


class Budget(BaseModel):
    """How much compute: one knob scales every training stage, so the same recipe runs as a smoke test, a CPU demo
    or the paper's size."""
    model_config = ConfigDict(extra="forbid")
    steps_scale: float = Field(1.0, gt=0, description="multiplies every training stage's max_steps")
    max_steps: int | None = Field(None, ge=1, description="cap on any training stage's max_steps")
    max_rows: int | None = Field(None, ge=1, description="cap on rows taken from each data source "
                                                             "(a synth-math stage: on its seeds)")
    eval_limit: int | None = Field(None, ge=1, description="cap on items per evaluation task")


class RecipeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["recipe"] = "recipe"
    name: str = Field(description="prefix of every model the recipe makes")
    description: str = ""
    base: str = Field(description="registered model name, 'builtin', a model folder, or a Hub id (online)")
    upscale: dict[str, Any] | None = Field(None, description="an upscale spec body without base (method, m, …); "
                                                             "null: train the base as it is")
    stages: list[dict[str, Any]] = Field(min_length=1)
    eval: dict[str, Any] | None = Field(default_factory=lambda: {"tasks": ["perplexity"]},
                                        description="an eval spec body without models, applied to every model")
    budget: Budget = Field(default_factory=Budget)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "name")

    @field_validator("upscale")
    @classmethod
    def _upscale(cls, v: dict | None) -> dict | None:
        if v is None:
            return v
        if "base" in v or "name" in v or "out" in v:
            raise RecipeError("upscale: base, name and out are set by the recipe; leave them out.")
        m = v.get("m")
        for value in (m if isinstance(m, list) else [m]):
            try:
                UpscaleSpec(base="x", **{**v, "m": value})
            except ValidationError as exc:
                raise RecipeError("upscale." + explain(exc)) from None
        return v

    @field_validator("eval")
    @classmethod
    def _eval(cls, v: dict | None) -> dict | None:
        if v is not None:
            if "models" in v:
                raise RecipeError("eval: models are every model the recipe makes; leave models out.")
            try:
                EvalSpec(models=["x"], **v)
            except ValidationError as exc:
                raise RecipeError("eval." + explain(exc)) from None
        return v

    @model_validator(mode="after")
    def _stages(self) -> "RecipeSpec":
        names: set[str] = set()
        for i, st in enumerate(self.stages):
            where = f"stages[{i}]"
            name = st.get("name")
            if not isinstance(name, str):
                raise RecipeError(f"{where}.name: every stage needs a name (other stages refer to it).")
            check_name(name, f"{where}.name")
            if name in RESERVED:
                raise RecipeError(f"{where}.name: {name!r} is reserved (it names the base / up-scaled model).")
            if name in names:
                raise RecipeError(f"{where}.name: {name!r} is used twice; stage names must be unique.")
            names.add(name)
            if st.get("kind") not in STAGE_KINDS:
                raise RecipeError(f"{where}.kind: {st.get('kind')!r} is not a stage kind"
                                  f"{did_you_mean_kind(st.get('kind'), STAGE_KINDS)}; choose one of: "
                                  f"{', '.join(STAGE_KINDS)}.")
            for key in ("out",):
                if key in st:
                    raise RecipeError(f"{where}.{key}: set by the recipe (workspace/models/NAME); leave it out.")
            for t in st.get("tables") or []:
                if t not in TABLES:
                    raise RecipeError(f"{where}.tables: {t!r}; choose among {', '.join(TABLES)}.")
        seen: dict[str, str] = {}
        for st in expand_stages(self.stages):  # a sweep point named as another stage (or point) would be planned as
            # one: the later's model and hash replaced the earlier's for every stage reading that name
            group = (st.get("sweep_of") or {}).get("group", st["name"])
            if st["name"] in seen:
                who = (f"stage {group}: two of its sweep points are" if seen[st["name"]] == group else
                       f"stages {seen[st['name']]} and {group} are both")
                raise RecipeError(f"{who} named {st['name']!r} (a sweep point is STAGE-FIELDVALUE, 6 digits); rename "
                                  "a stage, or sweep values that differ in their first 6 digits.")
            seen[st["name"]] = group
        for i, st in enumerate(expand_stages(self.stages)):  # every sweep value must make a valid spec
            try:
                stage_spec(st, lambda ref: ref, f"stages[{i}]")
            except ValidationError as exc:
                raise RecipeError(f"stage {st['name']}: " + explain(exc)) from None
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False, width=120,
                              allow_unicode=True)


def _tokenizer_word(st: dict) -> bool:
    """A merge's `tokenizer_source: base` is the word for its base when the stage has one; without one, `base` names
    the recipe's base model, as it does in `models: [base, ...]`."""
    return st.get("tokenizer_source") == "base" and bool(st.get("base"))


def stage_refs(st: dict) -> list[tuple[str, str]]:
    """(field, referenced name) for every model or data-stage reference in a stage body."""
    out = []
    for key in ("model", "reference_model", "base", "tokenizer_source"):
        if isinstance(st.get(key), str) and not (key == "tokenizer_source" and _tokenizer_word(st)):
            out.append((key, st[key]))
    for j, m in enumerate(st.get("models") or []):
        out.append((f"models[{j}]", m))
    for key in ("data", "eval_data"):
        items = st.get(key) or []
        for j, d in enumerate(items if isinstance(items, list) else [items]):
            src = d.get("source", "") if isinstance(d, dict) else ""
            hit = STAGE_REF.match(src)
            if hit:
                out.append((f"{key}[{j}].source", hit[1]))
    return out


def stage_spec(st: dict, rename, where: str = "stage"):
    """The work spec of one (expanded) stage, with every reference passed through `rename(ref) -> name`."""
    body = {k: v for k, v in st.items() if k not in STAGE_KEYS}
    for key in ("model", "reference_model", "base", "tokenizer_source"):
        if isinstance(body.get(key), str) and not (key == "tokenizer_source" and _tokenizer_word(body)):
            body[key] = rename(body[key])
    if isinstance(body.get("models"), list):
        body["models"] = [rename(m) for m in body["models"]]
    for key in ("data", "eval_data"):
        items = body.get(key)
        if isinstance(items, list):
            body[key] = [_rename_source(d, rename) for d in items]
        elif isinstance(items, dict):
            body[key] = _rename_source(items, rename)
    return SPECS[st["kind"]].model_validate({"kind": st["kind"], **body})


def _rename_source(d: Any, rename) -> Any:
    if not isinstance(d, dict):
        return d
    hit = STAGE_REF.match(d.get("source", ""))
    if not hit:
        return d
    return {**d, "source": f"dataset:{rename(hit[1])}-{hit[2]}"}


def _sweeps(st: dict) -> dict[str, list]:
    """A stage's swept fields: `sweep: {field: values}`, or the shorthand of a merge's `weights: 'A..B step S'`
    (one value w is weights [w, 1-w]) and `t: 'A..B step S'` (a list t stays a depth schedule, as in MergeSpec)."""
    sweeps = {k: parse_values(v, f"stage {st.get('name')}.sweep.{k}") for k, v in (st.get("sweep") or {}).items()}
    if st.get("kind") == "merge":
        for key, field in (("weights", "weight"), ("t", "t")):
            if isinstance(st.get(key), str):
                sweeps[field] = parse_values(st[key], f"stage {st.get('name')}.{key}")
    return sweeps


def expand_stages(stages: list[dict]) -> list[dict]:
    """One stage per value of a sweep (the cartesian product when several fields are swept), named NAME-FIELDVALUE;
    `sweep_of` keeps the group for the merge surface. A swept stage cannot be referred to by name (which one?)."""
    out = []
    points = [(st, _sweeps(st)) for st in stages]
    total = sum(math.prod(len(v) for v in sw.values()) for _, sw in points)  # counted before any stage is made
    if total > MAX_STAGES:
        many = [f"{st.get('name')} ({math.prod(len(v) for v in sw.values()):,})" for st, sw in points if sw]
        raise RecipeError(f"stages: the sweeps make {total:,} stages ({', '.join(many)}); a recipe may plan at most "
                          f"{MAX_STAGES}. Sweep fewer values (a coarser step), or split the sweeps over several "
                          "recipes.")
    for st, sweeps in points:
        if not sweeps:
            out.append(st)
            continue
        fields = list(sweeps)
        for values in itertools.product(*(sweeps[f] for f in fields)):
            new = {k: v for k, v in st.items() if k != "sweep"}
            tag = []
            for f, v in zip(fields, values):
                if f == "weight":
                    new["weights"] = [float(v), round(1 - float(v), 10)]
                else:
                    new[f] = v
                tag.append(f"{f[0] if f in ('weight', 't') else f}{v:g}" if isinstance(v, (int, float))
                           else f"{f}{v}")
            new["name"] = f"{st['name']}-{'-'.join(tag)}"[:100]
            new["sweep_of"] = {"group": st["name"], **dict(zip(fields, values))}
            if new.get("label"):  # each point says its own value: the stage's label ("Average (0.5, 0.5)") on every
                # point put the paper's number for that one merge beside each of them
                new["label"] = f"{st['name']} [{', '.join(f'{f}={v}' for f, v in zip(fields, values))}]"
            out.append(new)
    return out


def expand_runs(recipe: RecipeSpec) -> list[RecipeSpec]:
    """`upscale.m: [4, 8, 12]` (or a range): one recipe per value, named NAME-mVALUE."""
    if not recipe.upscale or not isinstance(recipe.upscale.get("m"), (list, str)):
        return [recipe]
    values = parse_values(recipe.upscale["m"], "upscale.m")
    per_run = len(expand_stages(recipe.stages))
    if len(values) * per_run > MAX_STAGES:
        raise RecipeError(f"upscale.m: {len(values)} runs of {per_run} stages each make {len(values) * per_run:,} "
                          f"stages; a recipe may plan at most {MAX_STAGES}. Sweep fewer values of m, or split them "
                          "over several recipes.")
    return [recipe.model_copy(update={"name": f"{recipe.name}-m{int(v)}", "upscale": {**recipe.upscale, "m": int(v)}})
            for v in values]


def load_recipe(text: str, where: str = "recipe") -> RecipeSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != "recipe":
        raise RecipeError(f"{where}: a recipe is a mapping with kind: recipe.")
    try:
        return RecipeSpec.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(explain(exc)) from None
