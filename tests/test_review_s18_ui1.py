"""What a user tripped on, walking the dashboard in Chromium (review s18): the job status box asked for an ended job
every second for as long as the page stayed open; a job resumed from the command line did not rerun the page when
it ended again (a session flag said it had ended already); the log of a job that no longer exists said "No log yet"."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import pytest
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue
from streamlit.testing.v1 import local_script_runner

from backend import registry, runner
from backend.specs import CptSpec, DataSource
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


@pytest.fixture
def timers(monkeypatch) -> list[tuple[str, float]]:
    """The (fragment id, interval) of every fragment timer a run asks the browser for (`run_every`), in order."""
    asked: list[tuple[str, float]] = []

    def keep(msg):
        if msg.HasField("auto_rerun"):
            asked.append((msg.auto_rerun.fragment_id, msg.auto_rerun.interval))

    monkeypatch.setattr(ForwardMsgQueue, "_before_enqueue_msg", keep)
    return asked


@contextmanager
def fragment_only(monkeypatch, fragment_id: str):
    """The next AppTest run is the fragment's timer firing: that fragment runs alone, as a browser asks every
    `run_every` (AppTest itself only runs whole pages)."""
    with monkeypatch.context() as m:
        m.setattr(local_script_runner, "RerunData",
                  functools.partial(local_script_runner.RerunData, fragment_id_queue=[fragment_id]))
        yield


def drawn_again(at) -> bool:
    """Whether the last run drew the whole Train page (its Launch button), not only the status box."""
    return any(b.key == "launch" for b in at.button)


def cpt_job(name: str = "tiny-cpt") -> int:
    return runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")], name=name)).id


def test_an_ended_job_is_asked_for_seldom_and_a_gone_one_not_at_all(tiny, timers):
    job = cpt_job()
    at = app()
    at.session_state["train_job"] = job
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    assert [every for _, every in timers][-1:] == [1.0]  # queued: every second
    runner._update(job, status="succeeded", progress=1.0)
    timers.clear()
    at.run()
    assert [every for _, every in timers] == [5.0]  # ended: only to see it queued again from elsewhere
    at.session_state["train_job"] = job + 1  # a job that no longer exists (another workspace's id, say)
    timers.clear()
    at.run()
    assert not at.exception, at.exception
    assert timers == []
    assert any(e.value == f"Job {job + 1} no longer exists." for e in at.error)


def test_a_job_resumed_from_the_command_line_reruns_the_page_when_it_ends_again(tiny, tiny_llama, timers,
                                                                                  monkeypatch):
    job = cpt_job()
    runner._update(job, status="cancelled", message="cancelled by the user")
    at = app()
    at.session_state["train_job"] = job
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button if b.key == f"resume_{job}"] == ["Restart (no checkpoint was saved)"]
    runner.resume(job)  # `python -m backend jobs resume ID` in a terminal
    with fragment_only(monkeypatch, timers[-1][0]):
        at.run()  # the box's timer: it sees the job queued again, and the page is drawn again with it
    assert not at.exception, at.exception
    assert drawn_again(at)
    assert timers[-1][1] == 1.0
    assert at.button(key="launch").disabled  # the name is being made by the resumed job
    assert any(f"Job {job} is queued already to train 'tiny-cpt'" in i.value for i in at.info)  # resumed elsewhere
    runner._update(job, status="succeeded", progress=1.0, message="done")
    registry.import_folder(tiny_llama, "tiny-cpt")  # what the job made
    with fragment_only(monkeypatch, timers[-1][0]):
        at.run()  # the box's timer sees it ended: the page says the name is taken now
    assert not at.exception, at.exception
    assert drawn_again(at)
    assert any("A model named 'tiny-cpt' is registered already" in i.value for i in at.info)
    assert at.button(key="launch").disabled


def test_the_log_of_a_job_that_no_longer_exists_says_so():
    from streamlit.testing.v1 import AppTest

    def page():
        from pages.common import live_log

        live_log(4242, 20)

    at = AppTest.from_function(page).run()
    assert not at.exception, at.exception
    assert [c.value for c in at.caption] == ["No log: job 4242 no longer exists."]  # not "No log yet"


def test_build_and_launch_are_disabled_beside_the_job_they_just_queued(tiny):
    """The buttons were drawn before the click queued the job: both stayed enabled beside its running job, and the
    page said nothing of the name being made until the next click."""
    at = app()
    at.button(key="build").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert at.button(key="build").disabled
    assert any(i.value.startswith(f"Job {job.id} queued to build 'tiny-dus-m2': ") for i in at.info)
    at.switch_page("pages/train.py").run()
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    train = runner.list_jobs()[0]
    assert train.kind == "cpt" and train.id != job.id
    assert at.button(key="launch").disabled
    assert any(i.value.startswith(f"Job {train.id} queued to train {train.spec['name']!r}: ") for i in at.info)
