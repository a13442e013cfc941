"""Session 26's late review of the light lane and the cancel's tidy-up:
1. a job reading a model a queued job will make (an upscale of a queued training's model, queued without --after)
   was claimed at once in the light lane, beside that training, and failed ("'foo' is neither a registered model");
   one job at a time in queue order hid it. It now waits for the maker (its needs);
2. a cancel of a run on another machine (its heartbeat stale: the database was out, its jobs went on) or of one rank
   of a multi-machine run removed checkpoint folders without trainer_state.json, which the run's live processes
   may have been saving: only a run this machine saw end is tidied;
3. DUS_JOB_SLOTS=0 (or --slots -1) left every device job queued for ever under "the worker starts it next"."""

from __future__ import annotations

import pytest

from backend import runner
from backend.runner import hosts, loop
from backend.specs import DataSource, EvalSpec, MergeSpec, SftSpec, UpscaleSpec
from tests.test_review_s26_cancel import _ended_pid, _left, _run_dir, _stopped_job

DATA = [DataSource(source="builtin:alpaca-mini")]


def test_a_job_reading_a_model_a_queued_job_makes_waits_for_that_job(tiny_llama):
    from backend import registry

    registry.import_folder(tiny_llama, "tiny")
    train = runner.submit(SftSpec(model="tiny", data=DATA, name="foo", max_steps=1))
    up = runner.submit(UpscaleSpec(base="foo", m=1, name="foo-dus"))
    merge = runner.submit(MergeSpec(models=["foo", "tiny"], name="mfoo"), after=train.id)
    assert (up.needs, up.message) == ([train.id], f"waiting for job {train.id}")
    assert merge.needs == [] and merge.after == train.id  # given as --after: not counted twice
    # a recipe's evaluation waits for its stages however they end (skip_missing): that wait stays soft
    ev = runner.submit(EvalSpec(models=["tiny", "foo"], tasks=["perplexity"], skip_missing=True), waits=[train.id])
    assert (ev.needs, ev.waits) == ([], [train.id])
    runner.cancel(ev.id)
    direct = runner.submit(UpscaleSpec(base="tiny", m=1, name="tiny-dus"))  # a registered model: no wait
    assert direct.needs == [] and direct.message != f"waiting for job {train.id}"
    # the worker's claims: the training, then in the light lane the up-scale of the registered model only
    assert loop._claim_next(1, light=1).id == train.id
    assert loop._claim_next(1, light=1).id == direct.id
    assert loop._claim_next(1, light=1) is None


@pytest.mark.parametrize("case", ["another machine", "a rank of two machines", "its processes still run"])
def test_a_cancel_this_machine_did_not_see_end_removes_no_checkpoint(tmp_path, case):
    import subprocess

    run_dir = _run_dir(tmp_path / "run", complete=(10,), cut=(20,))
    alive = None
    if case == "another machine":
        job = _stopped_job(run_dir, pid=424242, host="machine-a")
    elif case == "a rank of two machines":
        job = _stopped_job(run_dir, pid=_ended_pid())
        runner._update(job.id, spec={**job.spec, "num_machines": 2, "machine_rank": 1})
    else:
        alive = subprocess.Popen(["sleep", "30"], start_new_session=True)
        job = _stopped_job(run_dir, pid=alive.pid)
    try:
        hosts._stopped_run_ended(job.id, "cancelled", runner.get(job.id).pid)
    finally:
        if alive is not None:
            alive.kill()
            alive.wait()
    assert _left(run_dir) == ["checkpoint-10", "checkpoint-20"]
    assert "removed" not in runner.get(job.id).message
    # the same run seen to end on this machine, one machine's: the cut folder goes
    here = _stopped_job(_run_dir(tmp_path / "here", complete=(10,), cut=(20,)), pid=_ended_pid())
    hosts._stopped_run_ended(here.id, "cancelled", here.pid)
    assert _left(tmp_path / "here") == ["checkpoint-10"]
    assert runner.get(here.id).message.endswith("a checkpoint cut off by the cancel was removed: checkpoint-20")


@pytest.mark.parametrize("raw", ["0", "-1", "two", ""])
def test_a_worker_with_no_device_slot_is_refused_at_start(monkeypatch, raw):
    monkeypatch.setenv("DUS_JOB_SLOTS", raw)
    with pytest.raises(ValueError, match=rf"DUS_JOB_SLOTS={raw!r}: give how many device jobs .* 1 or more"):
        runner.worker(once=True)
    monkeypatch.setenv("DUS_JOB_SLOTS", "1")
    with pytest.raises(ValueError, match=r"--slots -1: give how many device jobs this machine runs at a time"):
        runner.worker(once=True, slots=-1)


def test_a_kept_model_shape_is_keyed_by_the_code_that_built_it(monkeypatch):
    """The memory plan's shape cache (workspace/cache/shapes) named its files by the config's text and the
    transformers version only: a fix of the shape code kept serving shapes built before it."""
    from backend.memplan import shape

    before = shape._shape_file('{"model_type": "llama"}')
    monkeypatch.setattr(shape, "_code_digest", lambda: "another version of shape.py")
    assert shape._shape_file('{"model_type": "llama"}') != before
    assert shape._shape_file('{"model_type": "llama"}').parent == before.parent


def test_a_queued_job_deleted_while_the_worker_looks_is_passed_over(monkeypatch):
    """_claim_next reads the queued rows, then tries them in turn; a failed claim commits, which expires the rows
    read, and one withdrawn meanwhile (queue._withdraw_if_second) raised ObjectDeletedError out of the worker's loop,
    which stops only for the database's own errors: the worker ended."""
    from storage import db
    from storage.models import Job

    first = runner.submit(UpscaleSpec(base="builtin", m=1, name="u1"))
    second = runner.submit(UpscaleSpec(base="builtin", m=1, name="u2"))
    real, tried = loop._claim, []

    def lost_then_deleted(s, job, *args, **kw):
        tried.append(job.id)
        if job.id == first.id:  # another worker took it; meanwhile the second was withdrawn
            with db.session() as other:
                other.delete(other.get(Job, second.id))
                other.commit()
            s.commit()
            return False
        return real(s, job, *args, **kw)

    monkeypatch.setattr(loop, "_claim", lost_then_deleted)
    assert loop._claim_next(1, light=1) is None and tried == [first.id]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_machine_0_removes_cut_checkpoints_of_a_shared_run_folder(tiny_llama, monkeypatch, rank):
    """Every machine of a multi-machine run started by removing the shared run folder's cut checkpoints: a machine
    starting late removed the one machine 0 was saving. Machine 0 alone removes them; the others read the complete
    ones (the same list)."""
    from backend import registry, training
    from tests.test_review_s26_cancel import _run_dir

    registry.import_folder(tiny_llama, "tiny")
    spec = SftSpec(model="tiny", data=DATA, name="mm", num_machines=2, machine_rank=rank,
                   main_process_ip="10.0.0.1")
    run_dir = _run_dir(training.run_dir_for(spec), complete=(10,), cut=(20,))

    class Launching(Exception):
        pass

    def progress(frac, message):
        if message.startswith("launching"):
            raise Launching(message)

    with pytest.raises(Launching, match="resuming from checkpoint-10"):
        training.run_train(spec, progress=progress)
    assert _left(run_dir) == (["checkpoint-10"] if rank == 0 else ["checkpoint-10", "checkpoint-20"])
