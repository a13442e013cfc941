"""The Compare page at 150 models (review s13, its scale walk's F1 and F2): the answer-length boxes are drawn
from their statistics, not 66,000 raw lengths, and must be plotly's own; the cut-off shares are taken in one pass;
the scores are read once per scores version and only the newest run of each (model, task), and must be the ones the
page showed before; a new evaluation still shows at once; the Evaluate form no longer preselects every model; the
CLI's compare reads only the two models' answers. Values, not shapes, are compared throughout."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event
from sqlmodel import select

from backend import analysis, registry, scoretable
from storage import db
from storage.models import EvalScore, Generation
from tests.test_pages import app


def add_scores(*rows: tuple) -> None:
    """EvalScore rows (model, task, metric, value, n, run, job_id)."""
    with db.session() as s:
        for model, task, metric, v, n, run, job in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=v, n=n, run=run, job_id=job))
        s.commit()


def old_latest_scores() -> dict:
    """HEAD's scoretable.latest_scores: every row loaded, newest_run in Python (the reference)."""
    with db.session() as s:
        rows = s.exec(select(EvalScore).order_by(EvalScore.id)).all()
    return {(r.model, r.task, r.metric): r for r in scoretable.newest_run(rows, lambda r: (r.model, r.task))}


def superseded_workspace() -> None:
    """Runs replaced by reruns, run-less rows (from before runs were recorded) keyed by their job, rows with
    neither run nor job, and a rerun that dropped a metric: what newest_run decides."""
    add_scores(("a", "qa", "accuracy", 0.10, 20, "", 1), ("a", "qa", "precision", 0.5, 20, "", 1),
               ("a", "qa", "accuracy", 0.20, 20, "r1", 2), ("a", "qa", "consistency", 0.9, 20, "r1", 2),
               ("b", "qa", "accuracy", 0.30, 20, "", 3), ("b", "qa", "precision", 0.6, 20, "", 3),
               ("b", "qa", "accuracy", 0.35, 20, "", 4),  # a later run-less job replaces job 3 whole
               ("c", "perplexity", "perplexity", 40.0, 10, "x", None),
               ("c", "perplexity", "perplexity", 39.0, 10, "", None),  # run-less, no job: "job None"
               ("d", "perplexity", "perplexity", 12.0, 10, "", None), ("d", "qa", "accuracy", 0.4, 20, "", None),
               ("a", "qa", "accuracy", 0.25, 20, "r2", 5),  # a's newest run: accuracy only
               ("b", "perplexity", "perplexity", 30.0, 10, "r3", 6),
               ("b", "perplexity", "perplexity", 31.0, 10, "r3", 6),
               ("a", "perplexity", "perplexity", 20.0, 10, "r4", 7),
               ("a", "perplexity", "perplexity", 21.0, 10, "r5", 7))


def ids(latest: dict) -> dict:
    return {k: r.id for k, r in latest.items()}


# ---- the answer-length boxes: plotly's statistics, and its outliers ----------------------------------------------

def test_box_statistics_are_plotlys_linear_quartiles_fences_mean_and_outliers():
    from pages.figures import box_stats

    w = [2, 3, 3, 4, 5, 5, 6, 7, 8, 9, 30, 41, 0]
    st = box_stats(w)
    v = np.sort(np.array(w, dtype=float))
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75], method="hazen")  # plotly.js Lib.interp: index p·n − 0.5
    assert (st["q1"], st["median"], st["q3"]) == (q1, med, q3) == (3.0, 5.0, 8.25)
    iqr = q3 - q1
    assert st["lowerfence"] == v[v >= q1 - 1.5 * iqr].min() == 0.0  # the last value inside 1.5 IQR
    assert st["upperfence"] == v[v <= q3 + 1.5 * iqr].max() == 9.0
    assert st["mean"] == pytest.approx(v.mean())
    assert st["outliers"] == [30.0, 41.0]
    # a value exactly on the fence is inside (plotly's findBin tolerance); no value between fence and quartile: the
    # whisker ends at the quartile
    assert box_stats([0, 4, 4, 4, 8, 8, 8, 14, 20])["upperfence"] == 14.0  # q3 8, IQR 4: fence 14
    assert box_stats([1, 10, 10, 10])["lowerfence"] == 1.0
    assert box_stats([7])["q1"] == box_stats([7])["upperfence"] == 7.0


def test_the_box_figure_carries_the_statistics_and_only_the_outliers():
    from pages.figures import box_stats, length_box_figure

    random.seed(3)
    words = {f"model-{i}": [random.randint(1, 40) for _ in range(60)] + [200] * (i % 2) for i in range(6)}
    fig = length_box_figure(words, models=list(words))
    assert [t.name for t in fig.data] == list(words)
    for t in fig.data:
        st = box_stats(words[t.name])
        val = "y" if t.orientation == "v" else "x"
        assert (t.q1[0], t.median[0], t.q3[0], t.lowerfence[0], t.upperfence[0], t.mean[0]) == (
            st["q1"], st["median"], st["q3"], st["lowerfence"], st["upperfence"], st["mean"])
        assert t.boxpoints == "outliers"  # precomputed statistics default to "all" points in plotly.js
        sample = getattr(t, val)
        assert (list(sample[0]) if sample is not None else []) == st["outliers"]
        assert (200.0 in st["outliers"]) == (int(t.name[-1]) % 2 == 1)
    samples = [t["y" if t.orientation == "v" else "x"] for t in fig.data]
    assert sum(len(v[0]) for v in samples if v is not None) == 3  # the 3 outliers, not 363 lengths


# ---- cut-off shares in one pass ----------------------------------------------------------------------------------

def test_cut_shares_equal_the_per_model_definition():
    random.seed(5)
    verdicts = ["correct", "wrong", "abstained", analysis.CUT_OFF]
    recs = [analysis.Record(model=f"m{random.randint(0, 7)}", words=random.randint(1, 90), correct=False,
                            hallucination=False, prompt_id=str(i), verdict=random.choice(verdicts))
            for i in range(3000)]
    models = sorted({r.model for r in recs})
    count = {m: sum(r.model == m for r in recs) for m in models}
    old = {m: sum(r.verdict == analysis.CUT_OFF for r in recs if r.model == m) / count[m] for m in models}  # HEAD
    new = analysis.cut_shares(recs)
    assert list(new) == models and new == old and any(new.values())


# ---- scores: the newest runs only, as before ---------------------------------------------------------------------

def test_latest_scores_reads_only_the_newest_runs_and_gives_the_old_result():
    superseded_workspace()
    reference = ids(old_latest_scores())
    loaded = []

    def count(target, ctx):
        loaded.append(target.id)

    event.listen(EvalScore, "load", count)
    try:
        new = ids(scoretable.latest_scores())
    finally:
        event.remove(EvalScore, "load", count)
    assert new == reference
    assert reference[("a", "qa", "accuracy")] == 12 and ("a", "qa", "consistency") not in reference  # r2 whole
    assert reference[("b", "qa", "accuracy")] == 7 and ("b", "qa", "precision") not in reference  # job 4 whole
    assert reference[("c", "perplexity", "perplexity")] == 9 and reference[("a", "perplexity", "perplexity")] == 16
    assert sorted(loaded) == sorted([*reference.values(), 13])  # b's r3 has two rows of one metric: both read
    assert ids(scoretable.latest_scores(models=["b", "d"])) == {k: v for k, v in reference.items() if k[0] in "bd"}


@pytest.fixture
def two(tiny_llama):
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(tiny_llama, "b")


def shown_scores(at) -> pd.DataFrame:
    frame = next(d.value for d in at.dataframe if "qa (accuracy)" in d.value.columns)
    return frame.set_index("model")


def test_the_page_shows_the_old_scores_and_follows_a_new_evaluation_and_a_deletion(two):
    superseded_workspace()
    at = app("compare.py")
    expected = pd.DataFrame(scoretable.table_rows(old_latest_scores(), {r.name: r for r in registry.list_models()}))
    table = shown_scores(at)
    pd.testing.assert_frame_equal(table, expected.set_index("model"), check_dtype=False)  # every column and cell
    assert table.loc["a", "qa (accuracy)"] == 0.25 and table.loc["b", "qa (accuracy)"] == 0.35
    add_scores(("b", "qa", "accuracy", 0.55, 20, "r9", 9))  # a rerun of b, in this process, after the page ran
    at.run()
    assert not at.exception
    assert shown_scores(at).loc["b", "qa (accuracy)"] == 0.55
    with db.session() as s:  # the newest row deleted and another added: SQLite gives it the same id, and the
        r9 = s.exec(select(EvalScore).where(EvalScore.run == "r9")).one()  # row count is the same again
        s.delete(r9)
        s.commit()
        s.add(EvalScore(model="zz-other", task="qa", metric="accuracy", value=0.125, n=8, run="r10"))
        s.commit()
        reused = s.exec(select(EvalScore).where(EvalScore.run == "r10")).one().id == r9.id
    at.run()
    table = shown_scores(at)
    assert table.loc["b", "qa (accuracy)"] == 0.35 and table.loc["zz-other", "qa (accuracy)"] == 0.125, reused


# ---- F2: the Evaluate form ---------------------------------------------------------------------------------------

def test_evaluate_preselects_only_the_models_without_scores(two, tiny_llama):
    registry.import_folder(tiny_llama, "c")
    at = app("compare.py")
    ms = at.multiselect(key="eval_models")
    assert ms.value == ["b", "c"]  # nothing scored yet: the two newest (s19: all of them took the built-in along)
    add_scores(("a", "qa", "accuracy", 0.2, 20, "r1", 1))
    at = app("compare.py")
    ms = at.multiselect(key="eval_models")
    assert ms.value == ["b", "c"] and "no scores yet" in ms.help
    assert at.toggle(key="eval_fan_out").value
    add_scores(("b", "perplexity", "perplexity", 20.0, 10, "r2", 2), ("c", "qa", "accuracy", 0.1, 20, "r3", 3))
    at = app("compare.py")
    assert at.multiselect(key="eval_models").value == []  # every model has some: none, not 150 jobs
    assert not at.error and any(i.value.startswith("Choose the models to evaluate: every registered model has "
                                                   "scores already") for i in at.info)  # said, not a spec error
    at.multiselect(key="eval_models").set_value(["c"]).run()
    assert at.toggle(key="eval_fan_out").disabled and not at.error


# ---- the CLI's compare reads two models' answers -----------------------------------------------------------------

def add_answers(model: str, run: str, job: int, verdicts: list[str]) -> None:
    with db.session() as s:
        for i, v in enumerate(verdicts):
            f = {"correct": (True, False), "wrong": (False, True)}.get(v, (False, False))
            s.add(Generation(model=model, task="synth-math", prompt_id=str(i), prompt="q", reference="r",
                             output="o " * (i + 1), tokens=i + 1, words=i + 1, answered=v != analysis.CUT_OFF,
                             correct=f[0], hallucination=f[1], verdict=v, run=run, job_id=job))
        s.commit()


def test_pair_records_filters_in_sql_and_names_the_models_with_answers():
    add_answers("a", "r0", 1, ["wrong"] * 12)
    add_answers("a", "r1", 2, ["correct", "wrong", analysis.CUT_OFF] * 4)  # a's newest run
    add_answers("b", "r2", 3, ["wrong", "correct"] * 6)
    add_answers("c", "r3", 4, ["correct"] * 12)
    everything = analysis.task_records("synth-math")
    pair = analysis.pair_records("synth-math", "a", "b")
    assert pair == [r for r in everything if r.model in ("a", "b")] and len(pair) == 24
    assert analysis.cut_shares(pair) == {"a": 4 / 12, "b": 0.0}
    with pytest.raises(ValueError) as err:
        analysis.pair_records("synth-math", "a", "zz")
    assert str(err.value) == ("no answers of zz on synth-math (answers of: a, b, c); evaluate with --tasks "
                              "synth-math first.")
