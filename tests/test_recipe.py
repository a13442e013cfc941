"""Recipes: the SOLAR experiment as one YAML file, planned into dependent jobs, run through the real worker,
reused by hash, resumed after a failure, and read back as the paper's tables."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from backend import recipe, registry, runner
from backend.__main__ import main as cli
from backend.recipe import graph, surface, tables
from backend.recipe.spec import RecipeError, expand_stages, load_recipe, parse_values
from backend.specs import DataSource, SftSpec
from storage import db
from storage.models import EvalScore, Job, RecipeStage


def smoke(base: Path, **edit) -> dict:
    data = yaml.safe_load(recipe.preset("smoke", str(base)))
    data.update(edit)
    return data


def text(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def plan_of(d: dict):
    [p] = recipe.plan_text(text(d))
    return p


# ---------------------------------------------------------------- planning and refusals (fast: nothing runs)

def test_plan_names_hashes_and_dependencies(tiny_llama):
    p = plan_of(smoke(tiny_llama))
    stages = {n.stage: n for n in p.nodes}
    assert set(stages) == {"base", "upscaled", "sft-a", "sft-b", "avg", "eval:base", "eval:upscaled",
                           "eval:sft-a", "eval:sft-b", "eval:avg"}
    assert stages["upscaled"].depth == 8  # 6 layers, m=2: 2·(6−2)
    assert stages["sft-a"].spec.model == stages["upscaled"].output  # resolved before the model exists
    assert stages["avg"].spec.models == [stages["sft-a"].output, stages["sft-b"].output]
    assert stages["avg"].deps == ["sft-a", "sft-b"]
    assert stages["sft-a"].output == f"smoke-sft-a-{stages['sft-a'].hash[:8]}"
    assert all(n.status == "run" for n in p.nodes if n.stage != "base")
    # a change upstream changes every hash downstream, and nothing beside it
    d = smoke(tiny_llama)
    d["stages"][1]["learning_rate"] = 1e-3
    q = {n.stage: n for n in plan_of(d).nodes}
    assert q["sft-b"].hash != stages["sft-b"].hash and q["avg"].hash != stages["avg"].hash
    assert q["sft-a"].hash == stages["sft-a"].hash and q["upscaled"].hash == stages["upscaled"].hash
    # the budget scales every training stage (and so is part of the hash)
    d = smoke(tiny_llama, budget={"steps_scale": 2.0})
    q = {n.stage: n for n in plan_of(d).nodes}
    assert q["sft-a"].spec.max_steps == 4 and q["sft-a"].hash != stages["sft-a"].hash


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["stages"][0].update(model="sft-b") or d["stages"][1].update(model="sft-a"), "cycle"),
    (lambda d: d["stages"][2].update(models=["sft-a", "sft-z"]), "stage avg.models[1]: 'sft-z' is not a stage"),
    (lambda d: d["stages"][0].update(data=[{"source": "builtin:nope"}]), "stage sft-a.data[0].source"),
    (lambda d: d["stages"][0].update(data=[{"source": "/no/such/file.jsonl"}]), "does not exist"),
    (lambda d: d["stages"][0].update(data=[{"source": "dataset:nothing"}]), "no registered data set"),
    (lambda d: d["upscale"].update(m=3), "upscale: m=3 is out of range for a 6-layer model: choose 1 <= m <= 2"),
    # the build's own rules for every method (a groups or slice the base cannot hold planned, then failed its job)
    (lambda d: d.update(upscale={"method": "llama-pro", "groups": 4}),
     "upscale: groups=4: the 6 layers must split into equal groups; choose one of [1, 2, 3, 6]."),
    (lambda d: d.update(upscale={"method": "slices", "slices": [{"start": 0, "end": 4}, {"start": 2, "end": 9}]}),
     "upscale: slices: range [2, 9) is out of range for source 0 with 6 layers"),
    (lambda d: d.update(upscale={"method": "slices", "second": "nope", "slices": [{"start": 0, "end": 4},
                                                                               {"source": 1, "start": 2, "end": 6}]}),
     "upscale.second: 'nope' is neither a registered model"),
    (lambda d: d["stages"][1].update(model="base"), "stage avg.models: sft-a has 8, sft-b has 6 layers"),
    (lambda d: d["stages"].append({"name": "sft-a", "kind": "sft", "model": "base",
                                   "data": [{"source": "builtin:alpaca-mini"}]}), "used twice"),
    (lambda d: d["stages"][0].update(kind="train"), "stages[0].kind"),
    (lambda d: d["stages"][0].update(max_steps=0), "max_steps"),
    (lambda d: d["stages"][0].update(data=[{"source": "stage:sft-b/instruct"}]), "not a synth-math stage"),
])
def test_bad_input_is_refused_before_anything_runs(tiny_llama, edit, field):
    d = smoke(tiny_llama)
    edit(d)
    with pytest.raises(RecipeError) as err:
        recipe.plan_text(text(d))
    assert field in str(err.value)
    with db.session() as s:
        assert s.exec(select(Job)).all() == []  # nothing queued


def test_presets_and_cli(tiny_llama, capsys, tmp_path):
    with pytest.raises(RecipeError, match="unknown; choose one of: smoke, solar-mini, solar-10.7b"):
        recipe.preset("solar-11b")
    with pytest.raises(RecipeError, match="give --base"):
        recipe.preset("smoke")
    for name in ("solar-mini", "solar-10.7b"):  # valid recipes (validation needs no model)
        r = load_recipe(recipe.preset(name))
        assert len(r.stages) == 17 and r.upscale == {"method": "dus", "m": 8}
    big = load_recipe(recipe.preset("solar-10.7b"))
    assert big.base == "mistralai/Mistral-7B-v0.1"
    from backend.recipe.plan import hub_online

    if not hub_online():  # here: validated, but refused with the reason
        with pytest.raises(RecipeError, match="base: 'mistralai/Mistral-7B-v0.1' is a Hub id and the Hugging Face "
                                              "Hub cannot be reached"):
            recipe.plan(big)
    assert cli(["recipe", "new", "smoke", "--base", str(tiny_llama), "--m", "1"]) == 0
    out = capsys.readouterr().out
    f = tmp_path / "r.yaml"
    f.write_text(out)
    assert load_recipe(out).upscale["m"] == 1
    assert cli(["recipe", "plan", str(f)]) == 0
    shown = capsys.readouterr().out
    assert "5 to run" not in shown and "run       sft-a" in shown and "eval:avg" in shown
    assert cli(["recipe", "new", "nope"]) == 2
    # `run FILE` knows a recipe: its stages are queued as dependent jobs
    assert cli(["run", str(f), "--queue"]) == 0
    jobs = sorted(runner.list_jobs(), key=lambda j: j.id)
    assert [j.kind for j in jobs] == ["upscale", "sft", "sft", "merge", "eval"]
    assert jobs[3].needs == [jobs[1].id, jobs[2].id] and jobs[1].needs == [jobs[0].id]
    # the evaluation waits for every stage to end, however, and leaves out a model whose stage failed
    assert len(jobs[4].spec["models"]) == 5 and set(jobs[4].waits) == {j.id for j in jobs[:4]}
    assert jobs[4].needs == [] and jobs[4].spec["skip_missing"] is True


def test_sweeps_expand_into_stages_and_runs(tiny_llama):
    assert parse_values("0.0..1.0 step 0.25", "w") == [0.0, 0.25, 0.5, 0.75, 1.0]
    st = expand_stages([{"name": "avg", "kind": "merge", "models": ["a", "b"], "weights": "0..1 step 0.5"},
                        {"name": "sl", "kind": "merge", "models": ["a", "b"], "method": "slerp",
                         "sweep": {"t": [0.2, 0.8]}}])
    assert [s["name"] for s in st] == ["avg-w0", "avg-w0.5", "avg-w1", "sl-t0.2", "sl-t0.8"]
    assert st[1]["weights"] == [0.5, 0.5] and st[0]["weights"] == [0.0, 1.0] and st[4]["t"] == 0.8
    d = smoke(tiny_llama, upscale={"method": "dus", "m": [1, 2]})
    plans = recipe.plan_text(text(d))
    assert [p.recipe.name for p in plans] == ["smoke-m1", "smoke-m2"]
    assert [p.node("upscaled").depth for p in plans] == [10, 8]
    with pytest.raises(RecipeError, match="a sweep"):
        d = smoke(tiny_llama)
        d["stages"][2]["weights"] = "0..1 step 0.5"
        d["stages"].append({"name": "after", "kind": "merge", "models": ["avg", "sft-a"]})
        recipe.plan_text(text(d))


# ---------------------------------------------------------------- pure read-backs

def test_tables_follow_the_stored_rows():
    stages = [{"stage": "sft-v1", "kind": "sft", "output": "m1", "label": "SFT v1", "tables": ["sft"],
               "sources": ["builtin:alpaca-mini"], "from": ["cpt"]},
              {"stage": "sft-v3", "kind": "sft", "output": "m3", "label": "SFT v3", "tables": ["sft"],
               "sources": ["builtin:alpaca-mini", "stage:math/instruct"], "from": ["cpt"]},
              {"stage": "avg", "kind": "merge", "output": "m4", "label": "Average (0.5, 0.5)", "tables": ["merge"],
               "merge": {"method": "average", "weights": [0.5, 0.5]}, "from": ["c1", "c2"]}]
    with db.session() as s:
        s.add_all([EvalScore(model="m1", task="synth-math", metric="accuracy", value=0.25),
                   EvalScore(model="m3", task="synth-math", metric="accuracy", value=0.5)])
        s.commit()
    sft = next(t for t in tables.run_tables_from(stages) if t.key == "sft")
    assert sft.columns == ["Model", "Stage", "Made from", "alpaca-mini", "Synth. Math-Instruct",
                           "synth-math accuracy", "Paper H6"]
    assert sft.rows == [["SFT v1", "sft-v1", "cpt", "✓", "", 0.25, 69.15],
                        ["SFT v3", "sft-v3", "cpt", "✓", "✓", 0.5, 70.03]]
    with db.session() as s:  # a newer stored row changes the table
        s.add(EvalScore(model="m1", task="synth-math", metric="accuracy", value=0.75))
        s.commit()
    sft = next(t for t in tables.run_tables_from(stages) if t.key == "sft")
    assert sft.rows[0][5] == 0.75
    md, csv_, tex = tables.to_markdown(sft), tables.to_csv(sft), tables.to_latex(sft)
    assert "| SFT v1 | sft-v1 | cpt | ✓ |  | 0.75 | 69.15 |" in md
    assert csv_.splitlines()[1] == "SFT v1,sft-v1,cpt,✓,,0.75,69.15"
    assert r"SFT v3 & sft-v3 & cpt & \checkmark & \checkmark & 0.5 & 70.03 \\" in tex
    merge = next(t for t in tables.run_tables_from(stages) if t.key == "merge")
    assert merge.rows[0][2] == "average(0.5, 0.5) of c1, c2" and merge.rows[0][-1] == 74.00


def test_merge_surface_and_config_diff():
    s = surface.merge_surface([(0.5, 0.7), (0.0, 0.6), (1.0, 0.5), (0.25, 0.8)], first=0.5, second=0.6,
                             field="weight")
    assert s["x"] == [0.0, 0.25, 0.5, 1.0] and s["y"] == [0.6, 0.8, 0.7, 0.5]
    assert s["ends"] == [(1.0, 0.5), (0.0, 0.6)] and s["best"] == (0.25, 0.8) and s["beats_candidates"]
    t = surface.merge_surface([(0.5, 3.0)], first=2.0, second=4.0, field="t", higher_is_better=False)
    assert t["ends"] == [(0.0, 2.0), (1.0, 4.0)] and not t["beats_candidates"]
    a = SftSpec(model="x", data=[DataSource(source="builtin:alpaca-mini")]).model_dump(mode="json")
    b = SftSpec(model="x", data=[DataSource(source="builtin:orca-mini", weight=0.5)], max_steps=9,
                lora={"r": 4}).model_dump(mode="json")
    diff = dict(tables.config_diff({"a": a, "b": b}))
    assert diff["max_steps"] == {"a": 30, "b": 9}
    assert diff["data[0].source"] == {"a": "builtin:alpaca-mini", "b": "builtin:orca-mini"}
    assert diff["lora.r"] == {"a": None, "b": 4}
    assert "model" not in diff and "learning_rate" not in diff


def test_runner_waits_for_several_jobs(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    fast = dict(max_steps=1, save_steps=1, eval_fraction=0.0, max_length=32, max_rows=4)
    a = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="a", **fast))
    bad = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="b", **fast))
    both = runner.submit(SftSpec(model="a", data=[DataSource(source="builtin:alpaca-mini")], name="c", **fast),
                         needs=[a.id, bad.id])
    assert runner.get(both.id).needs == [a.id, bad.id]
    with pytest.raises(ValueError, match="No job 999"):
        runner.submit(SftSpec(model="a", data=[DataSource(source="builtin:alpaca-mini")]), needs=[999])
    runner._update(a.id, status="succeeded")  # one of two done: still waiting
    runner._update(bad.id, status="running")
    assert runner._claim_next() is None
    runner._update(bad.id, status="failed")
    assert runner._claim_next() is None
    done = runner.get(both.id)
    assert done.status == "cancelled" and f"job {bad.id} it waited for failed" in done.message


# ---------------------------------------------------------------- through the real worker

def scores_of(model: str) -> dict[str, float]:
    return tables.latest_scores([model])[model]


def test_smoke_recipe_end_to_end_reuse_and_change(tiny_llama, monkeypatch):
    """The smoke recipe run whole, rerun unchanged (all reused), and rerun with a changed merge. Its first run is
    also `recipe run` again after Ctrl-C stopped an earlier one (a test of its own until session 21, which ran the
    same recipe whole once more): the stages behind the interrupted one are made anew."""
    # two slots: sft-a and sft-b need only the up-scaled model, and run side by side on the two cores (each job a
    # single-threaded start-up of torch and trl, most of its time); the Recipe page's browser test runs the same
    # recipe through the served worker, two at a time too (tests/test_browser_recipe.py)
    monkeypatch.setenv("DUS_JOB_SLOTS", "2")
    d = smoke(tiny_llama)
    # a first submission, stopped by Ctrl-C at its first stage, as runner._interrupt_running leaves it
    [p] = recipe.plan_text(text(d))
    queued = {r.stage: j for r, j in recipe.stages(recipe.submit(p, text(d))) if j}
    up = queued["upscaled"]
    runner._update(up.id, status="interrupted", message="interrupted: its worker was stopped (Ctrl-C)")
    [p2] = recipe.plan_text(text(d))
    assert {n.stage: n.status for n in p2.nodes if n.stage != "base"} == \
        {n.stage: "run" for n in p2.nodes if n.stage != "base"}  # was in-flight: the dead jobs behind job 1
    dead = sorted({j.id for s, j in queued.items() if s != "upscaled"})  # the evaluations share one job
    assert f"replaces queued jobs {', '.join(map(str, dead))}:" in "\n".join(p2.lines())  # `recipe plan` says so
    (db.models_dir() / p2.node("sft-a").output).mkdir(parents=True)  # a stray folder: this run is refused ...
    (db.models_dir() / p2.node("sft-a").output / "x").write_text("x")
    with pytest.raises(ValueError):
        recipe.submit(p2, text(d))
    assert {runner.get(i).status for i in dead} == {"queued"}  # ... and the jobs it would replace are as they were
    shutil.rmtree(db.models_dir() / p2.node("sft-a").output)
    t0 = time.time()
    [run1] = recipe.run_recipe(text(d), queue=False, plans=[p2])
    first = time.time() - t0
    rows = {r.stage: (r, j) for r, j in recipe.stages(run1)}
    for stage, (row, job) in rows.items():
        if stage != "base":
            assert job.status == "succeeded", (stage, job.error)
    assert {recipe.stage_state(r, j) for r, j in rows.values() if r.stage != "base"} == {"succeeded"}  # was: cancelled
    (ev,) = {j.id for r, j in rows.values() if r.kind == "eval"}
    # 5 models × (perplexity, word and byte perplexity, their bootstrap errors, bits per byte)
    assert runner.get(ev).result["scores"] == 35 and not runner.get(ev).result.get("skipped")
    assert {runner.get(i).status for i in dead} == {"cancelled"}  # replaced
    avg = registry.get(rows["avg"][0].output)
    assert avg.num_layers == 8 and avg.kind == "merged"
    assert avg.parents == [rows["sft-a"][0].output, rows["sft-b"][0].output]
    assert registry.get(rows["sft-a"][0].output).parents == [rows["upscaled"][0].output]
    for stage in ("base", "upscaled", "sft-a", "sft-b", "avg"):  # every model evaluated alike
        assert scores_of(rows[stage][0].output)["perplexity"] > 1
    # the merge table is filled from this run's rows
    merge = next(t for t in tables.run_tables(run1) if t.key == "merge")
    ppl = merge.columns.index("perplexity")
    assert merge.rows[0][0] == "Average (0.5, 0.5)" and merge.rows[0][ppl] == pytest.approx(
        scores_of(rows["avg"][0].output)["perplexity"]) and merge.rows[0][-1] == 74.00
    assert "sft-a" in graph.run_graph(run1) and "#9be39b" in graph.run_graph(run1)

    # unchanged: everything reused, no job queued
    n_jobs = len(runner.list_jobs(500))
    [p] = recipe.plan_text(text(d))
    assert {n.status for n in p.nodes} == {"given", "reuse"}, {n.stage: n.status for n in p.nodes}
    t0 = time.time()
    [run2] = recipe.run_recipe(text(d), queue=False)
    assert time.time() - t0 < first / 4 and len(runner.list_jobs(500)) == n_jobs
    assert all(r.reused for r, _ in recipe.stages(run2))

    # a changed merge reruns with its evaluation only
    d["stages"][2]["weights"] = [0.3, 0.7]
    [p] = recipe.plan_text(text(d))
    changed = sorted(n.stage for n in p.nodes if n.status == "run")
    assert changed == ["avg", "eval:avg"]
    [run3] = recipe.run_recipe(text(d), queue=False)
    new = {r.stage: (r, j) for r, j in recipe.stages(run3)}
    assert new["avg"][1].status == "succeeded" and new["avg"][0].output != rows["avg"][0].output
    assert new["sft-a"][0].reused and new["sft-a"][0].output == rows["sft-a"][0].output
    with pytest.raises(ValueError, match="would register .* again"):  # its name is taken by the rerun's model
        runner.resume(up.id)
    assert {runner.get(i).status for i in dead} == {"cancelled"}
    print(f"smoke recipe first run {first:.0f} s")


def test_failed_stage_cancels_downstream_and_the_run_resumes(tiny_llama, tmp_path):
    # smoke without sft-a (one SFT fewer: each job is a process that loads torch): upscaled -> sft-b -> avg, where
    # avg merges the up-scaled model with sft-b (equal depths). The up-scaling is the finished stage a resume reuses.
    bad = tmp_path / "chat.jsonl"
    bad.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    d = smoke(tiny_llama, eval=None)
    d["stages"] = d["stages"][1:]
    d["stages"][0]["data"] = [{"source": str(bad)}]
    d["stages"][1]["models"] = ["upscaled", "sft-b"]
    [p] = recipe.plan_text(text(d))
    run1 = recipe.submit(p, text(d))
    bad.write_text("this is not json\n")  # broken after queueing (both read it): the job itself fails
    runner.worker(once=True)
    rows = {r.stage: (r, j) for r, j in recipe.stages(run1)}
    assert rows["upscaled"][1].status == "succeeded"
    assert rows["sft-b"][1].status == "failed"
    avg_job = rows["avg"][1]
    assert avg_job.status == "cancelled" and f"job {rows['sft-b'][1].id} it waited for failed" in avg_job.message
    assert registry.get(rows["avg"][0].output) is None  # nothing ran on a missing model
    # fixed: the run resumes where it stopped — the finished stages are reused
    bad.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    [p2] = recipe.plan_text(text(d))
    assert {n.stage: n.status for n in p2.nodes} == {"base": "given", "upscaled": "reuse", "sft-b": "run",
                                                      "avg": "run"}
    [run2] = recipe.run_recipe(text(d), queue=False)
    rows2 = {r.stage: (r, j) for r, j in recipe.stages(run2)}
    assert rows2["avg"][1].status == "succeeded" and rows2["upscaled"][1].id == rows["upscaled"][1].id
    assert registry.get(rows2["avg"][0].output) is not None
    with db.session() as s:
        reused = s.exec(select(RecipeStage.stage).where(RecipeStage.run_id == run2, RecipeStage.reused)).all()
    assert sorted(reused) == ["base", "upscaled"]


# ---------------------------------------------------------------- experiment tracking

# (TensorBoard's test joined MLflow's and trackio's in tests/test_trackers.py: one training run for the three)


def test_recipe_page_plans_a_preset_and_shows_a_run(tiny_llama):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    assert not at.exception
    at.text_input(key="recipe_base").input(str(tiny_llama)).run()
    at.selectbox(key="recipe_preset").select("smoke").run()
    at.button(key="recipe_load").click().run()
    assert "name: smoke" in at.text_area(key="recipe_yaml").value
    at.button(key="recipe_plan").click().run()
    assert not at.exception and any("9 to run, 0 reused" in c.value for c in at.caption)
    # a bad edit is refused with the field named, nothing queued
    at.text_area(key="recipe_yaml").input(at.text_area(key="recipe_yaml").value.replace("m: 2", "m: 3")).run()
    at.button(key="recipe_run").click().run()
    assert any("upscale: m=3 is out of range" in e.value for e in at.error) and runner.list_jobs() == []
    at.text_area(key="recipe_yaml").input(at.text_area(key="recipe_yaml").value.replace("m: 3", "m: 2")).run()
    at.button(key="recipe_run").click().run()  # queued (no worker here): the graph and the stage list appear
    assert not at.exception and len(runner.list_jobs()) == 5
    assert at.get("graphviz_chart") and any("Submitted recipe run" in s.value for s in at.success)


def test_a_swept_merge_reads_back_as_a_surface(tiny_llama):
    d = smoke(tiny_llama)
    d["stages"][2]["weights"] = "0.0..1.0 step 0.5"
    [p] = recipe.plan_text(text(d))
    run_id = recipe.submit(p, text(d))  # queued only: the rows below stand in for the evaluations
    out = {n.stage: n.output for n in p.nodes}
    assert {"avg-w0", "avg-w0.5", "avg-w1"} <= set(out)
    acc = {"sft-a": 0.4, "sft-b": 0.5, "avg-w0": 0.5, "avg-w0.5": 0.7, "avg-w1": 0.4}
    with db.session() as s:
        s.add_all([EvalScore(model=out[k], task="synth-math", metric="accuracy", value=v) for k, v in acc.items()])
        s.commit()
    [surf] = surface.run_surfaces(run_id, "synth-math accuracy")
    assert surf["group"] == "avg" and surf["field"] == "weight"
    assert surf["x"] == [0.0, 0.5, 1.0] and surf["y"] == [0.5, 0.7, 0.4]
    assert surf["ends"] == [(1.0, 0.4), (0.0, 0.5)] and surf["best"] == (0.5, 0.7) and surf["beats_candidates"]


def test_cancel_a_run_cancels_the_rest(tiny_llama):
    [p] = recipe.plan_text(text(smoke(tiny_llama)))
    run_id = recipe.submit(p, text(smoke(tiny_llama)))
    jobs = [j for _, j in recipe.stages(run_id) if j]
    runner._update(jobs[0].id, status="succeeded")  # the up-scaling already done: it stays done
    cancelled = recipe.cancel_run(run_id)
    assert sorted(cancelled) == sorted({j.id for j in jobs[1:]})
    states = {r.stage: j.status for r, j in recipe.stages(run_id) if j}
    assert states["upscaled"] == "succeeded" and {states[s] for s in states if s != "upscaled"} == {"cancelled"}
    assert runner._claim_next() is None  # nothing left to run


def test_a_stage_refused_at_submission_queues_no_stage_of_the_recipe(tiny_llama, monkeypatch):
    """runner.submit refuses what the registry shows would fail (check_before_queueing); in a recipe that refusal
    came at the stage it reached, after the stages before it were queued."""
    from storage.models import RecipeRun

    [p] = recipe.plan_text(text(smoke(tiny_llama)))
    last = [n for n in p.nodes if n.status == "run" and n.spec is not None][-1]

    def refuse(spec, coming=()):
        if spec is last.spec:
            raise ValueError("refused")
    monkeypatch.setattr(runner, "check_before_queueing", refuse)
    monkeypatch.setattr(runner.queue, "check_before_queueing", refuse)  # submit's own check
    with pytest.raises(ValueError, match="refused"):
        recipe.submit(p, text(smoke(tiny_llama)))
    with db.session() as s:
        assert not s.exec(select(Job)).all() and not s.exec(select(RecipeRun)).all()
