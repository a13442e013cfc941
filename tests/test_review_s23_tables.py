"""The paper tables as a reader of the paper expects them (walk23a): one headline column per task, in the paper's
order, the sub-metrics on request; the merge table saying what makes Cand. 1 and Cand. 2 differ and each merge's
weights, the paper's numbers with its two decimals; every note naming the models by the table's row labels."""

from __future__ import annotations

from sqlmodel import select

from backend.__main__ import main as cli
from backend.recipe import tables
from storage import db
from storage.models import EvalScore, Job, RecipeStage
from tests.recipe_rows import two_candidate_run

MERGES = {"avg": {"merge": {"method": "average"}, "label": "Average (0.5, 0.5)", "tables": ["merge"]},
          "avg-13": {"merge": {"method": "average", "weights": [1, 3]}, "tables": ["merge"]},
          "ties": {"merge": {"method": "ties"}, "tables": ["merge"]}}


def _candidates(run_id: int, **given: tuple[list[str], dict]) -> None:
    """Each candidate stage of the run made a merge-table row trained on its sources by a job with its spec."""
    with db.session() as s:
        for row in s.exec(select(RecipeStage).where(RecipeStage.run_id == run_id)).all():
            if row.stage in given:
                sources, spec = given[row.stage]
                job = Job(kind="dpo", spec={"kind": "dpo", "model": "r-sft", **spec}, status="succeeded")
                s.add(job)
                s.commit()
                label = "Cand. " + row.stage.removeprefix("c")
                row.job_id, row.info = job.id, {**row.info, "label": label, "tables": ["merge"], "sources": sources,
                                                "from": ["sft"]}
                s.add(row)
        s.commit()


def _scores(*rows: tuple) -> None:
    with db.session() as s:  # run=model: each model's rows one evaluation run, as two_candidate_run writes them
        for model, task, metric, value in rows:
            s.add(EvalScore(model=model, task=task, metric=metric, value=value, n=10, run=model.removeprefix("r-")))
        s.commit()


def _qa_and_h6(model: str, acc: float) -> None:
    qa = [(model, "qa", m, v) for m, v in (("accuracy", acc), ("abstention_rate", 0.1), ("hallucination_rate", 0.2),
                                           ("cut_off_rate", 0.0), ("empty_rate", 0.0), ("accuracy[math]", 0.5))]
    h6 = [(model, "lm-eval:h6", m, v) for m, v in (
        ("gsm8k/exact_match", 0.1), ("arc_challenge/acc_norm", 0.4), ("arc_challenge/acc_norm_stderr", 0.05),
        ("winogrande/acc", 0.6), ("h6_average", 0.35))]
    _scores(*qa, *h6, (model, "synth-math", "accuracy", 0.25), (model, "synth-math", "mean_words", 7.0))


def test_a_paper_table_has_one_headline_column_per_task_in_the_papers_order(capsys):
    """37 columns, alphabetical: qa's accuracy was the 13th of 20 qa columns, H6 after arc_challenge."""
    run_id = two_candidate_run({}, {"c1": 290.0, "c2": 291.0})
    _candidates(run_id, c1=(["builtin:prefs-mini"], {"seed": 1}), c2=(["builtin:prefs-mini"], {"seed": 1}))
    for model, acc in (("r-c1", 0.3), ("r-c2", 0.4)):
        _qa_and_h6(model, acc)
    [t] = [t for t in tables.run_tables(run_id) if t.key == "merge"]
    assert t.columns == ["Model", "Stage", "Made from", "prefs-mini",
                         # H6, then the paper's ARC … GSM8K (lm-eval:h6's own tasks are the paper's columns)
                         "lm-eval:h6 h6_average", "lm-eval:h6 arc_challenge/acc_norm",
                         "lm-eval:h6 arc_challenge/acc_norm ±", "lm-eval:h6 winogrande/acc",
                         "lm-eval:h6 gsm8k/exact_match",
                         # then the tasks the paper has no column for, each with the Compare page's headline
                         "perplexity", "qa accuracy", "qa accuracy ±", "synth-math accuracy", "synth-math accuracy ±",
                         "Paper H6"]
    se = round((0.3 * 0.7 / 9) ** 0.5, 4)  # lm-eval's mean_stderr over the 10 items
    assert t.rows[0][4:] == [0.35, 0.4, 0.05, 0.6, 0.1, 290.0, 0.3, se, 0.25, round((0.25 * 0.75 / 9) ** 0.5, 4),
                             73.73]
    [every] = [t for t in tables.run_tables(run_id, all_metrics=True) if t.key == "merge"]
    qa = [c for c in every.columns if c.startswith("qa ")]  # the headline first, its kinds next, then the rest
    assert qa == ["qa accuracy", "qa accuracy ±", "qa accuracy[math]", "qa abstention_rate", "qa cut_off_rate",
                  "qa empty_rate", "qa hallucination_rate", "qa hallucination_rate ±"]
    assert [c for c in every.columns if c.startswith("synth-math")] == [
        "synth-math accuracy", "synth-math accuracy ±", "synth-math mean_words"]
    # the CLI prints the same tables; --all-metrics the sub-metrics
    assert cli(["recipe", "tables", str(run_id), "--format", "csv"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Model,")]
    assert heads[0] == ",".join(t.columns)  # the merge table first, then every model
    assert cli(["recipe", "tables", str(run_id), "--format", "csv", "--all-metrics"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Model,")]
    assert heads[0] == ",".join(every.columns)


def test_the_merge_table_says_what_makes_each_candidate_differ_and_each_merges_weights():
    """Cand. 1 and Cand. 2 both read "Made from sft-v3v4" (beta 0.2 seed 1 with Synth. Math-Alignment, beta 0.1 seed
    2 without); "average of sft-v3, sft-v4" left its equal weights unsaid; the paper's 74.00 printed "74"."""
    run_id = two_candidate_run(MERGES, {"c1": 290.0, "c2": 291.0, "avg": 289.0, "avg-13": 289.5, "ties": 292.0})
    _candidates(run_id, c1=(["builtin:prefs-mini", "stage:math/alignment"], {"beta": 0.2, "seed": 1,
                                                                            "learning_rate": 5e-6}),
                c2=(["builtin:prefs-mini"], {"beta": 0.1, "seed": 2, "learning_rate": 5e-6}))
    [t] = [t for t in tables.run_tables(run_id) if t.key == "merge"]
    # the data ticks (a merge's: its inputs', as the paper marks SFT v3+v4), then only the settings that differ
    assert t.columns == ["Model", "Stage", "Made from", "prefs-mini", "Synth. Math-Alignment", "beta", "seed",
                         "perplexity", "Paper H6"]
    assert [row[:7] for row in t.rows] == [
        ["Cand. 1", "c1", "sft", "✓", "✓", 0.2, 1], ["Cand. 2", "c2", "sft", "✓", "", 0.1, 2],
        ["Average (0.5, 0.5)", "avg", "average(0.5, 0.5) of c1, c2", "✓", "✓", None, None],
        ["avg-13", "avg-13", "average(0.25, 0.75) of c1, c2", "✓", "✓", None, None],  # normalised, as merged
        ["ties", "ties", "ties(1, 1) of c1, c2", "✓", "✓", None, None]]
    assert t.notes[0] == ("A merge's ticks (Average (0.5, 0.5), avg-13, ties) are the data of the models it merges, "
                          "as the paper marks them.")
    assert tables.unscored_note(t, "—") == ""  # a merge's blank beta is no missing score
    md, csv_, tex = tables.to_markdown(t), tables.to_csv(t), tables.to_latex(t)
    assert "| Average (0.5, 0.5) | avg | average(0.5, 0.5) of c1, c2 | ✓ | ✓ |  |  | 289 | 74.00 |" in md
    assert csv_.splitlines()[1] == "Cand. 1,c1,sft,✓,✓,0.2,1,290.0,73.73"
    assert csv_.splitlines()[3].endswith(",289.0,74.00")
    assert r"& 289 & 74.00 \\" in tex


def test_every_note_names_the_models_by_the_tables_row_labels():
    """The overlap note named r-c2 (solar-mini-sft-v1-f6111a2f in the walk) under rows that read "Cand. 2"."""
    run_id = two_candidate_run({}, {})
    _candidates(run_id, c1=(["builtin:prefs-mini"], {}), c2=(["builtin:prefs-mini"], {}))
    with db.session() as s:
        for model, against in (("r-c1", ["builtin:prefs-mini"]), ("r-c2", [])):
            s.add(EvalScore(model=model, task="synth-math", metric="accuracy", value=0.5, n=10, run="x",
                            details={"overlap": {"items_over": 0, "share_over": 0.0, "against": against}}))
        s.commit()
    [t] = [t for t in tables.run_tables(run_id) if t.key == "merge"]
    assert t.notes[-1] == ("Training overlap (8-gram; an item under 8 words counts when it appears whole) — "
                           "synth-math: no item overlaps the recorded training data of Cand. 1 (✓, so no column); "
                           "Cand. 2 could not be checked: no training data of its lineage is recorded here (a "
                           "base model's pretraining data is not known).")
    # two rows of one label: the registered name beside it, to tell them apart
    rows = [{"stage": "a", "output": "r-a", "label": "Cand."}, {"stage": "b", "output": "r-b", "label": "Cand."},
            {"stage": "c", "output": "r-c", "label": ""}]
    assert tables._labelled("r-a, r-b, r-c and r-cc; dataset:r-c-instruct", rows) == (
        "Cand. (r-a), Cand. (r-b), c and r-cc; dataset:r-c-instruct")


def test_the_recipe_page_shows_the_headlines_and_the_sub_metrics_on_request():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    run_id = two_candidate_run({}, {"c1": 290.0, "c2": 291.0})
    _candidates(run_id, c1=(["builtin:prefs-mini"], {}), c2=(["builtin:prefs-mini"], {}))
    for model, acc in (("r-c1", 0.3), ("r-c2", 0.4)):
        _qa_and_h6(model, acc)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    shown = next(d.value for d in at.dataframe if "Paper H6" in d.value.columns)  # the merge table
    # each score and its ± in one cell, as the CLI prints them (tables.screen_table)
    assert [c for c in shown.columns if c.startswith("qa ")] == ["qa accuracy"]
    assert list(shown["Paper H6"]) == [73.73, 73.28]  # numbers, drawn with the paper's two decimals (%.2f)
    at.toggle(key="tables_all_metrics").set_value(True).run()
    assert not at.exception, at.exception
    every = next(d.value for d in at.dataframe if "Paper H6" in d.value.columns)
    assert [c for c in every.columns if c.startswith("qa ")] == [
        "qa accuracy", "qa accuracy[math]", "qa abstention_rate", "qa cut_off_rate", "qa empty_rate",
        "qa hallucination_rate"]
