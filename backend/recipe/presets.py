"""Built-in recipes: `python -m backend recipe new PRESET [--base NAME] [--m M] > FILE`.

- smoke: seconds on a tiny model folder (--base); the tests run it.
- solar-mini: the paper's experiment shrunk to the built-in SmolLM2-135M-Instruct on a CPU: DUS m=8, continued
  pretraining, SFT v1–v4 (Table 3), DPO v1–v3 (Tables 4–5), two candidates and four merges (Tables 6–7).
- solar-10.7b: the paper's own: Mistral-7B-v0.1, m=8, the public data sets; for an online GPU machine.
"""

from __future__ import annotations

import json

import yaml

from backend.recipe.spec import Budget, RecipeError

PRESETS = ("smoke", "solar-mini", "solar-10.7b")


def _d(*sources: str) -> list[dict]:
    out = []
    for s in sources:
        src, _, w = s.partition("@")
        out.append({"source": src, **({"weight": float(w)} if w else {})})
    return out


def _smoke(base: str, m: int) -> dict:
    tiny = dict(max_steps=2, save_steps=2, eval_fraction=0.0, max_length=32, max_rows=8, batch_size=2)
    return {
        "kind": "recipe", "name": "smoke", "description": "two SFT mixes on a tiny up-scaled model, merged",
        "base": base, "upscale": {"method": "dus", "m": m},
        "stages": [
            {"name": "sft-a", "kind": "sft", "model": "upscaled", "data": _d("builtin:alpaca-mini"),
             "label": "SFT v1", **tiny},
            {"name": "sft-b", "kind": "sft", "model": "upscaled", "data": _d("builtin:alpaca-mini",
                                                                            "builtin:orca-mini"),
             "label": "SFT v2", **tiny},
            {"name": "avg", "kind": "merge", "models": ["sft-a", "sft-b"], "method": "average",
             "weights": [0.5, 0.5], "label": "Average (0.5, 0.5)", "tables": ["merge"]},
        ],
        "eval": {"tasks": ["perplexity"], "limit": 4},
    }


def _solar(base: str, m: int, *, mini: bool) -> dict:
    """Both SOLAR presets share the paper's stage graph; only the model, data and sizes differ."""
    if mini:
        alpaca, orca, prefs, corpus = "builtin:alpaca-mini", "builtin:orca-mini", "builtin:prefs-mini", \
            "builtin:facts-corpus"
        # sized for a 2-core CPU (SFT ~6 s/step, DPO ~15 s/step on the 44-layer model)
        cpt = dict(max_steps=20, max_length=128, batch_size=2, eval_steps=10, save_steps=20, max_rows=400)
        sft = dict(max_steps=12, max_length=128, batch_size=2, eval_fraction=0.0, save_steps=12, max_rows=200)
        dpo = dict(max_steps=6, max_length=128, batch_size=2, eval_fraction=0.0, save_steps=6, max_rows=100)
        synth = {"num_seeds": 120, "rephraser": "rules"}
        ev = {"tasks": ["perplexity", "synth-math"], "limit": 12, "max_new_tokens": 48}
    else:
        alpaca, orca = "vicgalle/alpaca-gpt4", "Open-Orca/OpenOrca"
        prefs, corpus = "argilla/ultrafeedback-binarized-preferences-cleaned", "HuggingFaceFW/fineweb-edu"
        cpt = dict(max_steps=2000, max_length=4096, batch_size=8, grad_accum=8, gradient_checkpointing=True,
                   eval_steps=200, save_steps=200)
        sft = dict(max_steps=1500, max_length=4096, batch_size=8, grad_accum=4, gradient_checkpointing=True,
                   save_steps=250)
        dpo = dict(max_steps=600, max_length=2048, batch_size=4, grad_accum=8, gradient_checkpointing=True,
                   save_steps=100)
        synth = {"num_seeds": 20000, "rephraser": "rules"}  # model:NAME or openai:URL for an LLM rephraser
        # the H6 preset, as the paper's Table 2 ran it: each task with the leaderboard's few-shot count and metric,
        # and their average (the recipe tables' "Paper H6" column). The six tasks named one by one ran with their
        # YAML's own few-shot count, 0 for all but GSM8K (ARC was 0-shot, not 25), and gave no H6 average; a limit
        # of 1000 cut ARC, HellaSwag, Winogrande and GSM8K short of the full sets the paper scored (HellaSwag's
        # 10,042 is the largest). `budget: {eval_limit: …}` caps it for a quicker try.
        ev = {"tasks": ["lm-eval:h6"], "limit": 10_042, "device": "cuda"}
    math_i, math_a = "stage:math/instruct", "stage:math/alignment"
    return {
        "kind": "recipe", "name": "solar-mini" if mini else "solar-10.7b",
        "description": "SOLAR 10.7B (arXiv 2312.15166): DUS, continued pretraining, SFT v1–v4, DPO v1–v3, "
                       "candidates and merges, every model evaluated alike",
        "base": base, "upscale": {"method": "dus", "m": m},
        "stages": [
            {"name": "cpt", "kind": "cpt", "model": "upscaled", "data": _d(corpus), **cpt},
            {"name": "math", "kind": "synth-math", **synth},
            # Table 3: which data each SFT version used
            {"name": "sft-v1", "kind": "sft", "model": "cpt", "data": _d(alpaca), "label": "SFT v1", **sft},
            {"name": "sft-v2", "kind": "sft", "model": "cpt", "data": _d(alpaca, orca), "label": "SFT v2", **sft},
            {"name": "sft-v3", "kind": "sft", "model": "cpt", "data": _d(alpaca, orca, math_i), "label": "SFT v3",
             **sft},
            {"name": "sft-v4", "kind": "sft", "model": "cpt", "data": _d(alpaca, math_i), "label": "SFT v4", **sft},
            {"name": "sft-v3v4", "kind": "merge", "models": ["sft-v3", "sft-v4"], "method": "average",
             "label": "SFT v3+v4", "tables": ["sft"]},
            # Table 4: DPO data on SFT v3; Table 5: the SFT base under the same DPO data
            {"name": "dpo-v1", "kind": "dpo", "model": "sft-v3", "data": _d(prefs), "label": "DPO v1", **dpo},
            {"name": "dpo-v2", "kind": "dpo", "model": "sft-v3", "data": _d(prefs, math_a), "label": "DPO v2",
             **dpo},
            {"name": "dpo-v1v2", "kind": "merge", "models": ["dpo-v1", "dpo-v2"], "method": "average",
             "label": "DPO v1+v2", "tables": ["dpo"]},
            {"name": "dpo-v3", "kind": "dpo", "model": "sft-v3v4", "data": _d(prefs, math_a), "label": "DPO v3",
             **dpo},
            # Tables 6–7: two candidates from different DPO settings, merged four ways
            {"name": "cand1", "kind": "dpo", "model": "sft-v3v4", "data": _d(prefs, math_a), "seed": 1,
             "beta": 0.2, "label": "Cand. 1", "tables": ["merge"], **dpo},
            {"name": "cand2", "kind": "dpo", "model": "sft-v3v4", "data": _d(prefs), "seed": 2,
             "label": "Cand. 2", "tables": ["merge"], **dpo},
            {"name": "avg-55", "kind": "merge", "models": ["cand1", "cand2"], "method": "average",
             "weights": [0.5, 0.5], "label": "Average (0.5, 0.5)"},
            {"name": "avg-46", "kind": "merge", "models": ["cand1", "cand2"], "method": "average",
             "weights": [0.4, 0.6], "label": "Average (0.4, 0.6)"},
            {"name": "avg-64", "kind": "merge", "models": ["cand1", "cand2"], "method": "average",
             "weights": [0.6, 0.4], "label": "Average (0.6, 0.4)"},
            {"name": "slerp", "kind": "merge", "models": ["cand1", "cand2"], "method": "slerp", "t": 0.5,
             "label": "SLERP"},
        ],
        "eval": ev,
    }


def budget_block() -> str:
    """The `budget:` block at its defaults (nothing scaled), each field with its description as a comment: the knob
    that runs the same recipe as a smoke test, a CPU demo or the paper's size was documented only in
    backend/recipe/spec.py (Budget), so a preset's user never saw it. Defaults plan the same stages and hashes as
    a recipe without the block."""
    fields = Budget.model_fields
    width = max(len(f"  {k}: {json.dumps(f.default)}") for k, f in fields.items()) + 2
    lines = ["# How much compute, applied to every stage when planned (the Recipe page's plan table shows each",
             "# stage's steps and rows after it); e.g. {max_steps: 2, max_rows: 20, eval_limit: 10} for a quick try.",
             "budget:"]
    lines += [f"{f'  {k}: {json.dumps(f.default)}':<{width}}# {f.description}" for k, f in fields.items()]
    return "\n".join(lines) + "\n"


def preset(name: str, base: str | None = None, m: int | None = None) -> str:
    """The preset's YAML (a file to edit and run), ending with its budget block. Made for a `base` without an `m`,
    m is the base's suggested one where its depth is known here, and a comment above says which and why."""
    derive = bool(base) and m is None
    chosen = m_for_base(base) if derive else None
    m = chosen[0] if chosen else m
    if name == "smoke":
        if not base:
            raise RecipeError("preset smoke: give --base, a small model folder or registered name (the tests use "
                              "a tiny random Llama).")
        data = _smoke(base, m or 2)
    elif name == "solar-mini":
        data = _solar(base or "SmolLM2-135M-Instruct", m or 8, mini=True)
    elif name == "solar-10.7b":
        data = _solar(base or "mistralai/Mistral-7B-v0.1", m or 8, mini=False)
    else:
        raise RecipeError(f"preset {name!r} is unknown; choose one of: {', '.join(PRESETS)}.")
    text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True) + budget_block()
    return (_m_comment(text, base, chosen) if derive else "") + text


def base_layers(base: str) -> int | None:
    """The layer count of `base` when it is known here without reading weights: a registered model's (by name,
    'builtin' once imported, or its folder), else a local folder's config.json; None for a Hub id or a folder that
    is no model (planning says what is wrong with those)."""
    from pathlib import Path

    from backend import registry
    from backend.modelinfo import LAYER_COUNT_KEYS

    rec = registry.record(base)
    if rec is not None and rec.num_layers:
        return rec.num_layers
    try:
        config = json.loads((Path(base).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return next((config[k] for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int)), None)


def m_for_base(base: str) -> tuple[int, int] | None:
    """(m, layers) for a preset made for `base` without an m (`recipe new --base B`, the Recipe page's empty m):
    SOLAR removes a quarter of the layers from each copy (m = 8 of Mistral's 32), so the valid m nearest n/4, the
    larger on a tie, as the Build page suggests it (a preset's fixed m suited one depth only: smoke's 2 made a
    30-layer base 56 layers deep, solar-mini's 8 was out of range for a 6-layer one). None when the depth is not known here, or too shallow for any m (planning refuses it)."""
    from backend.upscale import dus

    n = base_layers(base)
    m = dus.suggested_m(n) if n else None
    return None if m is None else (m, n)


def _m_comment(text: str, base: str, chosen: tuple[int, int] | None) -> str:
    """The YAML comment above a preset made for `base`: which m it holds and why, so the file says what was chosen
    for the user who edits it."""
    m = (yaml.safe_load(text).get("upscale") or {}).get("m")
    if chosen:
        return (f"# upscale.m: {m}, for {base}'s {chosen[1]} layers: SOLAR removes a quarter of the layers from each "
                f"copy (m = 8 of 32),\n# so the valid m nearest {chosen[1]}/4 (1 <= m < n/2), as the Build page "
                "suggests; --m M (the Recipe page's m) sets another.\n")
    return (f"# upscale.m: {m}, the preset's own: the layer count of {base} is not known here (not a registered model "
            "or a\n# local model folder, or too shallow to up-scale); --m M (the Recipe page's m) sets it.\n")

