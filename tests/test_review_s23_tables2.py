"""walk23d's paper-table, `recipe runs`, Synthetic math and Compare-runs findings, each pinned on stored rows:

1. A headline score of replies every one (or most) cut off by the token cap is said so under the table.
2. The Recipe page shows each score and its ± in one cell with four decimals, as the CLI prints them.
3. `recipe runs` gives each evaluation row its model's own score count, the shared job's result once.
4. A pair rejected by hand since the (now stale) export reads "left out of the next export".
5. The run comparison's table has a heading of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from backend.__main__ import main as cli
from backend.recipe import tables
from storage import db
from storage.models import EvalScore, Job, RecipeStage
from tests.recipe_rows import two_candidate_run

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"settings": {"limit": 10, "max_new_tokens": 48, "decoding": "greedy"}, "items": 10}


def _qa(model: str, acc: float, cut: float, empty: float = 0.0, job_id: int | None = None) -> None:
    with db.session() as s:
        for metric, v in (("accuracy", acc), ("abstention_rate", 0.0), ("hallucination_rate", 0.0),
                          ("cut_off_rate", cut), ("empty_rate", empty)):
            s.add(EvalScore(model=model, task="qa", metric=metric, value=v, n=10, run=model.removeprefix("r-"),
                            details=SETTINGS, job_id=job_id))
        s.commit()


def _every(run_id: int, all_metrics: bool = False) -> tables.Table:
    return next(t for t in tables.run_tables(run_id, all_metrics) if t.key == "all")


# ---------------------------------------------------------------- 1. scores of cut-off replies said so

def test_a_score_of_replies_all_cut_off_is_said_to_measure_the_token_cap(capsys):
    run_id = two_candidate_run({}, {"c1": 290.0, "c2": 291.0})
    _qa("r-c1", 0.0, 1.0)
    _qa("r-c2", 0.0, 1.0)
    t = _every(run_id)
    [note] = [n for n in t.notes if n.startswith("Cut off")]
    assert note == ("Cut off — qa accuracy (all 2 models): every reply was cut off at 48 tokens: accuracy 0 "
                    "measures the token cap, not the model. Raise `eval.max_new_tokens` in the recipe and run it again "
                    "before reading these scores.")  # the recipe's field (session 26), not the Evaluate form's
    # said before the rule of three's note, which alone read as if the models had been measured
    assert t.notes.index(note) < next(i for i, n in enumerate(t.notes) if n.startswith("0 ± 0"))
    assert cli(["recipe", "tables", str(run_id), "--format", "md"]) == 0
    assert note in capsys.readouterr().out


def test_mostly_cut_off_names_its_rows_and_answered_ones_are_not_said():
    run_id = two_candidate_run({}, {"c1": 290.0, "c2": 291.0})
    _qa("r-c1", 0.3, 0.0)  # answered: nothing to say
    _qa("r-c2", 0.1, 0.6, empty=0.1)
    [note] = [n for n in _every(run_id).notes if n.startswith("Cut off")]
    assert note.startswith("Cut off — qa accuracy (c2): 60% of the replies were cut off at 48 tokens, 10% empty: "
                           "accuracy 0.1 measures the token cap more than the model.")
    run_id = two_candidate_run({}, {"c1": 290.0, "c2": 291.0})
    for model in ("r-c1", "r-c2"):
        with db.session() as s:  # newest rows of this run's models: answered
            for r in s.exec(select(EvalScore).where(EvalScore.model == model, EvalScore.task == "qa")).all():
                s.delete(r)
            s.commit()
        _qa(model, 0.5, 0.2, empty=0.2)
    assert not [n for n in _every(run_id).notes if n.startswith("Cut off")]


# ---------------------------------------------------------------- 2. the page's cells as the CLI's

def test_the_page_shows_score_and_error_in_one_cell_with_four_decimals():
    run_id = two_candidate_run({}, {"c1": 292.858, "c2": 291.0})
    _qa("r-c1", 0.0, 1.0)
    _qa("r-c2", 0.25, 0.0)
    t = _every(run_id, all_metrics=True)
    assert "qa accuracy ±" in t.columns  # the CSV keeps its numbers apart
    assert "qa accuracy ±" in tables.to_csv(t).splitlines()[0].split(",")
    shown, numeric = tables.screen_table(t)
    assert "qa accuracy ±" not in shown.columns and "qa hallucination_rate ±" not in shown.columns
    cells = {row[0]: dict(zip(shown.columns, row)) for row in shown.rows}
    se = (0.25 * 0.75 / 9) ** 0.5
    assert cells["c1"]["qa accuracy"] == "0.0000 ± 0.0000"  # the page read "0" beside the CLI's 0.0000 ± 0.0000
    assert cells["c2"]["qa accuracy"] == f"0.2500 ± {se:.4f}"
    # a score with no error stays a number, drawn with four decimals (292.858 read beside the CLI's 292.8580)
    assert cells["c1"]["perplexity"] == 292.858 and "perplexity" in numeric and tables.DECIMALS == "%.4f"
    assert "qa cut_off_rate" in numeric and "Model" not in numeric and "Paper H6" not in numeric
    md = tables.to_markdown(t)
    assert f"| 0.2500 ± {se:.4f} |" in md and "| 0.0000 ± 0.0000 |" in md


def test_the_recipe_page_draws_the_one_cell_scores():
    from streamlit.testing.v1 import AppTest

    run_id = two_candidate_run({}, {"c1": 292.858, "c2": 291.0})
    _qa("r-c1", 0.0, 1.0)
    _qa("r-c2", 0.25, 0.0)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    frame = next(d for d in at.dataframe if "Paper H6" in d.value.columns)
    assert list(frame.value["qa accuracy"]) == ["0.0000 ± 0.0000", f"0.2500 ± {(0.25 * 0.75 / 9) ** 0.5:.4f}"]
    assert "qa accuracy ±" not in frame.value.columns
    assert '"%.4f"' in frame.proto.columns and "perplexity" in frame.proto.columns  # its NumberColumn's format
    assert any(c.value.startswith("Cut off — qa accuracy (c1): every reply") for c in at.caption)


# ---------------------------------------------------------------- 3. `recipe runs`: each model's own count

def test_recipe_runs_gives_each_evaluation_row_its_models_count_and_the_jobs_result_once(capsys):
    run_id = two_candidate_run({}, {})
    job = Job(kind="eval", spec={"kind": "eval"}, status="succeeded",
              message="done: scores 7, seconds 811.1")
    with db.session() as s:
        s.add(job)
        s.commit()
        s.refresh(job)
        job_id = job.id
        for model in ("r-c1", "r-c2"):
            s.add(RecipeStage(run_id=run_id, recipe="r", stage=f"eval:{model[2:]}", kind="eval", output="",
                              hash="e" + model, job_id=job_id, info={"model": model, "status": "run"}))
        s.commit()
    _qa("r-c1", 0.0, 1.0, job_id=job_id)  # 5 rows
    with db.session() as s:
        s.add_all([EvalScore(model="r-c2", task="perplexity", metric=m, value=1.0, job_id=job_id)
                   for m in ("perplexity", "bits_per_byte")])
        s.commit()
    assert cli(["recipe", "runs"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  eval:")}
    assert rows["eval:c1"].endswith("done: scores 5") and rows["eval:c2"].endswith("done: scores 2")
    assert out.count("seconds 811.1") == 1  # the job's result once, on the evaluation's line
    assert f"  evaluation job {job_id}: 2 of 2 models scored — done: " in out


# ---------------------------------------------------------------- 4. the synth page's rejected pair

@pytest.fixture
def pairs(workspace):
    import streamlit as st

    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4, name="lo"))
    st.cache_data.clear()
    yield pipeline.get_dataset("lo-pairs")
    st.cache_data.clear()


def test_a_pair_rejected_since_the_export_is_left_out_of_the_next_one(pairs):
    from backend.synth import pipeline
    from tests.test_pages import app

    _, shown = pipeline.query_pairs(pairs.id, page_size=10)
    at = app("synth.py")
    at.button(key=f"reject_{shown[0].id}").click().run()
    assert not at.exception, at.exception
    heads = [m.value for m in at.markdown if m.value.startswith("**Rephrased**")]
    assert sum("(left out of the next export)" in h for h in heads) == 1  # it read "(not exported)"
    assert sum("(chosen)" in h for h in heads) == len(heads) - 1


# ---------------------------------------------------------------- 5. the run comparison's heading

def test_the_run_comparison_has_its_own_heading():
    from streamlit.testing.v1 import AppTest

    first, second = two_candidate_run({}, {}), two_candidate_run({}, {})
    from storage.models import RecipeRun
    with db.session() as s:
        for run_id, steps in ((first, 1), (second, 2)):
            run = s.get(RecipeRun, run_id)
            run.text = f"kind: recipe\nname: r\nbudget: {{max_steps: {steps}}}\n"
            s.add(run)
        s.commit()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    at.multiselect(key="compare_runs").set_value([first, second]).run()
    assert not at.exception, at.exception
    labels = at.multiselect(key="compare_runs").format_func
    assert any(m.value == f"**{labels(first)} vs {labels(second)}: fields that differ**" for m in at.markdown)
