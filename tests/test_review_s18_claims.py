"""Review of "fewer hallucinations, or just shorter answers?" (backend/analysis.py) and the QA scoring behind it
(backend/qa.py). Each test fails on the code before its fix."""

from __future__ import annotations

import pytest

from backend import analysis, qa
from backend.analysis import Record


def rec(model: str, i: int, verdict: str, tokens: int) -> Record:
    return Record(model, tokens, verdict == "correct", verdict == "wrong", prompt_id=str(i), tokens=tokens,
                  verdict=verdict, answered=verdict not in ("abstained", "cut off"))


# ---- the model-free length check compares the same items, resampled as pairs -------------------------------------

def test_length_check_is_over_the_shared_items_as_compare_is():
    """A scored on 60 items, B on the first 30 (a smaller item limit); on those 30 they are wrong on the same items.
    The sentence said "no difference to explain"; the length check beside it read a gap of +0.33 [0.11, 0.54] from
    A's 30 extra, harder items."""
    recs = [rec("A", i, "wrong" if i % 3 == 0 or i >= 30 else "correct", 10 + i % 7) for i in range(60)]
    recs += [rec("B", i, "wrong" if i % 3 == 0 else "correct", 10 + i % 7) for i in range(30)]
    assert analysis.compare(recs, "A", "B")["sentence"].endswith("no difference to explain.")
    strat = analysis.length_controlled(recs, "A", "B", n_bins=2, boots=200)
    assert (strat["n_a"], strat["n_b"]) == (30, 30)
    assert strat["raw_diff"] == 0.0 and strat["length_controlled_diff"] == 0.0
    assert strat["raw_ci"] == strat["length_controlled_ci"] == (0.0, 0.0)


def test_length_check_interval_is_paired_as_the_raw_gap_is():
    """200 items both models find hard alike; A errs on 17 more. Two independent resamples of the same items gave
    the length-held gap [−0.006, 0.18] (it took in 0) where the paired bootstrap says 0.05 to 0.125."""
    recs = []
    for i in range(200):
        hard = i % 5 < 2
        recs += [rec("A", i, "wrong" if hard or i % 12 == 1 else "correct", 5 + i % 50),
                 rec("B", i, "wrong" if hard else "correct", 6 + i % 50)]
    strat = analysis.length_controlled(recs, "A", "B", n_bins=3, boots=1000)
    items = analysis.shared_items(recs, ["A", "B"])
    keys = sorted(items)
    paired = analysis.paired_bootstrap([items[k]["A"].hallucination for k in keys],
                                       [items[k]["B"].hallucination for k in keys], boots=1000)
    assert strat["raw_ci"] == pytest.approx((paired["low"], paired["high"]))  # the same resamples, the same tail
    lo, hi = strat["length_controlled_ci"]
    assert 0 < lo < strat["length_controlled_diff"] < hi < 0.15


def test_length_check_without_shared_items_says_so():
    recs = [rec("A", i, "wrong", 5) for i in range(10)] + [rec("B", 100 + i, "correct", 5) for i in range(10)]
    with pytest.raises(ValueError, match="A and B answered no item in common"):
        analysis.length_controlled(recs, "A", "B")


# ---- the sentence ------------------------------------------------------------------------------------------------

def tied_lengths(a_short_wrong: int, a_long_wrong: int, b_wrong: int) -> list[Record]:
    """80 items. A answers 2 tokens on the odd items and 18 on the even ones, wrong on `a_short_wrong` of its short
    answers and `a_long_wrong` of its long ones; B answers 10 tokens, wrong on `b_wrong`. Both average 10 tokens."""
    out = []
    for i in range(80):
        short, j = i % 2 == 1, i // 2
        out.append(rec("A", i, "wrong" if j < (a_short_wrong if short else a_long_wrong) else "correct",
                       2 if short else 18))
        out.append(rec("B", i, "wrong" if (i * 7) % 80 < b_wrong else "correct", 10))
    return out


def test_equal_mean_lengths_are_not_called_shorter_answers():
    res = analysis.compare(tied_lengths(1, 33, 56), "A", "B")
    assert (res["mean_tokens_a"], res["mean_tokens_b"]) == (10.0, 10.0)
    assert res["sentence"].startswith("A hallucinates 28 points less than B")
    # was ": shorter answers explain most of it (10 vs 10 tokens on average)"
    assert res["sentence"].endswith(": answer length explains most of it (10 vs 10 tokens on average).")


def test_quasi_separation_gets_no_zero_width_gap():
    """Every short answer of A is correct: the fit with length never converges (no coefficient past the 15 that
    caught perfect separation), and the delta-method interval of its effect collapsed to a point: "the gap is 51
    points (51 to 51): not just shorter answers" (on other counts it ran past 100 points: "−95 to 168")."""
    res = analysis.compare(tied_lengths(0, 20, 62), "A", "B")
    assert res["ok"] and "adjusted" not in res and res["unadjusted"]["low"] < res["unadjusted"]["high"]
    assert "held fixed" not in res["sentence"]
    assert "the length effect could not be estimated: (with length) quasi-complete separation: the fit did not " \
           "converge" in res["sentence"]
    lm = res["model"]
    assert not lm["ok"] and [r["fit"] for r in lm["table"]] == ["without length"] * 2


# ---- the answer-length bins --------------------------------------------------------------------------------------

def test_one_length_for_every_answer_is_one_bin_labelled_with_that_length():
    recs = [rec(m, i, "correct", 5) for i in range(10) for m in "AB"]
    assert analysis.word_bins(analysis.bin_edges(recs)) == ["5 words"]  # was "5–6 words": no answer has 6
    assert [(r["model"], r["range"], r["n"]) for r in analysis.by_length_bin(recs)] == [
        ("A", "5 words", 10), ("B", "5 words", 10)]
    assert analysis.length_controlled(recs, "A", "B")["bins"] == 1


# ---- QA scoring --------------------------------------------------------------------------------------------------

def test_a_math_reply_the_token_limit_stopped_before_any_number_is_cut_off():
    """It was "abstained": kept in the hallucination comparison as a non-hallucination at the cap's length, the bias
    "cut off" exists to remove (walk11's 7 "abstained" of 20 were such replies)."""
    working = "Let me think about this step by step. First we need to find how many apples"
    assert qa.classify(working, ["4"], "math", truncated=True) == "cut off"
    assert qa.flags("cut off") == {"correct": False, "hallucination": False, "answered": False}
    assert qa.classify(working, ["4"], "math") == "abstained"  # a finished reply without a number declined
    assert qa.classify("I am not sure how to", ["4"], "math", truncated=True) == "abstained"  # it said so
    assert qa.classify("First 2 + 2 = 4, then", ["5"], "math", truncated=True) == "cut off"  # as before


def test_precision_is_not_zero_when_nothing_was_answered():
    """A model that abstained on every item had precision 0.0 ("every answer it gave was wrong")."""
    assert "precision" not in qa.summarise(["abstained"] * 3 + ["cut off"])
    s = qa.scores_by_kind(["correct", "wrong", "abstained", "abstained"], ["answerable", "answerable", "math", "math"])
    assert s["precision"] == 0.5 and s["precision[answerable]"] == 0.5 and "precision[math]" not in s
    assert s["accuracy[math]"] == 0.0 and s["abstention_rate[math]"] == 1.0
    with pytest.raises(qa.QAError, match="no verdicts"):
        qa.summarise([])


# ---- a question kind with one outcome ----------------------------------------------------------------------------

def qa_probe() -> list[Record]:
    """40 items, every fourth unanswerable: there A and B abstain or answer (wrong), and nothing can be correct. On
    the 30 answerable ones A is wrong on every third, B on every seventh; A answers short, B long."""
    out = []
    for i in range(40):
        unanswerable = i % 4 == 0
        for m, tokens in (("A", 5 + i % 5), ("B", 20 + i % 5)):
            if unanswerable:
                v = "abstained" if (i % 8 == 0) == (m == "A") else "wrong"
            else:
                v = "wrong" if i % (3 if m == "A" else 7) == 0 else "correct"
            out.append(Record(m, tokens, v == "correct", v == "wrong", prompt_id=str(i), tokens=tokens, verdict=v,
                              kind="unanswerable" if unanswerable else "answerable"))
    return out


def test_a_kind_no_answer_can_be_correct_in_is_left_out_of_the_fit_not_the_whole_model():
    """Outcome "correct" on the QA probe: no answer to an unanswerable question is correct, and every fit failed,
    "perfect separation: none of the 20 answers to unanswerable items (from every model) is correct"."""
    res = analysis.compare(qa_probe(), "A", "B", outcome="correct")
    assert res["raw"]["diff"] == pytest.approx(0.15)
    assert res["model"]["ok"], res["model"]["message"]
    # the effect over every item: on the answerable ones the fit without length is exact (model alone), and it is
    # 0 on the unanswerable, so it equals the raw gap over all 40
    assert res["unadjusted"]["diff"] == pytest.approx(0.15) and "adjusted" in res
    assert res["model"]["notes"] == ["unanswerable items left out of the fit: no answer to them is correct, whatever "
                                     "the model or length (they count in the effects with a gap of 0)",
                                     "one question kind left, so no kind term"]
    assert {r["term"] for r in res["model"]["table"]} == {"intercept", "model[B]", "log tokens"}
    assert "held fixed" in res["sentence"] and "separation" not in res["sentence"]
    # the fitted curves are over every answer too: the unanswerable ones add their one outcome back
    curves = analysis.length_curves(qa_probe(), ["A", "B"], outcome="correct")
    fit = [p["rate"] for p in curves["fitted"]]
    assert curves["fitted"] and min(fit) > 0.25  # not-correct: at least the unanswerable quarter
    # the hallucination outcome varies on both kinds: unchanged, no kind left out
    assert analysis.length_model(qa_probe(), ["A", "B"])["notes"] == []


# ---- the training-overlap badge ----------------------------------------------------------------------------------

def test_the_overlap_badge_never_reads_0_or_100_percent_for_some_of_the_items():
    from backend import scoretable
    from storage.models import EvalScore

    def badge(over: int, n: int, unchecked: dict | None = None) -> str:
        ov = {"items_over": over, "share_over": over / n, "against": ["builtin:alpaca-mini", "gone"][:1 + bool(
            unchecked)], "unchecked": unchecked or {}}
        return scoretable.badge(EvalScore(model="m", task="t", metric="accuracy", value=0.5, n=n,
                                          details={"overlap": ov}))
    assert badge(1, 300) == "⚠ 0.3%"  # was "⚠ 0%", beside a clean set's "✓ 0%"
    assert badge(1, 1319) == "⚠ 0.08%"
    assert badge(299, 300) == "⚠ 99.6%"  # was "⚠ 100%", with a clean score over the one item left
    assert badge(1, 300, {"gone": "deleted"}) == "⚠ 0.3% + unknown (1 of 2 training sets unreadable: gone)"
    assert (badge(16, 20), badge(0, 20), badge(20, 20)) == ("⚠ 80%", "✓ 0%", "⚠ 100%")  # as before


def test_every_kind_of_one_outcome_is_said_not_a_crash():
    """QA probe, outcome "correct": both models right on every answerable item and on no unanswerable one. Every
    kind was left out of the fit, and the empty rest crashed (y.min() of nothing) the comparison and its page."""
    from backend import analysis

    recs = []
    for i in range(30):
        kind = "answerable" if i % 2 else "unanswerable"
        for m, t in (("A", 10 + i), ("B", 30 + i)):
            v = "correct" if kind == "answerable" else "abstained"
            recs.append(analysis.Record(m, t, v == "correct", False, prompt_id=str(i), tokens=t, kind=kind,
                                        verdict=v))
    lm = analysis.length_model(recs, ["A", "B"], outcome="correct")
    assert lm["message"] == ("every question kind's answers have one outcome (answerable: all correct; "
                             "unanswerable: none correct): nothing to model.")
    assert "no difference to explain" in analysis.compare(recs, "A", "B", outcome="correct")["sentence"]


def test_the_fit_needs_min_items_after_the_one_outcome_kinds_are_left_out():
    """12 items, 9 unanswerable (never correct): the fit ran on the 3 answerable ones, past MIN_ITEMS checked before
    they were left out, and stated an effect."""
    import random

    from backend import analysis

    recs = []
    rng = random.Random(0)
    for i in range(12):
        kind = "unanswerable" if i < 9 else "answerable"
        for m in ("A", "B"):
            t, c = rng.randint(5, 80), kind == "answerable" and (i + (m == "B")) % 2 == 0
            recs.append(analysis.Record(m, t, c, not c, prompt_id=str(i), tokens=t, kind=kind,
                                        verdict="correct" if c else "wrong"))
    lm = analysis.length_model(recs, ["A", "B"], "correct")
    assert not lm["ok"] and lm["message"].startswith("only 3 items are of question kinds whose answers differ")
