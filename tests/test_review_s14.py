"""Fourteenth session: a recipe's evaluation scores the models its stages made when one stage fails (it was
cancelled with the failed stage, and the run's tables came out empty). Each test fails without its fix."""

from __future__ import annotations

import json

import pytest
import yaml

from backend import recipe, registry, runner
from backend.evaluate import EvalError, run_eval
from backend.recipe import tables
from backend.specs import DataSource, EvalSpec, SftSpec


def _fast_sft(model: str, name: str) -> SftSpec:
    return SftSpec(model=model, data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=1,
                   save_steps=1, eval_fraction=0.0, max_length=32, max_rows=4)


def test_a_job_that_waits_runs_once_its_jobs_ended_however(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(_fast_sft("tiny", "a"))
    b = runner.submit(_fast_sft("tiny", "b"))
    ev = runner.submit(EvalSpec(models=["a", "b"], tasks=["perplexity"], limit=2, skip_missing=True),
                       waits=[a.id, b.id])
    assert runner.get(ev.id).waits == [a.id, b.id] and runner.get(ev.id).message == f"waiting for jobs {a.id}, {b.id}"
    assert runner.with_dependencies([ev.id]) == {a.id, b.id, ev.id}  # a foreground run takes what it waits for
    runner._update(a.id, status="succeeded")
    runner._update(b.id, status="running")
    assert runner._claim_next(only={ev.id}) is None  # b still runs
    assert runner._waits_on_a_job(runner.get(ev.id), {})
    runner._update(b.id, status="failed")
    assert not runner._waits_on_a_job(runner.get(ev.id), {}) and runner._ended_dependency(runner.get(ev.id), {}) is None
    claimed = runner._claim_next(only={ev.id})  # a `needs` job would be cancelled here ("it waited for failed")
    assert claimed is not None and claimed.id == ev.id and runner.get(ev.id).status == "running"
    with pytest.raises(ValueError, match="No job 999"):
        runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"]), waits=[999])


def test_an_evaluation_leaves_out_models_not_made_and_fails_when_none_is(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    out = run_eval(EvalSpec(models=["tiny", "never-made"], tasks=["perplexity"], limit=2, skip_missing=True))
    assert out["skipped"] == ["never-made"] and out["scores"] >= 1
    assert any("never-made" in n for n in out["notes"])
    assert tables.latest_scores(["tiny"])["tiny"]["perplexity"] > 1
    with pytest.raises(EvalError, match="none of the models to evaluate exists"):
        run_eval(EvalSpec(models=["never-made"], tasks=["perplexity"], limit=2, skip_missing=True))
    with pytest.raises(Exception, match="never-made"):  # without skip_missing an unknown model is an error, as before
        run_eval(EvalSpec(models=["tiny", "never-made"], tasks=["perplexity"], limit=2))


def test_one_failed_stage_leaves_the_other_stages_scores(tiny_llama, tmp_path):
    good = json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n"
    bad = tmp_path / "chat.jsonl"
    bad.write_text(good)
    d = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    d["stages"][1]["data"] = [{"source": str(bad)}]
    d["eval"]["limit"] = 2
    text = yaml.safe_dump(d, sort_keys=False)
    [p] = recipe.plan_text(text)
    run1 = recipe.submit(p, text)
    bad.write_text("this is not json\n")  # broken after queueing: sft-b's job fails, so does avg (needs it)
    runner.worker(once=True)
    rows = {r.stage: (r, j) for r, j in recipe.stages(run1)}
    assert rows["sft-b"][1].status == "failed" and rows["avg"][1].status == "cancelled"
    ev_job = rows["eval:sft-a"][1]
    assert ev_job.status == "succeeded", (ev_job.status, ev_job.message)
    assert sorted(ev_job.result["skipped"]) == sorted([rows["sft-b"][0].output, rows["avg"][0].output])
    states = {stage: recipe.stage_state(r, j) for stage, (r, j) in rows.items()}
    assert states["eval:sft-a"] == states["eval:upscaled"] == states["eval:base"] == "succeeded"
    assert states["eval:sft-b"] == states["eval:avg"] == "skipped"
    scores = tables.latest_scores([rows[s][0].output or str(tiny_llama) for s in ("upscaled", "sft-a")])
    assert all(v["perplexity"] > 1 for v in scores.values()) and len(scores) == 2
    # fixed: the rerun makes sft-b and avg and evaluates them alone; the scores already stored are reused
    bad.write_text(good)
    [p2] = recipe.plan_text(text)
    status = {n.stage: n.status for n in p2.nodes}
    assert status["eval:sft-a"] == status["eval:upscaled"] == "reuse"
    assert status["sft-b"] == status["avg"] == status["eval:sft-b"] == status["eval:avg"] == "run"
