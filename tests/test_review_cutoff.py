"""A reply cut off by the token limit is no answer, so not "no hallucination" (backend/analysis.py, the "Answer length
and hallucination" section of pages/compare.py). A researcher's walk evaluated synth-math at 48 new tokens and read
"walk-dus14 hallucinates 45 points less than SmolLM2 (95 % CI 25 to 65)" for a model that never finished an answer:
its cut-off replies counted as non-hallucinations, all at the cap's length. Each test fails without its fix."""

from __future__ import annotations

import json

import pytest

from backend import analysis, registry
from backend.analysis import Record
from tests.test_pages import app
from tests.test_review_pages_d import add_generations

CAP = 48  # max new tokens: a cut-off reply is this long


def rec(model: str, i: int, verdict: str, tokens: int) -> Record:
    return Record(model, tokens, verdict == "correct", verdict == "wrong", prompt_id=str(i), tokens=tokens,
                  verdict=verdict, answered=verdict not in ("abstained", "cut off"))


def base_model() -> list[Record]:
    """20 items: wrong on 9, correct on 5, abstained on 6 (hallucination rate 0.45), short answers."""
    return [rec("base", i, "wrong" if i < 9 else "correct" if i < 14 else "abstained", 10 + i) for i in range(20)]


def rambler(name: str, cut: int) -> list[Record]:
    """A model that never states an answer: cut off at the cap on the first `cut` items, abstains on the rest."""
    return [rec(name, i, "cut off" if i < cut else "abstained", CAP) for i in range(20)]


def five_cut_off() -> list[Record]:
    """20 items. A is wrong on the odd ones (10 of 20). B is cut off at the cap on items 0–4 and wrong on 8, 12, 16.
    On the 15 judged items (5–19): A wrong on 8, B on 3."""
    a = [rec("A", i, "wrong" if i % 2 else "correct", 10 + i) for i in range(20)]
    b = [rec("B", i, "cut off" if i < 5 else "wrong" if i % 4 == 0 else "correct", CAP if i < 5 else 8 + i)
         for i in range(20)]
    return a + b


# ---- a model that never answers gets no "hallucinates less" -------------------------------------------------

def test_a_model_all_cut_off_gets_no_verdict_and_the_message_names_the_cut_off_items():
    res = analysis.compare(base_model() + rambler("dus", 20), "base", "dus")
    assert not res["ok"] and "hallucinates" not in res["sentence"]
    assert res["sentence"] == ("No verdict: 20 of 20 items left out: dus's reply was cut off by the token limit, so "
                               "none remains and a comparison needs at least 10; evaluate again with a higher Max new "
                               "tokens (eval --max-new-tokens).")
    assert res["left_out"] == {"n_shared": 20, "n": 20, "by_model": {"base": 0, "dus": 20},
                               "message": "20 of 20 items left out: dus's reply was cut off by the token limit"}
    with pytest.raises(ValueError, match="a reply was cut off by the token limit; evaluate again"):
        analysis.length_controlled(base_model() + rambler("dus", 20), "base", "dus")


def test_the_walks_pair_13_cut_off_and_7_abstained_is_no_verdict_for_the_model_either():
    recs = base_model() + rambler("dus", 13)
    res = analysis.compare(recs, "base", "dus")
    assert not res["ok"] and res["n_items"] == 7
    assert res["sentence"].startswith("No verdict: 13 of 20 items left out: dus's reply was cut off by the token "
                                      "limit, so only 7 remain")
    lm = analysis.length_model(recs, ["base", "dus"])
    assert not lm["ok"] and lm["n_items"] == 7 and lm["message"] == (
        "only 7 items are left to judge (13 of 20 items left out: dus's reply was cut off by the token limit); the "
        "model needs at least 10: evaluate again with a higher Max new tokens (eval --max-new-tokens).")


# ---- 5 of 20 cut off: compared on 15, and said -------------------------------------------------------------

def test_five_cut_off_items_are_left_out_and_the_sentence_says_so():
    res = analysis.compare(five_cut_off(), "A", "B")
    assert res["ok"] and res["raw"]["n"] == 15 and res["n_items"] == 15
    assert (res["rate_a"], res["rate_b"]) == (pytest.approx(8 / 15), pytest.approx(3 / 15))
    assert res["raw"]["diff"] == pytest.approx(5 / 15)
    assert res["mean_tokens_b"] == pytest.approx(sum(8 + i for i in range(5, 20)) / 15)  # no cap-length reply
    assert res["model"]["n_items"] == 15
    assert "15 shared items" in res["sentence"]
    assert res["sentence"].endswith(" 5 of 20 items left out: B's reply was cut off by the token limit; evaluate "
                                    "again with a higher Max new tokens (eval --max-new-tokens) to judge them.")
    strat = analysis.length_controlled(five_cut_off(), "A", "B", n_bins=2, boots=50)
    assert (strat["n_a"], strat["n_b"], strat["cut_off"]) == (15, 15, 5)
    assert strat["raw_diff"] == pytest.approx(5 / 15)


def test_both_models_cut_off_on_different_items_are_counted_per_model():
    recs = five_cut_off() + [rec("C", i, "cut off" if i in (3, 4, 5) else "correct", 9 + i) for i in range(20)]
    left = analysis.compare(recs, "B", "C")["left_out"]
    assert left == {"n_shared": 20, "n": 6, "by_model": {"B": 5, "C": 3},
                    "message": "6 of 20 items left out: a reply was cut off by the token limit (B on 5, C on 3)"}


def test_length_curves_leave_out_the_cut_off_items():
    curves = analysis.length_curves(five_cut_off(), ["A", "B"], n_bins=3)
    assert curves["n_items"] == 15 and curves["left_out"]["n"] == 5
    for m in ("A", "B"):
        assert sum(p["n"] for p in curves["observed"] if p["model"] == m) == 15
    assert max(p["tokens"] for p in curves["observed"] if p["model"] == "B") < CAP  # no point at the cap
    assert curves["fitted"] and max(p["tokens"] for p in curves["fitted"]) == pytest.approx(10 + 19)  # A's longest


# ---- outcome "correct": a cut-off reply stays an error, and a large share is said ---------------------------

def test_outcome_correct_keeps_cut_off_replies_as_errors_and_says_their_share():
    res = analysis.compare(five_cut_off(), "A", "B", outcome="correct")
    assert res["raw"]["n"] == 20
    assert (res["rate_a"], res["rate_b"]) == (pytest.approx(10 / 20), pytest.approx((5 + 3) / 20))
    assert res["sentence"].endswith(" Cut off by the token limit, and so counted as not correct: A 0 %, B 25 % of "
                                    "the 20 items, so this may measure the token cap rather than the models: "
                                    "evaluate again with a higher Max new tokens (eval --max-new-tokens).")
    assert res["left_out"]["n"] == 0
    curves = analysis.length_curves(five_cut_off(), ["A", "B"], n_bins=3, outcome="correct")
    assert sum(p["n"] for p in curves["observed"] if p["model"] == "B") == 20
    strat = analysis.length_controlled(five_cut_off(), "A", "B", n_bins=2, boots=50, outcome="correct")
    assert (strat["n_b"], strat["cut_off"]) == (20, 0)


# ---- degenerate data reads as what it is ----------------------------------------------------------------------

def test_two_ramblers_get_no_nothing_to_explain_and_no_zero_width_interval():
    recs = rambler("dus", 13) + rambler("cpt", 15)
    hall = analysis.compare(recs, "dus", "cpt")["sentence"]
    assert hall.startswith("No verdict: 15 of 20 items left out") and "nothing to explain" not in hall
    corr = analysis.compare(recs, "dus", "cpt", outcome="correct")["sentence"]
    assert corr.startswith("Both dus and cpt erred on every one of the 20 shared items: nothing to explain.")
    assert "0 to 0" not in corr and "dus 65 %, cpt 75 %" in corr


def test_a_gap_that_is_the_same_on_every_item_has_no_interval():
    sep = [rec(m, i, "wrong" if m == "A" else "correct", 10 + i) for i in range(30) for m in "AB"]
    assert analysis.compare(sep, "A", "B")["sentence"].startswith(
        "B hallucinates 100 points less than A (the same on every item, so no interval, 30 shared items)")
    same = [rec(m, i, "wrong" if i < 4 else "correct", 10 + i + (m == "B")) for i in range(15) for m in "AB"]
    assert analysis.compare(same, "A", "B")["sentence"] == (
        "A and B hallucinated on exactly the same 4 of the 15 shared items: no difference to explain.")
    assert analysis._points(-0.001) == "0 points"  # not "−0 points"


# ---- the page: the count beside the plot, and no crash when nothing is left --------------------------------

@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_compare_page_shows_what_was_left_out_beside_the_sentence_and_plot(tiny):
    add_generations([(r.model, int(r.prompt_id), r.verdict, r.tokens, "math") for r in five_cut_off()],
                    task="synth-math")
    at = app("compare.py")
    at.selectbox(key="lc_b").set_value("B").run()
    assert not at.exception, at.exception
    (bold,) = [m.value for m in at.markdown if m.value.startswith("**")]
    assert "15 shared items" in bold and "5 of 20 items left out: B's reply was cut off" in bold
    assert "The plot: the 15 items both models answered and neither left cut off (5 of 20 left out: B 5)." in [
        c.value for c in at.caption]
    (warn,) = [w.value for w in at.warning if w.value.startswith("Cut off")]
    assert "B 25%" in warn and "the hallucination comparison below leaves out every item" in warn
    fig = json.loads(next(c for c in at.get("plotly_chart") if "hall_length" in c.proto.id).proto.spec)
    assert all(x < CAP for t in fig["data"] if "observed" in t["name"] for x in t["x"])


def test_compare_page_with_a_model_all_cut_off_says_no_verdict(tiny):
    rows = [(r.model, int(r.prompt_id), r.verdict, r.tokens, "math") for r in base_model() + rambler("dus", 20)]
    add_generations(rows, task="synth-math")
    at = app("compare.py")
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown if m.value.startswith("**No verdict")] == [
        "**No verdict: 20 of 20 items left out: dus's reply was cut off by the token limit, so none remains and a "
        "comparison needs at least 10; evaluate again with a higher Max new tokens (eval --max-new-tokens).**"]
