"""Session 25: the Recipe page while a run's evaluation job runs. Each eval stage's state (checks.eval_state) read the
job's stored scores and looked up every model of the job again, for each of the stages that share it, and the run's
stages fetched one job per stage: a tick of the live stages (every 2 s) made ~1,200 SQL statements with 18 eval
stages, a whole-page rerun 2,294, growing as stages x models. A pass (state.read_pass) reads the models and each
evaluation's scores once; the Models page's "jobs use it" (runner.jobs_using) reads the models once."""

from __future__ import annotations

from backend import recipe, runner
from backend.recipe import graph, state, tables
from storage.models import EvalScore, Job, ModelRecord, RecipeRun, RecipeStage
from tests.test_review_cli import add
from tests.test_review_s22_jobsperf import counted


def _evaluating_run(n: int, tmp_path, p: str) -> tuple[int, Job]:
    """A run (its models' names prefixed `p`) of `n` SFT stages (each its own succeeded job, its model registered) and one eval stage per model, the
    base's and a model whose stage was not made included, sharing one running evaluation job (skip_missing, two
    tasks) that stored the base's and the first model's scores."""
    models, base, gone = [f"{p}m{i}" for i in range(n)], f"{p}tiny", f"{p}gone"
    trained = add(*(Job(kind="sft", status="succeeded", spec={"name": m}) for m in models))
    ev, = add(Job(kind="eval", status="running", spec={"models": [base, *models, gone], "skip_missing": True,
                                                        "tasks": ["perplexity", "qa"]}))
    run, = add(RecipeRun(name="r", text="kind: recipe\n"))
    add(ModelRecord(name=base, path=str(tmp_path / base)),
        *(ModelRecord(name=m, path=str(tmp_path / m), kind="sft", job_id=j.id) for m, j in zip(models, trained)))
    add(RecipeStage(run_id=run.id, recipe="r", stage="base", kind="import", output=base, hash="b",
                    info={"status": "given"}),
        *(RecipeStage(run_id=run.id, recipe="r", stage=f"sft{i}", kind="sft", output=m, hash=f"h{i}", job_id=j.id,
                      info={"status": "run", "tables": ["sft"]}) for i, (m, j) in enumerate(zip(models, trained))),
        *(RecipeStage(run_id=run.id, recipe="r", stage=f"eval:{m.removeprefix(p)}", kind="eval", output="", hash=f"e-{m}",
                      job_id=ev.id, info={"status": "run", "model": m}) for m in [base, *models, gone]))
    add(*(EvalScore(job_id=ev.id, model=m, task=t, metric=t, value=1.0, n=10, run="x")
          for m in (base, models[0]) for t in ("perplexity", "qa")))
    return run.id, ev


def _statements(fn) -> int:
    with counted() as seen:
        fn()
    return sum(seen.values())


def test_the_graph_and_tables_of_a_running_evaluation_cost_the_same_at_any_size(tmp_path):
    """The run graph (drawn every tick) and the paper tables (every rerun): 265 and 281 statements at 4 models before,
    growing with stages x models; now a fixed few."""
    small, _ = _evaluating_run(2, tmp_path, "a-")
    big, ev = _evaluating_run(6, tmp_path, "b-")
    for fn in (graph.run_graph, tables.run_tables, tables.stage_dicts, state.run_scores_note, recipe.stages):
        cost = {n: _statements(lambda: fn(run_id)) for n, run_id in ((2, small), (6, big))}
        assert cost[6] <= cost[2] + 1 and cost[6] <= 30, (fn.__name__, cost)
    # what they say is unchanged: the base and m0 scored, gone skipped, m1 the one being scored
    assert (f"job {ev.id} · 2 of 8 models scored, 1 skipped (their model was not made)") in graph.run_graph(big)
    assert state.run_scores_note(big) == (f"Scores not in yet: evaluation job {ev.id} is running, 2 of 8 models "
                                          f"scored (`python -m backend jobs wait {ev.id}`).")
    assert [s["status"] for s in tables.stage_dicts(big)] == ["given"] + ["succeeded"] * 6


def test_the_live_stages_read_each_thing_once_per_tick(tmp_path):
    """The page's live fragment: its stages, then the queue (runner.one_pass) and the run (state.read_pass) once for
    every stage's state and message. With 7 eval stages the states were read with 8 model lookups each."""
    from pages.common import job_said

    def tick(run_id: int) -> list[tuple[str, str]]:  # pages/recipe.py live(), less the drawing
        rows = recipe.stages(run_id)
        with runner.one_pass([j for _, j in rows if j]) as (active, alive), state.read_pass():
            graph.run_graph(run_id)
            return [(r.stage, recipe.stage_state(r, j), job_said(j, active, alive)[:10] if j else "")
                    for r, j in rows]

    small, _ = _evaluating_run(2, tmp_path, "a-")
    big, ev = _evaluating_run(6, tmp_path, "b-")
    cost = {n: _statements(lambda: tick(run_id)) for n, run_id in ((2, small), (6, big))}
    assert cost[6] == cost[2] and cost[6] <= 15, cost
    states = dict((stage, st) for stage, st, _ in tick(big))
    assert [states[f"eval:{m}"] for m in ("tiny", "m0", "m1", "m2", "m5", "gone")] == \
        ["succeeded", "succeeded", "running", "queued", "queued", "skipped"]
    # a score stored between two passes is read by the next one: the cache lasts one pass
    add(*(EvalScore(job_id=ev.id, model="b-m1", task=t, metric=t, value=1.0, n=10, run="x")
          for t in ("perplexity", "qa")))
    states = dict((stage, st) for stage, st, _ in tick(big))
    assert (states["eval:m1"], states["eval:m2"]) == ("succeeded", "running")


def test_jobs_using_reads_the_models_once(tmp_path):
    """The Models page's "queued or running job(s) use it", each rerun: one model lookup per reference of every
    active job (22 on the walk's queue)."""
    add(ModelRecord(name="tiny", path=str(tmp_path / "tiny")))

    def queue(n: int) -> None:
        add(*(Job(kind="eval", status="queued", spec={"models": [f"x{i}-{k}" for k in range(4)] + ["tiny"]})
              for i in range(n)))
    queue(2)
    few = _statements(lambda: runner.jobs_using("tiny"))
    queue(8)
    many = _statements(lambda: runner.jobs_using("tiny"))
    assert many == few <= 3, (few, many)
    assert len(runner.jobs_using("tiny")) == 10 and runner.jobs_using("x0-1")[0].spec["models"][1] == "x0-1"


def test_the_recipe_page_costs_the_same_for_a_run_three_times_the_size(tmp_path):
    """The whole page on a run of 2 and of 6 models while their evaluation runs: 164 and 500 statements before (the
    live stages, the graph, the tables, the surface tab each reading every model per eval stage)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    small, _ = _evaluating_run(2, tmp_path, "a-")
    big, ev = _evaluating_run(6, tmp_path, "b-")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    cost = {}
    for run_id in (small, big):
        with counted() as seen:
            at.selectbox(key="recipe_run_pick").select(run_id).run()
        assert not at.exception, at.exception
        cost[run_id] = sum(seen.values())
    assert cost[big] <= cost[small] + 2 and cost[big] <= 60, cost
    [stages] = [d for d in at.dataframe if list(d.value.columns[:3]) == ["stage", "kind", "status"]]
    assert dict(zip(stages.value["stage"], stages.value["status"]))["eval:m1"] == "running"
    assert any(f"job {ev.id} · 2 of 8 models scored" in g.proto.spec for g in at.get("graphviz_chart"))
