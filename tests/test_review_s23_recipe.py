"""Review 23 of recipes (the SOLAR story replayed): the merge surface's noise drawn as a trend, advice to pretrain a
model that had SFT and DPO, a run graph all green while its evaluation ran, no `recipe show RUN`, and Compare runs'
columns against its legend on different data mixes."""

from __future__ import annotations

import json

from backend import answerstats, recipe
from backend.recipe import graph, surface
from backend.recipe.state import get_run
from storage import db
from storage.models import EvalScore, Job, JobMetric, ModelRecord, RecipeRun, RecipeStage
from tests.recipe_rows import two_candidate_run
from tests.test_review_cli import add, cli

MERGES = {"avg-55": {"merge": {"method": "average", "weights": [0.5, 0.5]}},
          "avg-46": {"merge": {"method": "average", "weights": [0.4, 0.6]}},
          "avg-64": {"merge": {"method": "average", "weights": [0.6, 0.4]}}}


def _errors(ses: dict[str, float]) -> None:
    add(*(EvalScore(model=f"r-{m}", task="perplexity", metric="perplexity_stderr", value=se, n=10, run=m)
          for m, se in ses.items()))


# ---------------------------------------------------------------- 3. the merge surface: its noise, and no values

def test_the_surface_carries_each_scores_error_and_says_when_it_is_noise():
    """The walk's merges: 292.863 -> 292.866 over w = 0.4..0.6, candidates 292.858 and 292.871, each ± 0.73: a clean
    rising line on an axis 0.015 tall, no bars, no word."""
    run_id = two_candidate_run(MERGES, {"c1": 292.871, "c2": 292.858, "avg-46": 292.863, "avg-55": 292.864,
                                        "avg-64": 292.866})
    _errors({"c1": 0.734, "c2": 0.737, "avg-46": 0.736, "avg-55": 0.735, "avg-64": 0.7354})
    [surf] = surface.run_surfaces(run_id, "perplexity")
    assert surf["x"] == [0.4, 0.5, 0.6] and surf["err"] == [0.736, 0.735, 0.7354]
    assert surf["ends"] == [(1.0, 292.871), (0.0, 292.858)] and surf["ends_err"] == [0.734, 0.737]
    assert surf["candidate_labels"] == ["c1", "c2"] and surf["ends_which"] == [0, 1]
    assert surf["within_noise"] is True
    # differences of many standard errors are no noise
    far = surface.merge_surface([(0.4, 10.0, 0.1), (0.6, 12.0, 0.1)], 14.0, 16.0, "weight", False, 0.1, 0.1)
    assert far["within_noise"] is False and far["best"] == (0.4, 10.0) and far["err"] == [0.1, 0.1]
    # one point within noise of another, one far from all: not every point is noise
    assert surface.within_noise([(1.0, 0.5), (1.2, 0.5), (5.0, 0.5)]) is False
    assert surface.within_noise([(1.0, 0.5), (1.2, 0.5)]) is True
    assert surface.within_noise([(1.0, 0.5), (1.2, None)]) is False  # an error missing: nothing claimed


def test_a_surface_without_values_says_why():
    """r12 (mid-evaluation) and r23 (qa hallucination rate, every reply cut off) drew empty axes -1..5, no word."""
    run_id = two_candidate_run(MERGES, {"c1": 0.4, "c2": 0.5})  # candidates scored, no merge yet
    [surf] = surface.run_surfaces(run_id, "perplexity")
    assert surf["x"] == [] and surf["empty"].startswith("no merge of it is scored yet")
    add(*(EvalScore(model=f"r-{m}", task="qa", metric=metric, value=v, n=10, run=m) for m in MERGES
          for metric, v in (("hallucination_rate", 0.0), ("cut_off_rate", 1.0), ("empty_rate", 0.0))))
    [surf] = surface.run_surfaces(run_id, "qa hallucination_rate")
    assert surf["empty"].startswith("every merge's qa hallucination_rate is blank: most of their replies were cut "
                                    "off")
    [surf] = surface.run_surfaces(run_id, "synth-math accuracy")
    assert surf["empty"] == ("its merges have no synth-math accuracy score (their evaluation did not include it): "
                             "pick another metric.")


def _recipe_page(run_id: int):
    from tests.test_pages import app

    at = app("recipe.py")
    at.session_state["recipe_run_pick"] = run_id
    return at


def test_the_page_draws_error_bars_labels_candidates_and_says_noise_or_why_empty():
    run_id = two_candidate_run(MERGES, {"c1": 292.871, "c2": 292.858, "avg-46": 292.863, "avg-55": 292.864,
                                        "avg-64": 292.866})
    _errors({"c1": 0.734, "c2": 0.737, "avg-46": 0.736, "avg-55": 0.735, "avg-64": 0.7354})
    at = _recipe_page(run_id).run()
    assert not at.exception, at.exception
    [fig] = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if '"candidates"' in c.proto.spec]
    line, cands = fig["data"]
    assert line["error_y"]["array"] == [0.736, 0.735, 0.7354]
    assert cands["error_y"]["array"] == [0.734, 0.737]
    assert cands["text"] == ["c1", "c2"] and cands["mode"] == "markers+text"  # named on the chart, not on hover
    assert surface.NOISE_NOTE in [c.value for c in at.caption]
    # the same run on a metric no merge has: a sentence, no chart
    add(EvalScore(model="r-c1", task="synth-math", metric="accuracy", value=0.3, n=10, run="x"))
    at.run().selectbox(key="surface_metric").set_value("synth-math accuracy").run()
    assert not at.exception, at.exception
    assert not [c for c in at.get("plotly_chart") if '"candidates"' in c.proto.spec]
    assert ("No surface for average of c1, c2: its merges have no synth-math accuracy score (their evaluation did "
            "not include it): pick another metric.") in [c.value for c in at.caption]


# ---------------------------------------------------------------- 5. cut-off advice that fits the model

def _lineage() -> None:
    """base -> up (upscaled) -> cpt -> sft -> dpo1, dpo2 -> merge (of the two DPO models), as the registry holds it."""
    def rec(name, kind, parents, job_kind=None):
        return ModelRecord(name=name, path=f"/m/{name}", kind=kind, parents=parents,
                           recipe={"kind": job_kind} if job_kind else {})
    add(rec("base", "base", []), rec("up", "upscaled", ["base"], "upscale"), rec("cpt", "trained", ["up"], "cpt"),
        rec("sft", "trained", ["cpt"], "sft"), rec("dpo1", "trained", ["sft"], "dpo"),
        rec("dpo2", "trained", ["sft"], "dpo"), rec("merge", "merged", ["dpo1", "dpo2"], "merge"))


def test_the_cut_off_advice_fits_the_models_training():
    """cand1, cand2 and their SLERP (CPT + SFT + DPO) were told "it needs continued pretraining or SFT first", in a
    text that also said "no cap helps it. Evaluate again with a higher Max new tokens"."""
    _lineage()
    merged = answerstats.cut_off_advice({"merge": [48, 96]})
    assert merged == ("Cut off on every reply at each cap tried (merge at 48 and 96 tokens): such a model does not "
                      "end its replies (its SFT and DPO training did not teach it to stop), so a higher Max new tokens (eval --max-new-tokens) "
                      "will not help: check that the end token of its chat template is the one its SFT data ends each "
                      "turn with (and the tokenizer's end-of-sequence token), or train it for more steps")
    once = answerstats.cut_off_advice({"merge": [48], "cpt": [48], "up": [48]})
    assert "no cap helps" not in once and "pretraining" not in once.split("(cpt at")[0]
    parts = once.split(". Cut off on every reply, at one cap so far ")
    assert len(parts) == 3  # one sentence group per remedy
    assert parts[0].startswith("Cut off on every reply, at one cap so far (merge at 48 tokens): a long answer")
    assert parts[0].endswith("(its SFT and DPO training did not teach it to stop): check that the end token of its "
                             "chat template is the one its SFT data ends each turn with (and the tokenizer's "
                             "end-of-sequence token), or train it for more steps")
    assert parts[1].endswith("(continued pretraining alone does not teach a model to end a turn): SFT it, then "
                             "evaluate it again")
    assert parts[2].endswith("continue pretraining, then SFT, and evaluate it again")
    # given by the caller, no registry read
    assert "SFT training did not teach" in answerstats.cut_off_advice({"x": [48]}, {"x": ["sft"]})
    assert answerstats.cut_off_advice({}) == ""
    assert answerstats.lineage_training(["merge", "cpt", "up", "nope"]) == {
        "merge": ["cpt", "sft", "dpo"], "cpt": ["cpt"], "up": [], "nope": []}


# ---------------------------------------------------------------- 6. the graph shows the evaluation

def _evaluating_run(status: str = "running") -> tuple[int, Job]:
    """A run whose merge is made and whose one evaluation job (`status`) stored the base's score only, unless still
    queued: 1 of its 3 models scored."""
    merge, ev = add(Job(kind="merge", status="succeeded"),
                    Job(kind="eval", status=status, spec={"models": ["tiny", "r-up", "r-avg"],
                                                          "tasks": ["perplexity"]}))
    run, = add(RecipeRun(name="r", text="kind: recipe\n"))
    stage = lambda name, kind, **kw: RecipeStage(run_id=run.id, recipe="r", stage=name, kind=kind,  # noqa: E731
                                                 hash=name, **kw)
    add(stage("base", "import", output="tiny", info={"status": "given"}),
        stage("up", "upscale", output="r-up", job_id=merge.id, info={"status": "run"}),
        stage("avg", "merge", output="r-avg", job_id=merge.id, info={"status": "run", "deps": ["up"]}),
        *(stage(f"eval:{s}", "eval", job_id=ev.id, info={"status": "run", "model": m})
          for s, m in (("base", "tiny"), ("up", "r-up"), ("avg", "r-avg"))))
    if status != "queued":
        add(EvalScore(job_id=ev.id, model="tiny", task="perplexity", metric="perplexity", value=9.0))
    return run.id, ev


def test_the_run_graph_has_an_evaluation_box_with_its_progress(capsys):
    """Every box green while the evaluation job still ran: no evaluation node, only Cancel run hinted."""
    run_id, ev = _evaluating_run()
    dot = graph.run_graph(run_id)
    assert (f'"evaluation" [label="evaluation\\neval · running\\njob {ev.id} · 1 of 3 models scored", '
            f'fillcolor="{graph.COLOURS["running"]}"') in dot
    assert '{rank=sink; "evaluation";}' in dot
    from backend.recipe.state import evaluations

    [e] = evaluations(recipe.stages(run_id))
    assert (e["name"], e["job"], e["status"], e["scored"], e["of"]) == ("evaluation", ev.id, "running", 1, 3)
    assert e["text"] == f"evaluation job {ev.id}: 1 of 3 models scored"
    from backend.cli.recipe import print_runs

    print_runs(1, as_json=False)
    assert f"  evaluation job {ev.id}: 1 of 3 models scored" in capsys.readouterr().out.splitlines()


def test_an_ended_evaluation_counts_what_it_scored_and_reused_scores_are_their_own_box():
    run_id, ev = _evaluating_run()
    from backend import runner

    runner._update(ev.id, status="failed")
    assert f"eval · failed\\njob {ev.id} · 1 of 3 models scored" in graph.run_graph(run_id)
    from backend.recipe.state import evaluations

    [e] = evaluations(recipe.stages(run_id))
    assert (e["status"], e["scored"], e["of"]) == ("failed", 1, 3)  # the one it stored before failing
    with db.session() as s:
        row = s.get(RecipeStage, [r.id for r, _ in recipe.stages(run_id) if r.stage == "eval:base"][0])
        row.reused = True
        s.add(row)
        s.commit()
    got = {e["name"]: (e["status"], e["scored"], e["of"]) for e in evaluations(recipe.stages(run_id))}
    assert got == {"evaluation (reused)": ("reuse", 1, 1), f"evaluation (job {ev.id})": ("failed", 0, 2)}


# ---------------------------------------------------------------- 8. recipe show RUN; Compare runs

def test_recipe_show_prints_the_runs_recipe_so_it_can_be_run_again(tiny_llama, tmp_path):
    from tests.test_recipe import smoke, text

    [p] = recipe.plan_text(text(smoke(tiny_llama)))
    run_id = recipe.submit(p, text(smoke(tiny_llama)))
    rc, out, err = cli("recipe", "show", str(run_id))
    assert (rc, err) == (0, "") and out == get_run(run_id).text
    [again] = recipe.plan_text(out)  # `recipe show 1 > r.yaml && recipe run r.yaml`: the same stages
    assert [(n.stage, n.hash) for n in again.nodes] == [(n.stage, n.hash) for n in p.nodes]
    rc, out, err = cli("recipe", "show", "99")
    assert rc == 2 and out == "" and "no recipe run 99" in err
    empty, = add(RecipeRun(name="old", text=""))
    rc, _, err = cli("recipe", "show", str(empty.id))
    assert rc == 2 and f"recipe run {empty.id} stored no recipe text" in err


def _sft(data: list[str]) -> Job:
    job, = add(Job(kind="sft", status="succeeded", spec={"kind": "sft", "name": f"m-{len(data)}", "max_steps": 3,
                                                          "data": [{"source": d, "weight": 1.0} for d in data]}))
    add(*(JobMetric(job_id=job.id, step=s, name="loss", value=2.0 - s / 10) for s in (1, 2)))
    return job


def _diff(at):
    """The jobs' settings-difference table (AppTest keeps no dataframe's key: the one whose first column is field)."""
    [df] = [d.value for d in at.dataframe if list(d.value.columns[:1]) == ["field"]]
    return df


def test_compare_runs_columns_follow_the_legend_and_different_mixes_are_said():
    """Picked 4 -> 7: the legend read 4 -> 7, the settings table's columns 7, 6, 5, 4; and losses on other data
    mixes stood side by side with no word that they are not comparable."""
    a, b, c = _sft(["builtin:alpaca-mini"]), _sft(["builtin:alpaca-mini", "builtin:orca-mini"]), \
        _sft(["builtin:alpaca-mini", "builtin:orca-mini", "builtin:facts-corpus"])
    run_id = two_candidate_run({}, {})
    at = _recipe_page(run_id).run()
    at.multiselect(key="compare_jobs").set_value([a.id, b.id, c.id]).run()
    assert not at.exception, at.exception
    names = [f"{j.id} · m-{n}" for j, n in ((a, 1), (b, 2), (c, 3))]
    [curves] = [json.loads(ch.proto.spec) for ch in at.get("plotly_chart") if '"loss"' in ch.proto.spec]
    assert [t["name"] for t in curves["data"]] == names
    diff = _diff(at)
    assert list(diff.columns) == ["field", *names]  # was newest first: c, b, a
    said = [c.value for c in at.caption if c.value.startswith("These jobs trained on different data mixes")]
    assert said == [f"These jobs trained on different data mixes ({names[0]}: builtin:alpaca-mini; {names[1]}: "
                    f"builtin:alpaca-mini + builtin:orca-mini; {names[2]}: builtin:alpaca-mini + builtin:orca-mini + "
                    "builtin:facts-corpus): each loss is on its own data, so the curves are not comparable as "
                    "quality. Compare the models' evaluation scores (Paper tables, the Compare page) instead."]
    at.multiselect(key="compare_jobs").set_value([b.id, a.id]).run()
    assert list(_diff(at).columns) == ["field", names[1], names[0]]
    same = _sft(["builtin:alpaca-mini"])  # a's mix: nothing to say
    at.run().multiselect(key="compare_jobs").set_value([a.id, same.id]).run()
    assert not at.exception, at.exception
    assert not [c for c in at.caption if c.value.startswith("These jobs trained on different data mixes")]
