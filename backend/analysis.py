"""Length and hallucination statistics over stored generations: fewer hallucinations, or just shorter answers?
Pure functions on per-item records; the compare page plots them, tests/test_analysis.py checks them.

The model of the data (`length_model`, `compare`): per item, hallucination (or correctness) is regressed on model,
answer length (log tokens) and question kind by logistic regression (statsmodels), once without and once with the
length term. Items are shared by the models, and one item's answers go together (a hard item trips every model), so
intervals are cluster-robust by item when there are enough items to estimate that (at least 20), model-based
otherwise; the result says which. Two models are also compared without any model: a paired bootstrap over the same
items (hallucination rate) and McNemar's test (accuracy).

A reply cut off by the token limit (verdict "cut off", backend/qa.py) never stated an answer, so it is no
hallucination — and it is always as long as the cap allows. Counted as a non-hallucination, it made a model that
rambles until it is stopped "hallucinate less", and tied "longer" to "fewer hallucinations" in the length model. So
the hallucination comparison leaves out every item either model left cut off, and says how many (`judged_items`);
for "correct" a cut-off reply stays an error (it is one), and the sentence says when many were cut off."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from backend.qa import flags

MIN_ITEMS = 10  # fewer shared items than this: no comparison is attempted
MIN_CLUSTERS = 20  # cluster-robust errors need many clusters; below this the model-based ones are used
FEW_ITEMS = 20  # fewer shared items than this: the paired interval covers less than its 95 % (expanded_tail), said
CUT_OFF = "cut off"  # the verdict of a reply that hit max_new_tokens before it stated an answer (backend/qa.py)
CUT_OFF_LARGE = 0.2  # from this share of cut-off replies the "correct" gap may be the token cap's: the sentence says so
RAISE_CAP = "evaluate again with a higher Max new tokens"  # the remedy, named as the evaluate form's field
RAISE_LIMIT = "evaluate again with more Items per task"  # the remedy when even every item would be too few


def _remedy(judged: int, left_out: int) -> str:
    """What would give MIN_ITEMS items to judge: a higher token cap brings back at most the items it cut off, so
    with fewer items in all ("4 of 8 left out") the advice to raise it alone could not work."""
    if judged + left_out >= MIN_ITEMS:
        return RAISE_CAP
    return f"{RAISE_CAP} and {RAISE_LIMIT.removeprefix('evaluate again with ')} (only {judged + left_out} were scored)"
OUTCOMES = ("hallucination", "correct")
RATE_LABEL = {"hallucination": "hallucination rate", "correct": "not-correct rate"}  # the rate compared, per outcome


def is_bad(r: Record, outcome: str) -> bool:
    """The event whose rate is compared (lower is better for both outcomes): a hallucination, or, for "correct",
    an answer that is not correct (wrong, abstained or cut off)."""
    if outcome not in OUTCOMES:
        raise ValueError(f'outcome must be one of {", ".join(OUTCOMES)}, not {outcome!r}.')
    return r.hallucination if outcome == "hallucination" else not r.correct


@dataclass(frozen=True)
class Record:
    """One model's answer to one item. `verdict` is correct / wrong / abstained / cut off (empty on rows from before
    verdicts were stored: then `hallucination` and `answered` say it)."""

    model: str
    words: int
    correct: bool
    hallucination: bool
    prompt_id: str = ""
    tokens: int = 0
    kind: str = ""
    verdict: str = ""
    answered: bool = True


def from_generation(g) -> Record:
    """A stored Generation row as a Record: a hallucination is a wrong answer (verdict "wrong"), not an abstention;
    old rows without a verdict fall back to their `hallucination` / `correct` / `answered` booleans."""
    verdict = getattr(g, "verdict", "") or ""
    if verdict:
        f = flags(verdict)
        correct, hallucination, answered = f["correct"], f["hallucination"], f["answered"]
    else:
        correct, hallucination, answered = bool(g.correct), bool(g.hallucination), bool(getattr(g, "answered", True))
    return Record(model=g.model, words=int(g.words or 0), correct=correct, hallucination=hallucination,
                  prompt_id=str(g.prompt_id), tokens=int(g.tokens or 0), kind=getattr(g, "item_kind", "") or "",
                  verdict=verdict, answered=answered)


def task_records(task: str, models: list[str] | tuple[str, ...] | None = None) -> list[Record]:
    """The latest answer of every model to every item of `task` in the database, as records (the Compare page and
    `python -m backend compare`). Plain rows of the columns the analysis reads: building ORM objects took ~1 s.
    `models`: only theirs, filtered in the query (a model's newest run is its own, so the rest do not change it):
    the CLI loaded 150 models' answers to keep two."""
    from sqlmodel import select

    from backend.scoretable import newest_run
    from storage import db
    from storage.models import Generation

    with db.session() as s:
        cols = [Generation.model, Generation.prompt_id, Generation.words, Generation.tokens, Generation.correct,
                Generation.hallucination, Generation.answered, Generation.verdict, Generation.item_kind, Generation.run,
                Generation.job_id]  # run and job: newest_run
        query = select(*cols).where(Generation.task == task)
        if models is not None:
            query = query.where(Generation.model.in_(list(models)))
        gens = s.exec(query.order_by(Generation.id)).all()
    # each model's newest run only (an earlier run's answers were made under other settings), one answer per item
    latest = {(g.model, g.prompt_id): g for g in newest_run(gens, lambda g: g.model)}
    return [from_generation(g) for g in latest.values()]


def cut_shares(records) -> dict[str, float]:
    """Per model (by name), the share of its answers cut off by the token limit, in one pass over the records (a
    pass per model was 150 × 66,000 comparisons on every rerun of the Compare page)."""
    from collections import Counter

    total, cut = Counter(), Counter()
    for r in records:
        total[r.model] += 1
        cut[r.model] += r.verdict == CUT_OFF
    return {m: cut[m] / total[m] for m in sorted(total)}


def answered_models(task: str) -> list[str]:
    """The models with answers on `task`, by name (a SELECT DISTINCT: no answer is loaded)."""
    from sqlmodel import select

    from storage import db
    from storage.models import Generation

    with db.session() as s:
        return sorted(s.exec(select(Generation.model).where(Generation.task == task).distinct()).all())


def pair_records(task: str, model_a: str, model_b: str) -> list[Record]:
    """The newest answers of two models on `task` (`python -m backend compare`), read alone; a model without any
    is an error that names the models that have some."""
    recs = task_records(task, (model_a, model_b))
    have = {r.model for r in recs}
    if missing := [m for m in (model_a, model_b) if m not in have]:
        raise ValueError(f"no answers of {', '.join(missing)} on {task} (answers of: "
                         f"{', '.join(answered_models(task)) or 'none'}); evaluate with --tasks {task} first.")
    return recs


def bin_edges(records: list[Record], n_bins: int = 4) -> list[float]:
    """Quantile edges of answer length over all models pooled, so every model is cut at the same lengths. Every
    answer of one length: one bin from that length to itself (the last bin is closed), "5 words" (an edge at 6
    labelled it "5–6 words", a length no answer had)."""
    if not records:
        raise ValueError("no answers to bin by length.")
    words = np.array([r.words for r in records], dtype=float)
    edges = np.unique(np.quantile(words, np.linspace(0, 1, n_bins + 1)))
    return edges.tolist() if len(edges) > 1 else [float(words[0])] * 2


def bin_of(words: int, edges: list[float]) -> int:
    return int(bins_of(np.array([words]), edges)[0])


def bins_of(words: np.ndarray, edges: list[float]) -> np.ndarray:
    """The length bin of every answer at once (the last edge closes the last bin)."""
    if len(edges) < 2:
        return np.zeros(len(words), dtype=int)
    return np.minimum(np.searchsorted(edges, words, side="right") - 1, len(edges) - 2)


def word_bins(edges: list[float]) -> list[str]:
    """The length bins' labels in whole words: bins_of's bins are half-open, [4, 6) then [6, 43] (the last closed),
    and the labels "4–6 words", "6–43 words" put the 6-word answers in both; here "4–5 words", "6–43 words" ("6
    words" for a bin of one length)."""
    out = []
    for b in range(len(edges) - 1):
        lo = math.ceil(edges[b])
        hi = math.floor(edges[b + 1]) if b == len(edges) - 2 else math.ceil(edges[b + 1]) - 1
        out.append(f"{lo} words" if hi <= lo else f"{lo}–{hi} words")
    return out


def by_length_bin(records: list[Record], n_bins: int = 4) -> list[dict]:
    """Per model and length bin: count, accuracy, hallucination rate."""
    edges = bin_edges(records, n_bins)
    bins = bins_of(np.array([r.words for r in records], dtype=float), edges)
    cells: dict[tuple[str, int], list[Record]] = {}
    for r, b in zip(records, bins.tolist()):
        cells.setdefault((r.model, b), []).append(r)
    labels = word_bins(edges)
    return [{"model": m, "bin": b, "range": labels[b], "n": len(rs),
             "accuracy": sum(r.correct for r in rs) / len(rs),
             "hallucination_rate": sum(r.hallucination for r in rs) / len(rs)}
            for (m, b), rs in sorted(cells.items())]


def _stratified_diffs(bins_a: np.ndarray, hall_a: np.ndarray, bins_b: np.ndarray, hall_b: np.ndarray,
                      n_bins: int) -> np.ndarray:
    """Hallucination rate A − B within each length bin, averaged with the pooled bin sizes as weights (direct
    standardisation); bins where either model has no answers are left out. Each row of the (R × n) bin and
    hallucination arrays is one resample; NaN where no bin has answers from both models."""
    def per_bin(bins, hall):
        rows = np.arange(len(bins))[:, None] * n_bins + bins
        count = np.bincount(rows.ravel(), minlength=len(bins) * n_bins).reshape(len(bins), n_bins)
        bad = np.bincount(rows.ravel(), weights=hall.ravel(), minlength=len(bins) * n_bins).reshape(len(bins), n_bins)
        return count, bad

    ca, ha = per_bin(bins_a, hall_a)
    cb, hb = per_bin(bins_b, hall_b)
    both = (ca > 0) & (cb > 0)
    w = np.where(both, ca + cb, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(both, ha / np.maximum(ca, 1) - hb / np.maximum(cb, 1), 0.0)
        return (w * gap).sum(1) / np.where(w.sum(1) > 0, w.sum(1), np.nan)


def length_controlled(records: list[Record], model_a: str, model_b: str, n_bins: int = 4, boots: int = 1000,
                      seed: int = 0, outcome: str = "hallucination") -> dict:
    """Raw and length-stratified difference in the rate of `outcome`'s bad event (`is_bad`: a hallucination, or an
    answer that is not correct), A − B, with 95 % expanded percentile intervals (`expanded_tail`, as
    `paired_bootstrap`), and each model's mean answer length. If the raw gap shrinks to ~0 once length is
    controlled, length explains it.
    On the items both models answered (`judged_items`, as `compare`), resampled as items, each keeping both answers:
    over every answer of each model, a model scored on 60 items beside one scored on 30 read a gap of 33 points where
    the shared items had none, and two independent resamples of the same items made the interval of a paired gap
    over twice too wide (it took in 0 where the paired one was 5 to 12 points).
    The resamples are drawn as index arrays and binned with bincount: 500 resamples of 1,000 answers take
    milliseconds (a loop over records took seconds, and the compare page redraws on every widget change).
    For "hallucination", as in `compare`, an item either model left cut off is left out for both (`cut_off`: how
    many items): cut-off replies all sit in the longest bin as non-hallucinations."""
    if outcome not in OUTCOMES:
        raise ValueError(f'outcome must be one of {", ".join(OUTCOMES)}, not {outcome!r}.')
    items, left_out = judged_items(records, [model_a, model_b], outcome)
    if not items and left_out["n"]:
        raise ValueError(f"no item is left to judge hallucinations on: on every item {model_a} and {model_b} both "
                         f"answered, a reply was cut off by the token limit; {RAISE_CAP}.")
    if not items:
        have = {r.model for r in records}
        if model_a in have and model_b in have:
            raise ValueError(f"{model_a} and {model_b} answered no item in common: evaluate both on the same items.")
        raise ValueError("both models need generations on this task.")
    keys = sorted(items)
    a, b = [items[k][model_a] for k in keys], [items[k][model_b] for k in keys]
    edges = bin_edges(a + b, n_bins)
    k = len(edges) - 1
    wa, wb = (np.array([r.words for r in x], dtype=float) for x in (a, b))
    ha, hb = (np.array([is_bad(r, outcome) for r in x], dtype=float) for x in (a, b))
    ba, bb = bins_of(wa, edges), bins_of(wb, edges)
    idx = np.random.default_rng(seed).integers(0, len(keys), (boots, len(keys)))  # one draw of items for both
    raw_s = ha[idx].mean(1) - hb[idx].mean(1)
    strat_s = _stratified_diffs(ba[idx], ha[idx], bb[idx], hb[idx], k)
    strat_s = strat_s[~np.isnan(strat_s)]
    point = _stratified_diffs(ba[None], ha[None], bb[None], hb[None], k)[0]
    tail = expanded_tail(len(keys))
    ci = lambda xs: (float(np.percentile(xs, tail)), float(np.percentile(xs, 100 - tail))) if len(xs) else (  # noqa
        None, None)
    return {"model_a": model_a, "model_b": model_b, "outcome": outcome, "n_a": len(a), "n_b": len(b),
            "cut_off": left_out["n"],
            "mean_words_a": float(wa.mean()), "mean_words_b": float(wb.mean()),
            "raw_diff": float(ha.mean() - hb.mean()), "raw_ci": ci(raw_s),
            "length_controlled_diff": None if np.isnan(point) else float(point),
            "length_controlled_ci": ci(strat_s), "bins": k}


# ---- the model of the data -------------------------------------------------------------------------------------

def _length(r: Record) -> int:
    return r.tokens if r.tokens > 0 else r.words  # rows without a token count fall back to words


def shared_items(records: list[Record], models: list[str]) -> dict[str, dict[str, Record]]:
    """prompt_id -> model -> record, for the items every one of `models` answered (the last record wins)."""
    by_item: dict[str, dict[str, Record]] = {}
    for r in records:
        if r.model in models:
            by_item.setdefault(r.prompt_id, {})[r.model] = r
    return {k: v for k, v in by_item.items() if len(v) == len(models)}


def judged_items(records: list[Record], models: list[str], outcome: str) -> tuple[dict[str, dict[str, Record]], dict]:
    """The items `outcome` can be judged on, as `shared_items`, and what was left out. For "hallucination": the
    shared items none of `models` left cut off (old rows without a verdict stay in, as before verdicts); a cut-off
    reply is no answer, so neither a hallucination nor its absence. For "correct": every shared item (a cut-off reply
    is not correct). `left_out`: n_shared, n (items left out), by_model (cut-off replies per model among the shared
    items, for either outcome) and message (empty when nothing was left out)."""
    items = shared_items(records, models)
    by_model = {m: sum(per[m].verdict == CUT_OFF for per in items.values()) for m in models}
    kept = items if outcome != "hallucination" else {
        k: per for k, per in items.items() if all(r.verdict != CUT_OFF for r in per.values())}
    n = len(items) - len(kept)
    cut = {m: c for m, c in by_model.items() if c}
    if not n:
        message = ""
    elif len(cut) == 1:
        message = f"{n} of {len(items)} items left out: {next(iter(cut))}'s reply was cut off by the token limit"
    else:
        message = (f"{n} of {len(items)} items left out: a reply was cut off by the token limit ("
                   + ", ".join(f"{m} on {c}" for m, c in cut.items()) + ")")
    return kept, {"n_shared": len(items), "n": n, "by_model": by_model, "message": message}


def expanded_tail(n: int) -> float:
    """The lower tail, in percent, of the 95 % expanded percentile interval over n resampled units (Hesterberg 2015,
    "What Teachers Should Know About the Bootstrap", The American Statistician 69(4)): Φ(−√(n/(n−1))·t(n−1, 0.975)).
    The plain 2.5 % percentile interval is about mean ± 1.96·s·√((n−1)/n)/√n, too narrow in small samples: on
    simulated paired items it covered 80 % at 10 items and 89 % at 20 (expanded: 82 % and 92 %; the tail is 1.6 % at
    20 items, 2.3 % at 100). Below ~20 items it still covers less than 95 %: 0/1 outcomes are too coarse there."""
    if n < 2:
        return 2.5
    from scipy.stats import norm, t

    return float(100 * norm.cdf(-math.sqrt(n / (n - 1)) * t.ppf(0.975, n - 1)))


def paired_bootstrap(ya, yb, boots: int = 2000, seed: int = 0) -> dict:
    """Rate A − rate B on the same items, with a 95 % expanded percentile interval (`expanded_tail`) from resampling
    items (each item keeps its pair of outcomes, so the item-to-item difficulty cancels)."""
    ya, yb = np.asarray(ya, dtype=float), np.asarray(yb, dtype=float)
    if len(ya) != len(yb) or len(ya) == 0:
        raise ValueError("paired bootstrap needs the same, non-empty list of items for both models.")
    d = ya - yb
    idx = np.random.default_rng(seed).integers(0, len(d), (boots, len(d)))
    means = d[idx].mean(axis=1)
    tail = expanded_tail(len(d))
    return {"diff": float(d.mean()), "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail)), "n": len(d)}


def preload() -> None:
    """Import the regression's libraries (statsmodels' Logit pulls scipy: ~1.3 s on a 2-core CPU). The app calls this
    in a thread once per server process, so the first compare page a user opens does not pay for it."""
    from importlib import import_module

    for name in ("statsmodels.discrete.discrete_model", "statsmodels.stats.contingency_tables"):
        import_module(name)  # two plain imports bound one name, and pyflakes called one of them unused


def mcnemar_accuracy(ca, cb) -> dict:
    """McNemar's test of equal accuracy on the same items (statsmodels); exact binomial when fewer than 25 items
    are discordant (the chi-square approximation is poor there), chi-square with continuity correction otherwise."""
    from statsmodels.stats.contingency_tables import mcnemar

    ca, cb = np.asarray(ca, dtype=bool), np.asarray(cb, dtype=bool)
    table = [[int(np.sum(ca & cb)), int(np.sum(ca & ~cb))], [int(np.sum(~ca & cb)), int(np.sum(~ca & ~cb))]]
    only_a, only_b = table[0][1], table[1][0]
    exact = only_a + only_b < 25
    res = mcnemar(table, exact=exact, correction=True)
    return {"table": table, "only_a_correct": only_a, "only_b_correct": only_b, "exact": exact,
            "statistic": float(res.statistic), "pvalue": float(res.pvalue)}


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
    out (`judged_items`): a cut-off reply sits at the cap's length and would read as "long, so no hallucination"."""
    if outcome not in OUTCOMES:
        raise ValueError('outcome must be "hallucination" or "correct".')
    items, left_out = judged_items(records, models, outcome)
    out: dict = {"ok": False, "models": models, "outcome": outcome, "n_items": len(items), "left_out": left_out,
                 "table": [], "effects": {}, "notes": []}
    if len(models) < 2:
        return {**out, "message": "choose at least two models."}
    if len(items) < MIN_ITEMS:
        if left_out["n"]:
            return {**out, "message": f"only {len(items)} items are left to judge ({left_out['message']}); the "
                                      f"model needs at least {MIN_ITEMS}: {_remedy(len(items), left_out['n'])}."}
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


def _pts(x: float) -> str:
    return str(round(100 * x)).replace("-", "−")  # round(): −0.001 reads "0" (a ".0f" format printed "−0")


def _points(x: float) -> str:
    return f"{_pts(x)} point" + ("" if _pts(x) in ("1", "−1") else "s")


def _ci(lo: float, hi: float) -> str:
    return f"{_pts(lo)} to {_pts(hi)}"


def _interval(lo: float, hi: float) -> str:
    """The bootstrap interval in words; a zero-width one (every resample gave the same gap: the gap is the same on
    every item) is said to be that, not printed as "95 % CI 100 to 100"."""
    return f"95 % CI {_ci(lo, hi)}" if lo != hi else "the same on every item, so no interval"


def _cut_off_note(res: dict) -> str:
    """What the token limit did to the comparison, as a sentence to append: for "hallucination" the items left out
    (`judged_items`); for "correct", where a cut-off reply counts as not correct, each model's cut-off share when one
    reaches CUT_OFF_LARGE — a gap between a model that finishes and one the cap stops may be the cap's."""
    left = res["left_out"]
    if res["outcome"] == "hallucination":
        return f" {left['message']}; {RAISE_CAP} to judge them." if left["n"] else ""
    share = {m: c / left["n_shared"] for m, c in left["by_model"].items()}
    if max(share.values()) < CUT_OFF_LARGE:
        return ""
    shares = ", ".join(f"{m} {100 * v:.0f} %" for m, v in share.items())
    return (f" Cut off by the token limit, and so counted as not correct: {shares} of the {left['n_shared']} items, "
            f"so this may measure the token cap rather than the models ({RAISE_CAP}).")


def sentence(res: dict) -> str:
    """The answer to "fewer hallucinations, or just shorter answers?" in one sentence, with its numbers, then,
    below FEW_ITEMS items, how rough its interval is (`_few_items_note`), then what the token limit left out or may
    have caused (`_cut_off_note`)."""
    if not res["ok"]:
        return res["message"]
    raw = res["raw"]  # no interval to trust or doubt where _answer says there is nothing to explain
    plain = res["rate_a"] == res["rate_b"] in (0, 1) or raw["low"] == raw["high"] == 0
    return _answer(res) + ("" if plain else _few_items_note(raw["n"])) + _cut_off_note(res)


def _few_items_note(n: int) -> str:
    """Below FEW_ITEMS shared items, how far to trust the "95 %" interval: 0/1 outcomes are too coarse for any
    bootstrap there (the expanded interval covered 82–84 % at 10 items, 92–95 % at 20, on simulated pairs)."""
    if n >= FEW_ITEMS:
        return ""
    return (f" With {n} shared items the interval is rough: on simulated pairs a 95 % interval over 10 items covered "
            f"the true gap only about 83 % of the time; {FEW_ITEMS} or more items make it trustworthy.")


def _answer(res: dict) -> str:
    """The verdict of `sentence`. Degenerate data says what it is: no event on either side, an event on every
    answer, or events on exactly the same items — not a difference with a zero-width interval."""
    a, b, raw, adj = res["model_a"], res["model_b"], res["raw"], res.get("adjusted")
    noun = "hallucinates" if res["outcome"] == "hallucination" else "errs (wrong, abstained or cut off)"
    past = "hallucinated" if res["outcome"] == "hallucination" else "erred"
    n = f"{raw['n']} shared items"
    if res["rate_a"] == res["rate_b"] == 0:
        return f"Neither {a} nor {b} {past} on the {n}: nothing to explain."
    if res["rate_a"] == res["rate_b"] == 1:
        return f"Both {a} and {b} {past} on every one of the {n}: nothing to explain."
    if raw["low"] == raw["high"] == 0:
        return (f"{a} and {b} {past} on exactly the same {round(res['rate_a'] * raw['n'])} of the {n}: no "
                "difference to explain.")
    if raw["low"] <= 0 <= raw["high"]:
        head = (f"{a} and {b} show no clear difference: {a} − {b} = {_points(raw['diff'])} "
                f"({_interval(raw['low'], raw['high'])}, {n})")
        sign = 1
    else:
        sign = 1 if raw["diff"] > 0 else -1  # > 0: B has the lower rate
        better, worse = (b, a) if sign > 0 else (a, b)
        lo, hi = sorted((sign * raw["low"], sign * raw["high"]))
        head = f"{better} {noun} {_points(sign * raw['diff'])} less than {worse} ({_interval(lo, hi)}, {n})"
    if adj is None:
        return f"{head}; the length effect could not be estimated: {res['length_message']}."
    d, (lo, hi) = sign * adj["diff"], sorted((sign * adj["low"], sign * adj["high"]))
    tail = f"; with answer length held fixed the gap is {_points(d)} ({_ci(lo, hi)})"
    if raw["low"] <= 0 <= raw["high"]:
        return f"{head}{tail}."
    mean_a, mean_b = f"{res['mean_tokens_a']:.0f}", f"{res['mean_tokens_b']:.0f}"
    # the shorter model as the sentence prints the lengths: on a tie A counted as shorter, and "shorter answers
    # explain most of it (10 vs 10 tokens on average)" named a length gap the numbers beside it did not show
    shorter = None if mean_a == mean_b else b if res["mean_tokens_b"] < res["mean_tokens_a"] else a
    better = b if sign > 0 else a
    lengths = f"{mean_a} vs {mean_b} tokens on average"
    if lo <= 0 <= hi and lo <= sign * raw["diff"] <= hi:
        why = (f": length and model cannot be told apart on these items ({lengths}), more items with overlapping "
               "lengths would settle it")
    elif lo <= 0 <= hi:
        why = (f": shorter answers explain most of it ({lengths})" if shorter == better else
               f": answer length explains most of it ({lengths})")
    elif hi < 0:
        why = f": at the same length the order reverses ({lengths})"
    elif d < sign * raw["diff"] / 2:
        why = f": length explains part of it, not all ({lengths})"
    else:
        why = f": not just shorter answers, the gap stays at the same length ({lengths})"
    return f"{head}{tail}{why}."


def compare(records: list[Record], model_a: str, model_b: str, outcome: str = "hallucination", boots: int = 2000,
            seed: int = 0) -> dict:
    """Two models on the same items: the raw gap in `outcome` rate (paired bootstrap, A − B), McNemar's test on
    accuracy, and the gap with answer length held fixed (the logistic model's average marginal effect), with the
    one-sentence answer in `sentence`. `outcome`: "hallucination", or "correct" (then the rate is of wrong answers,
    so that lower is better in both). For "hallucination" only the items neither model left cut off by the token
    limit are compared (`judged_items`); `left_out` says how many were left out and whose, and the sentence too."""
    if model_a == model_b:
        raise ValueError("choose two different models.")
    items, left_out = judged_items(records, [model_a, model_b], outcome)
    res: dict = {"ok": False, "model_a": model_a, "model_b": model_b, "outcome": outcome, "n_items": len(items),
                 "left_out": left_out}
    if len(items) < MIN_ITEMS and left_out["n"]:
        remain = f"only {len(items)} remain" if items else "none remains"
        res["message"] = (f"No verdict: {left_out['message']}, so {remain} and a comparison needs at least "
                          f"{MIN_ITEMS}; {_remedy(len(items), left_out['n'])}.")
        return {**res, "sentence": res["message"]}
    if len(items) < MIN_ITEMS:
        res["message"] = (f"{model_a} and {model_b} answered only {len(items)} of the same items; a comparison "
                          f"needs at least {MIN_ITEMS}: {RAISE_LIMIT}.")
        return {**res, "sentence": res["message"]}
    ra = [items[k][model_a] for k in sorted(items)]
    rb = [items[k][model_b] for k in sorted(items)]
    ya, yb = [is_bad(r, outcome) for r in ra], [is_bad(r, outcome) for r in rb]
    res.update(ok=True, raw=paired_bootstrap(ya, yb, boots, seed),
               mcnemar=mcnemar_accuracy([r.correct for r in ra], [r.correct for r in rb]),
               mean_tokens_a=float(np.mean([_length(r) for r in ra])),
               mean_tokens_b=float(np.mean([_length(r) for r in rb])),
               rate_a=float(np.mean(ya)), rate_b=float(np.mean(yb)))
    lm = length_model(records, [model_a, model_b], outcome)
    res["model"], res["length_message"] = lm, (lm["message"] or "; ".join(lm["notes"])).rstrip(".")
    eff = lm["effects"].get(model_b, {})
    flip = -1 if outcome == "hallucination" else 1  # the fit's effect is B − A in P(outcome); the gap is A − B in bad
    for label, key in (("without length", "unadjusted"), ("with length", "adjusted")):
        if label in eff:
            e = eff[label]
            res[key] = {"diff": flip * e["diff"], "low": min(flip * e["low"], flip * e["high"]),
                        "high": max(flip * e["low"], flip * e["high"])}
    res["sentence"] = sentence(res)
    return res


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
