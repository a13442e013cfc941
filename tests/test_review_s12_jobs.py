"""Jobs found in a browser walk (walk 12): a stopped training job offered only a restart although its checkpoint was
on disk, a resumed run reported another train loss than the same run unstopped, and the Jobs page's job list kept a
status that its status box below had already left."""

from __future__ import annotations

import pytest

from backend import registry, runner
from backend.specs import DataSource, SftSpec
from tests.test_jobs import LONG, start_worker, wait_for
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_a_job_cancelled_after_a_checkpoint_offers_to_resume_from_it(tiny, workspace):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="long", **LONG))
    worker = start_worker()
    try:
        checkpoints = workspace / "runs" / f"job-{job.id}" / "checkpoints"
        ckpt = wait_for(lambda: next(iter(checkpoints.glob("checkpoint-*/trainer_state.json")), None), 300,
                        "a complete checkpoint")
        assert runner.cancel(job.id).status == "cancelled"
    finally:
        worker.terminate()
        worker.wait()
    assert ckpt.exists()
    at = app("jobs.py")
    (button,) = [b for b in at.button if b.key == f"resume_{job.id}"]
    assert button.label == "Resume from the last checkpoint"  # before: "Restart (no checkpoint was saved)"
    assert runner.get(job.id).run_dir == str(checkpoints.parent)  # the job wrote it, not the test
    button.click().run()
    assert runner.get(job.id).status == "queued"


# a resumed run's train loss equals the same run's unstopped: tests/test_review_s17_train.py (one run for the
# three resume tests of sessions 12, 13 and 17)


def test_the_job_list_says_no_status_that_the_status_box_below_contradicts(tiny):
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t"))
    at = app("jobs.py")
    runner._update(job.id, status="failed", error="boom")  # the job fails while the page is open
    at.run()
    assert at.selectbox(key="job").options == [f"{job.id} · sft · t"]  # before: "… · queued"
    assert [e.value for e in at.error] == [f"Job {job.id} failed: boom"]
