"""Session 19: the same recipe queued again under another name while the first run's jobs still wait. Its stages
have the same hashes, so each found the first run's queued job "in flight" and adopted it, yet the next stage read
the model under the new run's own name, which no job makes: `my-try-upscaled-…' is neither a registered model nor
the model a queued job will make`. A job in flight is adopted only when it makes this stage's model."""

from __future__ import annotations

from backend import recipe
from tests.test_recipe import smoke, text


def test_the_same_recipe_renamed_while_the_first_waits_queues_its_own_stages(tiny_llama):
    first = smoke(tiny_llama)
    [p1] = recipe.plan_text(text(first))
    run1 = recipe.submit(p1, text(first))
    renamed = {**first, "name": "my-try"}
    [p2] = recipe.plan_text(text(renamed))
    assert {n.status for n in p2.nodes if n.kind != "eval"} <= {"run", "given"}  # was "in-flight" on run 1's jobs
    run2 = recipe.submit(p2, text(renamed))  # was a ValueError: the upscaled model of my-try, made by no job
    made = {r.stage: (r.output, j.id) for r, j in recipe.stages(run2) if j and r.kind != "eval"}
    theirs = {r.stage: (r.output, j.id) for r, j in recipe.stages(run1) if j and r.kind != "eval"}
    assert made["upscaled"][0].startswith("my-try-upscaled-") and made.keys() == theirs.keys()
    assert all(made[s][1] != theirs[s][1] for s in made)  # jobs of its own, each making its own name
    # the same recipe under its own name again still adopts its jobs in flight: none queued twice
    [p3] = recipe.plan_text(text(first))
    assert {n.status for n in p3.nodes if n.kind != "eval"} <= {"in-flight", "given"}
