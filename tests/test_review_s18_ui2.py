"""Eighteenth session, the dashboard used in Chromium (Synthetic math, Merge & compare, Recipe, Side-by-side chat):
what a user tripped on, each pinned here with AppTest or on the figure itself."""

from __future__ import annotations

import pytest

from backend import arena, registry
from pages.figures import length_box_figure
from tests.test_pages import app


@pytest.fixture
def two(tiny_llama):
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(tiny_llama, "b")


# ---- 1. Arena: an answer of newlines and control characters drew an empty column beside "96 tokens" -------------

def test_arena_says_an_answer_holds_nothing_visible(two):
    answers = {m: {"text": text, "error": None, "tokens": 96, "first_token_s": 0.01, "seconds": 0.7,
                   "tokens_per_s": 135.0, "hallucination": False}
               for m, text in (("a", "\n" * 96), ("b", "\n\n\x12\x12"))}
    t = arena.save_transcript("What is 3 + 4?", {"max_new_tokens": 96}, answers, positions=["a", "b"], blind=True)
    at = app("arena.py")
    at.session_state["arena_round"] = t.id
    at.run()
    assert not at.exception
    shown = [m.value for m in at.markdown]
    # was "" (st.write of 96 newlines) and four tofu boxes: nothing said what the model wrote
    assert "_(nothing visible: 96 whitespace or control characters, '\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n'…)_" in shown
    assert "_(nothing visible: 4 whitespace or control characters, '\\n\\n\\x12\\x12')_" in shown


def test_arena_shows_an_answer_with_text_as_it_is(two):
    answers = {m: {"text": text, "error": None, "tokens": 3, "first_token_s": 0.01, "seconds": 0.1,
                   "tokens_per_s": 30.0, "hallucination": False} for m, text in (("a", "\n7\n"), ("b", ""))}
    t = arena.save_transcript("What is 3 + 4?", {"max_new_tokens": 8}, answers, positions=["a", "b"], blind=True)
    at = app("arena.py")
    at.session_state["arena_round"] = t.id
    at.run()
    shown = [m.value for m in at.markdown]
    assert "7" in shown and "(empty)" in shown
    assert not any("nothing visible" in s for s in shown)


# ---- 2. Compare: the answer-length boxes of a model that always abstains sat on an axis from -1 to 1 words ------

@pytest.mark.parametrize("names", [["a", "b"], ["a-model-with-a-long-name-" * 2, "b"]])
def test_length_boxes_never_show_negative_words(names):
    fig = length_box_figure({n: [0, 0, 0] for n in names}, names)
    across = fig.data[0].orientation == "v"
    value_axis = fig.layout.yaxis if across else fig.layout.xaxis
    assert value_axis.rangemode == "nonnegative"  # was unset: autorange gave [-1, 1]
    name_axis = fig.layout.xaxis if across else fig.layout.yaxis
    assert name_axis.rangemode is None


# ---- 3. Recipe: a paper table's cells with no score read "None" unexplained; one run picked to compare showed
# nothing at all ---------------------------------------------------------------------------------------------------

def _run_with_scores() -> int:
    """A run of two SFT stages, c1 and c2: both have perplexity; only c1 was evaluated on synth-math."""
    from storage import db
    from storage.models import EvalScore
    from tests.test_review_s13_recipe import _swept_run

    run_id = _swept_run([], {"c1": 0.5})
    with db.session() as s:
        for model in ("r-c1", "r-c2"):
            s.add(EvalScore(model=model, task="perplexity", metric="perplexity", value=300.0, n=4, run=model))
        s.commit()
    return run_id


def test_recipe_tables_say_what_a_missing_score_is(workspace):
    run_id = _run_with_scores()
    at = app("recipe.py")
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    notes = [c.value for c in at.caption if c.value.startswith("A — cell:")]
    # was no word: c2's synth-math accuracy cell read "None"
    # "or has not run yet" only while the run's evaluation is queued or running (this run has none)
    assert notes == ["A — cell: c2 has no synth-math score — not evaluated on that task (the run's evaluation "
                     "leaves it out), not a score of zero."]


def test_recipe_compare_runs_says_what_to_pick(workspace):
    run_id = _run_with_scores()
    at = app("recipe.py")
    assert any(c.value.startswith("Pick training jobs to draw") for c in at.caption)
    at.multiselect(key="compare_runs").set_value([run_id]).run()
    assert not at.exception, at.exception
    # was nothing: a single run picked drew no table and no word
    assert any(c.value.startswith("Pick a second recipe run") for c in at.caption)
    assert not any(c.value.startswith("Pick training jobs to draw") for c in at.caption)


# ---- 4. Synthetic math: in the middle third, two of the eight chosen categories showed (the rest behind a fade) --

def test_synth_categories_take_the_full_width(workspace):
    at = app("synth.py")
    cats = at.multiselect(key="categories")
    assert cats.value == ["arithmetic", "fractions_percentages", "linear_equations", "rate", "age", "money",
                          "geometry", "counting"]
    in_columns = [m.key for col in at.columns for m in col.multiselect]
    assert "levels" in in_columns  # Levels stays in its column
    assert "categories" not in in_columns  # was in the middle column, a third of the width
    assert "categories" in [m.key for m in at.expander[0].multiselect]


def test_cancel_run_is_offered_only_while_a_stage_may_still_run(workspace):
    """A finished run offered "Cancel run", whose click said "none were still waiting or running"."""
    from backend import runner
    from storage import db
    from storage.models import RecipeStage
    from tests.test_review_arena_jobs import _job

    run_id = _run_with_scores()
    at = app("recipe.py")
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert at.button(key="recipe_cancel").disabled  # no stage has a job: nothing to cancel
    job = _job("sft", "queued", {"kind": "sft"})
    from sqlmodel import select

    with db.session() as s:
        stage = s.exec(select(RecipeStage).where(RecipeStage.run_id == run_id)).first()
        stage.job_id = job.id
        s.add(stage)
        s.commit()
    at.run()
    assert not at.button(key="recipe_cancel").disabled
    at.button(key="recipe_cancel").click().run()  # said, and off at once (was on, and a second click lost the word)
    assert runner.get(job.id).status == "cancelled"
    assert f"Cancelled jobs: {job.id}" in [w.value for w in at.warning]
    assert at.button(key="recipe_cancel").disabled
    # a stage waiting on an earlier run's job (a second Run of an unchanged recipe): that run's to cancel
    other = _job("sft", "queued", {"kind": "sft"})
    with db.session() as s:
        stage = s.exec(select(RecipeStage).where(RecipeStage.run_id == run_id)).first()
        stage.job_id, stage.info = other.id, {"status": "in-flight"}
        s.add(stage)
        s.commit()
    at.run()
    assert at.button(key="recipe_cancel").disabled and runner.get(other.id).status == "queued"


def test_an_evaluated_model_whose_items_all_overlap_is_not_said_unevaluated(workspace):
    """Every item overlapping the training data leaves the '(non-overlapping items)' column blank by design (its
    own note says why); the missing-score note read that blank as 'not evaluated on that task'."""
    from storage import db
    from storage.models import EvalScore
    from tests.test_review_s13_recipe import _overlap

    run_id = _run_with_scores()
    with db.session() as s:  # c2 on synth-math too, every item of it in its training data
        s.add(EvalScore(model="r-c2", task="synth-math", metric="accuracy", value=0.25, n=4, run="m",
                        overlap_share=1.0, details={"overlap": _overlap(4, 4)}))
        s.commit()
    at = app("recipe.py")
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    assert not [c.value for c in at.caption if c.value.startswith("None:")]  # was "c2 has no synth-math score"


def test_visible_reads_new_characters_as_visible_and_format_characters_as_not():
    """isprintable() is False for every character newer than Python's Unicode tables (3.11: Unicode 14), so an
    answer of one Unicode 15 emoji read "nothing visible"; zero-width spaces and a BOM draw nothing."""
    visible = arena.visible

    assert visible("\U0001fae8") == "\U0001fae8"  # 🫨, Unicode 15
    assert visible("東京") == "東京" and visible("\u00a0é") == "\u00a0é"
    assert visible("\u200b\ufeff\u3000").startswith("_(nothing visible: 3 whitespace or control characters")
