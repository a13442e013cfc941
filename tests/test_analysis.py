"""The model of the data behind "fewer hallucinations, or just shorter answers?" (backend/analysis.py): planted
effects are recovered, the paired tests match hand and statsmodels values, and degenerate data gets a reason."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from backend import analysis
from backend.analysis import Record


def planted(model_effect: float, length_effect: float, n: int = 400, seed: int = 0) -> list[Record]:
    """Items of two kinds with their own difficulty; B answers about e-times shorter than A (log tokens 3.5 vs
    4.5, overlapping). logit P(hallucinate) = −1 + difficulty + length_effect·(log tokens − 4) + model_effect·[B]."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        kind = ("answerable", "math")[i % 2]
        difficulty = rng.normal(0, 0.8)
        for m, mean_log in (("A", 4.5), ("B", 3.5)):
            lt = rng.normal(mean_log, 0.6)
            logit = -1 + difficulty + length_effect * (lt - 4) + (model_effect if m == "B" else 0) + 0.3 * (i % 2)
            wrong = rng.random() < 1 / (1 + math.exp(-logit))
            tokens = int(math.exp(lt))
            recs.append(Record(m, tokens, not wrong, wrong, prompt_id=f"q{i}", tokens=tokens, kind=kind,
                               verdict="wrong" if wrong else "correct"))
    return recs


def _model_b(res: dict, fit: str) -> dict:
    return next(r for r in res["model"]["table"] if r["fit"] == fit and r["term"] == "model[B]")


def test_a_gap_that_is_only_length_vanishes_once_length_is_in_the_model():
    res = analysis.compare(planted(model_effect=0.0, length_effect=1.5), "A", "B")
    raw, adj, unadj = res["raw"], res["adjusted"], res["unadjusted"]
    assert raw["low"] > 0.1  # B hallucinates clearly less…
    assert unadj["low"] > 0.1 and _model_b(res, "without length")["high"] < 1  # …and the model without length agrees
    assert adj["low"] < 0 < adj["high"]  # with length held fixed the model effect's interval contains 0
    b = _model_b(res, "with length")
    assert b["low"] < 1 < b["high"]  # odds ratio interval contains 1
    length = next(r for r in res["model"]["table"] if r["fit"] == "with length" and r["term"] == "log tokens")
    assert length["coef"] == pytest.approx(1.5, abs=0.45) and length["low"] > 1
    assert res["model"]["cov"] == "cluster-robust by item"
    assert "shorter answers explain most of it" in res["sentence"] and res["sentence"].startswith("B hallucinates")


def test_a_real_model_effect_survives_the_length_term():
    res = analysis.compare(planted(model_effect=-1.2, length_effect=0.0, n=600, seed=1), "A", "B")
    assert res["raw"]["low"] > 0 and res["unadjusted"]["low"] > 0
    assert res["adjusted"]["low"] > 0  # excludes 0 with the length term too
    assert _model_b(res, "with length")["high"] < 1 and _model_b(res, "without length")["high"] < 1
    length = next(r for r in res["model"]["table"] if r["fit"] == "with length" and r["term"] == "log tokens")
    assert length["low"] < 1 < length["high"]  # length is irrelevant here, and the fit says so
    assert "not just shorter answers" in res["sentence"]


def test_paired_bootstrap_on_fixed_counts():
    # 40 items: both hallucinate on 3, only A on 9, only B on 1, neither on 27
    a = [1] * 3 + [1] * 9 + [0] * 1 + [0] * 27
    b = [1] * 3 + [0] * 9 + [1] * 1 + [0] * 27
    res = analysis.paired_bootstrap(a, b, boots=20000)
    assert res["diff"] == pytest.approx((12 - 4) / 40)
    d = np.array(a) - np.array(b)
    se = d.std() / math.sqrt(len(d))  # the plug-in standard error the bootstrap estimates
    assert res["low"] == pytest.approx(0.2 - 1.96 * se, abs=0.02) and res["high"] == pytest.approx(0.2 + 1.96 * se,
                                                                                                     abs=0.02)
    with pytest.raises(ValueError, match="same, non-empty"):
        analysis.paired_bootstrap([1], [1, 0])


def test_mcnemar_exact_when_small_and_chi_square_when_large():
    from scipy.stats import chi2

    # 3 items only A gets right, 9 only B: exact two-sided binomial p = 2·P(X ≤ 3 | 12, ½) = 2·299/4096
    ca = [True] * 20 + [True] * 3 + [False] * 9 + [False] * 8
    cb = [True] * 20 + [False] * 3 + [True] * 9 + [False] * 8
    small = analysis.mcnemar_accuracy(ca, cb)
    assert small["exact"] and small["table"] == [[20, 3], [9, 8]]
    assert small["pvalue"] == pytest.approx(2 * 299 / 4096) and small["statistic"] == 3
    ca = [True] * 30 + [False] * 15 + [True] * 10
    cb = [False] * 30 + [True] * 15 + [True] * 10
    large = analysis.mcnemar_accuracy(ca, cb)
    assert not large["exact"] and large["statistic"] == pytest.approx((30 - 15 - 1) ** 2 / 45)
    assert large["pvalue"] == pytest.approx(chi2.sf((30 - 15 - 1) ** 2 / 45, 1))


def test_degenerate_data_gets_a_reason_not_a_crash():
    few = planted(0.0, 1.0, n=6)
    res = analysis.compare(few, "A", "B")
    assert not res["ok"] and "only 6 of the same items" in res["sentence"]
    # A always hallucinates, B never: perfect separation
    sep = [Record(m, 10 + i, m == "B", m == "A", prompt_id=str(i), tokens=10 + i) for i in range(30) for m in "AB"]
    res = analysis.compare(sep, "A", "B")
    assert res["raw"]["diff"] == 1.0 and "adjusted" not in res
    assert "perfect separation" in res["sentence"] and res["sentence"].startswith("B hallucinates 100 points less")
    # every answer the same length: no length term, said so; one kind: no kind term, said so
    flat = [Record(m, 5, True, (i % 3 == 0) if m == "A" else (i % 5 == 0), prompt_id=str(i), tokens=5)
            for i in range(40) for m in "AB"]
    res = analysis.compare(flat, "A", "B")
    assert res["ok"] and "unadjusted" in res and "adjusted" not in res
    assert "same length" in res["sentence"] and "one question kind only" in res["sentence"]
    assert res["model"]["cov"].startswith("cluster-robust")
    none = [Record(m, 5 + i, True, False, prompt_id=str(i), tokens=5 + i) for i in range(15) for m in "AB"]
    res = analysis.compare(none, "A", "B")
    assert res["sentence"] == "Neither A nor B hallucinated on the 15 shared items: nothing to explain."
    assert "model-based" in analysis.length_model(planted(0, 1, n=15), ["A", "B"])["cov"]  # 15 items: too few
    with pytest.raises(ValueError, match="two different"):
        analysis.compare(none, "A", "A")


def test_records_from_generation_rows_use_the_verdict_and_fall_back_to_old_booleans():
    from storage.models import Generation

    new = Generation(model="m", task="qa", prompt_id="7", prompt="q", reference="r", output="I don't know", tokens=5,
                     words=3, answered=False, correct=False, hallucination=True, verdict="abstained",
                     item_kind="unanswerable")
    r = analysis.from_generation(new)  # the verdict wins over the old boolean: an abstention is no hallucination
    assert (r.hallucination, r.correct, r.answered, r.kind, r.prompt_id) == (False, False, False, "unanswerable", "7")
    old = SimpleNamespace(model="m", words=3, tokens=5, prompt_id="x", correct=False, hallucination=True,
                          answered=True)
    r = analysis.from_generation(old)
    assert (r.hallucination, r.correct, r.verdict, r.kind) == (True, False, "", "")


def test_length_curves_follow_the_planted_slope():
    recs = planted(0.0, 1.5)
    curves = analysis.length_curves(recs, ["A", "B"], n_bins=4)
    fitted_a = [p["rate"] for p in curves["fitted"] if p["model"] == "A"]
    assert len(fitted_a) == 40 and all(x < y for x, y in zip(fitted_a, fitted_a[1:]))  # longer → more
    fitted_b = [p["rate"] for p in curves["fitted"] if p["model"] == "B"]
    assert max(abs(x - y) for x, y in zip(fitted_a, fitted_b)) < 0.1  # same curve: no model effect
    obs = [p for p in curves["observed"] if p["model"] == "A"]
    assert sum(p["n"] for p in obs) == 400 and obs[0]["rate"] < obs[-1]["rate"]
    from pages.figures import hallucination_length_figure

    fig = hallucination_length_figure(curves)
    assert [t.name for t in fig.data] == ["A (model)", "A (observed)", "B (model)", "B (observed)"]
    assert list(fig.data[1].y) == [p["rate"] for p in obs]
