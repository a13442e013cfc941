"""What to do about models cut off on every reply of an evaluation, by their training (the Compare page's warning
and table, backend/answerstats re-exports them): untrained, continued pretraining only, or SFT / DPO, which should
have taught a model to end its turn. Split from backend/answerstats.py (house size).
"""

from __future__ import annotations


# the token cap as the evaluate form names it, with `eval`'s flag: the pages and the CLI (`compare`) show the same
# sentences, and a CLI user was told of "Max new tokens", a field he never saw
CAP = "Max new tokens (eval --max-new-tokens)"
RAISE_CAP = f"evaluate again with a higher {CAP}"  # the remedy: the evaluate form's field and `eval`'s flag
TRAINING = ("cpt", "sft", "dpo")  # the training kinds a model's lineage is read for (ModelRecord.recipe's kind)
CHAT_TRAINING = ("sft", "dpo")  # training that teaches a model to end its turn: a cut-off throughout is not for want
# of it, so "continue pretraining or SFT first" (said to SFT+DPO candidates and their merges) was wrong advice


def lineage_training(models) -> dict[str, list[str]]:
    """Per model, the training in its lineage (it and every registered ancestor, each parent of a merge followed):
    the TRAINING kinds its registry rows record (a trained model's ModelRecord.recipe kind), in that order. One
    registry read; a model with none (a base, an up-scaled one, an unregistered name) maps to []."""
    from backend import registry

    recs = {r.name: r for r in registry.list_models()}
    out: dict[str, list[str]] = {}
    for model in models:
        kinds, todo, seen = set(), [model], set()
        while todo:
            if (name := todo.pop()) in seen or (rec := recs.get(name)) is None:
                continue
            seen.add(name)
            kinds.add(((rec.recipe or {}).get("kind") or "").lower() if rec.kind == "trained" else "")
            todo += rec.parents or []
        out[model] = [k for k in TRAINING if k in kinds]
    return out


def _fix(training: list[str]) -> tuple[str, str]:
    """Why a model that does not end its replies does not, and what it needs, by the training its lineage had
    (lineage_training)."""
    if chat := [k.upper() for k in training if k in CHAT_TRAINING]:
        return (f"its {' and '.join(chat)} training did not teach it to stop",
                "check that the end token of its chat template is the one its SFT data ends each turn with (and the "
                "tokenizer's end-of-sequence token), or train it for more steps")
    if "cpt" in training:
        return "continued pretraining alone does not teach a model to end a turn", "SFT it, then evaluate it again"
    return ("it never emits its end token, as an untrained, random or freshly up-scaled model does",
            "continue pretraining, then SFT, and evaluate it again")


def cut_off_advice(caps: dict[str, list[int]], training: dict[str, list[str]] | None = None) -> str:
    """What to do about models whose every reply was cut off (`caps`: their caps, as caps_all_cut_off), from what
    the stored replies show and what the model is. Cut off throughout at two caps, the model does not end its
    replies at all, and raising the cap again could not help: what it needs follows from its lineage's training
    (`_fix`: SFT for a model that had none; for one that had SFT or DPO, its end token and its data, or more
    steps). At one cap the replies cannot tell a long answer from one that never ends: a higher cap tells them
    apart. `training`: per model, the training in its lineage (lineage_training; looked up when not given).
    Models are grouped by their caps and what they need; "" for no model."""
    def who(group: dict[str, list[int]]) -> str:
        by_caps: dict[tuple, list[str]] = {}
        for m, cs in group.items():
            by_caps.setdefault(tuple(cs), []).append(m)
        return "; ".join(f"{', '.join(ms)} at {' and '.join(map(str, cs))} tokens" for cs, ms in by_caps.items())

    training = lineage_training(caps) if training is None and caps else training or {}
    by_fix: dict[tuple[str, str], dict[str, list[int]]] = {}
    for m, cs in caps.items():
        by_fix.setdefault(_fix(training.get(m) or []), {})[m] = cs
    out = []
    for (why, what), group in by_fix.items():
        if never := {m: cs for m, cs in group.items() if never_ends(cs)}:
            out.append(f"Cut off on every reply at each cap tried ({who(never)}): such a model does not end its "
                       f"replies ({why}), so a higher {CAP} will not help: {what}")
        if once := {m: cs for m, cs in group.items() if not never_ends(cs)}:
            out.append(f"Cut off on every reply, at one cap so far ({who(once)}): a long answer and one that never "
                       f"ends read the same here. Evaluate again with a higher {CAP}. If every reply is cut "
                       f"off there too, the model does not end its replies ({why}): {what}")
    return ". ".join(out)


def never_ends(caps_tried) -> bool:
    """Whether a model cut off on every reply at each of `caps_tried` does not end its replies: at two caps or more.
    At one cap a long answer and one that never ends read the same (a higher cap tells them apart)."""
    return len(caps_tried) >= 2


def _caps_text(caps) -> str:
    caps = sorted(set(caps))
    return (", ".join(map(str, caps[:-1])) + " and " if len(caps) > 1 else "") + f"{caps[-1]} tokens"


def cap_remedy(models, caps: dict[str, list[int]], raise_cap: str = RAISE_CAP, cap: str = CAP) -> str:
    """The remedy for the replies of `models` the token cap cut off: `raise_cap`, but not for a model cut off on
    every reply at each of two caps or more (`caps`: as caps_all_cut_off, answerstats.never_ended gives them): it
    does not end its replies and a higher cap will not help it, as cut_off_advice (the Compare page's warning) says;
    a verdict right under that warning still said to raise it. `cap`: the cap's name where it is said (a recipe's
    field)."""
    stuck = [m for m in models if never_ends(caps.get(m) or ())]
    if not stuck:
        return raise_cap
    one = len(stuck) == 1
    text = (f"{' and '.join(stuck)} {'was' if one else 'were'} cut off on every reply at each cap tried "
            f"({_caps_text(c for m in stuck for c in caps[m])}), so a higher {cap} will not help: "
            f"{'it needs' if one else 'they need'} training")
    rest = [m for m in models if m not in stuck]
    return text + (f"; for {', '.join(rest)}, {raise_cap}" if rest else "")


def cut_off_summary(caps: dict[str, list[int]]) -> str:
    """One sentence for the models whose every reply was cut off (`caps`: as caps_all_cut_off): how many, at which
    caps, and what to do; what each model needs is cut_off_rows' (a table beside it). "" for no model. The
    per-group paragraphs of cut_off_advice, one per remedy and each naming its models, made a 20-line warning."""
    if not caps:
        return ""
    never = [m for m, cs in caps.items() if never_ends(cs)]
    once = [m for m, cs in caps.items() if not never_ends(cs)]
    n = len(caps)
    head = (f"{n} model{'s' if n > 1 else ''} cut off on every reply, at "
            f"{_caps_text(c for cs in caps.values() for c in cs)}: ")
    if not never:
        what = ("evaluate " + ("them" if n > 1 else "it") + f" again with a higher {CAP}, and if "
                + ("one is" if n > 1 else "it is") + " cut off there too it does not end its replies and needs "
                "training")
    elif not once:
        what = ("cut off at each cap tried, " + ("they do" if n > 1 else "it does") + " not end "
                + ("their" if n > 1 else "its") + f" replies, so a higher {CAP} will not help: "
                + ("they need" if n > 1 else "it needs") + " training")
    else:
        what = (f"{len(never)} at each cap tried, which a higher {CAP} will not help (they need training); "
                f"evaluate the other {len(once)} again with a higher Max new tokens")
    return head + what + " (what each needs: the table below)."


def cut_off_rows(caps: dict[str, list[int]], training: dict[str, list[str]] | None = None,
                 shares: dict[str, float] | None = None) -> list[dict]:
    """What each model whose every reply was cut off needs, one row a model (model | cut off | caps | what to do),
    the same advice as cut_off_advice's, model by model. `training`: as cut_off_advice; `shares`: each model's
    cut-off share here (1.0 where not given: every reply was cut off)."""
    training = lineage_training(caps) if training is None and caps else training or {}
    rows = []
    for m, cs in caps.items():
        why, what = _fix(training.get(m) or [])
        todo = (f"{what[:1].upper()}{what[1:]}: it does not end its replies ({why}); a higher {CAP} will "
                "not help." if never_ends(cs) else
                f"Evaluate again with a higher {CAP}; if every reply is cut off there too, it does not end "
                f"its replies ({why}): {what}.")
        rows.append({"model": m, "cut off": f"{(shares or {}).get(m, 1.0):.0%}", "at cap (tokens)":
                     ", ".join(map(str, cs)), "what to do": todo})
    return rows
