"""`recipe plan` reads every training stage's data as its job will, before anything is queued: the recipe's own
synthetic data (stage:X/instruct|alignment, checked from the columns its synth-math stage writes) and registered
data sets and mixes (read from their files), not only built-ins and local files. A stage of the wrong data ran the
up-scale and the stages before it, then failed, leaving the ones after it waiting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from backend import data, recipe
from backend.recipe.plan import SYNTH_PARTS
from backend.recipe.spec import RecipeError
from backend.specs import SynthMathSpec
from backend.synth import pipeline
from storage import db
from storage.models import Job, RecipeRun

TINY = dict(max_steps=2, save_steps=2, eval_fraction=0.0, max_length=32, max_rows=8, batch_size=2)
CHAT = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                      {"role": "assistant", "content": str(i + 1)}]} for i in range(4)]
PREFS = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i)} for i in range(4)]


def recipe_text(base: Path, *stages: dict) -> str:
    """The smoke preset on the tiny model, with a synth-math stage and `stages` added."""
    d = yaml.safe_load(recipe.preset("smoke", str(base)))
    d["stages"] += [{"name": "synth", "kind": "synth-math", "num_seeds": 6}, *stages]
    return yaml.safe_dump(d, sort_keys=False)


def stage(kind: str, source: str, name: str = "tune") -> dict:
    return {"name": name, "kind": kind, "model": "sft-a", "data": [{"source": source}], **TINY}


def register(workspace: Path, name: str, rows: list[dict], kind: str) -> None:
    path = workspace / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline.save_dataset(name, kind, str(path), len(rows), {})


def refused(text: str) -> str:
    """The refusal of `recipe run`, after checking that it queued nothing and recorded no run."""
    with pytest.raises(RecipeError) as err:
        recipe.run_recipe(text)
    with db.session() as s:
        assert s.exec(select(Job)).all() == []
        assert s.exec(select(RecipeRun)).all() == []
    return str(err.value)


@pytest.mark.parametrize("kind, part, instead", [
    ("dpo", "instruct", "Use stage:synth/alignment (Synth. Math-Alignment) instead."),
    ("cpt", "alignment", "Use stage:synth/instruct (Synth. Math-Instruct) instead."),
])
def test_synthetic_part_of_the_wrong_layout_is_refused_at_plan(tiny_llama, kind, part, instead):
    msg = refused(recipe_text(tiny_llama, stage(kind, f"stage:synth/{part}")))
    assert msg.startswith(f"stage tune.data[0].source: stage:synth/{part} is ")
    assert f"which a {kind} stage cannot train on" in msg
    assert f"usable for {kind}" in msg  # data.detect_layout's reason: what the stage kind expects
    assert msg.endswith(instead)


@pytest.mark.parametrize("kind, part", [("dpo", "alignment"), ("sft", "instruct"), ("sft", "alignment"),
                                        ("cpt", "instruct")])
def test_synthetic_part_of_a_fitting_layout_plans(tiny_llama, kind, part):
    [p] = recipe.plan_text(recipe_text(tiny_llama, stage(kind, f"stage:synth/{part}")))
    node = p.node("tune")
    assert node.status == "run" and node.deps == ["sft-a", "synth"]
    assert [d.source for d in node.spec.data] == [f"dataset:{p.node('synth').output}-{part}"]


def test_synthetic_columns_are_those_the_synth_stage_writes(workspace):
    """The plan's table of columns is what export() writes: a change there must change the plan's check."""
    made = pipeline.run_synth_math(SynthMathSpec(name="cols", out=str(workspace / "cols"), num_seeds=6))
    for part in ("instruct", "alignment"):
        ds = data.load_source(f"dataset:{made[part]}")
        assert sorted(ds.column_names) == sorted(SYNTH_PARTS[part][1])


def test_registered_set_of_the_wrong_layout_is_refused_at_plan(tiny_llama, workspace):
    register(workspace, "chat", CHAT, "sft")
    msg = refused(recipe_text(tiny_llama, stage("dpo", "dataset:chat")))
    assert msg.startswith("stage tune.data[0].source: dataset:chat: Columns ['messages'] fit no layout usable for "
                          "dpo. Expected one of — preference: chosen, rejected (missing chosen, rejected).")


def test_registered_set_with_a_bad_row_is_refused_at_plan(tiny_llama, workspace):
    register(workspace, "broken", [{"messages": "not a list of turns"}], "sft")
    msg = refused(recipe_text(tiny_llama, stage("sft", "dataset:broken")))
    assert msg.startswith("stage tune.data[0].source: dataset:broken, row 1: ")


def test_mix_of_a_source_of_the_wrong_layout_is_refused_at_plan(tiny_llama, workspace):
    register(workspace, "chat", CHAT, "sft")
    pipeline.save_mix("chat-mix", [("builtin:alpaca-mini", 1.0), ("dataset:chat", 2.0)], "sft")
    msg = refused(recipe_text(tiny_llama, stage("dpo", "mix:chat-mix")))
    # the mix's first source is named: the job expands it and reads each alike (training.check_inputs)
    assert msg.startswith("stage tune.data[0].source: builtin:alpaca-mini: Columns ")
    assert "fit no layout usable for dpo" in msg


def test_registered_set_and_mix_of_a_fitting_layout_plan(tiny_llama, workspace):
    register(workspace, "prefs", PREFS, "dpo")
    pipeline.save_mix("prefs-mix", [("dataset:prefs", 1.0), ("builtin:prefs-mini", 0.5)], "dpo")
    [p] = recipe.plan_text(recipe_text(tiny_llama, stage("dpo", "dataset:prefs"),
                                       stage("dpo", "mix:prefs-mix", name="tune-mix")))
    assert [d.source for d in p.node("tune").spec.data] == ["dataset:prefs"]
    assert [d.source for d in p.node("tune-mix").spec.data] == ["mix:prefs-mix"]
    assert p.node("tune").status == p.node("tune-mix").status == "run"
