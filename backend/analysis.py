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
for "correct" a cut-off reply stays an error (it is one), and the sentence says when many were cut off.
An empty reply (verdict "empty": the model ended it at once, as an up-scaled model does before continued pretraining)
has 0 words and says nothing. Kept, it was a 0-word non-hallucination (so "shorter answers hallucinate less") or a
0-word error (so "shorter answers are wrong"); it is neither an answer nor an abstention. So both comparisons leave
out every item either model's reply was empty on, and say how many; the QA table's empty rate counts them.

The work is in three modules: backend/answerstats.py (records, shared items, length bins, bootstrap, McNemar),
backend/lengthfit.py (the logistic fit) and backend/claimtext.py (the sentence); `compare` puts them together here.
This module is their import point: `from backend import analysis; analysis.compare(...)` as before. A test that
replaces a function (monkeypatch) replaces it where it is looked up: `answerstats.task_records` for pair_records."""

from __future__ import annotations

import numpy as np

from backend.answerstats import (CONTINUE_PRETRAINING, CUT_OFF, CUT_OFF_LARGE, FEW_ITEMS, MIN_CLUSTERS, MIN_ITEMS,
                                 OUTCOMES, RAISE_CAP, RAISE_LIMIT, RATE_LABEL, Record, _length, _remedy,
                                 all_cut_caps, answered_models, bin_edges, bin_of, bins_of, by_length_bin,
                                 caps_all_cut_off, cut_off_advice, cut_shares, empty_shares, expanded_tail,
                                 from_generation, is_bad,
                                 judged_items, length_controlled, length_unit, lengths, mcnemar_accuracy, never_ended,
                                 pair_records, paired_bootstrap, preload, shared_items, stated, task_records,
                                 word_bins)
from backend.claimtext import _few_items_note, _points, sentence, within_bins_text
from backend.lengthfit import Separation, length_curves, length_model

__all__ = ["CONTINUE_PRETRAINING", "CUT_OFF", "CUT_OFF_LARGE", "FEW_ITEMS", "MIN_CLUSTERS", "MIN_ITEMS", "OUTCOMES",
           "RAISE_CAP", "RAISE_LIMIT", "RATE_LABEL", "Record", "Separation", "_few_items_note", "_length", "_points",
           "_remedy", "all_cut_caps", "answered_models", "bin_edges", "bin_of", "bins_of", "by_length_bin",
           "caps_all_cut_off",
           "compare", "cut_off_advice", "cut_shares", "empty_shares", "expanded_tail", "from_generation", "is_bad",
           "judged_items", "length_controlled", "length_curves", "length_model", "length_unit", "lengths",
           "mcnemar_accuracy", "never_ended", "pair_records", "paired_bootstrap", "preload", "sentence",
           "shared_items", "stated", "task_records", "within_bins_text", "word_bins"]


def compare(records: list[Record], model_a: str, model_b: str, outcome: str = "hallucination", boots: int = 2000,
            seed: int = 0) -> dict:
    """Two models on the same items: the raw gap in `outcome` rate (paired bootstrap, A − B), McNemar's test on
    accuracy, and the gap with answer length held fixed (the logistic model's average marginal effect), with the
    one-sentence answer in `sentence`. `outcome`: "hallucination", or "correct" (then the rate is of wrong answers,
    so that lower is better in both). For "hallucination" only the items neither model left cut off by the token
    limit are compared, for both outcomes only those neither replied empty to (`judged_items`); `left_out` says how
    many were left out and whose, and the sentence too."""
    if model_a == model_b:
        raise ValueError("choose two different models.")
    items, left_out = judged_items(records, [model_a, model_b], outcome)
    # the models cut off on every item and at each cap tried: the remedy says a higher cap will not help them, as
    # the Compare page's warning above the verdict does (answerstats.all_cut_caps: no database read without one)
    caps = all_cut_caps(left_out)
    res: dict = {"ok": False, "model_a": model_a, "model_b": model_b, "outcome": outcome, "n_items": len(items),
                 "left_out": left_out, "never_ended": caps}
    if len(items) < MIN_ITEMS and left_out["n"]:
        remain = f"only {len(items)} remain" if items else "none remains"
        res["message"] = (f"No verdict: {left_out['message']}, so {remain} and a comparison needs at least "
                          f"{MIN_ITEMS}; {_remedy(len(items), left_out, caps)}.")
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
