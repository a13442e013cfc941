"""A recipe run's rows written straight to the database: two candidate stages `c1`, `c2`, merge stages over them and
their stored scores, for the tests that read a run's tables and surfaces without training anything."""
from storage import db
from storage.models import EvalScore, RecipeRun, RecipeStage


def two_candidate_run(merges: dict[str, dict], scores: dict[str, float], *, kind: str = "dpo",
                      task: str = "perplexity", metric: str = "perplexity", n: int = 10) -> int:
    """`merges` maps a merge stage's name to its info beside `from: [c1, c2]`; `scores` maps a stage to its value.
    Returns the run's id."""
    with db.session() as s:
        run = RecipeRun(name="r", text="")
        s.add(run)
        s.commit()
        s.refresh(run)
        for name in ("c1", "c2"):
            s.add(RecipeStage(run_id=run.id, recipe="r", stage=name, kind=kind, output=f"r-{name}", hash=name,
                              info={"status": "run"}))
        for name, info in merges.items():
            s.add(RecipeStage(run_id=run.id, recipe="r", stage=name, kind="merge", output=f"r-{name}", hash=name,
                              info={"from": ["c1", "c2"], **info, "status": "run"}))
        for model, v in scores.items():
            s.add(EvalScore(model=f"r-{model}", task=task, metric=metric, value=v, n=n, run=model))
        s.commit()
        return run.id


def cut_off_run(base, monkeypatch) -> tuple[dict, object, list[int]]:
    """The smoke recipe on `base` Run and cut off (Ctrl-C, the page's process killed) as it queues its third job:
    (the recipe's dict, the run's row, the ids of the two jobs it queued)."""
    import pytest

    from backend import recipe, runner
    from tests.test_recipe import smoke, text

    d = smoke(base)
    [p] = recipe.plan_text(text(d))
    real, made = runner.submit, []

    def submit(spec, **kw):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(real(spec, **kw).id)
        return runner.get(made[-1])
    monkeypatch.setattr(runner, "submit", submit)
    with pytest.raises(KeyboardInterrupt):
        recipe.submit(p, text(d))
    [run] = recipe.runs()
    return d, run, made
