"""Session 23's left-overs (b): the Jobs page's resume button says "Mark done" where a resume marks the job done (its
run registered its model before it was stopped); a multi-machine training's machine_rank > 0 names no model it
would register (it registers none); the Compare page says under a chart which charted models have no bar in it."""

from __future__ import annotations

import json

from backend import runner
from backend.specs import DataSource, SftSpec, UpscaleSpec
from storage import db
from storage.models import EvalScore, Job, ModelRecord, utcnow
from tests.test_pages import app
from tests.test_review_cli import add


def _stopped(spec, status: str = "interrupted") -> Job:
    now = utcnow()
    (job,) = add(Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status=status, started=now, finished=now,
                     message="interrupted: its process ended without finishing"))
    return job


def _registered(name: str, job_id: int | None) -> None:
    add(ModelRecord(name=name, path="/nowhere", kind="upscaled", num_layers=4, job_id=job_id))


# ---------------------------------------------------------------- 1. a resume that marks the job done says so

def test_the_resume_button_of_a_job_whose_run_registered_its_model_says_it_marks_it_done():
    build = _stopped(UpscaleSpec(base="tiny", m=1, name="up1"))
    train = _stopped(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t1"), "failed")
    _registered("up1", build.id)  # its worker died after it registered up1: the row names the job
    _registered("t1", train.id)
    assert runner.states.resume_marks_done(runner.get(build.id)) == "up1"
    at = app("jobs.py")
    for job, name in ((build, "up1"), (train, "t1")):
        at.selectbox(key="job").set_value(job.id).run()
        button = next(b for b in at.button if b.key == f"resume_{job.id}")
        assert button.label == f"Mark done ({name} is registered)"  # old: "Run again", "Restart (no checkpoint…)"
        assert f"registered {name}" in button.help and "runs nothing again" in button.help
    button.click().run()
    assert not at.exception and runner.get(train.id).status == "succeeded"  # what the button said it would do


def test_a_job_whose_model_is_not_its_own_keeps_run_again():
    job = _stopped(UpscaleSpec(base="tiny", m=1, name="up1"))
    _registered("up1", None)  # a model of that name, not recorded as this job's: a resume is refused or runs it
    assert runner.states.resume_marks_done(runner.get(job.id)) is None
    at = app("jobs.py")
    at.selectbox(key="job").set_value(job.id).run()
    assert next(b for b in at.button if b.key == f"resume_{job.id}").label == "Run again"


def test_the_page_and_jobs_resume_say_one_thing_of_what_a_resume_does():
    """The CLI printed that a stopped evaluation runs "again from the start" while the button promised its stored
    scores were kept (run_eval keeps them): both read runner.messages.resume_action now."""
    from backend.specs import EvalSpec
    from tests.test_review_cli import cli

    spec = EvalSpec(models=["tiny", "other"], tasks=["qa"])
    kept, fresh = _stopped(spec, "failed"), _stopped(spec, "cancelled")
    add(EvalScore(model="tiny", task="qa", metric="accuracy", value=0.5, n=4, job_id=kept.id))
    at = app("jobs.py")
    said = {}
    for job in (kept, fresh):
        at.selectbox(key="job").set_value(job.id).run()
        button = next(b for b in at.button if b.key == f"resume_{job.id}")
        said[job.id] = (button.label, button.help)
    assert said[kept.id] == ("Resume (the scores it stored are kept)", "A running worker scores the rest; the scores "
                             "it stored for 1 model and task pair are kept.")
    assert said[fresh.id] == ("Run again", "It stored no score: a running worker runs the eval again from the start.")
    for job in (kept, fresh):
        rc, out, err = cli("jobs", "resume", str(job.id))
        assert (rc, out) == (0, f"job {job.id}: queued ({said[job.id][1][0].lower()}{said[job.id][1][1:-1]})\n")


# ---------------------------------------------------------------- 2. machine_rank > 0 registers nothing

def test_a_training_on_machine_rank_1_names_no_model_it_will_register():
    spec = lambda rank: SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")],  # noqa: E731
                                num_machines=2, machine_rank=rank, main_process_ip="h0")
    named, unnamed = spec(1).model_copy(update={"name": "x"}), spec(1)
    main = spec(0).model_copy(update={"name": "x"})
    jobs = [Job(kind="sft", spec=s.model_dump(mode="json"), status="queued") for s in (named, unnamed, main)]
    assert [runner.planned_name(j) for j in jobs] == ["", "", "x"]  # old: "x", "tiny-sft", "x"
    assert [runner.output_name(s) for s in (named, unnamed, main)] == [None, None, "x"]  # the one rule
    assert runner.job_output(jobs[0]) == "nothing: machine 0 registers x"
    assert runner.job_output(jobs[1]) == f"nothing: machine 0 registers {unnamed.default_name()}"
    assert runner.job_output(jobs[2]) == "x"


# ---------------------------------------------------------------- 3. a charted model with no bar in a chart

def test_the_note_under_a_chart_names_the_charted_models_without_a_bar_and_counts_many():
    from pages.compare_pick import no_bar_note

    rows = [{"model": "b", "task": "qa"}]
    assert no_bar_note(rows, ["a", "b", "c"]) == "No bar for a, c: not scored on this task."
    assert no_bar_note(rows, ["b"]) == ""
    many = [f"m{i}" for i in range(6)] + ["b"]
    assert no_bar_note(rows, many) == "No bar for 6 of the charted models: not scored on this task."
    # with the clean toggle a scored model may have no clean score: the chart note says so, this one leaves it
    assert no_bar_note(rows, ["a", "b", "c"], scored={"c"}) == "No bar for a: not scored on this task."
    assert no_bar_note(rows, ["b", "c"], scored={"c"}) == ""


def test_the_compare_page_says_which_models_of_the_default_lineage_have_no_bar(tiny_llama):
    models = [f"tiny-{i}" for i in range(12)]  # past scorenotes.MANY: the picker, by default the newest lineage
    with db.session() as s:
        for m in models:
            s.add(ModelRecord(name=m, path=str(tiny_llama), kind="upscaled", num_layers=4,
                              parents=[models[0]] if m == models[-1] else []))
            s.add(EvalScore(model=m, task="qa", metric="accuracy", value=0.5, n=4, run="r1"))
        s.add(EvalScore(model=models[-1], task="perplexity", metric="perplexity", value=9.0, n=4, run="r1"))
        s.commit()
    at = app("compare.py")
    assert at.multiselect(key="chart_models").value == [models[0], models[-1]]
    ppl = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("bar_perplexity"))
    bars = json.loads(ppl.proto.spec)["data"][0]
    assert (bars.get("y") if bars.get("orientation") == "h" else bars.get("x")) == [models[-1]]
    assert f"No bar for {models[0]}: not scored on this task." in [c.value for c in at.caption]
    assert not any("No bar for" in c.value and models[-1] in c.value for c in at.caption)  # qa: both drawn
