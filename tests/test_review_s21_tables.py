"""The Recipe page's paper tables read like the Compare page's table: each score with its standard error and the items
behind it; merges written one by one that differ only in weight drawn as a surface; blank cells said per column."""

from __future__ import annotations

import pytest

from backend import scoretable
from backend.recipe import surface, tables
from storage import db
from storage.models import EvalScore
from tests.recipe_rows import two_candidate_run

STAGES = [{"stage": "base", "kind": "import", "output": "r-base", "label": "", "from": []},
          {"stage": "upscaled", "kind": "upscale", "output": "r-up", "label": "", "from": ["base"]}]


def _rows(*rows: tuple) -> None:
    with db.session() as s:
        for model, task, metric, value, n in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=value, n=n, run=model))
        s.commit()


def test_paper_tables_give_each_score_its_error_and_the_item_count():
    """The tables gave 310.1311473555222 and 309.4188 with no ± and no n, beside Compare's "value ± stderr" and
    "n = 10 items per task"; a stored perplexity_stderr row would have been a score column of its own."""
    _rows(("r-base", "perplexity", "perplexity", 310.1311473555222, 10),
          ("r-base", "perplexity", "perplexity_stderr", 1.234567, 10),
          ("r-up", "perplexity", "perplexity", 309.41881234, 10),
          ("r-up", "perplexity", "perplexity_stderr", 2.5, 10),
          ("r-base", "synth-math", "accuracy", 0.3, 10), ("r-up", "synth-math", "accuracy", 0.0, 10))
    [t] = [t for t in tables.run_tables_from(STAGES) if t.key == "all"]
    assert t.columns == ["Model", "Stage", "Made from", "perplexity", "perplexity ±", "synth-math accuracy",
                         "synth-math accuracy ±", "Paper H6"]
    se = round((0.3 * 0.7 / 9) ** 0.5, 4)  # lm-eval's mean_stderr, as scoretable.stderr gives it
    assert t.rows == [["base", "base", "", 310.1311, 1.2346, 0.3, se, None],
                      ["upscaled", "upscaled", "base", 309.4188, 2.5, 0.0, 0.0, None]]
    assert t.notes[:2] == ["n = 10 items per task.", scoretable.PLUS_MINUS]
    # 0 ± 0 is no certainty: the Compare page's rule-of-three note
    assert t.notes[2].endswith("(n of n one down to 1 − 3/n): synth-math accuracy 0 of 10 items (upscaled): 95 % "
                               "interval 0–0.3.")
    md, csv_, tex = tables.to_markdown(t), tables.to_csv(t), tables.to_latex(t)
    assert "| base | base |  | 310.1311 ± 1.2346 | 0.3000 ± 0.1528 |  |" in md and "n = 10 items per task." in md
    assert csv_.splitlines()[:2] == ["Model,Stage,Made from,perplexity,perplexity ±,synth-math accuracy,"
                                     "synth-math accuracy ±,Paper H6", "base,base,,310.1311,1.2346,0.3,0.1528,"]
    assert r"310.1311 $\pm$ 1.2346 & 0.3000 $\pm$ 0.1528" in tex


def test_a_score_without_an_error_gets_no_error_column():
    """perplexity with no stored error (rows from before it was): no column of blanks; the items still said."""
    _rows(("r-base", "perplexity", "perplexity", 310.13, 10), ("r-up", "perplexity", "perplexity", 309.42, 10))
    [t] = [t for t in tables.run_tables_from(STAGES) if t.key == "all"]
    assert t.columns == ["Model", "Stage", "Made from", "perplexity", "Paper H6"]
    assert t.notes[0] == "n = 10 items per task." and scoretable.PLUS_MINUS not in t.notes


def test_merges_that_differ_only_in_weight_are_a_surface():
    """The preset's Average (0.5, 0.5), (0.4, 0.6), (0.6, 0.4) of the same candidates (the paper's Table 7) read "No
    swept merge in this run": only `weights: '0..1 step'` or `sweep:` made a surface. A lone SLERP is no sweep."""
    run_id = two_candidate_run({"avg-55": {"merge": {"method": "average", "weights": [0.5, 0.5]}},
                                "avg-46": {"merge": {"method": "average", "weights": [0.4, 0.6]}},
                                "avg-64": {"merge": {"method": "average", "weights": [0.6, 0.4]}},
                                "slerp": {"merge": {"method": "slerp", "t": 0.5}}},
                               {"c1": 300.0, "c2": 302.0, "avg-55": 299.0, "avg-46": 299.5, "avg-64": 298.5, "slerp": 297.0})
    [surf] = surface.run_surfaces(run_id, "perplexity")
    assert surf["group"] == "average of c1, c2" and surf["field"] == "weight"
    assert surf["x"] == [0.4, 0.5, 0.6] and surf["y"] == [299.5, 299.0, 298.5]
    assert surf["ends"] == [(1.0, 300.0), (0.0, 302.0)] and surf["best"] == (0.6, 298.5) and surf["beats_candidates"]


def test_only_merges_alike_but_for_the_weight_make_one_surface():
    """Two SLERPs at other t make a surface over t; merges whose other settings differ (normalize off) are no
    points of one sweep, and a single merge of a method is none."""
    st = [{"stage": n, "kind": "merge", "from": ["c1", "c2"], "merge": m} for n, m in (
        ("s1", {"method": "slerp", "t": 0.25}), ("s2", {"method": "slerp", "t": 0.75}),
        ("a1", {"method": "average", "weights": [1, 1]}), ("a2", {"method": "average", "weights": [0.3, 0.7]}))]
    groups = surface.implicit_sweeps(st, {"a1": {"normalize": True}, "a2": {"normalize": False}})
    assert {g: [(m["stage"], f, x) for m, f, x in ms] for g, ms in groups.items()} == {
        "slerp of c1, c2": [("s1", "t", 0.25), ("s2", "t", 0.75)]}
    same = surface.implicit_sweeps(st, {})  # [1, 1] normalised (mergekit's linear default) is the weight 0.5
    assert [(m["stage"], x) for m, _, x in same["average of c1, c2"]] == [("a1", 0.5), ("a2", 0.3)]


def test_two_sweeps_of_one_pair_are_two_surfaces():
    """Average weights swept at density 0.3 and again at 0.7: one name for both kept only the last."""
    st = [{"stage": n, "kind": "merge", "from": ["c1", "c2"], "merge": {"method": "average", "weights": w}}
          for n, w in (("a", [0.4, 0.6]), ("b", [0.6, 0.4]), ("c", [0.4, 0.6]), ("d", [0.6, 0.4]))]
    specs = {"a": {"density": 0.3}, "b": {"density": 0.3}, "c": {"density": 0.7}, "d": {"density": 0.7}}
    assert {g: [m["stage"] for m, _, _ in ms] for g, ms in surface.implicit_sweeps(st, specs).items()} == {
        "average of c1, c2": ["a", "b"], "average of c1, c2 (2)": ["c", "d"]}


def test_the_blank_note_says_each_column_once():
    """ "Left blank" listed every model of every blank column: ~90 entries for five columns blank in all 18 rows."""
    cols = ["Model", "Stage", "Made from", "qa accuracy", "qa accuracy ±", "qa hallucination_rate",
            "qa hallucination_rate[math]", "synth-math accuracy", "synth-math hallucination_rate", "Paper H6"]
    t = tables.Table("all", "Every model", cols, [["a", "a", "", 0.0, 0.0, None, None, 0.1, None, None],
                                                  ["b", "b", "", 0.0, 0.0, None, None, 0.2, 0.1, None],
                                                  ["c", "c", "", 0.0, 0.0, None, None, 0.3, None, None]])
    assert tables.unscored_note(t, "—") == (
        "Left blank (—): qa hallucination_rate, qa hallucination_rate[math] (all 3 models); a, c (synth-math "
        "hallucination_rate): over half of those replies were cut off by the token limit or empty, so no "
        "hallucination rate is given (its 0 would read as the best).")


@pytest.mark.parametrize("blank", [[None, 0.2], [0.1, 0.2]])
def test_an_error_column_is_not_read_as_a_missing_score(blank):
    t = tables.Table("t", "T", ["Model", "qa accuracy", "qa accuracy ±"], [["a", 0.5, blank[0]], ["b", 0.5, 0.1]])
    assert tables.unscored_note(t, "—") == ""
