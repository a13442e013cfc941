"""The notes under the score tables after the session-24 browser walk, pinned on their values:

1. The average's note says what the average is (each model's mean of its own scores on the shared tasks), in a
   sentence that reads.
2. The cut-off notes name the token cap as the evaluate form and `eval` do (cutoff.CAP), not "max_new_tokens".
3. The standard-error note ends "score ± 1.96 × that error", not "score ± 1.96 ×".
4. A paper table shows no score column that every one of its rows lacks, and its unscored note says "or has not
   run yet" only while the run's evaluation is still to come.
"""

from __future__ import annotations

from pathlib import Path

from backend import scoretable, tablenotes
from backend.cutoff import CAP
from backend.recipe import table_scores, tables
from storage import db
from storage.models import EvalScore, Job, RecipeStage
from tests.recipe_rows import two_candidate_run

ROOT = Path(__file__).resolve().parent.parent


def _score(model: str, task: str, metric: str, value: float, **details) -> EvalScore:
    return EvalScore(model=model, task=task, metric=metric, value=value, n=10, run=model, details=details or None)


# ---- 1. the average's note ---------------------------------------------------------------------------------------

def test_the_average_note_says_each_model_s_mean_over_the_shared_tasks():
    primary = {("base", "qa"): _score("base", "qa", "accuracy", 0.25),
               ("base", "synth-math"): _score("base", "synth-math", "accuracy", 0.0),
               ("dus", "synth-math"): _score("dus", "synth-math", "accuracy", 0.0)}
    assert tablenotes.average_note(primary) == (
        "average (accuracy tasks): each model's mean of its own scores on synth-math, the accuracy-like task every "
        "model has; left out: qa (no score for dus).")
    primary[("dus", "qa")] = _score("dus", "qa", "accuracy", 0.5)
    primary[("ppl", "perplexity")] = _score("ppl", "perplexity", "perplexity", 40.0)
    # was "..., the accuracy-like tasks every model scored on one has (blank for ppl: ...)"
    assert tablenotes.average_note(primary) == (
        "average (accuracy tasks): each model's mean of its own scores on qa, synth-math, the accuracy-like tasks "
        "every model with an accuracy-like score has (blank for ppl: no accuracy-like score).")


# ---- 2. the token cap named as the form and the CLI name it -------------------------------------------------------

def test_the_cut_off_notes_name_the_token_cap_as_the_evaluate_form_does():
    assert tablenotes.cut_off_why(False).endswith(f"evaluate again with a higher {CAP}.")
    assert f"evaluate again with a higher {CAP} (cut off), or after continued pretraining (empty)." in (
        tablenotes.cut_off_why(True))
    latest = {("m", "qa", "accuracy"): _score("m", "qa", "accuracy", 0.0),
              ("m", "qa", "cut_off_rate"): _score("m", "qa", "cut_off_rate", 1.0, settings={"max_new_tokens": 48})}
    note = table_scores.cut_off_note(latest, [{"output": "m", "stage": "c1", "label": "C1"}],
                                     {"m": {"qa accuracy": 0.0}}, {"qa accuracy"})
    assert note == ("Cut off — qa accuracy (C1): every reply was cut off at 48 tokens: accuracy 0 measures the token "
                    "cap, not the model. Raise `eval.max_new_tokens` in the recipe and run it again before reading "
                    "these scores.")  # the recipe's own field (session 26: tests/test_review_s26_cutoff.py)
    said = [p for p in [*(ROOT / "backend").glob("*.py"), *(ROOT / "backend" / "recipe").glob("*.py")]
            if "larger max_new_tokens" in p.read_text()]
    assert said == []


# ---- 3. the standard error's note ---------------------------------------------------------------------------------

def test_the_standard_error_note_says_what_1_96_multiplies():
    assert scoretable.PLUS_MINUS == "± : standard error (95 % interval ≈ score ± 1.96 × that error)."


# ---- 4. paper tables: no column of dashes, and "not run yet" only while it may still run -------------------------

def _stage(name: str, kind: str, output: str, in_tables: list[str]) -> dict:
    return {"stage": name, "kind": kind, "output": output, "label": None, "tables": in_tables, "sources": [],
            "from": ["base"] if kind != "given" else [], "spec": {}, "status": "succeeded"}


def test_a_score_column_no_row_of_a_table_has_is_left_out_of_that_table():
    with db.session() as s:
        s.add(EvalScore(model="base", task="qa", metric="accuracy", value=0.25, n=10, run="b"))
        for m, v in (("base", 30.0), ("r-v1", 20.0), ("r-v2", 21.0)):
            s.add(EvalScore(model=m, task="perplexity", metric="perplexity", value=v, n=10, run=m))
        s.commit()
    stages = [_stage("base", "given", "base", []), _stage("v1", "sft", "r-v1", ["sft"]),
              _stage("v2", "sft", "r-v2", ["sft"])]
    by_key = {t.key: t for t in tables.run_tables_from(stages)}
    sft, every = by_key["sft"], by_key["all"]
    assert "qa accuracy" not in sft.columns  # was a column of dashes: only the base, not in Table 3, had qa
    assert "perplexity" in sft.columns
    assert "qa accuracy" in every.columns and "perplexity" in every.columns
    assert tables.unscored_note(sft, "—") == ""


def _with_evaluation(run_id: int, status: str) -> None:
    with db.session() as s:
        job = Job(kind="eval", spec={}, status=status)
        s.add(job)
        s.commit()
        s.refresh(job)
        s.add(RecipeStage(run_id=run_id, recipe="r", stage="eval-c2", kind="eval", output="", hash="e", job_id=job.id,
                          reused=False, info={"model": "r-c2"}))
        s.commit()


def _note(run_id: int) -> str:
    [every] = [t for t in tables.run_tables(run_id) if t.key == "all"]
    return tables.unscored_note(every, "—")


def test_not_run_yet_is_said_only_while_the_evaluation_is_to_come():
    run_id = two_candidate_run({}, {"c1": 0.5}, task="synth-math", metric="accuracy")
    done = ("A — cell: c2 has no synth-math score — not evaluated on that task (the run's evaluation leaves it "
            "out), ")
    assert _note(run_id) == done + "not a score of zero."  # no evaluation to come: "has not run yet" misled
    _with_evaluation(run_id, "succeeded")
    assert _note(run_id) == done + "not a score of zero."
    queued = two_candidate_run({}, {"c1": 0.5}, task="synth-math", metric="accuracy")
    _with_evaluation(queued, "queued")
    assert _note(queued) == ("A — cell: c2 has no synth-math score — not evaluated on that task (the run's "
                             "evaluation leaves it out, or has not run yet), not a score of zero.")
    unit = tables.Table("all", "t", ["Model", "qa accuracy"], rows=[["a", None]])
    assert "has not run yet" not in tables.unscored_note(unit, "—")
    unit.pending = True
    assert "or has not run yet" in tables.unscored_note(unit, "—")
