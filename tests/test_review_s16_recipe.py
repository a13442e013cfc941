"""Session 16 review of the recipe machinery (backend/recipe/plan.py, spec.py, tables.py): a synth-math stage's
files in its hash, the budget on its seeds, sweep points named alike, and tables that say when their scores were
not measured alike."""

from __future__ import annotations

import pytest
import yaml

from backend import recipe
from backend.recipe import tables
from backend.recipe.spec import RecipeError, load_recipe
from storage import db
from storage.models import EvalScore


def _with_math(base, seeds, bench, budget=None) -> str:
    d = yaml.safe_load(recipe.preset("smoke", str(base)))
    d["stages"].insert(0, {"name": "math", "kind": "synth-math", "seeds": str(seeds), "benchmark": str(bench),
                           "num_seeds": 50})
    d["stages"][1]["data"].append({"source": "stage:math/instruct"})
    if budget:
        d["budget"] = budget
    return yaml.safe_dump(d, sort_keys=False)


def _hashes(text: str) -> dict[str, str]:
    [p] = recipe.plan_text(text)
    return {n.stage: n.hash for n in p.nodes}


def test_a_synth_math_stage_hashes_its_seeds_and_benchmark_files(tiny_llama, tmp_path):
    seeds, bench = tmp_path / "seeds.jsonl", tmp_path / "bench.jsonl"
    seeds.write_text('{"question": "What is 2+3?", "answer": "5"}\n')
    bench.write_text('{"question": "What is 7+8?", "answer": "15"}\n')
    first = _hashes(_with_math(tiny_llama, seeds, bench))
    seeds.write_text('{"question": "What is 9+9?", "answer": "18"}\n')  # other problems: other synthetic data
    second = _hashes(_with_math(tiny_llama, seeds, bench))
    assert second["math"] != first["math"] and second["sft-a"] != first["sft-a"]  # and what trains on it reruns
    assert second["sft-b"] == first["sft-b"] and second["upscaled"] == first["upscaled"]  # nothing else does
    bench.write_text('{"question": "What is 1+1?", "answer": "2"}\n')  # another contamination check
    third = _hashes(_with_math(tiny_llama, seeds, bench))
    assert third["math"] != second["math"] and third["sft-b"] == second["sft-b"]
    assert _hashes(_with_math(tiny_llama, seeds, bench)) == third  # unchanged files: reused as before
    seeds.unlink()
    with pytest.raises(RecipeError, match=r"stage math\.seeds: file .*seeds\.jsonl does not exist"):
        recipe.plan_text(_with_math(tiny_llama, seeds, bench))


def test_the_generator_synth_stage_keeps_its_hash(tiny_llama):
    """No file and the rules rephraser: nothing is added to the hash (a model made before is still reused)."""
    from backend.recipe.plan import _sha

    d = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    d["stages"].insert(0, {"name": "math", "kind": "synth-math", "num_seeds": 30})
    [p] = recipe.plan_text(yaml.safe_dump(d))
    n = p.node("math")
    assert n.hash == _sha(["synth-math", {"name": "math", "kind": "synth-math", "num_seeds": 30}, [], {}, {}])


def test_the_budget_caps_a_synth_math_stage_s_seeds(tiny_llama, tmp_path):
    seeds, bench = tmp_path / "seeds.jsonl", tmp_path / "bench.jsonl"
    seeds.write_text('{"question": "What is 2+3?", "answer": "5"}\n')
    bench.write_text("What is 7+8?\n")
    [p] = recipe.plan_text(_with_math(tiny_llama, seeds, bench, {"max_rows": 5}))
    assert p.node("math").spec.num_seeds == 5 and p.node("sft-a").spec.max_rows == 5
    [p] = recipe.plan_text(_with_math(tiny_llama, seeds, bench, {"max_rows": 500}))
    assert p.node("math").spec.num_seeds == 50  # a cap, never a raise
    [p] = recipe.plan_text(_with_math(tiny_llama, seeds, bench))
    assert p.node("math").spec.num_seeds == 50


_SFT = {"kind": "sft", "model": "base", "data": [{"source": "builtin:alpaca-mini"}]}


def _recipe(stages: list[dict]) -> str:
    return yaml.safe_dump({"kind": "recipe", "name": "r", "base": "x", "upscale": None, "eval": None,
                           "stages": stages})


@pytest.mark.parametrize("stages, words", [
    ([{"name": "sft", **_SFT, "sweep": {"seed": [1]}}, {"name": "sft-seed1", **_SFT}],
     "stages sft and sft-seed1 are both named 'sft-seed1'"),
    ([{"name": "sft", **_SFT, "sweep": {"learning_rate": [2e-5, 2.0000001e-5]}}],
     "stage sft: two of its sweep points are named 'sft-learning_rate2e-05'"),
])
def test_sweep_points_named_alike_are_refused(stages, words):
    with pytest.raises(RecipeError, match=words.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(_recipe(stages))


def test_distinct_sweep_points_still_load():
    r = load_recipe(_recipe([{"name": "sft", **_SFT, "sweep": {"learning_rate": [1e-5, 2e-5]}},
                             {"name": "sft-seed1", **_SFT}]))
    assert len(r.stages) == 2


STAGES = [{"stage": "sft-v1", "kind": "sft", "output": "r-sft-v1-aaaa", "label": "SFT v1", "tables": ["sft"],
           "sources": ["builtin:alpaca-mini"], "from": ["cpt"]},
          {"stage": "sft-v2", "kind": "sft", "output": "r-sft-v2-bbbb", "label": "SFT v2", "tables": ["sft"],
           "sources": ["builtin:alpaca-mini"], "from": ["cpt"]}]


def _score(model: str, n: int, tokens: int, run: str) -> EvalScore:
    return EvalScore(model=model, task="synth-math", metric="accuracy", value=0.5, n=n, run=run,
                     details={"settings": {"limit": n, "max_new_tokens": tokens, "decoding": "greedy"}})


def test_a_paper_table_says_when_its_scores_were_not_measured_alike():
    with db.session() as s:  # the recipe's evaluation: 12 items, 48 tokens; sft-v2 evaluated again on Compare
        s.add(_score("r-sft-v1-aaaa", 12, 48, "a"))
        s.add(_score("r-sft-v2-bbbb", 12, 48, "b"))
        s.add(_score("r-sft-v2-bbbb", 40, 96, "c"))
        s.commit()
    [t] = [t for t in tables.run_tables_from(STAGES) if t.key == "sft"]
    assert [row[3:5] for row in t.rows] == [["✓", 0.5], ["✓", 0.5]]
    assert t.notes[0] == ("Not measured alike — synth-math: items 12 (SFT v1), 40 (SFT v2); max_new_tokens 48 "
                          "(SFT v1), 96 (SFT v2). These scores are not like for like; evaluate the models with the "
                          "same settings (the recipe's own evaluation does) before comparing them.")
    assert t.notes[0] in tables.to_markdown(t)


def test_a_paper_table_measured_alike_has_no_such_note():
    with db.session() as s:  # limit 40 and 12 on a 12-item set: the same items, the same measurement
        s.add(_score("r-sft-v1-aaaa", 12, 48, "a"))
        s.add(EvalScore(model="r-sft-v2-bbbb", task="synth-math", metric="accuracy", value=0.5, n=12, run="b",
                        details={"settings": {"limit": 40, "max_new_tokens": 48, "decoding": "greedy"}}))
        s.commit()
    [t] = [t for t in tables.run_tables_from(STAGES) if t.key == "sft"]
    assert not any(n.startswith("Not measured alike") for n in t.notes)


def _evals(base, budget=None):
    d = yaml.safe_load(recipe.preset("smoke", str(base)))
    d["eval"] = {"tasks": ["perplexity"]}  # limit: its default, 40
    d["stages"].append({"name": "ev", "kind": "eval", "models": ["avg"], "tasks": ["perplexity"]})
    if budget:
        d["budget"] = budget
    [p] = recipe.plan_text(yaml.safe_dump(d))
    return p


def test_a_budget_cap_that_lowers_nothing_reruns_nothing(tiny_llama):
    plain, loose, tight = _evals(tiny_llama), _evals(tiny_llama, {"eval_limit": 100}), \
        _evals(tiny_llama, {"eval_limit": 5})
    for st in ("eval:sft-a", "ev"):
        assert loose.node(st).spec.limit == plain.node(st).spec.limit == 40
        assert loose.node(st).hash == plain.node(st).hash  # nothing changed: the evaluation is reused
        assert tight.node(st).spec.limit == 5 and tight.node(st).hash != plain.node(st).hash


def test_a_failed_stage_reads_failed_and_its_blank_row_says_why():
    from storage.models import Job, RecipeRun, RecipeStage

    with db.session() as s:
        run = RecipeRun(name="r")
        ok, bad = Job(kind="sft", status="succeeded"), Job(kind="sft", status="failed", error="out of memory")
        s.add_all([run, ok, bad])
        s.commit()
        for st, job in zip(STAGES, (ok, bad)):
            s.add(RecipeStage(run_id=run.id, recipe="r", stage=st["stage"], kind="sft", output=st["output"],
                              hash=st["stage"], job_id=job.id, info={**st, "status": "run"}))
        s.add(_score("r-sft-v1-aaaa", 12, 48, "a"))
        s.commit()
        run_id, bad_id = run.id, bad.id
    assert [d["status"] for d in tables.stage_dicts(run_id)] == ["succeeded", "failed"]  # not the plan's "run"
    [t] = [t for t in tables.run_tables(run_id) if t.key == "sft"]
    assert [row[4:] for row in t.rows] == [[0.5, 0.1508, 69.15], [None, None, 69.21]]  # the score ± its error
    assert t.notes[0] == f"No model, so no scores: SFT v2 (sft-v2: failed, job {bad_id}). Run the recipe again to make it."
