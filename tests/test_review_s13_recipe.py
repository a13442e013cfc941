"""The recipe's proven errors (review findings 1, 2, 3, 9, 11; backend/recipe/plan.py, tables.py, pages/recipe.py):
a stage's hash missed an input, so a changed input reused the stale model or score — a `mix:NAME` source's data,
the up-scale's `second` model, an evaluation task's file or set; the merge surface assumed every sweep was over
weights or t (KeyError 'weight' for a TIES density sweep); the paper tables dropped the training-overlap record the
Compare page shows. Each test fails without its fix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from backend import recipe, registry
from backend.recipe import surface, tables
from backend.recipe.spec import expand_stages
from backend.synth import pipeline
from storage import db
from storage.models import EvalScore, Job, RecipeStage
from tests.conftest import make_llama
from tests.recipe_rows import two_candidate_run


def text(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def plan_of(d: dict):
    [p] = recipe.plan_text(text(d))
    return p


def one_stage(base: Path, source: str) -> dict:
    return {"kind": "recipe", "name": "r", "base": str(base), "eval": None, "stages": [
        {"name": "sft", "kind": "sft", "model": "base", "data": [{"source": source}], "max_steps": 1}]}


def succeeded(node) -> None:
    """What a finished evaluation leaves behind: a succeeded job recorded for the stage's hash."""
    with db.session() as s:
        j = Job(kind="eval", spec={}, status="succeeded")
        s.add(j)
        s.commit()
        s.refresh(j)
        s.add(RecipeStage(run_id=1, recipe="r", stage=node.stage, kind="eval", output="", hash=node.hash, job_id=j.id,
                          reused=False, info={}))
        s.commit()


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- 1: a mix's members are fingerprinted

def test_a_mix_sources_content_is_in_the_stage_hash(tiny_llama, workspace):
    f = workspace / "my_sft.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    write_rows(f, [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(6)])
    pipeline.save_mix("my-mix", [(str(f), 1.0)], "sft")
    d = one_stage(tiny_llama, "mix:my-mix")
    first = plan_of(d).node("sft")
    again = plan_of(d).node("sft")
    assert again.hash == first.hash and again.output == first.output  # nothing changed: the same model
    registry.register(tiny_llama, first.output, "trained")  # the stage ran
    assert plan_of(d).node("sft").status == "reuse"
    write_rows(f, [{"instruction": f"Spell {i} backwards.", "output": "nope"} for i in range(50)])
    after = plan_of(d).node("sft")
    assert after.hash != first.hash and after.output != first.output
    assert after.status == "run"


def test_a_mix_of_a_mix_is_fingerprinted_through(tiny_llama, workspace):
    f = workspace / "inner.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    write_rows(f, [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(4)])
    pipeline.save_mix("inner", [(str(f), 1.0)], "sft")
    pipeline.save_mix("outer", [("mix:inner", 1.0), ("builtin:alpaca-mini", 0.5)], "sft")
    d = one_stage(tiny_llama, "mix:outer")
    h = plan_of(d).node("sft").hash
    assert plan_of(d).node("sft").hash == h
    write_rows(f, [{"instruction": f"Say {i} twice.", "output": f"{i} {i}"} for i in range(4)])
    assert plan_of(d).node("sft").hash != h


def test_a_mix_that_names_itself_is_refused_not_recursed(tiny_llama, workspace):
    """A cycle cannot be saved through save_mix (each source is read first), but a record edited in the database
    must not recurse forever at plan time."""
    pipeline.save_mix("loop", [("builtin:alpaca-mini", 1.0)], "sft")
    from sqlmodel import select

    from storage.models import DatasetRecord

    with db.session() as s:
        rec = s.exec(select(DatasetRecord).where(DatasetRecord.name == "loop")).one()
        rec.provenance = {"for": "sft", "sources": [{"source": "mix:loop", "weight": 1.0}]}
        s.add(rec)
        s.commit()
    with pytest.raises(recipe.RecipeError,
                       match=r"^stage sft\.data\[0\]\.source: mix:loop: a cycle of mixes mix:loop -> mix:loop; "):
        plan_of(one_stage(tiny_llama, "mix:loop"))


# ---------------------------------------------------------------- 2: the up-scale's second model

def test_the_upscales_second_model_is_in_its_hash(tokenizer_dir, tmp_path):
    a = make_llama(tokenizer_dir, tmp_path / "A", seed=0)
    b = make_llama(tokenizer_dir, tmp_path / "B", seed=1)
    d = {"kind": "recipe", "name": "r", "base": str(a), "eval": None,
         "upscale": {"method": "slices", "second": str(b),
                     "slices": [{"source": 0, "start": 0, "end": 4}, {"source": 1, "start": 2, "end": 6}]},
         "stages": [{"name": "sft", "kind": "sft", "model": "upscaled", "data": [{"source": "builtin:alpaca-mini"}],
                     "max_steps": 1}]}
    first = plan_of(d)
    up = first.node("upscaled")
    assert plan_of(d).node("upscaled").hash == up.hash  # nothing changed
    registry.register(a, up.output, "upscaled")  # the up-scale ran
    assert plan_of(d).node("upscaled").status == "reuse"
    make_llama(tokenizer_dir, b, seed=2)  # B's weights replaced in place
    after = plan_of(d)
    assert after.node("upscaled").hash != up.hash and after.node("upscaled").status == "run"
    assert after.node("sft").hash != first.node("sft").hash  # and everything downstream
    # a recipe without a second model keeps its hash (models built before this fix are still reused): the formula
    # of before, sha256 of the canonical JSON of ["upscale", the upscale's body, the base's hash], spelled out here
    plain = plan_of({**d, "upscale": {"method": "dus", "m": 2}})
    before = json.dumps(["upscale", {"method": "dus", "m": 2}, plain.node("base").hash], sort_keys=True)
    assert plain.node("upscaled").hash == hashlib.sha256(before.encode()).hexdigest()


# ---------------------------------------------------------------- 3: evaluation task files and sets

def _eval_recipe(base: Path, task: str, where: str) -> dict:
    d = {"kind": "recipe", "name": "r", "base": str(base), "upscale": None,
         "stages": [{"name": "sft", "kind": "sft", "model": "base", "data": [{"source": "builtin:alpaca-mini"}],
                     "max_steps": 1}]}  # a stage beside the evaluation (a merge of base with itself is refused)
    if where == "recipe":
        d["eval"] = {"tasks": [task], "limit": 5}
    else:
        d["eval"] = None
        d["stages"].append({"name": "ev", "kind": "eval", "models": ["base"], "tasks": [task], "limit": 5})
    return d


TEXTS = [{"text": f"The quick brown fox number {i} jumps."} for i in range(5)]
OTHER = [{"text": f"Completely different held-out text {i}, now much longer."} for i in range(5)]
MC = [{"question": f"What is {i} + 1?", "choices": [str(i + 1), str(i)], "answer": 0} for i in range(4)]
MC2 = [{"question": f"What is {i} + 2?", "choices": [str(i), str(i + 2)], "answer": 1} for i in range(4)]


@pytest.mark.parametrize("where", ["recipe", "stage"])
@pytest.mark.parametrize("kind, rows, changed", [("perplexity", TEXTS, OTHER), ("mc", MC, MC2),
                                                 ("perplexity-dataset", TEXTS, OTHER)])
def test_an_evaluation_reruns_when_its_task_file_changes(tiny_llama, workspace, where, kind, rows, changed):
    f = workspace / "held_out.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    write_rows(f, rows)
    if kind == "perplexity-dataset":
        pipeline.save_dataset("held", "sft", str(f), len(rows), {})
        task = "perplexity:dataset:held"
    else:
        task = f"{kind}:{f}"
    d = _eval_recipe(tiny_llama, task, where)
    stage = "eval:base" if where == "recipe" else "ev"
    first = plan_of(d).node(stage)
    assert first.status == "run"
    assert plan_of(d).node(stage).hash == first.hash  # nothing changed
    succeeded(first)
    assert plan_of(d).node(stage).status == "reuse"
    write_rows(f, changed)
    after = plan_of(d).node(stage)
    assert after.hash != first.hash and after.status == "run"


def test_a_builtin_task_evaluation_keeps_its_hash(tiny_llama):
    """Tasks that read no named source (the built-in held-out sets) hash as before: no rerun of what was made."""
    d = _eval_recipe(tiny_llama, "perplexity", "recipe")
    import hashlib

    node = plan_of(d).node("eval:base")
    ev = {"tasks": ["perplexity"], "limit": 5}
    base = plan_of(d).node("base")
    want = hashlib.sha256(json.dumps(["eval", ev, base.hash, base.output], sort_keys=True,
                                     default=str).encode()).hexdigest()
    assert node.hash == want


# ---------------------------------------------------------------- 9: the merge surface's swept field

def _swept_run(stages: list[dict], scores: dict[str, float]) -> int:
    return two_candidate_run({x["name"]: {"sweep_of": x["sweep_of"]} for x in stages}, scores, kind="sft",
                             task="synth-math", metric="accuracy", n=4)


def test_the_merge_surface_follows_the_swept_field():
    st = expand_stages([{"name": "ties", "kind": "merge", "models": ["c1", "c2"], "method": "ties",
                         "sweep": {"density": [0.3, 0.7]}}])
    run_id = _swept_run(st, {"ties-density0.3": 0.5, "ties-density0.7": 0.6, "c1": 0.4, "c2": 0.55})
    [surf] = surface.run_surfaces(run_id, "synth-math accuracy")
    assert surf["group"] == "ties" and surf["field"] == "density"
    assert surf["x"] == [0.3, 0.7] and surf["y"] == [0.5, 0.6]
    assert surf["ends"] == []  # the candidates sit at no density
    assert surf["candidate_scores"] == [0.4, 0.55] and surf["beats_candidates"]


def test_a_merge_swept_over_two_fields_is_skipped_with_a_note():
    st = expand_stages([{"name": "ties", "kind": "merge", "models": ["c1", "c2"], "method": "ties",
                         "weights": "0..1 step 1", "sweep": {"density": [0.3, 0.7]}}])
    assert len(st) == 4
    run_id = _swept_run(st, {s["name"]: 0.5 for s in st})
    [surf] = surface.run_surfaces(run_id, "synth-math accuracy")
    assert surf["group"] == "ties" and "x" not in surf
    assert surf["skipped"] == ("ties is swept over density and weight together: one x axis cannot show it "
                               "(sweep one field per merge stage to draw its surface).")


def test_weight_and_t_surfaces_are_unchanged():
    st = expand_stages([{"name": "sl", "kind": "merge", "models": ["c1", "c2"], "method": "slerp",
                         "sweep": {"t": [0.25, 0.75]}}])
    run_id = _swept_run(st, {"sl-t0.25": 0.6, "sl-t0.75": 0.7, "c1": 0.4, "c2": 0.5})
    [surf] = surface.run_surfaces(run_id, "synth-math accuracy")
    assert surf["field"] == "t" and surf["x"] == [0.25, 0.75] and surf["ends"] == [(0.0, 0.4), (1.0, 0.5)]


# ---------------------------------------------------------------- 11: training overlap in the paper tables

def _overlap(items_over: int, n: int, against=("stage:math/instruct",)) -> dict:
    return {"ngram": 8, "threshold": 0.5, "max": 1.0 if items_over else 0.0, "mean": items_over / n,
            "items_over": items_over, "share_over": items_over / n, "against": list(against), "unchecked": {},
            "notes": []}


PAPER_STAGES = [{"stage": "sft-v1", "kind": "sft", "output": "r-sft-v1-bbbb", "label": "SFT v1", "tables": ["sft"],
                 "sources": ["builtin:alpaca-mini"], "from": ["cpt"]},
                {"stage": "sft-v3", "kind": "sft", "output": "r-sft-v3-aaaa", "label": "SFT v3", "tables": ["sft"],
                 "sources": ["builtin:alpaca-mini", "stage:math/instruct"], "from": ["cpt"]}]


def test_paper_tables_say_which_scores_overlap_training_data():
    with db.session() as s:  # sft-v3 trained on the synthetic math: 16 of 20 items overlap; 0.25 on the other 4
        s.add(EvalScore(model="r-sft-v3-aaaa", task="synth-math", metric="accuracy", value=0.85, n=20, run="x1",
                        overlap_share=0.8, details={"overlap": _overlap(16, 20), "clean": {"accuracy": 0.25, "n": 4}}))
        s.add(EvalScore(model="r-sft-v1-bbbb", task="synth-math", metric="accuracy", value=0.40, n=20, run="x2",
                        overlap_share=0.0, details={"overlap": _overlap(0, 20, ["builtin:alpaca-mini"]),
                                                    "clean": {"accuracy": 0.40, "n": 20}}))
        s.commit()
    [t] = [t for t in tables.run_tables_from(PAPER_STAGES) if t.key == "sft"]
    assert t.columns == ["Model", "Stage", "Made from", "alpaca-mini", "Synth. Math-Instruct", "synth-math accuracy",
                         "synth-math accuracy ±", "synth-math (training overlap)",
                         "synth-math accuracy (non-overlapping items)", "Paper H6"]
    assert t.rows == [["SFT v1", "sft-v1", "cpt", "✓", "", 0.4, 0.1124, "✓ 0%", 0.4, 69.15],
                      ["SFT v3", "sft-v3", "cpt", "✓", "✓", 0.85, 0.0819, "⚠ 80%", 0.25, 70.03]]
    from backend import scoretable

    note = scoretable.overlap_note(scoretable.headline(scoretable.latest_scores()))  # the Compare page's words
    assert note.startswith("Training overlap (8-gram")
    assert t.notes == ["n = 20 items per task.", scoretable.PLUS_MINUS, note]
    md, csv_, tex = tables.to_markdown(t), tables.to_csv(t), tables.to_latex(t)
    assert "| SFT v3 | sft-v3 | cpt | ✓ | ✓ | 0.8500 ± 0.0819 | ⚠ 80% | 0.25 | 70.03 |" in md and note in md
    assert csv_.splitlines()[0].endswith("synth-math (training overlap),synth-math accuracy (non-overlapping items),"
                                         "Paper H6")
    assert csv_.splitlines()[2] == "SFT v3,sft-v3,cpt,✓,✓,0.85,0.0819,⚠ 80%,0.25,70.03"
    assert r"0.8500 $\pm$ 0.0819 & \textbf{!} 80\% & 0.25" in tex and "Training overlap (8-gram" in tex
    assert "⚠" not in tex and "✓" not in tex  # pdflatex without UTF-8 input stops at either
    [every] = [t for t in tables.run_tables_from(PAPER_STAGES) if t.key == "all"]
    assert "synth-math (training overlap)" in every.columns and every.notes == ["n = 20 items per task.",
                                                                               scoretable.PLUS_MINUS, note]


def test_paper_tables_without_overlap_say_so_and_add_no_column():
    with db.session() as s:
        for model in ("r-sft-v1-bbbb", "r-sft-v3-aaaa"):
            s.add(EvalScore(model=model, task="synth-math", metric="accuracy", value=0.5, n=20, run=model,
                            details={"overlap": _overlap(0, 20), "clean": {"accuracy": 0.5, "n": 20}}))
        s.commit()
    [t] = [t for t in tables.run_tables_from(PAPER_STAGES) if t.key == "sft"]
    assert t.columns[-3:] == ["synth-math accuracy", "synth-math accuracy ±", "Paper H6"]
    assert t.notes[2:] == ["Training overlap (8-gram; an item under 8 words counts when it appears whole) — "
                           "synth-math: no item overlaps the recorded training data of SFT v1, SFT v3 "
                           "(✓, so no column)."]


def test_recipe_page_shows_the_overlap_note_and_a_density_surface(tiny_llama):
    """The page lays out what the backend says: the footnote under a paper table, a surface over density."""
    from streamlit.testing.v1 import AppTest

    st = expand_stages([{"name": "ties", "kind": "merge", "models": ["c1", "c2"], "method": "ties",
                         "sweep": {"density": [0.3, 0.7]}}])
    run_id = _swept_run(st, {"ties-density0.3": 0.5, "ties-density0.7": 0.6, "c1": 0.4, "c2": 0.55})
    with db.session() as s:
        s.add(EvalScore(model="r-ties-density0.7", task="qa", metric="accuracy", value=0.9, n=20, run="q",
                        overlap_share=0.5, details={"overlap": _overlap(10, 20), "clean": {"accuracy": 0.3, "n": 10}}))
        s.commit()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/recipe.py").run()
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Training overlap (8-gram") for c in at.caption)
    at.selectbox(key="surface_metric").select("synth-math accuracy").run()  # the candidates drawn as levels
    assert not at.exception, at.exception
