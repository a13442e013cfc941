"""The Compare page's bars and radar show the numbers its table shows (backend/scoretable.py chart_rows,
radar_scores, chart_note; pages/figures.py bar_figure, radar_figure; pages/compare.py): with "Score only
non-overlapping items" on, the table held the clean scores while the charts drew the stored ones, and a task with
no clean score kept its bar. A share of 0 or 1 got lm-eval's standard error 0 ("0 ± 0" from 5 items, a bar with no
whisker): the error stays lm-eval's, the table says why it is no certainty and the whisker is the rule of three's
(0 to 3/n). Each test fails without its fix."""

from __future__ import annotations

import json
import math

import pytest

from backend import registry, scoretable
from backend.recipe import tables
from pages.figures import bar_figure, radar_figure
from tests.test_pages import app
from tests.test_review_scores11 import add

OVER = {"items_over": 8, "share_over": 0.4, "against": ["x.jsonl"], "unchecked": {}}
ALL_OVER = {"items_over": 20, "share_over": 1.0, "against": ["x.jsonl"], "unchecked": {}}


def overlapping(clean_accuracy: float, clean_n: int = 12) -> dict:
    """The details of a score 8 of whose 20 items overlap the training data, scored `clean_accuracy` on the rest."""
    return {"overlap": OVER, "clean": {"accuracy": clean_accuracy, "n": clean_n}}


def add_three_tasks() -> None:
    """Model a on three accuracy tasks, each scored differently on its clean items; model b's qa items all
    overlap (no clean score)."""
    add(("a", "qa", "accuracy", 0.6, 20, overlapping(0.5)),
        ("a", "synth-math", "accuracy", 0.4, 20, overlapping(0.25)),
        ("a", "gsm8k", "accuracy", 0.3, 20, overlapping(0.75)),
        ("b", "qa", "accuracy", 0.7, 20, {"overlap": ALL_OVER, "clean": None}))


def chart(at, name: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if name in c.proto.id).proto.spec)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. the charts follow the clean toggle -----------------------------------------------------------------------

def test_chart_rows_hold_the_tables_clean_scores_errors_and_items_and_no_bar_without_a_clean_score():
    add_three_tasks()
    latest = scoretable.latest_scores()
    table = {r["model"]: r for r in scoretable.table_rows(latest, {}, clean=True)}
    charts = scoretable.chart_rows(latest, clean=True)
    (qa,) = charts["qa (accuracy)"]  # b's qa items all overlap: its table cell is blank, so no bar (not a 0)
    assert table["b"]["qa (accuracy)"] is None
    assert (qa["model"], qa["value"], qa["n"]) == ("a", 0.5, 12) == ("a", table["a"]["qa (accuracy)"], 12)
    assert qa["stderr"] == pytest.approx(math.sqrt(0.25 / 11))
    assert round(qa["stderr"], 4) == table["a"]["qa (accuracy) ±"]
    assert scoretable.radar_scores(charts) == {"a": {"gsm8k": 0.75, "qa": 0.5, "synth-math": 0.25}}
    stored = scoretable.chart_rows(latest)
    assert [(s["model"], s["value"], s["n"]) for s in stored["qa (accuracy)"]] == [("a", 0.6, 20), ("b", 0.7, 20)]
    assert scoretable.radar_scores(stored) == {"a": {"gsm8k": 0.3, "qa": 0.6, "synth-math": 0.4}, "b": {"qa": 0.7}}
    note = scoretable.chart_note(latest, charts, clean=True)
    assert "non-overlapping items only" in note and "no bar for qa for b: no clean score" in note


def test_the_compare_pages_bars_radar_and_caption_follow_the_clean_toggle(tiny):
    add_three_tasks()
    at = app("compare.py")
    qa = chart(at, "bar_qa")
    assert qa["data"][0]["y"] == [0.6, 0.7] and "non-overlapping" not in qa["layout"]["title"]["text"]
    at.toggle(key="clean_only").set_value(True).run()
    assert not at.exception, at.exception
    qa = chart(at, "bar_qa")
    bar, whisker = qa["data"]
    assert bar["x"] == ["a"] and bar["y"] == [0.5]  # b has no clean score: no bar, where it had its stored 0.7
    assert whisker["error_y"]["array"] == [pytest.approx(1.96 * math.sqrt(0.25 / 11))]
    assert whisker["customdata"][0][2] == 12  # the clean items, not the 20 stored
    assert "non-overlapping items only" in qa["layout"]["title"]["text"]
    assert chart(at, "bar_synth-math")["data"][0]["y"] == [0.25] and chart(at, "bar_gsm8k")["data"][0]["y"] == [0.75]
    radar = chart(at, "radar")
    (line,) = radar["data"]
    assert dict(zip(line["theta"], line["r"])) == {"gsm8k": 0.75, "qa": 0.5, "synth-math": 0.25}
    assert "non-overlapping items only" in radar["layout"]["title"]["text"]
    assert any("no bar for qa for b: no clean score" in c.value for c in at.caption)
    # a radar drawn: the backend's caption names it (scoretable.chart_note's radar)
    assert any(c.value.startswith("Bars and radar: the table's scores on the non-overlapping") for c in at.caption)


def test_radar_figure_titles_only_with_a_subtitle():
    plain = radar_figure({"a": {"x": 0.1, "y": 0.2, "z": 0.3}})
    clean = radar_figure({"a": {"x": 0.1, "y": 0.2, "z": 0.3}}, subtitle="non-overlapping items only")
    assert plain.layout.title.text is None
    assert clean.layout.title.text == "Accuracy-like tasks<br><sup>non-overlapping items only</sup>"


# ---- 2. a share of 0 or 1: lm-eval's 0 kept, the rule of three beside it ------------------------------------------

def test_a_share_of_0_or_1_keeps_lm_evals_zero_error_and_the_note_gives_the_rule_of_three_bound():
    add(("m", "qa", "accuracy", 0.0, 5), ("m", "synth-math", "accuracy", 1.0, 20), ("m", "gsm8k", "accuracy", 0.5, 20))
    latest = scoretable.latest_scores()
    rows = scoretable.table_rows(latest, {})
    (row,) = rows
    assert (row["qa (accuracy)"], row["qa (accuracy) ±"]) == (0.0, 0.0)  # lm-eval's √(p(1−p)/(n−1)), exported as is
    assert "| 0.0000 ± 0.0000 |" in tables.to_markdown(scoretable.export_table(rows))
    (note,) = [n for n in scoretable.table_notes(latest, rows) if "rule of three" in n]
    assert "qa (accuracy) for m, 0 of 5 items: 95 % interval 0–0.6" in note
    assert "synth-math (accuracy) for m, 20 of 20 items: 95 % interval 0.85–1" in note
    assert "gsm8k" not in note  # 0.5 ± 0.11 is an ordinary error


def test_models_with_the_same_zero_error_cell_share_one_entry_of_the_note():
    """Five models at 0 of 20 on one task made five entries of one long sentence under the table."""
    add(("m", "qa", "accuracy", 0.0, 20), ("n", "qa", "accuracy", 0.0, 20), ("o", "qa", "accuracy", 0.0, 8))
    latest = scoretable.latest_scores()
    (note,) = [n for n in scoretable.table_notes(latest, scoretable.table_rows(latest, {})) if "rule of three" in n]
    assert note.endswith("draw: qa (accuracy) for m, n, 0 of 20 items: 95 % interval 0–0.15; qa (accuracy) for o, 0 "
                         "of 8 items: 95 % interval 0–0.38.")


def test_no_rule_of_three_note_without_a_zero_error():
    add(("m", "qa", "accuracy", 0.25, 20), ("m", "perplexity", "perplexity", 41.0, 20))
    latest = scoretable.latest_scores()
    assert not [n for n in scoretable.table_notes(latest, scoretable.table_rows(latest, {})) if "rule of three" in n]


def test_the_whisker_of_a_zero_error_share_is_the_rule_of_three_bound():
    fig = bar_figure([{"model": "none", "value": 0.0, "stderr": 0.0, "n": 5},
                      {"model": "all", "value": 1.0, "stderr": 0.0, "n": 20},
                      {"model": "two", "value": 0.0, "stderr": 0.0, "n": 2},
                      {"model": "half", "value": 0.5, "stderr": 0.1, "n": 26}], "qa (accuracy)")
    _, whisker = fig.data
    assert list(whisker.x) == ["none", "all", "two", "half"]
    assert list(whisker.error_y.array) == pytest.approx([0.6, 0.0, 1.0, 0.196])  # 3/5; 3/2 cut at 1
    assert list(whisker.error_y.arrayminus) == pytest.approx([0.0, 0.15, 0.0, 0.196])  # 1 − 3/20
    assert [c[3] for c in whisker.customdata] == ["rule of three: ± is 0 at a score of 0 or 1"] * 3 + [
        "± 1.96 standard errors"]
    assert fig.layout.yaxis.range[1] >= 1.0  # the whisker fits


def test_the_compare_page_draws_and_explains_the_rule_of_three_whisker(tiny):
    add(("tiny", "qa", "accuracy", 0.0, 5))
    at = app("compare.py")
    (whisker,) = [t for t in chart(at, "bar_qa")["data"] if t.get("error_y")]
    assert whisker["error_y"]["array"] == [pytest.approx(0.6)]  # no whisker at all before
    captions = " ".join(c.value for c in at.caption)
    assert "qa (accuracy) for tiny, 0 of 5 items: 95 % interval 0–0.6" in captions
    assert "0 to 3/n or 1 − 3/n to 1 instead (rule of three" in captions


def test_a_preset_rows_bound_counts_its_own_tasks_items_not_the_presets():
    details = {"lm_eval": {"tasks": {"arc_challenge": {"n": 25}, "hellaswag": {"n": 275}}}}
    add(("m", "lm-eval:h6", "arc_challenge/acc_norm", 0.0, 300, details),
        ("m", "lm-eval:h6", "arc_challenge/acc_norm_stderr", 0.0, 300, details))
    latest = scoretable.latest_scores()
    (score,) = scoretable.chart_rows(latest)["lm-eval:h6 (arc_challenge/acc_norm)"]
    assert (score["n"], score["stderr"]) == (25, 0.0)
    assert scoretable.interval95(score["value"], score["stderr"], score["n"]) == (0.0, 0.12)  # 3/25, not 3/300
    # the table's "n = … items" note counts the same items as the whisker (it said 300)
    assert scoretable.items_note(scoretable.headline(latest)) == "n = 25 items per task."
