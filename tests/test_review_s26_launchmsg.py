"""A job the user just launched is not said as "already" (which read as a second click), and a queued job is not
said to be "training"; a job started elsewhere (another tab, the command line) still is "already". The Train page's
memory plan shows every column in a 1400 px window."""

from __future__ import annotations

import json

import pytest

from backend import registry, runner
from backend.specs import CptSpec, DataSource, EvalSpec, UpscaleSpec
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def infos(at) -> list[str]:
    return [i.value for i in at.info]


# ---- 1. Build: the user's own click, then a job started elsewhere ---------------------------------------------------

def test_build_says_the_job_just_launched_as_queued_not_already(tiny):
    at = app()
    at.button(key="build").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert at.button(key="build").disabled
    # was "Job 1 is building 'tiny-dus-m2' already." right after the user's first click, of a job still queued
    assert f"Job {job.id} queued to build 'tiny-dus-m2': its progress is shown below; change m or the name to " \
           "build another." in infos(at), infos(at)
    runner._update(job.id, status="running")  # the worker took it
    at.run()
    assert f"Job {job.id} started building 'tiny-dus-m2': its progress is shown below; change m or the name to " \
           "build another." in infos(at), infos(at)


def test_build_keeps_already_for_a_job_started_elsewhere(tiny):
    job = runner.submit(UpscaleSpec(base="tiny", m=2))  # `python -m backend upscale tiny --m 2 --queue`
    at = app()
    assert at.button(key="build").disabled
    assert f"Job {job.id} is queued already to build 'tiny-dus-m2': change m or the name to build another." \
        in infos(at), infos(at)
    runner._update(job.id, status="running")
    at.run()
    assert f"Job {job.id} is building 'tiny-dus-m2' already: change m or the name to build another." in infos(at)


# ---- 2. Train: the same, with the Monitor page to follow it -------------------------------------------------------

def test_train_says_the_run_just_launched_as_queued_then_started(tiny):
    at = app("train.py")
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert at.button(key="launch").disabled
    # was "Job 1 is training 'tiny-cpt' already: …" of the job the click had just queued
    assert f"Job {job.id} queued to train 'tiny-cpt': follow it on the Monitor page; choose another name to start " \
           "another run." in infos(at), infos(at)
    runner._update(job.id, status="running")
    at.run()
    assert f"Job {job.id} started training 'tiny-cpt': follow it on the Monitor page; choose another name to " \
           "start another run." in infos(at), infos(at)


def test_train_says_a_queued_job_from_elsewhere_is_queued_not_training(tiny):
    job = runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))  # another tab, CLI
    at = app("train.py")
    assert at.button(key="launch").disabled
    # was "Job 1 is training 'tiny-cpt' already" of a job still queued
    assert f"Job {job.id} is queued already to train 'tiny-cpt': choose another name to start another run." \
        in infos(at), infos(at)
    runner._update(job.id, status="running")
    at.run()
    assert f"Job {job.id} is training 'tiny-cpt' already: choose another name to start another run." in infos(at)


# ---- 3. Synthetic math and Evaluate: the same pattern ---------------------------------------------------------------

def test_synth_says_the_run_just_launched_as_queued():
    at = app("synth.py")
    at.number_input(key="num_seeds").set_value(4).run()
    at.button(key="make_pairs").click().run()
    (job,) = runner.list_jobs()
    at.run()
    assert f"Job {job.id} queued to make synth-math-pairs: its progress is shown below; choose another name to " \
           "make another data set." in infos(at), infos(at)


def test_evaluate_says_its_own_evaluation_as_launched_here(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-2")
    at = app("compare.py")
    at.multiselect(key="eval_models").set_value(["tiny"]).run()
    at.multiselect(key="eval_tasks").set_value(["perplexity"]).run()
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception
    assert [j.kind for j in runner.list_jobs()] == ["eval"]
    at.run()
    said = [i for i in infos(at) if "scores tiny" in i]
    # was "An evaluation queued or running already scores tiny (Jobs page)" after the user's own click
    assert said and said[0].startswith("The evaluation launched here scores tiny: its progress is shown below; "
                                       "evaluate it again only for other tasks or settings"), infos(at)
    runner.submit(EvalSpec(models=["tiny-2"], tasks=["perplexity"], limit=4))  # `eval tiny-2 --queue`
    at.multiselect(key="eval_models").set_value(["tiny", "tiny-2"]).run()
    assert any(i.startswith("An evaluation queued or running already scores tiny, tiny-2 (Jobs page)")
               for i in infos(at)), infos(at)


# ---- 4. the memory plan fits a 1400 px window ----------------------------------------------------------------------

def _plan(at):
    df = next(d for d in at.dataframe if "strategy" in d.value.columns)
    return df.value, json.loads(df.proto.columns)


def test_memory_plan_columns_are_sized_to_fit_and_say_their_unit(tiny):
    at = app("train.py")  # continued pretraining: no reference model
    table, config = _plan(at)
    assert "reference (GiB)" not in table.columns  # a column of zeros: it pushed CPU RAM out of a 1280 px window
    assert any("No reference model is held in memory for this run" in c.value for c in at.caption)
    widths = {c: config.get(c, {}).get("width") for c in table.columns}
    assert None not in widths.values(), widths  # a column sized by its header ran the table past the right edge
    assert sum(widths.values()) <= 820, widths  # the main column of a 1280 px window
    labels = {c: config[c].get("label") for c in table.columns if c.endswith(" (GiB)")}
    assert labels["cpu_ram (GiB)"] == "CPU RAM" and labels["activations (GiB)"] == "activations"
    assert all("GiB per device" in config[c]["help"] for c in labels if c != "cpu_ram (GiB)")
    assert config["cpu_ram (GiB)"]["help"] == "GiB of host RAM (CPU offload)"
    assert any(m.value.startswith("**Memory plan** · GiB per device") for m in at.markdown)


def test_memory_plan_of_a_dpo_run_keeps_its_reference_column_within_1400_px(tiny):
    at = app("train.py")
    at.radio(key="kind").set_value("dpo").run()
    assert not at.exception, at.exception
    table, config = _plan(at)
    assert "reference (GiB)" in table.columns and config["reference (GiB)"]["label"] == "reference"
    widths = {c: config.get(c, {}).get("width") for c in table.columns}
    assert None not in widths.values() and sum(widths.values()) <= 920, widths  # 940 px main column at 1400 px
