"""The Compare page and the recipe tables after session 24: the charts' caption written by the backend for bars with
or without a radar (the page had patched "Bars and radar:" into "Bars:"); a merge's applied weights a public function
of the recipe tables that the page calls too (it called the private tables._merge_weights); a task named as its
metric heads its column once ("perplexity", not "perplexity (perplexity)") in the table, its CSV, the CLI's `scores`
and the bar charts' ids; backend/recipe/tables.py and pages/compare.py cut below 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backend import scoretable
from backend.recipe import tables
from pages import compare_pick
from storage import db
from storage.models import EvalScore
from tests.test_review_cli import cli

ROOT = Path(__file__).resolve().parent.parent
OVER = {"items_over": 8, "share_over": 0.4, "against": ["x.jsonl"], "unchecked": {}}


def scores(*rows: tuple) -> None:
    """EvalScore rows (model, task, metric, value, n[, overlap details])."""
    with db.session() as s:
        for model, task, metric, v, n, *over in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=v, n=n, run="r1",
                            overlap_share=over[0]["share_over"] if over else 0.0,
                            details={"overlap": over[0]} if over else {}))
        s.commit()


# ---- 1. the charts' caption: "Bars:" where no radar is drawn, said by the backend ------------------------------------

def test_the_chart_note_names_the_radar_only_where_one_is_drawn():
    scores(("a", "qa", "accuracy", 0.5, 20), ("b", "qa", "accuracy", 0.25, 20))
    latest = scoretable.latest_scores()
    charts = scoretable.chart_rows(latest)
    whiskers = ("Whiskers: 95 % interval, score ± 1.96 standard errors; where that error is 0 at a score of 0 or 1, "
                "0 to 3/n or 1 − 3/n to 1 instead (rule of three, n items).")
    assert scoretable.chart_note(latest, charts, radar=False) == "Bars: the table's scores. " + whiskers
    assert scoretable.chart_note(latest, charts, radar=True) == "Bars and radar: the table's scores. " + whiskers
    assert scoretable.chart_note(latest, charts) == scoretable.chart_note(latest, charts, radar=True)
    clean = scoretable.chart_note(latest, charts, clean=True, radar=False)
    assert clean.startswith("Bars: the table's scores on the non-overlapping items only (the toggle above). ")
    assert "radar" not in clean


def test_the_page_passes_whether_it_drew_a_radar_and_patches_no_caption():
    page = (ROOT / "pages/compare.py").read_text()
    calls = [n for n in ast.walk(ast.parse(page)) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "scoretable.chart_note"]
    assert [[k.arg for k in c.keywords] for c in calls] == [["radar", "labels"]] and ast.unparse(
        calls[0].keywords[0].value) == "drew_radar"  # labels: the tasks' names (session 25)
    assert "Bars and radar" not in page


# ---- 2. a merge's applied weights: public, shared by the tables and the page ----------------------------------------

def test_applied_weights_are_the_tables_and_the_pages_one_function():
    assert tables.applied_weights({"method": "average"}, {}, 2) == [0.5, 0.5]
    assert tables.applied_weights({"method": "linear", "weights": [2, 6]}, {}, 2) == [0.25, 0.75]
    assert tables.applied_weights({"method": "average"}, {"weights": [1, 3], "normalize": False}, 2) == [1.0, 3.0]
    assert tables.applied_weights({"method": "task_arithmetic"}, {}, 3) == [1.0, 1.0, 1.0]
    assert tables.applied_weights({"method": "average", "weights": "0..1 step 0.1"}, {}, 2) == []
    assert tables.applied_weights({"method": "average"}, {}, 0) == []
    # SLERP has a t, no weights: [1.0, 1.0] was returned for it
    assert tables.applied_weights({"method": "slerp", "t": 0.3}, {}, 2) == []
    assert tables.applied_weights.__doc__ and not hasattr(tables, "_merge_weights")
    assert tables._made_from({"from": ["a", "b"], "merge": {"method": "average"}}) == "average(0.5, 0.5) of a, b"
    assert compare_pick.merge_weights({"method": "average", "weights": [1, 3]}, 2) == " weights=[0.25, 0.75]"
    assert compare_pick.merge_weights({"method": "slerp"}, 2) == ""
    # the page's helper reads no private name of the recipe tables
    tree = ast.parse((ROOT / "pages/compare_pick.py").read_text())
    assert [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "tables"] == [
        "applied_weights"]


# ---- 3. "perplexity", not "perplexity (perplexity)" ------------------------------------------------------------------

def test_a_task_named_as_its_metric_heads_its_column_once():
    assert scoretable.score_column("perplexity", "perplexity") == "perplexity"
    assert scoretable.score_column("qa", "accuracy") == "qa (accuracy)"
    assert scoretable.score_column("perplexity:held.txt", "perplexity") == "perplexity:held.txt (perplexity)"
    scores(("base", "perplexity", "perplexity", 41.05, 20, OVER), ("base", "perplexity", "perplexity_stderr", 0.5, 20),
           ("base", "qa", "accuracy", 0.25, 20), ("cpt", "perplexity", "perplexity", 30.5, 20),
           ("cpt", "perplexity", "perplexity_stderr", 0.25, 20), ("cpt", "qa", "accuracy", 0.5, 20))
    latest = scoretable.latest_scores()
    rows = scoretable.table_rows(latest, {})
    # the error and the overlap badge after their score, as any task's ("perplexity ±" sorted as a task of its own
    # would have come after "perplexity (training overlap)")
    assert list(rows[0]) == ["model", "average (accuracy tasks)", "perplexity", "perplexity ±",
                             "perplexity (training overlap)", "qa (accuracy)", "qa (accuracy) ±", "kind", "layers",
                             "made from"]
    assert [(r["perplexity"], r["perplexity ±"]) for r in rows] == [(41.05, 0.5), (30.5, 0.25)]
    assert sorted(scoretable.chart_rows(latest)) == ["perplexity", "qa (accuracy)"]  # the bars' titles and ids
    assert scoretable.export_table(rows).columns[2:4] == ["perplexity", "perplexity (training overlap)"]
    rc, out, err = cli("scores", "--format", "csv")
    assert rc == 0, err
    assert out.splitlines()[0] == ("model,average (accuracy tasks),perplexity,perplexity ±,perplexity (training "
                                   "overlap),qa (accuracy),qa (accuracy) ±,kind,layers,made from")
    rc, out, err = cli("scores")
    assert rc == 0 and "| perplexity | perplexity (training overlap) | qa (accuracy) |" in out, err
    assert "41.0500 ± 0.5000" in out and "(perplexity)" not in out
    # the recipe tables keep their own form ("qa accuracy"), a task named as its metric once there too
    from backend.recipe import table_scores

    assert table_scores.column("perplexity", "perplexity") == "perplexity"
    assert table_scores.column("qa", "accuracy") == "qa accuracy"


# ---- 4. house size ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["backend/recipe/tables.py", "backend/recipe/table_scores.py", "pages/compare.py",
                                  "pages/compare_length.py", "pages/compare_pick.py"])
def test_the_recipe_tables_and_the_compare_page_stay_under_500_lines(path):
    assert len((ROOT / path).read_text().splitlines()) < 500
