"""What the pages did not say (walk11 findings 4–6): the Recipe plan table showed no stage's label, data or size
after the budget, so the SFT ablations looked identical and a budget changed only hashes, and the budget knob was in
no preset; the Train page never named `mix:NAME` / `dataset:NAME`; the Monitor's recovery chart called a share split
off the training data "held-out loss", which reads as recovery after a few steps."""

from __future__ import annotations

import json

import pytest
import yaml

from backend import heldout, recipe, registry, runner
from backend.recipe.spec import Budget, load_recipe
from backend.specs import CptSpec, DataSource
from backend.synth import pipeline
from storage import db
from storage.models import JobMetric
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. the plan table: label, data and the budgeted size of every stage ------------------------------------------

def test_plan_table_shows_each_stages_label_data_and_size_after_the_budget(tiny_llama):
    d = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    d["stages"][1]["data"][1]["weight"] = 2.0  # sft-b: orca twice
    d["budget"] = {"max_steps": 1, "max_rows": 5, "eval_limit": 3}  # the stages ask for 2 steps, 8 rows, 4 items
    at = app("recipe.py")
    assert any("`budget: {steps_scale, max_steps, max_rows, eval_limit}`" in c.value for c in at.caption)
    at.text_area(key="recipe_yaml").input(yaml.safe_dump(d, sort_keys=False)).run()
    at.button(key="recipe_plan").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    table = next(df.value for df in at.dataframe if "stage" in df.value.columns).set_index("stage")
    assert list(table.columns[:6]) == ["label", "kind", "status", "data", "steps", "rows"]
    got = {s: table.loc[s, ["label", "data", "steps", "rows"]].tolist() for s in ("sft-a", "sft-b")}
    assert got == {"sft-a": ["SFT v1", "builtin:alpaca-mini", 1, "5"],
                   "sft-b": ["SFT v2", "builtin:alpaca-mini + builtin:orca-mini ×2", 1, "5"]}
    assert table.loc["avg", "label"] == "Average (0.5, 0.5)" and table.loc["avg", "data"] == ""
    assert set(table.loc[[s for s in table.index if s.startswith("eval:")], "rows"]) == {"3 per task"}


# ---- 1b. the presets show the budget knob and plan as they did ----------------------------------------------------

@pytest.mark.parametrize("name", recipe.PRESETS)
def test_every_preset_ends_with_a_commented_budget_block_at_its_defaults(name, tiny_llama):
    text = recipe.preset(name, str(tiny_llama) if name == "smoke" else None)
    block = text[text.index("budget:"):]
    for field, info in Budget.model_fields.items():
        assert f"  {field}: {json.dumps(info.default)}" in block and f"# {info.description}" in block
    assert yaml.safe_load(text)["budget"] == {"steps_scale": 1.0, "max_steps": None, "max_rows": None,
                                              "eval_limit": None}
    assert load_recipe(text).budget == Budget()


@pytest.mark.parametrize("name", ["smoke", "solar-mini"])
def test_a_preset_with_its_budget_block_plans_the_same_stages_and_hashes_as_without(name, tiny_llama):
    text = recipe.preset(name, str(tiny_llama), 2)
    bare = yaml.safe_load(text)
    del bare["budget"]
    [with_block] = recipe.plan_text(text)
    [without] = recipe.plan_text(yaml.safe_dump(bare, sort_keys=False))
    assert [(n.stage, n.hash) for n in with_block.nodes] == [(n.stage, n.hash) for n in without.nodes]


# ---- 2. the Train page names mix:NAME and dataset:NAME and lists the saved ones of the job's kind -----------------

def test_train_data_caption_names_the_mix_and_dataset_forms_and_the_saved_ones_of_the_kind(tiny):
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    assert any(c.value.endswith("Saved for sft: none yet (Synthetic math page).") for c in at.caption)

    pipeline.save_mix("sft-v1", [("builtin:alpaca-mini", 1.0)], "sft")
    pipeline.save_mix("dpo-v1", [("builtin:prefs-mini", 1.0)], "dpo")
    pipeline.save_dataset("held", "sft", str(heldout.eval_path("heldout-text")), 10, {"from": "test"})
    at.run()
    (caption,) = [c.value for c in at.caption if c.value.startswith("Sources: ")]
    assert "`mix:NAME` (a saved weighted mix" in caption and "`dataset:NAME` (a registered data set)" in caption
    assert caption.endswith("Saved for sft: mixes: `mix:sft-v1`; data sets: `dataset:held`.")
    at.radio(key="kind").set_value("dpo").run()
    (caption,) = [c.value for c in at.caption if c.value.startswith("Sources: ")]
    assert caption.endswith("Saved for dpo: mixes: `mix:dpo-v1`.")


# ---- 3. the Monitor's recovery chart names its held-out set ---------------------------------------------------------

def test_monitor_recovery_names_the_split_of_the_training_data_or_the_given_held_out_set(tiny):
    text = str(heldout.eval_path("heldout-text"))
    split = runner.submit(CptSpec(model="tiny", name="up-split", eval_fraction=0.2,
                                  data=[DataSource(source="builtin:facts-corpus")]))
    given = runner.submit(CptSpec(model="tiny", name="up-given", data=[DataSource(source="builtin:facts-corpus")],
                                  eval_data=DataSource(source=text)))
    with db.session() as s:
        s.add_all(JobMetric(job_id=j.id, step=step, name=name, value=value) for j in (split, given)
                  for step, name, value in [(0, "reference_eval_loss", 4.0), (0, "eval_loss", 6.0),
                                            (3, "eval_loss", 3.5)])
        s.commit()
    at = app("monitor.py")
    at.multiselect(key="monitor_jobs").set_value([split.id, given.id]).run()
    assert not at.exception, at.exception
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    subtitle = {j.id: next(c for k, c in charts.items() if f"recovery_{j.id}" in k)["layout"]["title"]["subtitle"]
                ["text"] for j in (split, given)}
    assert subtitle[split.id] == "held-out: 20 % of the training data (builtin:facts-corpus); dashed: base model"
    assert subtitle[given.id].startswith("held-out: ") and "(the job's eval_data); dashed: base model" in \
        subtitle[given.id] and "heldout-text.txt" in subtitle[given.id]
    notes = [c.value for c in at.caption if c.value.startswith("Held-out loss on ")]
    assert notes[0].startswith("Held-out loss on 20 % of builtin:facts-corpus, split off the data this job trains")
    assert notes[1].startswith(f"Held-out loss on {text}, the held-out set the job was given")
    assert all("Merge & compare → Evaluate, task perplexity" in n for n in notes)


def test_recipe_recovery_tab_names_its_held_out_set_as_the_monitor_does(tiny_llama):
    """The Recipe page's Recovery tab drew the same chart under the bare "held-out loss" the Monitor had."""
    d = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    d["stages"].insert(0, {"name": "cpt", "kind": "cpt", "model": "upscaled", "eval_fraction": 0.2, "max_steps": 2,
                           "data": [{"source": "builtin:facts-corpus"}]})
    for st in d["stages"][1:3]:
        st["model"] = "cpt"
    [run_id] = recipe.run_recipe(yaml.safe_dump(d, sort_keys=False))  # queued only: the rows below stand in
    (cpt,) = [j for r, j in recipe.stages(run_id) if r.kind == "cpt"]
    with db.session() as s:
        s.add_all(JobMetric(job_id=cpt.id, step=step, name=name, value=value)
                  for step, name, value in [(0, "reference_eval_loss", 4.0), (0, "eval_loss", 6.0),
                                            (2, "eval_loss", 3.5)])
        s.commit()
    at = app("recipe.py")
    assert not at.exception, at.exception
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if f"recovery_{cpt.id}" in c.proto.id)
    assert chart["layout"]["title"]["subtitle"]["text"] == ("held-out: 20 % of the training data "
                                                            "(builtin:facts-corpus); dashed: base model")
    assert any(c.value.startswith("Held-out loss on 20 % of builtin:facts-corpus, split off") for c in at.caption)
