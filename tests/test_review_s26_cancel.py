"""Session 26, a training cancelled from the Monitor page at step 1, as its first checkpoint was being saved:
1. its message read the next step twice ("cancelled; no checkpoint was saved; resume it … on the Jobs page); no
   checkpoint was saved; resume it … on the Jobs page)"): the worker here cleared the run's pid and wrote the step
   (hosts._clear_stopped) while states.cancel waited for the process to end, and states.cancel, reading the pid
   gone, wrote it again (hosts._stopped_run_ended with no pid to hold the update to);
2. the checkpoint folder it cut off (model.safetensors and part of optimizer.pt, no trainer_state.json) stayed:
   a resume skips it, but it looked like a checkpoint and kept its gigabytes. A run that has ended now leaves none:
   the folders without a readable trainer_state.json (transformers writes it last) are removed, and the message
   says which; complete checkpoints stay."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

from transformers import Trainer

from backend import runner
from backend.runner import hosts
from backend.specs import DataSource, SftSpec
from storage import db
from storage.models import Job, utcnow

DATA = [DataSource(source="builtin:alpaca-mini")]


def _restart(job_id: int) -> str:
    return (f"no checkpoint was saved; resume it to start the training over from step 0 (python -m backend jobs "
            f"resume {job_id}, or \"Restart (no checkpoint was saved)\" on the Jobs page)")


def _run_dir(root: Path, complete=(), cut=(), cut_state=()) -> Path:
    """A run folder: complete checkpoints (a readable trainer_state.json), ones cut off before trainer_state.json
    was written (`cut`) and while it was (`cut_state`: half a JSON document)."""
    for step in (*complete, *cut, *cut_state):
        ckpt = root / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
        (ckpt / "optimizer.pt").write_bytes(b"\0" * (128 if step in cut else 256))
        if step in complete:
            (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}, "log_history": []}}')
        elif step in cut_state:
            (ckpt / "trainer_state.json").write_text('{"global_step": 3, "log_hi')
    return root


def _stopped_job(run_dir: Path, status="cancelled", message="cancelled", pid=None, host=None) -> Job:
    spec = SftSpec(model="tiny", data=DATA, name="c1")
    with db.session() as s:
        job = Job(kind="sft", spec=spec.model_dump(mode="json"), status=status, started=utcnow(), finished=utcnow(),
                  message=message, pid=pid, host=hosts.host_id() if host is None else host, run_dir=str(run_dir))
        s.add(job)
        s.commit()
        s.refresh(job)
    return job


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    return proc.pid


def _left(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


# ---------------------------------------------------------------- the case as it happened

def test_a_cancel_the_worker_reaps_first_says_the_step_once_and_removes_the_checkpoint_it_cut(tmp_path,
                                                                                               monkeypatch):
    run_dir = _run_dir(tmp_path / "run", cut=(1,))
    spec = SftSpec(model="tiny", data=DATA, name="c1")
    with db.session() as s:
        job = Job(kind="sft", spec=spec.model_dump(mode="json"), status="running", started=utcnow(),
                  run_dir=str(run_dir), host=hosts.host_id())
        s.add(job)
        s.commit()
        s.refresh(job)
    # the job's process (its command line holds `jobs exec ID`, as the worker starts it)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job.id)],
                            start_new_session=True)
    runner._update(job.id, pid=proc.pid)
    real_killpg = os.killpg

    def killpg(pgid, sig):  # the process ends at the SIGTERM, and the worker here reaps it before cancel looks
        real_killpg(pgid, sig)
        if pgid == proc.pid and sig == signal.SIGTERM:
            proc.wait()
            hosts._clear_stopped()

    monkeypatch.setattr(os, "killpg", killpg)
    runner.cancel(job.id)
    row = runner.get(job.id)
    # old code: "cancelled; no checkpoint was saved; resume it … on the Jobs page); no checkpoint was saved; resume
    # it … on the Jobs page)", and checkpoint-1 stayed
    assert (row.status, row.pid, row.message) == (
        "cancelled", None, f"cancelled; {_restart(job.id)}; a checkpoint cut off by the cancel was removed: "
                           "checkpoint-1")
    assert _left(run_dir) == []


def test_the_end_of_a_cancelled_run_reached_twice_adds_the_step_once(tmp_path):
    job = _stopped_job(tmp_path / "none", pid=_ended_pid())
    hosts._clear_stopped()  # the worker here: the run ended
    hosts._stopped_run_ended(job.id, "cancelled", None)  # states.cancel, reading the pid cleared
    hosts._clear_stopped()
    assert runner.get(job.id).message == f"cancelled; {_restart(job.id)}"  # old code: the step twice


# ---------------------------------------------------------------- checkpoints cut off by the end of a run

def test_cut_checkpoints_are_removed_and_named_complete_ones_stay(tmp_path):
    run_dir = _run_dir(tmp_path / "run", complete=(1, 2), cut=(3,), cut_state=(4,))
    (run_dir / "checkpoints" / "checkpoint-best").mkdir()  # not the trainer's: left alone
    job = _stopped_job(run_dir, pid=_ended_pid())
    hosts._clear_stopped()
    assert _left(run_dir) == ["checkpoint-1", "checkpoint-2", "checkpoint-best"]  # old code: all five
    assert (run_dir / "checkpoints" / "checkpoint-2" / "optimizer.pt").stat().st_size == 256
    assert runner.get(job.id).message == (
        f"cancelled; resume it to continue from its last checkpoint, checkpoint-2 (python -m backend jobs resume "
        f"{job.id}, or \"Resume from the last checkpoint\" on the Jobs page); 2 checkpoints cut off by the cancel "
        "were removed: checkpoint-3, checkpoint-4")


def test_a_run_whose_checkpoints_are_all_complete_keeps_them_and_its_message_says_nothing_more(tmp_path):
    run_dir = _run_dir(tmp_path / "run", complete=(1, 2))
    job = _stopped_job(run_dir, pid=_ended_pid())
    hosts._clear_stopped()
    assert _left(run_dir) == ["checkpoint-1", "checkpoint-2"]
    assert runner.get(job.id).message.endswith("or \"Resume from the last checkpoint\" on the Jobs page)")


def test_an_interrupted_run_that_ended_here_has_its_cut_checkpoint_removed(tmp_path):
    said = f"interrupted: its process ended without finishing (worker or machine stopped); {_restart(0)}"
    job = _stopped_job(_run_dir(tmp_path / "run", cut=(5,)), "interrupted", said, pid=_ended_pid())
    hosts._clear_stopped()
    row = runner.get(job.id)
    assert (row.pid, row.message) == (None, f"{said}; a checkpoint cut off when it was interrupted was removed: "
                                            "checkpoint-5")
    assert _left(tmp_path / "run") == []


def test_a_run_that_may_still_be_saving_keeps_its_folders(tmp_path):
    """No process here to have ended (a Ray job's pid is a node's): its folder without trainer_state.json may be
    the checkpoint being saved."""
    run_dir = _run_dir(tmp_path / "run", cut=(1,))
    job = _stopped_job(run_dir, host="ray://head:10001", pid=1234)
    hosts._stopped_run_ended(job.id, "cancelled", None)
    assert _left(run_dir) == ["checkpoint-1"]
    assert runner.get(job.id).message == f"cancelled; {_restart(job.id)}"


def test_transformers_writes_trainer_state_json_last_so_its_absence_marks_a_cut_checkpoint():
    """The test of a complete checkpoint (training_checkpoints._state_readable) holds for the installed version."""
    src = inspect.getsource(Trainer._save_checkpoint)
    state = src.index("TRAINER_STATE_NAME")
    assert all(0 <= src.index(before) < state for before in ("save_model(", "_save_optimizer_and_scheduler(",
                                                              "_save_rng_state("))
    assert "save_total_limit" in src[state:]  # only the rotation of older checkpoints comes after it
