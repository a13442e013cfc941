"""Review 21 of recipes: caps on what a sweep plans, a Run cut off halfway still cancellable, merges checked at plan
time by shape, a registered stage model without weights not reused, the graph's outside merge inputs, and the
per-model states of the one evaluation job."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend import recipe, registry, runner
from backend.recipe.spec import MAX_STAGES, MAX_SWEEP_POINTS, RecipeError, load_recipe
from storage import db
from storage.models import Job
from tests.recipe_rows import cut_off_run
from tests.test_recipe import smoke, text


# ---------------------------------------------------------------- 1. caps, and a Run cut off halfway

def test_a_typo_in_a_sweep_step_is_refused_naming_the_sweep_and_its_count(tiny_llama):
    d = smoke(tiny_llama)
    d["stages"][2]["weights"] = "0.0..1.0 step 0.001"  # meant 0.1
    with pytest.raises(RecipeError, match=r"stage avg\.weights: '0\.0\.\.1\.0 step 0\.001' is a sweep of 1,001 "
                                          rf"points; one sweep may plan at most {MAX_SWEEP_POINTS}"):
        load_recipe(text(d))
    d["stages"][2]["weights"] = "0.0..1.0 step 0.000000000001"  # refused before a trillion values are made
    with pytest.raises(RecipeError, match="1,000,000,000,001 points"):
        load_recipe(text(d))
    d["stages"][2]["weights"] = "0.0..1.0 step 0.01"  # the finest allowed: 101 points
    assert len(recipe.plan_text(text(d))[0].nodes) > 101
    # two swept fields allowed each, too many together (51 × 4, and the two other stages)
    d["stages"][2]["weights"] = [0.5, 0.5]
    d["stages"][0]["sweep"] = {"learning_rate": "0.0001..0.0051 step 0.0001", "max_steps": [1, 2, 3, 4]}
    with pytest.raises(RecipeError, match=rf"the sweeps make 206 stages \(sft-a \(204\)\); a recipe "
                                          rf"may plan at most {MAX_STAGES}"):
        load_recipe(text(d))


def test_a_sweep_of_m_counts_every_run(tiny_llama):
    d = smoke(tiny_llama)
    d["upscale"]["m"] = list(range(1, 81))
    d["stages"][2]["weights"] = "0.0..1.0 step 0.5"  # 5 stages a run
    with pytest.raises(RecipeError, match=r"upscale\.m: 80 runs of 5 stages each make 400 stages"):
        recipe.plan_text(text(d))


def test_a_run_cut_off_halfway_records_and_cancels_every_job_it_queued(tiny_llama, monkeypatch):
    """A Run killed after queueing some jobs: the run's rows name them (the page and `recipe runs` show them), and
    cancel_run cancels them; before, the rows were written only at the end, and cancel found none."""
    d, run, made = cut_off_run(tiny_llama, monkeypatch)
    [p] = recipe.plan_text(text(d))  # the plan the Run wrote its rows from
    rows = recipe.stages(run.id)
    assert len(rows) == len(p.nodes)  # every stage's row, written before the first job
    assert sorted(j.id for _, j in rows if j) == made
    assert sorted(recipe.cancellable(run.id)) == made
    assert sorted(recipe.cancel_run(run.id)) == made
    with db.session() as s:
        assert {s.get(Job, j).status for j in made} == {"cancelled"}
    # the stages never queued plan as "run" again
    [q] = recipe.plan_text(text(d))
    assert {n.stage for n in q.nodes if n.status == "run"} >= {"sft-b", "avg"}


# ---------------------------------------------------------------- 2. a merge checked by shape at plan time

def test_a_ties_merge_with_the_base_of_another_depth_is_refused_at_plan_time(tiny_llama):
    d = smoke(tiny_llama)
    d["stages"][2].update(method="ties", base="base")  # candidates up-scaled to 8 layers, the base has 6
    with pytest.raises(RecipeError, match=r"stage avg\.base: sft-a and base cannot be merged: .*\(8 vs 6 layers\)"):
        recipe.plan_text(text(d))


def test_a_merge_with_a_registered_model_of_another_width_is_refused_at_plan_time(tiny_llama, tokenizer_dir,
                                                                                   tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import _save, make_llama

    cfg = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=8,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    registry.register(_save(LlamaForCausalLM(cfg), tokenizer_dir, tmp_path / "narrow"), "narrow", "import")
    d = smoke(tiny_llama)
    d["stages"][2]["models"] = ["sft-a", "narrow"]  # 8 layers each, 32 wide vs 16
    with pytest.raises(RecipeError, match=r"stage avg\.models: sft-a and narrow cannot be merged: .*hidden_size: "
                                          r"32 vs 16"):
        recipe.plan_text(text(d))
    # the same merge with a model of its shape plans
    registry.register(make_llama(tokenizer_dir, tmp_path / "eight", layers=8), "same", "import")
    d["stages"][2]["models"] = ["sft-a", "same"]
    [p] = recipe.plan_text(text(d))
    assert p.node("avg").depth == 8 and p.node("avg").status == "run"


# ---------------------------------------------------------------- 3. a registered stage model without weights

def test_a_stage_model_whose_weights_are_gone_is_not_reused(tiny_llama, tmp_path):
    import shutil

    d = smoke(tiny_llama)
    [p] = recipe.plan_text(text(d))
    name = p.node("upscaled").output  # made earlier: registered, then its weights file deleted
    shutil.copytree(tiny_llama, tmp_path / "made")
    registry.register(tmp_path / "made", name, "upscale")
    [q] = recipe.plan_text(text(d))
    assert q.node("upscaled").status == "reuse"
    (tmp_path / "made" / "model.safetensors").unlink()
    with pytest.raises(RecipeError, match=rf"stage upscaled: its model '{name}' is registered, but No safetensors "
                                          rf"weights in .*python -m backend models delete {name}`\), then plan"):
        recipe.plan_text(text(d))
    registry.delete(name)  # as the message says: then the stage plans to run again
    [q] = recipe.plan_text(text(d))
    assert q.node("upscaled").status == "run"


# ---------------------------------------------------------------- 4. the plan graph shows a registered merge input

def test_the_plan_graph_shows_a_registered_model_merged_in(tiny_llama, tokenizer_dir, tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import make_llama

    registry.register(make_llama(tokenizer_dir, tmp_path / "eight", layers=8), "same", "import")
    d = smoke(tiny_llama)
    d["stages"][2]["models"] = ["sft-a", "same"]
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    at.text_area(key="recipe_yaml").input(text(d)).run()
    at.button(key="recipe_plan").click().run()
    assert not at.exception
    [dot] = [g.proto.spec for g in at.get("graphviz_chart")]
    assert '"same" -> "avg";' in dot and '"sft-a" -> "avg";' in dot
    assert '"same" [label="same\\nmodel · given"' in dot  # its own box, as the base's


# ---------------------------------------------------------------- 5. each model's state inside the one evaluation job

def test_eval_stages_follow_the_scores_their_running_job_stored(tiny_llama, tmp_path):
    import shutil

    from storage.models import EvalScore

    d = smoke(tiny_llama)
    [p] = recipe.plan_text(text(d))
    run_id = recipe.submit(p, text(d))
    rows = {r.stage: (r, j) for r, j in recipe.stages(run_id)}
    for stage in ("upscaled", "sft-a", "avg"):  # made (sft-b's job failed: the evaluation leaves it out)
        shutil.copytree(tiny_llama, tmp_path / stage)
        registry.register(tmp_path / stage, p.node(stage).output, "upscale")
    job = rows["eval:base"][1]
    runner._update(job.id, status="running")
    with db.session() as s:  # the base and the up-scaled model scored so far
        s.add_all([EvalScore(job_id=job.id, model=m, task="perplexity", metric="perplexity", value=9.0)
                   for m in (str(tiny_llama), p.node("upscaled").output)])
        s.commit()
    states = {r.stage: recipe.stage_state(r, j) for r, j in recipe.stages(run_id) if r.kind == "eval"}
    assert states == {"eval:base": "succeeded", "eval:upscaled": "succeeded", "eval:sft-a": "running",
                      "eval:sft-b": "skipped", "eval:avg": "queued"}
