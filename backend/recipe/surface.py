"""Merge surfaces of a recipe run: a score against the weight (Average) or t (SLERP) of the merges of two models,
the candidates' own scores at the ends (the paper's Table 7). Swept merges (`weights: "0.0..1.0 step 0.1"`,
`sweep:`) and merges of the same two stages by one method written one by one are both surfaces."""

from __future__ import annotations

from backend.recipe.table_scores import column
from backend.recipe.tables import LOWER_IS_BETTER, latest_scores, stage_dicts
from storage import db


def merge_surface(points: list[tuple], first: float | None, second: float | None, field: str,
                  higher_is_better: bool = True, first_se: float | None = None,
                  second_se: float | None = None) -> dict:
    """Score against the merge weight of the first candidate (Average: weights [w, 1−w], so w=1 is the first
    model) or against SLERP's t (t=0 is the first model); the candidates' own scores are the ends. Swept over any
    other field (TIES' density, …) the candidates sit at no x: no ends, their scores as levels to beat
    (`candidate_scores`). A point is (x, y) or (x, y, standard error); `err` and `ends_err` carry the errors for
    the chart's bars, and `within_noise` says the highest and the lowest differ by less than their combined error:
    merges at 292.863 to 292.866 ± 0.73 drew a clean rising line on an axis 0.015 tall."""
    pts = sorted((p[0], p[1], p[2] if len(p) > 2 else None) for p in points if p[1] is not None)  # a rate left
    # blank (latest_scores: mostly unanswered)
    ends = [(1.0, first, first_se, 0), (0.0, second, second_se, 1)] if field == "weight" else \
        [(0.0, first, first_se, 0), (1.0, second, second_se, 1)] if field == "t" else []
    ends = [e for e in ends if e[1] is not None]
    pick = max if higher_is_better else min
    best = pick(pts, key=lambda p: p[1])[:2] if pts else None
    cands = [y for y in (first, second) if y is not None]
    every = [(y, se) for _, y, se in pts] + [(y, se) for y, se in ((first, first_se), (second, second_se))
                                             if y is not None]
    return {"field": field, "x": [p[0] for p in pts], "y": [p[1] for p in pts], "err": [p[2] for p in pts],
            "ends": [(x, y) for x, y, _, _ in ends], "ends_err": [se for _, _, se, _ in ends],
            "ends_which": [i for *_, i in ends], "best": best, "candidate_scores": [first, second],
            "candidate_errors": [first_se, second_se], "within_noise": within_noise(every),
            "beats_candidates": bool(best and cands and (best[1] > max(cands) if higher_is_better
                                                         else best[1] < min(cands)))}


def within_noise(points: list[tuple[float, float | None]]) -> bool:
    """Whether the highest and the lowest (value, standard error) differ by no more than their combined standard
    error, sqrt(se_high² + se_low²): two points or more, each with an error. Then the surface's rises and falls are
    noise, whatever the axis shows. The extremes, not neighbours: eleven merges rising 0.5 a step ± 0.7 each are each
    within noise of the next, yet 5 points apart end to end."""
    if len(points) < 2 or any(se is None for _, se in points):
        return False
    (high, se_high), (low, se_low) = max(points, key=lambda p: p[0]), min(points, key=lambda p: p[0])
    return high - low <= (se_high ** 2 + se_low ** 2) ** 0.5


NOISE_NOTE = ("The highest and the lowest point differ by less than their combined standard error: the differences are "
              "within noise (bars: ± one standard error), whatever the axis's scale draws.")


def _swept_field(group: str, members: list[dict]) -> tuple[str | None, str]:
    """The one field a merge group is swept over (its sweep_of key besides `group`: weight, t, density, …), or None
    and why there is no surface to draw: several fields swept together (their points would share one x), or values
    that are no numbers (a list t is a depth schedule)."""
    fields = sorted({k for m in members for k in m["sweep_of"] if k != "group"})
    if len(fields) != 1:
        return None, (f"{group} is swept over {' and '.join(fields)} together: one x axis cannot show it (sweep one "
                      "field per merge stage to draw its surface).")
    field = fields[0]
    if not all(isinstance(m["sweep_of"].get(field), (int, float)) and not isinstance(m["sweep_of"].get(field), bool)
               for m in members):
        return None, f"{group} is swept over {field} with values that are not numbers: no x axis to draw it on."
    return field, ""


# what may differ between merges of one implicit sweep besides its weight or t: the job's name, where it writes, what
# it runs on, and the models' registry names (their stages are compared instead)
_NOT_THE_MERGE = ("weights", "t", "name", "out", "resources", "models")


def _axis_value(st: dict, spec: dict) -> tuple[str, float] | None:
    """Where a merge of two models sits on a surface: Average's weight of the first model (weights [w, 1−w]; others
    as normalised, mergekit's linear default; None as the plain mean), or SLERP's t; None for another method, a
    list t (a depth schedule), or weights that are not two numbers."""
    merge = st.get("merge") or {}
    if len(st.get("from") or []) != 2:
        return None
    method = merge.get("method", "average")
    if method == "slerp":
        t = merge.get("t", spec.get("t", 0.5))
        return ("t", float(t)) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
    if method != "average":
        return None
    w = merge.get("weights") or [1.0, 1.0]
    if len(w) != 2 or not all(isinstance(x, (int, float)) for x in w) or sum(w) <= 0:
        return None
    if spec.get("normalize") is False and abs(sum(w) - 1) > 1e-9:
        return None  # [1, 1] unnormalised is a sum, on no weight axis
    return "weight", float(w[0]) / float(sum(w))


def implicit_sweeps(stages: list[dict], specs: dict[str, dict]) -> dict[str, list[tuple[dict, str, float]]]:
    """Merges of the same two models by the same method that differ only in the weight (or SLERP's t), written as
    separate stages: a sweep however they were written (the paper's Table 7: Average (0.5, 0.5), (0.4, 0.6),
    (0.6, 0.4) of the same candidates), so a surface. `specs`: each stage's job spec (stage -> dict; {} where there
    is no job), whose other settings (density, lambda, normalize, …) must agree. Group "METHOD of A, B" -> [(stage,
    field, value)], only groups with two values or more; stages of a `sweep:` have their own group."""
    import json

    groups: dict[tuple, list[tuple[dict, str, float]]] = {}
    for st in stages:
        if st["kind"] != "merge" or st.get("sweep_of"):
            continue
        spec = specs.get(st["stage"]) or {}
        if (at := _axis_value(st, spec)) is None:
            continue
        rest = json.dumps({k: v for k, v in spec.items() if k not in _NOT_THE_MERGE}, sort_keys=True, default=str)
        key = ((st.get("merge") or {}).get("method", "average"), tuple(st["from"]), rest)
        groups.setdefault(key, []).append((st, *at))
    out: dict[str, list[tuple[dict, str, float]]] = {}
    for key, members in groups.items():
        if len({x for _, _, x in members}) > 1:
            name = f"{key[0]} of {', '.join(key[1])}"  # two sweeps of one pair (at other densities): both drawn
            out[name if name not in out else f"{name} ({sum(n.startswith(name) for n in out) + 1})"] = members
    return out


def _job_specs(stages: list[dict]) -> dict[str, dict]:
    from storage.models import Job

    with db.session() as s:
        return {st["stage"]: (job.spec if (job := s.get(Job, st["job_id"])) else {}) or {}
                for st in stages if st["kind"] == "merge" and st.get("job_id")}


def run_surfaces(run_id: int, metric: str) -> list[dict]:
    """One surface per swept merge stage of the run, on the metric "task metric", against the field it sweeps; a
    group swept over several fields (or over values that are no numbers) is {group, skipped: why} instead. Merges
    written one by one that differ only in weight or t (implicit_sweeps) are a surface too: the preset's Table 7
    merges read "No swept merge in this run". Each score carries its stored standard error (the paper tables' ±);
    a surface without a scored merge says why (`empty`) rather than draw empty axes."""
    from backend.recipe.tables import latest_rows

    st = stage_dicts(run_id)
    by_stage = {s["stage"]: s for s in st}
    groups: dict[str, list[dict]] = {}
    for s in st:
        if s.get("sweep_of") and s["kind"] == "merge":
            groups.setdefault(s["sweep_of"]["group"], []).append(s)
    for group, members in implicit_sweeps(st, _job_specs(st)).items():
        groups[group] = [{**m, "sweep_of": {"group": group, field: x}} for m, field, x in members]
    outputs = [s["output"] for s in st if s["output"]]
    latest = latest_rows(outputs)
    scores = latest_scores(outputs, latest)
    errors = _errors(latest, scores)
    out = []
    for group, members in groups.items():
        field, why = _swept_field(group, members)
        if field is None:
            out.append({"group": group, "skipped": why})
            continue
        pts = [(float(m["sweep_of"][field]), scores[m["output"]][metric], errors.get((m["output"], metric)))
               for m in members if metric in scores.get(m["output"], {})]
        names = members[0].get("from", [])[:2]
        cands = [by_stage[c]["output"] if c in by_stage else c for c in names]
        first, second = (scores.get(c, {}).get(metric) for c in (cands + [None, None])[:2])
        surf = {"group": group, "candidates": cands,
                "candidate_labels": [by_stage[c].get("label") or c if c in by_stage else c for c in names],
                **merge_surface(pts, first, second, field, not any(w in metric for w in LOWER_IS_BETTER),
                                *(errors.get((c, metric)) for c in (cands + [None, None])[:2]))}
        if not surf["x"]:
            surf["empty"] = _why_empty(metric, [m["output"] for m in members], scores)
        out.append(surf)
    return out


def _errors(latest: dict, scores: dict[str, dict]) -> dict[tuple[str, str], float]:
    """(model, "task metric") -> the score's standard error as the paper tables give it (scoretable.stderr: lm-eval's
    own row, a perplexity's bootstrap, √(p(1−p)/(n−1)) for a share), where one is defined."""
    from backend import scoretable

    out = {}
    for (model, task, metric), r in latest.items():
        col = column(task, metric)
        if metric.endswith(scoretable.STDERR) or scores.get(model, {}).get(col) is None:
            continue
        if (se := scoretable.stderr(latest, r)) is not None:
            out[(model, col)] = se
    return out


def _why_empty(metric: str, merges: list[str], scores: dict[str, dict]) -> str:
    """Why no merge of a surface has a value on `metric`: none scored yet, every one's rate left blank (most replies
    cut off or empty: latest_scores), or the metric not among their scores."""
    if not any(scores.get(m) for m in merges):
        return (f"no merge of it is scored yet (the run's evaluation has not stored their scores): {metric} is drawn "
                "once it has.")
    if any(metric in scores.get(m, {}) for m in merges):
        return (f"every merge's {metric} is blank: most of their replies were cut off by the token limit or empty, "
                "so the rate would say nothing (the Compare page's answer-length section shows their replies).")
    return f"its merges have no {metric} score (their evaluation did not include it): pick another metric."
