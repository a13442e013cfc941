"""Session 24, the runner's left-overs: every end the worker writes into a job's row says what a resume of it does by
runner.messages.resume_action, read from the row as it ends (failed, interrupted), not as it read while running:
a process that died, a worker's Ctrl-C, recover_orphans, and a Ray cluster's end alike. No Ray cluster is started:
Ray's answers are namespaces shaped as Ray 2.60's JobDetails."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from backend import runner
from backend.cluster import ray_checks, ray_jobs
from backend.runner import loop
from backend.specs import DataSource, SftSpec, UpscaleSpec
from storage import db
from storage.models import Job, ModelRecord, utcnow

ADDR = "http://head:8265"


def _running(spec, **fields) -> Job:
    with db.session() as s:
        job = Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status="running", started=utcnow(), **fields)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def _registered(name: str, job_id: int) -> None:
    """The job's run registered its model (the row names the job) and was killed before it wrote its end."""
    with db.session() as s:
        s.add(ModelRecord(name=name, path="/nowhere", kind="upscaled", num_layers=4, job_id=job_id))
        s.commit()


def _dead_process(job_id: int) -> subprocess.Popen:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    runner._update(job_id, pid=proc.pid)
    return proc


def _train() -> SftSpec:
    return SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t1")


def _step(job_id: int, then: str) -> str:
    """The step a row names, with the Jobs page's button by its label (resume_action's)."""
    label = ("Restart (no checkpoint was saved)" if then.startswith("no checkpoint was saved") else
             "Mark done (up1 is registered)" if then.startswith("its last run registered up1") else "Run again")
    return f"{then} (python -m backend jobs resume {job_id}, or \"{label}\" on the Jobs page)"


RESTART = "no checkpoint was saved; resume it to start the training over from step 0"


# ---------------------------------------------------------------- a process that died, a worker's Ctrl-C

def test_a_job_killed_after_its_model_was_registered_is_told_a_resume_marks_it_done():
    """Its message was read from the row still "running", and resume_marks_done reads only ended rows: it said
    "resume it to run it again" and the resume then marked the job done without running anything."""
    job = _running(UpscaleSpec(base="tiny", m=1, name="up1"), host=runner.host_id())
    _registered("up1", job.id)
    loop._reap_ended({job.id: _dead_process(job.id)})
    row = runner.get(job.id)
    assert row.status == "failed"
    assert row.error == ("the job process exited with code 0 without finishing; see its log; " + _step(
        job.id, "its last run registered up1; resume it to mark it succeeded, nothing runs again"))
    assert runner.resume(job.id).status == "succeeded"  # what its row said the resume does


def test_a_training_stopped_by_ctrl_c_before_its_first_checkpoint_is_told_it_starts_over():
    """It read "resume it to go on from its last checkpoint" for any training, one that saved none too."""
    job = _running(_train(), host=runner.host_id())
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    runner._update(job.id, pid=proc.pid)
    loop._interrupt_running({job.id: proc})
    row = runner.get(job.id)
    assert (row.status, row.message) == ("interrupted",
                                         "interrupted: its worker was stopped (Ctrl-C); " + _step(job.id, RESTART))
    assert proc.poll() is not None


def test_an_orphan_found_by_a_worker_says_what_its_resume_does():
    """recover_orphans said "resume it to go on" to every job: a build whose model was registered is marked done."""
    job = _running(UpscaleSpec(base="tiny", m=1, name="up1"), host=runner.host_id())
    _dead_process(job.id)
    _registered("up1", job.id)
    assert runner.recover_orphans() == [job.id]
    assert runner.get(job.id).message == (
        "interrupted: its process ended without finishing (worker or machine stopped); "
        + _step(job.id, "its last run registered up1; resume it to mark it succeeded, nothing runs again"))


def test_a_row_being_written_as_queued_again_gets_no_resume_step():
    job = _running(_train())
    fields = dict(status="queued", message="waiting: the Ray cluster had no room for it")
    assert runner.messages.with_resume_step(job, fields) == fields


# ---------------------------------------------------------------- a Ray cluster's end

def _info(status: str, error_type: str | None = None, message: str = "", exit_code: int | None = None):
    from ray.job_submission import JobStatus

    return SimpleNamespace(status=JobStatus(status), error_type=error_type, message=message, driver_node_id=None,
                           driver_exit_code=exit_code)


class _Jobs:
    def __init__(self, infos: dict):
        self.infos = infos

    def get_job_info(self, submission_id):
        return self.infos[submission_id]


def test_a_ray_training_lost_before_its_first_checkpoint_is_told_it_starts_over(monkeypatch):
    """The cluster's end said "resume it to continue from its last checkpoint" to a training that saved none,
    while the local runner, the Jobs page's button and `jobs resume` said it starts over from step 0."""
    job = _running(_train(), host=ray_jobs.host_for(ADDR), cluster_ref="dus-x-1-1")
    jobs = _Jobs({"dus-x-1-1": _info("FAILED", "JOB_SUPERVISOR_ACTOR_DIED", "Job supervisor actor died: node lost")})
    monkeypatch.setattr(ray_jobs, "client", lambda addr: jobs)
    monkeypatch.setattr(ray_checks, "client", lambda addr: jobs)  # its sibling reads it too (test_review_s20_split)
    monkeypatch.setattr(ray_jobs, "_judged", {})
    assert runner.recover_orphans() == [job.id]
    row = runner.get(job.id)
    assert (row.status, row.message) == ("interrupted", "interrupted: the Ray node running it was lost (Ray: FAILED, "
                                         "Job supervisor actor died: node lost); " + _step(job.id, RESTART))
    assert runner.messages.resume_action(row).label == "Restart (no checkpoint was saved)"  # the button agrees


def test_a_ray_job_whose_process_died_after_registering_its_model_is_told_a_resume_marks_it_done(monkeypatch):
    job = _running(UpscaleSpec(base="tiny", m=1, name="up1"), host=ray_jobs.host_for(ADDR), cluster_ref="dus-x-1-1")
    _registered("up1", job.id)
    run = ray_jobs.RayRun(ADDR, "dus-x-1-1")
    monkeypatch.setattr(run, "poll", lambda: _info("FAILED", "JOB_ENTRYPOINT_COMMAND_ERROR", "exit 137", 137))
    running = {job.id: run}
    loop._reap_ended(running)
    row = runner.get(job.id)
    assert running == {} and row.status == "failed"
    assert row.error == ("the job process on the Ray cluster exited with code 137 without finishing; see its log; "
                         + _step(job.id, "its last run registered up1; resume it to mark it succeeded, nothing runs "
                                 "again"))


@pytest.mark.parametrize("kind", ["eval", "upscale"])
def test_a_ray_job_that_is_no_training_is_told_what_a_resume_does_too(monkeypatch, kind):
    """Only a training got a word of resuming from the cluster's end; the others got none."""
    from backend.specs import EvalSpec

    spec = EvalSpec(models=["tiny"], tasks=["perplexity"]) if kind == "eval" else UpscaleSpec(base="tiny", m=1,
                                                                                             name="up1")
    job = _running(spec, host=ray_jobs.host_for(ADDR), cluster_ref="dus-x-1-1")
    run = ray_jobs.RayRun(ADDR, "dus-x-1-1")
    monkeypatch.setattr(run, "poll", lambda: _info("STOPPED", None, "Job was intentionally stopped."))
    loop._reap_ended({job.id: run})
    then = ("it stored no score; resume it to run it again" if kind == "eval" else
            "nothing was registered (a worker removes its partial files); resume it to run it again")
    assert runner.get(job.id).message == ("interrupted: its Ray job was stopped outside DUS Studio (`ray job stop`, "
                                          "the Ray dashboard); " + _step(job.id, then))
