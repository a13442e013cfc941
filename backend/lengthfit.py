"""The model of the data (backend/analysis.py): per item, hallucination (or correctness) regressed on model, answer
length (log tokens) and question kind by logistic regression (statsmodels), once without and once with the length
term; the model's effect as an average marginal effect in points, and the fitted curves the Compare page plots.
A fit that cannot give finite effects (perfect or quasi-complete separation) says so, in words, instead.

    from backend.lengthfit import length_model
    length_model(records, ["A", "B"], "hallucination")["effects"]
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from backend.answerstats import (MIN_CLUSTERS, MIN_ITEMS, OUTCOMES, Record, _length, _remedy, all_cut_caps,
                                 is_bad, judged_items)


def _design(rows: list[Record], models: list[str], with_length: bool):
    """Columns: intercept, one dummy per model but the first (the reference), log(1 + tokens), one dummy per question
    kind but the most common. Returns X, names, and which columns are model dummies."""
    kinds = sorted({r.kind for r in rows}, key=lambda k: (-sum(r.kind == k for r in rows), k))
    names = ["intercept"] + [f"model[{m}]" for m in models[1:]]
    cols = [np.ones(len(rows))] + [np.array([r.model == m for r in rows], dtype=float) for m in models[1:]]
    if with_length:
        names.append("log tokens")
        cols.append(np.log1p([_length(r) for r in rows]))
    for k in kinds[1:]:
        names.append(f"kind[{k}]")
        cols.append(np.array([r.kind == k for r in rows], dtype=float))
    return np.column_stack(cols), names, kinds


class Separation(ValueError):
    """A term predicts the outcome exactly, so its coefficient has no finite estimate."""


def _separating(rows: list[Record], y: np.ndarray, outcome: str) -> list[str]:
    """In words, each model and each question kind (of two or more) whose answers all have the same outcome —
    what makes a logistic fit diverge, e.g. "all 20 answers to unanswerable items are hallucinations"."""
    event = {"hallucination": ("hallucinations", "a hallucination"), "correct": ("correct", "correct")}[outcome]
    found = []
    for key, group in ((lambda r: r.model, "{n} answers of {level}"),
                       (lambda r: r.kind, "{n} answers to {level} items (from every model)")):
        levels = sorted({key(r) for r in rows})
        for level in levels if len(levels) > 1 else []:
            ys = y[[key(r) == level for r in rows]]
            if ys.min() == ys.max():
                who = group.format(n=len(ys), level=level)
                found.append(f"all {who} are {event[0]}" if ys[0] else f"none of the {who} is {event[1]}")
    return found


def _logit(y, x, names, groups):
    """statsmodels Logit, cluster-robust by item when there are enough items. Raises ValueError with a reason
    instead of returning infinite or meaningless estimates."""
    from statsmodels.discrete.discrete_model import Logit  # not statsmodels.api: it imports every model (+0.3 s)
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    n_items = len(np.unique(groups))
    robust = n_items >= MIN_CLUSTERS
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": groups}} if robust else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = Logit(y, x).fit(disp=0, maxiter=100, **kw)
        except np.linalg.LinAlgError:
            raise ValueError("the terms are collinear (for example every answer has the same length).") from None
    bad = [names[i] for i in range(1, len(names)) if not np.isfinite(res.bse[i]) or abs(res.params[i]) > 15]
    if any(issubclass(w.category, PerfectSeparationWarning) for w in caught) or bad:
        raise Separation(f"perfect separation: {', '.join(bad) or 'a term'} predicts the outcome exactly on these "
                         "items, so no finite effect exists; read the raw rates.")
    # Quasi-complete separation (one model's answers of one length all correct, say) raises no warning of its own:
    # Newton's steps never settle, the coefficients grow without bound, and at the fitted probabilities of ~0 and ~1
    # the average marginal effect's delta-method error vanishes, so the gap "held fixed" read "51 points (51 to 51)"
    if not res.mle_retvals.get("converged", True):
        raise Separation("quasi-complete separation: the fit did not converge (its coefficients grow without bound, "
                         "as some answers' outcome is predicted exactly), so no finite effect exists; read the raw "
                         "rates.")
    return res, ("cluster-robust by item" if robust else "model-based (fewer than "
                 f"{MIN_CLUSTERS} items: too few clusters for cluster-robust errors)")


def _ame(res, x, col: int, model_cols: list[int]) -> tuple[float, float, float]:
    """Average marginal effect of switching every row from the reference model to the model in `col`, in
    probability points, with a delta-method 95 % interval from the fit's covariance (so clustered when it is)."""
    beta, cov = np.asarray(res.params), np.asarray(res.cov_params())
    x1, x0 = x.copy(), x.copy()
    x1[:, model_cols], x0[:, model_cols] = 0.0, 0.0
    x1[:, col] = 1.0
    p1, p0 = 1 / (1 + np.exp(-x1 @ beta)), 1 / (1 + np.exp(-x0 @ beta))
    grad = ((p1 * (1 - p1))[:, None] * x1 - (p0 * (1 - p0))[:, None] * x0).mean(axis=0)
    est, se = float((p1 - p0).mean()), float(math.sqrt(max(grad @ cov @ grad, 0.0)))
    return est, est - 1.96 * se, est + 1.96 * se


def _constant_kinds(rows: list[Record], y: np.ndarray) -> dict[str, int]:
    """Of two or more question kinds, those whose answers all have the same outcome, with that outcome."""
    kinds = sorted({r.kind for r in rows})
    out = {}
    for k in kinds if len(kinds) > 1 else []:
        ys = y[[r.kind == k for r in rows]]
        if ys.min() == ys.max():
            out[k] = int(ys[0])
    return out


def length_model(records: list[Record], models: list[str], outcome: str = "hallucination") -> dict:
    """Logistic regression of `outcome` (hallucination or correct) on model (+ log tokens) + kind, on the items all
    `models` answered; the first model is the reference. Returns the coefficient table of both fits and, per other
    model, its effect in points (average marginal effect) without and with the length term; `ok` False with
    `message` when the data cannot support the model. For "hallucination" the items a model left cut off are left
    out (`judged_items`): a cut-off reply sits at the cap's length and would read as "long, so no hallucination";
    for both outcomes, the items a model's reply was empty on: 0 words that are no answer at all."""
    if outcome not in OUTCOMES:
        raise ValueError('outcome must be "hallucination" or "correct".')
    items, left_out = judged_items(records, models, outcome)
    out: dict = {"ok": False, "models": models, "outcome": outcome, "n_items": len(items), "left_out": left_out,
                 "table": [], "effects": {}, "notes": []}
    if len(models) < 2:
        return {**out, "message": "choose at least two models."}
    if len(items) < MIN_ITEMS:
        if left_out["n"]:
            remedy = _remedy(len(items), left_out, all_cut_caps(left_out))
            return {**out, "message": f"only {len(items)} items are left to judge ({left_out['message']}); the "
                                      f"model needs at least {MIN_ITEMS}: {remedy}."}
        return {**out, "message": f"only {len(items)} items were answered by every chosen model; the model needs "
                                  f"at least {MIN_ITEMS}."}
    rows = [r for per in items.values() for r in per.values()]
    y = np.array([getattr(r, outcome) for r in rows], dtype=float)
    if y.min() == y.max():
        what = "hallucinated" if outcome == "hallucination" else "was correct"
        return {**out, "message": f"{'every' if y[0] else 'no'} answer {what} on these items: nothing to model."}
    if len({r.kind for r in rows}) == 1:
        out["notes"].append("one question kind only, so no kind term")
    # A kind whose answers all have one outcome (no answer to an unanswerable question is correct) made every fit of
    # "correct" on the QA probe fail as "perfect separation". Its rows say nothing of model or length: the fit
    # without them is the full one's (their kind's coefficient going to infinity fits them whatever the rest), and
    # there the model's effect on them is 0, so the effect over every item is the rest's scaled by their share.
    const = _constant_kinds(rows, y)
    n_all, fixed_events = len(rows), float(sum(y[i] for i, r in enumerate(rows) if r.kind in const))
    if const:
        event = "a hallucination" if outcome == "hallucination" else "correct"
        out["notes"].append("; ".join(f"{k} items left out of the fit: {'every' if v else 'no'} answer to them is "
                                      f"{event}, whatever the model or length" for k, v in const.items())
                            + " (they count in the effects with a gap of 0)")
        keep = [i for i, r in enumerate(rows) if r.kind not in const]
        rows, y = [rows[i] for i in keep], y[keep]
        if not len(y):  # every kind is one of them (any kind left has both outcomes): nothing to fit
            return {**out, "message": "every question kind's answers have one outcome (" + "; ".join(
                f"{k}: {'all' if v else 'none'} {event}" for k, v in const.items()) + "): nothing to model."}
        if (kept := len({r.prompt_id for r in rows})) < MIN_ITEMS:  # checked before the kinds were left out
            return {**out, "message": f"only {kept} items are of question kinds whose answers differ in outcome "
                                      f"(the rest: {', '.join(const)}, one outcome each); the fit needs at least "
                                      f"{MIN_ITEMS}."}
        if len({r.kind for r in rows}) == 1 and "one question kind only, so no kind term" not in out["notes"]:
            out["notes"].append("one question kind left, so no kind term")
    out["fixed"] = {"rows": n_all - len(rows), "events": fixed_events}  # what the fitted curves add back
    share = len(rows) / n_all
    groups = np.unique([r.prompt_id for r in rows], return_inverse=True)[1]
    fits = {}
    for with_length in (False, True):
        label = "with length" if with_length else "without length"
        x, names, _ = _design(rows, models, with_length)
        if with_length and np.ptp(x[:, names.index("log tokens")]) == 0:
            out["notes"].append("every answer has the same length, so the length term cannot be estimated")
            break
        try:
            res, cov = _logit(y, x, names, groups)
        except Separation as exc:
            pure = _separating(rows, y, outcome)  # say which group, in words, not which dummy column
            why = (f"perfect separation: {'; '.join(pure)}, so no finite effect exists for "
                   f"{'that group' if len(pure) == 1 else 'those groups'}; read the raw rates") if pure else exc
            return {**out, "message": f"({label}) {why}"}
        except ValueError as exc:
            return {**out, "message": f"({label}) {exc}"}
        fits[label] = (res, x, names)
        out["cov"] = cov
        ci = np.asarray(res.conf_int())
        for i, name in enumerate(names):
            out["table"].append({"fit": label, "term": name, "coef": float(res.params[i]),
                                 "odds_ratio": float(np.exp(res.params[i])), "low": float(np.exp(ci[i, 0])),
                                 "high": float(np.exp(ci[i, 1])), "pvalue": float(res.pvalues[i])})
        model_cols = list(range(1, len(models)))
        for j, m in enumerate(models[1:], start=1):
            out["effects"].setdefault(m, {})[label] = dict(zip(("diff", "low", "high"),
                                                               (share * v for v in _ame(res, x, j, model_cols))))
    out["fits"] = fits
    return {**out, "ok": True, "message": ""}


def length_curves(records: list[Record], models: list[str], n_bins: int = 4, outcome: str = "hallucination") -> dict:
    """For the plot of the rate of `outcome`'s bad event (`is_bad`) against answer length: observed rates per model
    in pooled token-quantile bins (x = the bin's median length), and the logistic model's fitted curve per model
    over the observed range (averaged over the items' question kinds). The items are those `length_model` fits
    (`judged_items`: for "hallucination", none cut off); `left_out` says how many were left out."""
    items, left_out = judged_items(records, models, outcome)
    rows = [r for per in items.values() for r in per.values()]
    out: dict = {"observed": [], "fitted": [], "n_items": len(items), "left_out": left_out}
    if not rows:
        return out
    lengths = np.array([_length(r) for r in rows], dtype=float)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_bins + 1)))
    for m in models:
        mine = [r for r in rows if r.model == m]
        ls = np.array([_length(r) for r in mine], dtype=float)
        b = np.clip(np.searchsorted(edges, ls, side="right") - 1, 0, max(len(edges) - 2, 0))
        for k in np.unique(b):
            sel = [r for r, bk in zip(mine, b) if bk == k]
            out["observed"].append({"model": m, "tokens": float(np.median(ls[b == k])), "n": len(sel),
                                    "rate": sum(is_bad(r, outcome) for r in sel) / len(sel)})
    lm = length_model(records, models, outcome)
    if not lm["ok"] or "with length" not in lm["fits"]:
        return out
    res, x, names = lm["fits"]["with length"]
    fixed = lm["fixed"]
    grid = np.geomspace(max(lengths.min(), 1), max(lengths.max(), 2), 40)
    li, beta = names.index("log tokens"), np.asarray(res.params)
    for j, m in enumerate(models):
        xm = x.copy()
        xm[:, 1:len(models)] = 0.0
        if j:
            xm[:, j] = 1.0
        for t in grid:
            xm[:, li] = math.log1p(t)
            p = float(np.sum(1 / (1 + np.exp(-xm @ beta))) + fixed["events"]) / (len(xm) + fixed["rows"])
            # P(outcome) over every answer, a kind left out of the fit at its one outcome; for "correct" 1 − p
            out["fitted"].append({"model": m, "tokens": float(t), "rate": p if outcome == "hallucination" else 1 - p})
    return out
