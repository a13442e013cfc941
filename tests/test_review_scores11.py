"""The models × tasks table and its bars say how many items stand behind a score and how noisy it is, and average
fairly (walk11 findings 1 and 3; backend/scoretable.py, pages/figures.py bar_figure, pages/compare.py): qa 0.25
against 0.15 was 5 against 3 of 20 items with no n and no interval, the average covered whatever tasks a model had,
a model whose replies were all cut off read "0 hallucination", and the caption promised a ✓ the table never
showed. Each test fails without its fix."""

from __future__ import annotations

import json
import math

import pytest

from backend import registry, scoretable
from pages.figures import bar_figure
from storage import db
from storage.models import EvalScore
from tests.test_pages import app


def add(*rows: tuple) -> None:
    """EvalScore rows (model, task, metric, value, n[, details])."""
    with db.session() as s:
        for model, task, metric, v, n, *details in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=v, n=n, details=(details or [{}])[0]))
        s.commit()


def rows() -> dict[str, dict]:
    return {r["model"]: r for r in scoretable.table_rows(scoretable.latest_scores(), {})}


def frame(at, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. a standard error per score, lm-eval's where it reported one ---------------------------------------------

def test_an_accuracy_over_n_items_gets_lm_evals_mean_stderr_and_perplexity_none():
    add(("base", "qa", "accuracy", 0.25, 20), ("base", "perplexity", "perplexity", 41.05, 20),
        ("cpt", "qa", "accuracy", 0.15, 20))
    table = rows()
    assert table["base"]["qa (accuracy) ±"] == round(math.sqrt(0.25 * 0.75 / 19), 4) == 0.0993
    assert table["cpt"]["qa (accuracy) ±"] == round(math.sqrt(0.15 * 0.85 / 19), 4)
    assert list(table["base"])[2:5] == ["perplexity", "qa (accuracy)", "qa (accuracy) ±"]  # each
    # error right after its score; none for perplexity (no per-item spread stored), so no column of blanks


def test_lm_evals_own_stderr_rows_are_used_as_stored_and_never_head_a_task():
    add(("m", "lm-eval:arc_easy", "acc_stderr", 0.0712, 50), ("m", "lm-eval:arc_easy", "acc", 0.42, 50),
        ("m", "lm-eval:h6", "arc_challenge/acc_norm_stderr", 0.05, 300),
        ("m", "lm-eval:h6", "arc_challenge/acc_norm", 0.3, 300), ("m", "lm-eval:h6", "h6_average", 0.4, 300))
    row = rows()["m"]
    assert row["lm-eval:arc_easy (acc)"] == 0.42 and row["lm-eval:arc_easy (acc) ±"] == 0.0712  # not √(p(1−p)/49)
    # the preset's own average heads it (s15: ARC's acc_norm, the first stored, stood for H6): no one error of its own
    assert row["lm-eval:h6 (h6_average)"] == 0.4 and row.get("lm-eval:h6 (h6_average) ±") is None
    assert not any("_stderr" in c for c in row)  # the stored stderr row ranked before the score and headed the task


def test_the_clean_variant_takes_its_error_over_the_clean_items():
    details = {"overlap": {"items_over": 8, "share_over": 0.4, "against": ["x"], "unchecked": {}},
               "clean": {"accuracy": 0.5, "n": 12}}
    add(("m", "qa", "accuracy", 0.6, 20, details))
    (row,) = scoretable.table_rows(scoretable.latest_scores(), {}, clean=True)
    assert row["qa (accuracy)"] == 0.5 and row["qa (accuracy) ±"] == round(math.sqrt(0.25 / 11), 4)


def test_downloads_keep_csv_numeric_and_print_value_plus_minus_stderr_in_markdown_and_latex(tiny):
    add(("tiny", "qa", "accuracy", 0.25, 20), ("tiny", "perplexity", "perplexity", 41.05, 20))
    at = app("compare.py")
    assert not at.exception, at.exception
    table = frame(at, "average (accuracy tasks)")
    assert table.loc[0, "qa (accuracy) ±"] == 0.0993 and table["qa (accuracy)"].dtype.kind == "f"
    caption = " ".join(c.value for c in at.caption)
    assert "n = 20 items per task." in caption and "± : standard error" in caption
    from backend.recipe import tables

    md = tables.to_markdown(scoretable.export_table(scoretable.table_rows(scoretable.latest_scores(), {})))
    assert "| 0.2500 ± 0.0993 |" in md and "| 41.05 |" in md and "±" not in md.splitlines()[2]  # no ± column
    tex = tables.to_latex(scoretable.export_table(scoretable.table_rows(scoretable.latest_scores(), {})))
    assert r"0.2500 $\pm$ 0.0993" in tex and "±" not in tex  # pdflatex without UTF-8 input stops at a bare ±


# ---- 2. the average only over the tasks every model has ---------------------------------------------------------

def test_the_average_covers_only_the_tasks_every_model_has():
    """walk11: base 0.125 (qa 0.25, synth-math 0) beside walk-dus14 0 (synth-math alone)."""
    add(("base", "qa", "accuracy", 0.25, 20), ("base", "synth-math", "accuracy", 0.0, 20),
        ("dus", "synth-math", "accuracy", 0.0, 20), ("dus", "perplexity", "perplexity", 42.0, 20))
    table = rows()
    assert table["base"]["average (accuracy tasks)"] == 0.0 and table["dus"]["average (accuracy tasks)"] == 0.0
    note = scoretable.average_note(scoretable.headline(scoretable.latest_scores()))
    assert note == ("average (accuracy tasks): each model's mean of its own scores on synth-math, the accuracy-like "
                    "task every model has; left out: qa (no score for dus).")
    add(("ppl-only", "perplexity", "perplexity", 40.0, 20))  # review s22: "every model" read as including it
    note = scoretable.average_note(scoretable.headline(scoretable.latest_scores()))
    assert note == ("average (accuracy tasks): each model's mean of its own scores on synth-math, the accuracy-like "
                    "task every model with an accuracy-like score has (blank for ppl-only: no accuracy-like score); "
                    "left out: qa (no score for dus).")


def test_no_shared_accuracy_task_leaves_the_average_blank_and_says_why():
    add(("a", "qa", "accuracy", 0.25, 20), ("b", "synth-math", "accuracy", 0.5, 20))
    # no row has an average: the column is left out (session 26), the note says why
    assert all("average (accuracy tasks)" not in r for r in rows().values())
    assert scoretable.average_note(scoretable.headline(scoretable.latest_scores())) == (
        "average (accuracy tasks): left out — no accuracy-like task has a score for every model: qa (no score for b); "
        "synth-math (no score for a).")


def test_the_clean_average_leaves_out_a_task_whose_clean_score_is_unknown():
    unknown = {"overlap": {"items_over": 0, "share_over": 0.0, "against": ["dataset:gone"],
                           "unchecked": {"dataset:gone": "deleted"}}, "clean": None}
    add(("a", "qa", "accuracy", 0.4, 20), ("a", "synth-math", "accuracy", 0.2, 20),
        ("b", "qa", "accuracy", 0.6, 20, unknown), ("b", "synth-math", "accuracy", 0.4, 20))
    assert {m: r["average (accuracy tasks)"] for m, r in rows().items()} == {"a": 0.3, "b": 0.5}
    clean = {r["model"]: r for r in scoretable.table_rows(scoretable.latest_scores(), {}, clean=True)}
    assert {m: r["average (accuracy tasks)"] for m, r in clean.items()} == {"a": 0.2, "b": 0.4}  # synth-math only
    assert "left out: qa (no clean score for b)" in scoretable.average_note(
        scoretable.headline(scoretable.latest_scores()), clean=True)


# ---- 3. the cut-off share beside the hallucination rate; blank when most replies were cut off -------------------

def test_a_model_whose_replies_were_mostly_cut_off_gets_no_hallucination_rate():
    """walk11: walk-dus14's 20 synth-math replies were 13 cut off and 7 abstained: "hallucination 0"."""
    for model, hall, cut in (("base", 0.45, 0.1), ("dus", 0.0, 0.65)):
        add((model, "synth-math", "accuracy", 0.0, 20), (model, "synth-math", "hallucination_rate", hall, 20),
            (model, "synth-math", "cut_off_rate", cut, 20))
    table = rows()
    assert table["dus"]["synth-math (hallucination)"] is None and table["dus"]["synth-math (cut off)"] == 0.65
    assert table["base"]["synth-math (hallucination)"] == 0.45 and table["base"]["synth-math (cut off)"] == 0.1
    assert table["base"]["synth-math (hallucination) ±"] == round(math.sqrt(0.45 * 0.55 / 19), 4)
    assert list(table["base"])[2:7] == ["synth-math (accuracy)", "synth-math (accuracy) ±",
                                        "synth-math (hallucination)", "synth-math (hallucination) ±",
                                        "synth-math (cut off)"]
    assert scoretable.cut_off_note(scoretable.latest_scores()).startswith(
        "Hallucination left blank: synth-math for dus (65% cut off). Over 50% of the replies were cut off")


# ---- 4. the caption's overlap legend matches the columns the table has ------------------------------------------

def test_the_overlap_caption_says_why_a_clean_task_has_no_column(tiny):
    checked = {"overlap": {"items_over": 0, "share_over": 0.0, "against": ["x.jsonl"], "unchecked": {}}}
    add(("tiny", "qa", "accuracy", 0.25, 20, checked), ("tiny", "lm-eval:arc_easy", "acc", 0.4, 20))
    at = app("compare.py")
    table = frame(at, "average (accuracy tasks)")
    assert not [c for c in table.columns if "training overlap" in c]
    caption = " ".join(c.value for c in at.caption)
    assert "qa: no item overlaps the recorded training data of tiny (✓, so no column)" in caption
    assert "lm-eval:arc_easy: not checked for some model" in caption
    assert "✓ none" not in caption  # the legend of a column that is not there


# ---- 5. 95 % interval whiskers on the bars ----------------------------------------------------------------------

def test_bars_get_95_percent_whiskers_where_a_score_has_a_standard_error():
    se = math.sqrt(0.25 * 0.75 / 19)
    fig = bar_figure([{"model": "base", "value": 0.25, "stderr": se, "n": 20},
                      {"model": "cpt", "value": 0.05, "stderr": math.sqrt(0.05 * 0.95 / 19), "n": 20},
                      {"model": "ppl-only", "value": 0.3, "stderr": None}], "qa (accuracy)")
    bars, whiskers = fig.data
    assert bars.orientation == "v" and list(whiskers.x) == ["base", "cpt"]  # none drawn for a missing error
    assert whiskers.error_y.array[0] == pytest.approx(1.96 * se)
    assert whiskers.error_y.arrayminus[1] == pytest.approx(0.05)  # cut at 0: no score is negative
    assert "95 % interval" in whiskers.hovertemplate and "95 % interval" in fig.layout.title.text
    assert fig.layout.yaxis.range[1] >= 0.25 + 1.96 * se  # the whisker fits
    plain = bar_figure([{"model": "base", "value": 41.0}], "perplexity")
    assert len(plain.data) == 1 and plain.layout.title.text == "perplexity"


def test_the_compare_pages_bars_carry_the_intervals(tiny):
    add(("tiny", "qa", "accuracy", 0.25, 20))
    at = app("compare.py")
    spec = json.loads(next(c for c in at.get("plotly_chart") if "bar_qa" in c.proto.id).proto.spec)
    (whisker,) = [t for t in spec["data"] if t.get("error_y")]
    assert whisker["error_y"]["array"] == [pytest.approx(1.96 * math.sqrt(0.25 * 0.75 / 19))]
