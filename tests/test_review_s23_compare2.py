"""The Compare page after walk 23d: the cut-off warning of "Answer length and hallucination" was ~20 lines (one
paragraph per remedy, each naming its models, then again under the verdict); a plot of bare axes when no item was
answered by both models; "Bars and radar:" under bars with no radar; "perplexity (perplexity)" headers and weights
read "equal" under one merge and "[0.5, 0.5]" under another."""

from __future__ import annotations

from backend import answerstats
from storage import db
from storage.models import EvalScore, ModelRecord
from tests.test_pages import app
from tests.test_review_s21_compare import add_run


def frame(at, *columns: str):
    """The page's table whose columns start with `columns` (AppTest keeps no dataframe's key)."""
    return next(d.value for d in at.dataframe if tuple(d.value.columns[:len(columns)]) == columns)


def lineage(path: str) -> None:
    """up (up-scaled) -> cpt -> sft, registered; each cut off on every reply of qa at 48 tokens, talk not."""
    with db.session() as s:
        for name, kind, parents, job in (("up", "upscaled", [], "upscale"), ("cpt", "trained", ["up"], "cpt"),
                                         ("sft", "trained", ["cpt"], "sft"), ("talk", "base", [], None)):
            s.add(ModelRecord(name=name, path=path, kind=kind, num_layers=4, parents=parents,
                              recipe={"kind": job} if job else {}))
        s.commit()
    for m in ("up", "cpt", "sft"):
        add_run(m, f"r-{m}", 48)
    add_run("talk", "r-talk", 12, cut=False)


def test_the_cut_off_warning_is_one_sentence_and_a_table_said_once(tiny_llama):
    lineage(str(tiny_llama))
    at = app("compare.py")
    (warned,) = [w.value for w in at.warning if w.value.startswith("Cut off by the token limit")]
    # was one paragraph per remedy (3 here), each "Evaluate again with a higher Max new tokens. Cut off throughout…"
    assert warned.endswith("3 models cut off on every reply, at 48 tokens: evaluate them again with a higher Max new "
                           "tokens (eval --max-new-tokens), and if one is cut off there too it does not end its replies and needs training "
                           "(what each needs: the table below).")
    assert "Cut off throughout" not in warned and warned.count("Max new tokens") == 1
    table = frame(at, "model", "cut off")
    assert list(table.columns) == ["model", "cut off", "at cap (tokens)", "what to do"]
    rows = {r["model"]: r for r in table.to_dict("records")}
    assert set(rows) == {"up", "cpt", "sft"} and {r["cut off"] for r in rows.values()} == {"100%"}
    assert rows["cpt"]["what to do"] == (
        "Evaluate again with a higher Max new tokens (eval --max-new-tokens); if every reply is cut off there too, it does not end its "
        "replies (continued pretraining alone does not teach a model to end a turn): SFT it, then evaluate it again.")
    assert "its SFT training did not teach it to stop" in rows["sft"]["what to do"]
    assert rows["up"]["what to do"].endswith("continue pretraining, then SFT, and evaluate it again.")
    # the verdict (none: every item cut off) refers to the table, not the advice again
    at.selectbox(key="lc_a").set_value("up").run()
    at.selectbox(key="lc_b").set_value("sft").run()
    assert any(m.value.startswith("**No verdict") for m in at.markdown)
    captions = [c.value for c in at.caption]
    assert "sft and up: cut off on every reply; what to do is in the table under the cut-off warning above." in captions
    assert not any("Evaluate again with a higher" in c or c.startswith("Cut off on every reply") for c in captions)


def test_the_summary_for_caps_tried_twice_and_mixed():
    assert answerstats.cut_off_summary({}) == ""
    assert answerstats.cut_off_summary({"up": [48, 96]}) == (
        "1 model cut off on every reply, at 48 and 96 tokens: cut off at each cap tried, it does not end its replies, "
        "so a higher Max new tokens (eval --max-new-tokens) will not help: it needs training (what each needs: the table below).")
    assert answerstats.cut_off_summary({"up": [48, 96], "a": [32], "b": [48]}) == (
        "3 models cut off on every reply, at 32, 48 and 96 tokens: 1 at each cap tried, which a higher Max new tokens (eval --max-new-tokens) "
        "will not help (they need training); evaluate the other 2 again with a higher Max new tokens (what each "
        "needs: the table below).")
    (row,) = answerstats.cut_off_rows({"up": [48, 96]}, {"up": []}, shares={"up": 1.0})
    assert row == {"model": "up", "cut off": "100%", "at cap (tokens)": "48, 96", "what to do": (
        "Continue pretraining, then SFT, and evaluate it again: it does not end its replies (it never emits its end "
        "token, as an untrained, random or freshly up-scaled model does); a higher Max new tokens (eval --max-new-tokens) will not help.")}


def test_no_plot_of_bare_axes_when_no_item_was_answered_by_both(tiny_llama):
    lineage(str(tiny_llama))
    at = app("compare.py")
    at.selectbox(key="lc_a").set_value("up").run()
    at.selectbox(key="lc_b").set_value("cpt").run()
    assert not any("hall_length" in c.proto.id for c in at.get("plotly_chart"))  # was drawn with no point
    assert ("No plot of hallucination rate against answer length: there is no item both models answered and neither "
            "left cut off (10 of 10 left out: up 10, cpt 10).") in [c.value for c in at.caption]
    at.selectbox(key="lc_a").set_value("talk").run()  # talk answered: still no item both answered
    at.selectbox(key="lc_b").set_value("talk").run()
    assert not at.exception, at.exception


def merges(path: str) -> None:
    """a, b (perplexity and qa accuracy) and two averages of them: one with no weights given, one given [0.5, 0.5]."""
    with db.session() as s:
        s.add(ModelRecord(name="a", path=path, kind="base", num_layers=4))
        s.add(ModelRecord(name="b", path=path, kind="base", num_layers=4))
        s.add(ModelRecord(name="m-default", path=path, kind="merged", num_layers=4, parents=["a", "b"],
                          recipe={"method": "average", "weights": None}))
        s.add(ModelRecord(name="m-given", path=path, kind="merged", num_layers=4, parents=["a", "b"],
                          recipe={"method": "average", "weights": [0.5, 0.5]}))
        for i, m in enumerate(("a", "b", "m-default", "m-given")):
            s.add(EvalScore(model=m, task="perplexity", metric="perplexity", value=20.0 + i, stderr=0.5, n=10,
                            run="r1"))
            s.add(EvalScore(model=m, task="qa", metric="accuracy", value=0.5, stderr=0.1, n=10, run="r1"))
        s.commit()


def test_bars_without_radar_and_the_merge_tables_headers_and_weights(tiny_llama):
    merges(str(tiny_llama))
    at = app("compare.py")
    assert not any(c.proto.id.endswith("radar") for c in at.get("plotly_chart"))  # one accuracy task: no radar
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Bars: the table's scores.") for c in captions)
    assert not any("radar" in c for c in captions)
    heads = [e.label for e in at.expander if e.label.startswith("**m-")]  # each merge's view: an expander
    assert heads == ["**m-default** — average weights=[0.5, 0.5]", "**m-given** — average weights=[0.5, 0.5]"]
    cols = [list(d.value.columns) for d in at.dataframe if list(d.value["model"]) == ["a", "b", "m-default"]]
    (cols,) = cols
    assert cols[:5] == ["model", "average (accuracy tasks)", "perplexity", "qa (accuracy)", "qa (accuracy) ±"]
    assert not any("(perplexity)" in c for c in cols)


def test_the_weight_forms():  # the header form: scoretable.score_column (tests/test_review_s24_compare.py)
    from pages.compare_pick import merge_weights

    assert merge_weights({"method": "average"}, 2) == " weights=[0.5, 0.5]"
    assert merge_weights({"method": "average", "weights": [2, 6]}, 2) == " weights=[0.25, 0.75]"
    assert merge_weights({"method": "task_arithmetic"}, 2) == " weights=[1.0, 1.0]"
