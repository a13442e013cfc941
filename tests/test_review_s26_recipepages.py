"""The Recipe and Jobs pages as a user walked them (s26): (1) a CPT job that ended without a held-out loss says why on
the Recovery tab, and the plan warns of it before the run when the budget leaves too few rows to hold any out; (2)
the paper table puts its scores before the data ticks, so they are in view at 1400 px; (3) the Jobs page filters by
status and kind as `jobs list --status … --kind …` does."""

from __future__ import annotations

from pathlib import Path

import yaml

from backend import data, recipe
from backend.recipe import state, tables
from storage import db
from storage.models import Job, RecipeRun, RecipeStage

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=60).run()


def cpt_recipe(base: Path, budget: dict | None = None) -> str:
    d = {"kind": "recipe", "name": "cptr", "base": str(base), "upscale": {"method": "dus", "m": 2},
         "stages": [{"name": "cpt", "kind": "cpt", "model": "upscaled", "data": [{"source": "builtin:facts-corpus"}],
                     "max_steps": 2, "max_length": 32}]}
    if budget:
        d["budget"] = budget
    return yaml.safe_dump(d, sort_keys=False)


# ---------------------------------------------------------------- 1. no held-out loss: said at plan time and after

def test_the_held_out_minimum_is_one_constant():
    assert data.MIN_HELD_OUT_ROWS == 10
    assert state.held_out_shortfall({"data": [{"source": "builtin:facts-corpus"}], "max_rows": 8}) == (
        "fewer than 10 rows to hold out (max_rows 8)")
    two = {"data": [{"source": "builtin:facts-corpus"}, {"source": "builtin:alpaca-mini"}], "max_rows": 4}
    assert state.held_out_shortfall(two, "budget ") == "fewer than 10 rows to hold out (budget max_rows 4 of each of " \
                                                       "its 2 sources)"
    two["max_rows"] = 5  # 10 rows in all: split_mix holds a share out
    assert state.held_out_shortfall(two) is None
    assert state.held_out_shortfall({"data": [{"source": "x"}], "max_rows": 2, "eval_data": {"source": "y"}}) is None
    assert state.held_out_shortfall({"data": [{"source": "x"}], "eval_fraction": 0.0}) == (
        "nothing held out (eval_fraction 0, no eval_data)")


def test_the_plan_warns_when_the_budget_leaves_a_cpt_stage_no_held_out_rows(tiny_llama):
    [p] = recipe.plan_text(cpt_recipe(tiny_llama, {"max_rows": 8}))
    note = ("stage cpt will log no held-out loss, so no recovery curve: fewer than 10 rows to hold out (budget "
            "max_rows 8); give it eval_data or more rows (max_rows 10 or more).")
    assert p.notes() == [note]
    assert f"  note: {note}" in p.lines()  # `recipe plan` prints it
    [q] = recipe.plan_text(cpt_recipe(tiny_llama, {"max_rows": 20}))
    assert q.notes() == [] and not any("note:" in line for line in q.lines())


def test_the_recipe_page_shows_the_plan_warning(tiny_llama):
    at = _app()
    at.switch_page("pages/recipe.py").run()
    at.text_area(key="recipe_yaml").set_value(cpt_recipe(tiny_llama, {"max_rows": 8})).run()
    at.button(key="recipe_plan").click().run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if "no recovery curve" in w.value] == [
        "stage cpt will log no held-out loss, so no recovery curve: fewer than 10 rows to hold out (budget max_rows "
        "8); give it eval_data or more rows (max_rows 10 or more)."]


def _cpt_run(status: str, spec: dict) -> tuple[int, int]:
    with db.session() as s:
        run = RecipeRun(name="r", text="")
        job = Job(kind="cpt", spec={"kind": "cpt", "model": "m", **spec}, status=status)
        s.add(run)
        s.add(job)
        s.commit()
        s.refresh(run)
        s.refresh(job)
        s.add(RecipeStage(run_id=run.id, recipe="r", stage="cpt", kind="cpt", output="r-cpt", hash="h",
                          job_id=job.id, info={"status": "run"}))
        s.commit()
        return run.id, job.id


def test_the_recovery_tab_says_why_an_ended_cpt_job_has_no_curve():
    few = {"data": [{"source": "builtin:facts-corpus"}], "max_rows": 8}
    run_id, job_id = _cpt_run("succeeded", few)
    at = _app()
    at.switch_page("pages/recipe.py").run()
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    said = [c.value for c in at.caption if c.value.startswith("cpt:")]
    assert said == [f"cpt: job {job_id} ended without a held-out loss: fewer than 10 rows to hold out (max_rows 8); "
                    "give eval_data or more rows."]  # was "no held-out losses logged yet (job N)."
    # still running: "yet" is right; failed with enough rows: its log says why
    assert state.recovery_note("cpt", Job(kind="cpt", spec=few, status="running"), 3) == (
        "cpt: no held-out losses logged yet (job 3).")
    assert state.recovery_note("cpt", Job(kind="cpt", spec={"data": []}, status="failed"), 3) == (
        "cpt: job 3 failed before logging a held-out loss: its log on the Jobs page says why.")
    assert state.recovery_note("cpt", Job(kind="cpt", spec=few, status="succeeded"), 3, logged=True).startswith(
        "cpt: job 3 logged held-out losses but no reference loss of the base model, so no recovery chart")


# ---------------------------------------------------------------- 2. the scores before the data ticks

def test_the_page_table_puts_scores_before_the_data_ticks_and_settings():
    t = tables.Table("merge", "T", ["Model", "Stage", "Made from", "builtin:a", "learning_rate", "synth-math accuracy",
                                    "synth-math accuracy ±", "perplexity", "Paper H6"],
                     [["Cand. 1", "c1", "sft", "✓", 1e-4, 0.5, 0.1, 290.0, 73.73],
                      ["Cand. 2", "c2", "sft", "", 2e-4, 0.25, None, None, None]], settings=["learning_rate"])
    shown, numeric = tables.screen_table(t)
    assert shown.columns == ["Model", "Stage", "Made from", "synth-math accuracy", "perplexity", "builtin:a",
                             "learning_rate", "Paper H6"]
    assert shown.rows[0] == ["Cand. 1", "c1", "sft", "0.5000 ± 0.1000", 290.0, "✓", 1e-4, 73.73]
    assert shown.rows[1] == ["Cand. 2", "c2", "sft", "0.2500", None, "", 2e-4, None]
    assert numeric == ["perplexity"]
    assert t.columns[3] == "builtin:a"  # the exports keep the paper's order


# ---------------------------------------------------------------- 3. the Jobs page's status and kind filters

def test_the_jobs_page_filters_by_status_and_kind_as_jobs_list_does():
    with db.session() as s:
        for kind, status in (("sft", "failed"), ("sft", "succeeded"), ("merge", "failed"), ("cpt", "queued")):
            s.add(Job(kind=kind, spec={"name": f"{kind}-{status}"}, status=status))
        s.commit()
    at = _app()
    at.switch_page("pages/jobs.py").run()
    assert not at.exception, at.exception
    assert len(at.selectbox(key="job").options) == 4
    at.multiselect(key="jobs_status").set_value(["failed"]).run()
    at.multiselect(key="jobs_kind").set_value(["sft"]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="job").options == ["1 · sft · sft-failed"]
    assert list(at.dataframe[0].value["id"]) == [1]  # the table too
    at.run()  # a rerun keeps the selection
    assert at.multiselect(key="jobs_status").value == ["failed"] and at.multiselect(key="jobs_kind").value == ["sft"]
    assert at.selectbox(key="job").options == ["1 · sft · sft-failed"]
    at.multiselect(key="jobs_kind").set_value(["dpo"]).run()
    assert [i.value for i in at.info if i.value.startswith("No job")] == ["No job of the statuses and kinds picked: empty the Status and Kind "
                                          "filters to see every job."]
    at.multiselect(key="jobs_status").set_value([]).run()
    at.multiselect(key="jobs_kind").set_value([]).run()
    assert len(at.selectbox(key="job").options) == 4
