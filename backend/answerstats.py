"""The answers behind "fewer hallucinations, or just shorter answers?" as records, and the statistics on them that
need no model of the data: the items two models share (less those a reply was cut off on), answer-length bins, the
paired bootstrap of a rate gap, the gap within length bins (`length_controlled`) and McNemar's test. Pure functions
on records but for the database reads (task_records); backend/analysis.py says why cut-off and empty replies are
left out.

    from backend.answerstats import pair_records, length_controlled
    length_controlled(pair_records("synth-math", "A", "B"), "A", "B")
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backend.cutoff import (CAP, CHAT_TRAINING, RAISE_CAP, TRAINING, cap_remedy, cut_off_advice,  # noqa: F401
                            cut_off_rows, cut_off_summary, lineage_training)
from backend.qa import EMPTY, flags

MIN_ITEMS = 10  # fewer shared items than this: no comparison is attempted
MIN_CLUSTERS = 20  # cluster-robust errors need many clusters; below this the model-based ones are used
FEW_ITEMS = 20  # fewer shared items than this: the paired interval covers less than its 95 % (expanded_tail), said
CUT_OFF = "cut off"  # the verdict of a reply that hit max_new_tokens before it stated an answer (backend/qa.py)
CUT_OFF_LARGE = 0.2  # from this share of cut-off replies the "correct" gap may be the token cap's: the sentence says so
ITEMS = "Items per task (eval --limit)"
RAISE_LIMIT = f"evaluate again with more {ITEMS}"  # the remedy when even every item would be too few
# no token cap brings an empty reply back: the model ended it at once (an up-scaled model before continued pretraining)
CONTINUE_PRETRAINING = "continue pretraining the model whose replies are empty (it ends them at once), then evaluate it"

OUTCOMES = ("hallucination", "correct")
RATE_LABEL = {"hallucination": "hallucination rate", "correct": "not-correct rate"}  # the rate compared, per outcome


def _remedy(judged: int, left_out: int | dict, caps: dict[str, list[int]] | None = None) -> str:
    """What would give MIN_ITEMS items to judge: a higher token cap brings back at most the items it cut off, so
    with fewer items in all ("4 of 8 left out") the advice to raise it alone could not work; an item left out for an
    empty reply no cap brings back, nor one of a model cut off at every cap tried (`caps`: all_cut_caps; cap_remedy
    says what it needs). `left_out`: judged_items' dict (or a count of cut-off items)."""
    empty = left_out.get("n_empty", 0) if isinstance(left_out, dict) else 0
    cut = (left_out["n"] - empty) if isinstance(left_out, dict) else left_out
    if not cut:
        return CONTINUE_PRETRAINING
    then = f"; and {CONTINUE_PRETRAINING}" if empty else ""
    cut_models = [m for m, c in left_out["by_model"].items() if c] if isinstance(left_out, dict) else []
    if (remedy := cap_remedy(cut_models, caps or {})) != RAISE_CAP:
        return remedy + then
    if judged + cut >= MIN_ITEMS:
        return RAISE_CAP + then
    return f"{RAISE_CAP} and more {ITEMS}, as only {judged + cut} were scored" + then


def all_cut_caps(left_out: dict) -> dict[str, list[int]]:
    """never_ended of the models cut off on every shared item (judged_items' `left_out`), as the Compare page's
    warning looks them up; {} with none (no database read)."""
    every = [m for m, c in left_out.get("by_model", {}).items() if c and c == left_out.get("n_shared")]
    return never_ended(every) if every else {}


def is_bad(r: Record, outcome: str) -> bool:
    """The event whose rate is compared (lower is better for both outcomes): a hallucination, or, for "correct",
    an answer that is not correct (wrong, abstained or cut off; judged_items leaves empty replies out)."""
    if outcome not in OUTCOMES:
        raise ValueError(f'outcome must be one of {", ".join(OUTCOMES)}, not {outcome!r}.')
    return r.hallucination if outcome == "hallucination" else not r.correct


@dataclass(frozen=True)
class Record:
    """One model's answer to one item. `verdict` is correct / wrong / abstained / cut off / empty ("" on rows from
    before verdicts were stored: then `hallucination` and `answered` say it)."""

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
    old rows without a verdict fall back to their `hallucination` / `correct` / `answered` booleans. A blank reply
    (0 words) reads as qa.classify grades it now, whatever verdict it was stored with: "cut off" to the token limit,
    else "empty" (it ended at once: an empty reply stored as "abstained" before "empty" existed made its model the
    most careful one, and one a judge shown "(empty)" graded "wrong" was a 0-word hallucination)."""
    verdict = getattr(g, "verdict", "") or ""
    if verdict and not int(g.words or 0):  # 0 words (len(output.split())): blank, as classify says
        verdict = "cut off" if getattr(g, "truncated", False) else EMPTY
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
                Generation.job_id, Generation.truncated]  # run and job: newest_run
        query = select(*cols).where(Generation.task == task)
        if models is not None:
            query = query.where(Generation.model.in_(list(models)))
        gens = s.exec(query.order_by(Generation.id)).all()
    # each model's newest run only (an earlier run's answers were made under other settings), one answer per item
    latest = {(g.model, g.prompt_id): g for g in newest_run(gens, lambda g: g.model)}
    return [from_generation(g) for g in latest.values()]


def empty_shares(records) -> dict[str, float]:
    """Per model (by name), the share of its replies that are empty (the model ended them at once), as cut_shares."""
    return _shares(records, EMPTY)


def cut_shares(records) -> dict[str, float]:
    """Per model (by name), the share of its answers cut off by the token limit, in one pass over the records (a
    pass per model was 150 × 66,000 comparisons on every rerun of the Compare page)."""
    return _shares(records, CUT_OFF)


def _shares(records, verdict: str) -> dict[str, float]:
    from collections import Counter

    total, hit = Counter(), Counter()
    for r in records:
        total[r.model] += 1
        hit[r.model] += r.verdict == verdict
    return {m: hit[m] / total[m] for m in sorted(total)}


def caps_all_cut_off(rows) -> dict[str, list[int]]:
    """Per model, the token caps of its evaluation runs in which every reply was cut off. `rows`: (model, replies,
    cut-off replies, longest reply in tokens) per run; in a run cut off throughout the longest reply is the cap
    (max_new_tokens), which runs do not store otherwise. A model with none is left out."""
    caps: dict[str, set[int]] = {}
    for model, n, cut, longest in rows:
        if n and cut == n and longest:
            caps.setdefault(model, set()).add(int(longest))
    return {m: sorted(c) for m, c in sorted(caps.items())}


def never_ended(models) -> dict[str, list[int]]:
    """caps_all_cut_off over the stored generations of `models`, every task and run (one grouped query)."""
    from sqlmodel import case, func, select

    from storage import db
    from storage.models import Generation

    cut = case(((Generation.verdict == CUT_OFF) | Generation.truncated, 1), else_=0)
    with db.session() as s:
        rows = s.exec(select(Generation.model, func.count(), func.sum(cut), func.max(Generation.tokens))
                      .where(Generation.model.in_(list(models)))
                      .group_by(Generation.model, Generation.task, Generation.run, Generation.job_id)).all()
    return caps_all_cut_off(rows)


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


LENGTH_UNITS = ("words", "tokens")


def length_unit(records) -> str:
    """The unit the Compare page measures answer length in: tokens, as the length model and the hallucination-by-
    length plot do, when the rows have token counts (every row since token counts were stored); words otherwise.
    In words a reply cut off at the cap that decodes to blank text (a tiny tokenizer's) was an answer of 0 words,
    drawn in a "0 words" bin as if the model had said nothing; in tokens it is at the cap, where it ran to."""
    return "tokens" if any(r.tokens > 0 for r in records) else "words"


def lengths(records, unit: str = "words") -> np.ndarray:
    """Each record's answer length in `unit`: words (len(output.split())), or tokens (`_length`: the generated
    tokens, words on a row without a count), with an empty reply (ended at once) 0 tokens long, whatever end token
    it generated."""
    if unit not in LENGTH_UNITS:
        raise ValueError(f"unit must be one of {', '.join(LENGTH_UNITS)}, not {unit!r}.")
    if unit == "words":
        return np.array([r.words for r in records], dtype=float)
    return np.array([0 if r.verdict == EMPTY else _length(r) for r in records], dtype=float)


def bin_edges(records: list[Record], n_bins: int = 4, unit: str = "words") -> list[float]:
    """Quantile edges of answer length (in `unit`) over all models pooled, so every model is cut at the same
    lengths. Every answer of one length: one bin from that length to itself (the last bin is closed), "5 words" (an
    edge at 6 labelled it "5–6 words", a length no answer had)."""
    if not records:
        raise ValueError("no answers to bin by length.")
    words = lengths(records, unit)
    edges = np.unique(np.quantile(words, np.linspace(0, 1, n_bins + 1)))
    return edges.tolist() if len(edges) > 1 else [float(words[0])] * 2


def bin_of(words: int, edges: list[float]) -> int:
    return int(bins_of(np.array([words]), edges)[0])


def bins_of(words: np.ndarray, edges: list[float]) -> np.ndarray:
    """The length bin of every answer at once (the last edge closes the last bin)."""
    if len(edges) < 2:
        return np.zeros(len(words), dtype=int)
    return np.minimum(np.searchsorted(edges, words, side="right") - 1, len(edges) - 2)


def word_bins(edges: list[float], unit: str = "words") -> list[str]:
    """The length bins' labels in whole words: bins_of's bins are half-open, [4, 6) then [6, 43] (the last closed),
    and the labels "4–6 words", "6–43 words" put the 6-word answers in both; here "4–5 words", "6–43 words" ("6
    words" for a bin of one length)."""
    out = []
    for b in range(len(edges) - 1):
        lo = math.ceil(edges[b])
        hi = math.floor(edges[b + 1]) if b == len(edges) - 2 else math.ceil(edges[b + 1]) - 1
        out.append(f"{lo} {unit}" if hi <= lo else f"{lo}–{hi} {unit}")
    return out


def stated(records) -> tuple[list[Record], dict[str, int]]:
    """The replies that got to an answer, and per model how many were cut off by the token limit (models with none
    left out). A cut-off reply stated no answer: in an accuracy-by-length bin it was an error at the cap's length,
    which drew a model that rambles as "long answers are wrong" right under the warning that said such replies are
    left out."""
    kept, cut = [], {}
    for r in records:
        if r.verdict == CUT_OFF:
            cut[r.model] = cut.get(r.model, 0) + 1
        else:
            kept.append(r)
    return kept, dict(sorted(cut.items()))


def by_length_bin(records: list[Record], n_bins: int = 4, unit: str = "words") -> list[dict]:
    """Per model and length bin (in `unit`, see `lengths`): count, accuracy, hallucination rate, over the replies
    that stated an answer (`stated`: one cut off by the token limit is left out, and the bins' edges are over the
    rest); [] when every reply was cut off. An empty reply stays in, as an answer of length 0."""
    records, _ = stated(records)
    if not records:
        return []
    edges = bin_edges(records, n_bins, unit)
    bins = bins_of(lengths(records, unit), edges)
    cells: dict[tuple[str, int], list[Record]] = {}
    for r, b in zip(records, bins.tolist()):
        cells.setdefault((r.model, b), []).append(r)
    labels = word_bins(edges, unit)
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
    controlled, length explains it. Length is in tokens when every compared answer has a token count, else in
    words; `unit` says which (`mean_length_*` are in it, `mean_words_*` always in words).
    On the items both models answered (`judged_items`, as `compare`), resampled as items, each keeping both answers:
    over every answer of each model, a model scored on 60 items beside one scored on 30 read a gap of 33 points where
    the shared items had none, and two independent resamples of the same items made the interval of a paired gap
    over twice too wide (it took in 0 where the paired one was 5 to 12 points).
    The resamples are drawn as index arrays and binned with bincount: 500 resamples of 1,000 answers take
    milliseconds (a loop over records took seconds, and the compare page redraws on every widget change).
    For "hallucination", as in `compare`, an item either model left cut off is left out for both (`cut_off`: how
    many items): cut-off replies all sit in the longest bin as non-hallucinations; for "correct" they stay in the
    raw gap and are left out of the gap within bins (`_within_bins`, which says over how many items it is)."""
    if outcome not in OUTCOMES:
        raise ValueError(f'outcome must be one of {", ".join(OUTCOMES)}, not {outcome!r}.')
    items, left_out = judged_items(records, [model_a, model_b], outcome)
    if not items and left_out.get("n_empty"):
        raise ValueError(f"no item is left to judge {outcome} on: {left_out['message']}; "
                         f"{_remedy(0, left_out, all_cut_caps(left_out))}.")
    if not items and left_out["n"]:
        remedy = cap_remedy([m for m, c in left_out["by_model"].items() if c], all_cut_caps(left_out))
        raise ValueError(f"no item is left to judge hallucinations on: on every item {model_a} and {model_b} both "
                         f"answered, a reply was cut off by the token limit; {remedy}.")
    if not items:
        have = {r.model for r in records}
        if model_a in have and model_b in have:
            raise ValueError(f"{model_a} and {model_b} answered no item in common: evaluate both on the same items.")
        raise ValueError("both models need generations on this task.")
    keys = sorted(items)
    a, b = [items[k][model_a] for k in keys], [items[k][model_b] for k in keys]
    # tokens, as every length chart on the Compare page, when every compared answer has a count; words when one
    # was stored before token counts were (a mix would bin one model's words against the other's tokens)
    unit = "tokens" if all(r.tokens > 0 for r in a + b) else "words"
    wa, wb = lengths(a, unit), lengths(b, unit)
    ha, hb = (np.array([is_bad(r, outcome) for r in x], dtype=float) for x in (a, b))
    idx = np.random.default_rng(seed).integers(0, len(keys), (boots, len(keys)))  # one draw of items for both
    raw_s = ha[idx].mean(1) - hb[idx].mean(1)
    return {"model_a": model_a, "model_b": model_b, "outcome": outcome, "n_a": len(a), "n_b": len(b),
           "cut_off": left_out["n"], "unit": unit, "mean_length_a": float(wa.mean()),
           "mean_length_b": float(wb.mean()), "mean_words_a": float(np.mean([r.words for r in a])),
           "mean_words_b": float(np.mean([r.words for r in b])), "raw_diff": float(ha.mean() - hb.mean()),
           "raw_ci": _ci(raw_s, len(keys)), **_within_bins(a, b, wa, wb, ha, hb, n_bins, unit, boots, seed)}


def _ci(xs: np.ndarray, n: int) -> tuple:
    """The 95 % expanded percentile interval of resampled gaps over n items (`expanded_tail`); (None, None) for none."""
    if not len(xs):
        return None, None
    tail = expanded_tail(n)
    return float(np.percentile(xs, tail)), float(np.percentile(xs, 100 - tail))


def _within_bins(a, b, wa, wb, ha, hb, n_bins: int, unit: str, boots: int, seed: int) -> dict:
    """length_controlled's gap within length bins, over the items neither reply was cut off on: for "correct" a
    cut-off reply is not correct by definition and sits at the cap, so a bin of cut-off replies compared the cap, not
    the models (a model cut off throughout read "gap +0.000" beside a raw gap of −0.250); for "hallucination"
    judged_items has left them out already. `items_compared`: the fewer of the two models' answers in the bins both
    models fill (the only answers the gap is over); below MIN_ITEMS the gap is None and `length_note` says why.
    `cut_off_in_bins`: the items left out here for a cut-off reply."""
    keep = [i for i in range(len(a)) if CUT_OFF not in (a[i].verdict, b[i].verdict)]
    out = {"cut_off_in_bins": len(a) - len(keep), "n_items": len(a)}
    if not keep:
        return {**out, "bins": 0, "bins_compared": 0, "items_compared": 0, "length_controlled_diff": None,
                "length_controlled_ci": (None, None),
                "length_note": f"only 0 of {len(a)} items fall in length bins both models fill"}
    sel = np.array(keep)
    wa, wb, ha, hb = wa[sel], wb[sel], ha[sel], hb[sel]
    edges = bin_edges([a[i] for i in keep] + [b[i] for i in keep], n_bins, unit)
    k = len(edges) - 1
    ba, bb = bins_of(wa, edges), bins_of(wb, edges)
    ca, cb = np.bincount(ba, minlength=k), np.bincount(bb, minlength=k)
    both = (ca > 0) & (cb > 0)
    used = int(min(ca[both].sum(), cb[both].sum()))
    out.update(bins=k, bins_compared=int(both.sum()), items_compared=used)
    if used < MIN_ITEMS:  # the floor of `compare`'s verdict: a gap over fewer answers is no check of length
        return {**out, "length_controlled_diff": None, "length_controlled_ci": (None, None),
                "length_note": f"only {used} of {len(a)} items fall in length bins both models fill"}
    idx = np.random.default_rng(seed).integers(0, len(keep), (boots, len(keep)))
    strat_s = _stratified_diffs(ba[idx], ha[idx], bb[idx], hb[idx], k)
    strat_s = strat_s[~np.isnan(strat_s)]
    point = _stratified_diffs(ba[None], ha[None], bb[None], hb[None], k)[0]
    return {**out, "length_controlled_diff": None if np.isnan(point) else float(point),
            "length_controlled_ci": _ci(strat_s, len(keep)), "length_note": ""}


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
    is not correct). For both, the items a model's reply was empty on (verdict "empty": it ended at once) are left
    out: a blank reply is no answer and has no length, and kept it read as a 0-word non-hallucination ("shorter
    answers hallucinate less") or a 0-word error ("shorter answers are wrong"); the QA table's empty rate counts
    them. `left_out`: n_shared, n (items left out), by_model (cut-off replies per model among the shared items, for
    either outcome) and message (empty when nothing was left out); where a reply was empty, also n_empty (items left
    out with an empty reply) and empty_by_model (empty replies per model)."""
    items = shared_items(records, models)
    by_model = {m: sum(per[m].verdict == CUT_OFF for per in items.values()) for m in models}
    empty_by_model = {m: sum(per[m].verdict == EMPTY for per in items.values()) for m in models}
    skip = {EMPTY, CUT_OFF} if outcome == "hallucination" else {EMPTY}
    kept = {k: per for k, per in items.items() if all(r.verdict not in skip for r in per.values())}
    n = len(items) - len(kept)
    n_empty = sum(any(r.verdict == EMPTY for r in per.values()) for per in items.values())
    parts = []
    if outcome == "hallucination" and (cut := {m: c for m, c in by_model.items() if c}):
        parts.append(f"{next(iter(cut))}'s reply was cut off by the token limit" if len(cut) == 1 else
                     "a reply was cut off by the token limit (" + ", ".join(f"{m} on {c}" for m, c in cut.items())
                     + ")")
    if empty := {m: c for m, c in empty_by_model.items() if c}:
        parts.append(f"{next(iter(empty))}'s reply was empty" if len(empty) == 1 else
                     "a reply was empty (" + ", ".join(f"{m} on {c}" for m, c in empty.items()) + ")")
    message = f"{n} of {len(items)} items left out: " + "; ".join(parts) if n else ""
    out = {"n_shared": len(items), "n": n, "by_model": by_model, "message": message}
    return kept, ({**out, "n_empty": n_empty, "empty_by_model": empty_by_model} if n_empty else out)


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
