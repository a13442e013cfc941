"""Faults injected into every kind of job: kill -9 of the job process and of the worker, a disk that fills during a
build, a database locked by another writer, cancel racing success, and deleting a model others were made from.

Each test checks what survives: no model registered without its folder or twice, nothing half-built registered,
temporary folders (in workspace/.tmp and beside a custom output folder) removed at the next worker start, and the
job left clearly failed/interrupted (training: resumable from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from backend import outputs, registry, runner
from backend.specs import DataSource, EvalSpec, MergeSpec, SftSpec, SynthMathSpec, UpscaleSpec
from backend.upscale import run_upscale
from storage import db
from storage.models import DatasetRecord, EvalScore, Job
from tests.needs import not_here
from tests.test_jobs import group_alive, wait_for

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers

def release_file() -> Path:
    """The file whose presence lets a slowed job (DUS_TEST_PROGRESS_DELAY) run on at full speed: one per test."""
    return db.workspace().parent / "progress-released"


def release_progress() -> None:
    """Slowed jobs run on at full speed from here: a test that has seen what it needed mid-way waits no longer."""
    release_file().touch()


def start_worker(delay: float = 0.0, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, DUS_TEST_PROGRESS_DELAY=str(delay), DUS_TEST_PROGRESS_RELEASE=str(release_file()))
    return subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.2", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def consistent(workspace: Path) -> None:
    """Registry and disk agree: every model row has its folder, no folder is registered twice, no folder under
    models/ is unregistered (a half-built one), and no job is left running."""
    rows = registry.list_models()
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths)), paths
    assert all(Path(p, "config.json").exists() for p in paths), paths
    on_disk = {str(p.resolve()) for p in (workspace / "models").iterdir()}
    assert on_disk <= set(paths), on_disk - set(paths)
    with db.session() as s:
        assert s.exec(select(Job).where(Job.status == "running")).all() == []


def running_job(job_id: int, lines: int = 3) -> Job | None:
    """The job once its process has printed `lines` progress lines (it sleeps after each: DUS_TEST_PROGRESS_DELAY)."""
    job = runner.get(job_id)
    if job.status != "running" or not job.pid or not Path(job.log_path).exists():
        return None
    done = [ln for ln in Path(job.log_path).read_text().splitlines() if ln.startswith("[") and "%]" in ln]
    return job if len(done) >= lines else None


@contextlib.contextmanager
def slow_upscale_on_machine_b(tiny_llama, monkeypatch):
    """A slow up-scale (sleeps after each progress line) under way on "machine-b": yields (job row, worker). The
    multi-machine tests then act as machine a on the shared database; the worker stops at the end."""
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="slow", shard_size="20KB"))
    monkeypatch.setenv("DUS_HOST_ID", "machine-b")
    worker = start_worker(0.3)
    try:
        yield wait_for(lambda: (j := runner.get(job.id)).status == "running" and j.progress > 0.1 and j, 60,
                       "the job under way on b"), worker
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


@pytest.fixture
def other_fs(tmp_path):
    """A folder on another filesystem than the workspace (so builds happen beside it, not in workspace/.tmp)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        not_here("no second filesystem here: /dev/shm is not a tmpfs of its own (docker run --shm-size gives one)")
    d = shm / f"dus-faults-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- kill -9 of the job process

def kill_job_midway(job_id: int, worker: subprocess.Popen, lines: int = 3) -> Job:
    job = wait_for(lambda: running_job(job_id, lines), 120, f"job {job_id} to be under way")
    os.kill(job.pid, signal.SIGKILL)  # the job process only: the worker must notice and clean up after it
    done = wait_for(lambda: runner.get(job_id).status != "running" and runner.get(job_id), 30, "the worker to notice")
    assert worker.poll() is None  # the worker survives its job
    return done


def test_kill9_of_build_jobs_leaves_nothing_registered_and_the_next_start_cleans_tmp(tiny, tiny_llama, workspace,
                                                                                   other_fs):
    # an up-scale into the workspace, one into a custom folder on another filesystem, and a merge (of tiny and a
    # copy of it: its own folder is tiny itself, a merge refused)
    copy = shutil.copytree(tiny_llama, workspace.parent / "tiny-copy")
    jobs = [runner.submit(UpscaleSpec(base="tiny", m=1, name="up", shard_size="20KB")),
            runner.submit(UpscaleSpec(base="tiny", m=1, name="up-out", out=str(other_fs / "up-out"),
                                      shard_size="20KB")),
            runner.submit(MergeSpec(models=["tiny", str(copy)], name="mg", shard_size="20KB"))]
    worker = start_worker(0.3)
    try:
        for job in jobs:
            done = kill_job_midway(job.id, worker)
            assert done.status == "failed" and "exited with code -9 without finishing" in done.error
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [r.name for r in registry.list_models()] == ["tiny"]
    assert list((workspace / "models").iterdir()) == [] and not (other_fs / "up-out").exists()
    runner.worker(once=True)  # the next start: every temporary folder of the killed jobs goes
    assert list((workspace / ".tmp").iterdir()) == []
    assert list(other_fs.iterdir()) == []  # the .tmp-build-* beside the custom folder too
    consistent(workspace)
    # the same specs run again now, into the same places
    for job in jobs:
        runner.resume(job.id)  # failed jobs may be queued again
    runner.worker(once=True, slots=2)  # two at a time, on the two cores: a build's time less
    assert [runner.get(j.id).status for j in jobs] == ["succeeded"] * 3
    assert registry.get("up-out").path == str(other_fs / "up-out")
    consistent(workspace)


def test_kill9_of_synth_and_eval_jobs_registers_nothing(tiny, tiny_llama, tiny_llama_untied, workspace):
    synth = runner.submit(SynthMathSpec(num_seeds=12, batch_size=1, name="sm"))
    ev = runner.submit(EvalSpec(models=["tiny", str(tiny_llama), str(tiny_llama_untied)], tasks=["perplexity"],
                                limit=4))
    worker = start_worker(1.0)
    try:
        assert kill_job_midway(synth.id, worker, 4).status == "failed"
        assert "exited with code -9" in kill_job_midway(ev.id, worker, 2).error
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    with db.session() as s:
        assert s.exec(select(DatasetRecord)).all() == []  # a half-made data set is never registered
        assert s.exec(select(EvalScore)).all() == []  # scores are written together, at the end
    # the synthetic job resumes from its rephrase cache: the seeds done before the kill are not redone
    cache = workspace / "datasets" / "sm" / "rephrase_cache.jsonl"
    done_before = len(cache.read_text().splitlines())
    assert 0 < done_before < 12
    runner.resume(synth.id)
    runner.worker(once=True)
    job = runner.get(synth.id)
    assert job.status == "succeeded", job.error
    assert f"{done_before} already rephrased" in Path(job.log_path).read_text()
    consistent(workspace)


def test_kill9_of_a_training_job_fails_it_kills_its_trainer_and_it_resumes(tiny, workspace):
    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t", max_steps=30,
                   save_steps=5, eval_fraction=0.0, batch_size=1, max_length=32, learning_rate=1e-3)
    job = runner.submit(spec)
    worker = start_worker()
    try:
        wait_for(lambda: max((m.step for m in runner.metrics([job.id])), default=0) >= 12, 180, "12 steps")
        pgid = runner.get(job.id).pid
        os.kill(pgid, signal.SIGKILL)
        wait_for(lambda: runner.get(job.id).status == "failed", 30, "the worker to notice")
        wait_for(lambda: not group_alive(pgid), 15, "the trainer to be stopped with its job process")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    failed = runner.get(job.id)
    assert "exited with code -9" in failed.error and "resume it" in failed.error
    assert registry.get("t") is None
    runner.resume(job.id)
    runner.worker(once=True)
    done = runner.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.result["resumed_from"].startswith("checkpoint-") and done.result["global_step"] == 30
    assert registry.get("t").parents == ["tiny"]
    consistent(workspace)


# ---------------------------------------------------------------- kill -9 of the worker

def test_kill9_of_the_worker_interrupts_its_build_and_the_next_start_cleans_up(tiny, workspace, other_fs):
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="w", out=str(other_fs / "w"), shard_size="20KB"))
    worker = start_worker(0.3)
    try:
        pgid = wait_for(lambda: running_job(job.id), 120, "the build to be under way").pid
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not group_alive(pgid), 15, "the job to end with its worker")
    finally:
        worker.kill()
    assert any(p.name.startswith(".tmp-build-") for p in other_fs.iterdir())  # what the kill left behind
    runner.worker(once=True)  # the next start
    job = runner.get(job.id)
    assert job.status == "interrupted" and "worker or machine stopped" in job.message
    assert list(other_fs.iterdir()) == [] and list((workspace / ".tmp").iterdir()) == []
    assert registry.get("w") is None
    consistent(workspace)


def test_kill_between_rename_and_registration_is_cleaned_at_the_next_start(tiny, workspace):
    # a process killed in the instant after its finished folder reached models/ and before its row was written
    code = ("import os, signal, sys\n"
            "from backend import registry\n"
            "from backend.specs import UpscaleSpec\n"
            "from backend.upscale import run_upscale\n"
            "registry.register = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "run_upscale(UpscaleSpec(base='tiny', m=1, name='gap'))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True)
    assert r.returncode == -signal.SIGKILL
    left = workspace / "models" / "gap"
    assert (left / "config.json").exists() and (left / db.UNREGISTERED_MARK).exists()  # complete, unregistered
    mine = workspace / "models" / "users-own"
    mine.mkdir()  # a folder a user put there, without the mark: never touched
    runner.worker(once=True)
    assert not left.exists() and mine.exists() and registry.get("gap") is None
    run_upscale(UpscaleSpec(base="tiny", m=1, name="gap"))  # the name is free again
    assert not (left / db.UNREGISTERED_MARK).exists() and registry.get("gap").path == str(left)


# ---------------------------------------------------------------- a disk that fills

@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs); needs CAP_SYS_ADMIN, which this machine's root has."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        not_here(f"cannot mount a tmpfs here (run as root with CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_too_small_is_refused_before_writing(tiny, workspace, small_disk):
    with pytest.raises(OSError, match="Not enough disk space"):
        run_upscale(UpscaleSpec(base="tiny", m=1, name="big", out=str(small_disk / "big")))
    assert list(small_disk.iterdir()) == [] and [r.name for r in registry.list_models()] == ["tiny"]


def test_disk_that_fills_during_a_build_says_disk_full_and_leaves_nothing(tiny, workspace, small_disk,
                                                                         monkeypatch):
    monkeypatch.setattr(outputs, "check_disk", lambda path, needed: None)  # as if another writer filled it later
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 2**20 - 150 * 2**10))  # leave ~150 KiB; the model needs ~400 KiB
    with pytest.raises(OSError, match="Disk full while writing the model") as err:
        run_upscale(UpscaleSpec(base="tiny", m=1, name="full", out=str(small_disk / "full")))
    assert "nothing was registered" in str(err.value)
    assert [p.name for p in small_disk.iterdir()] == ["filler"]  # the partial .tmp-build-* folder is gone
    assert list((workspace / ".tmp").iterdir()) == [] and list((workspace / "models").iterdir()) == []
    assert registry.get("full") is None


# ---------------------------------------------------------------- a locked database

def test_job_updates_wait_for_a_database_locked_by_another_writer(tiny, workspace):
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="locked"))
    held = threading.Event()
    hold_s = 1.5  # (was 3 s: any hold shows the wait; storage/db.py's busy timeout is 30 s)

    def hold() -> None:
        con = sqlite3.connect(workspace / "studio.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(hold_s)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    assert runner._transition(job.id, "queued", status="running", message="claimed under a lock")
    waited = time.monotonic() - t0
    t.join()
    assert waited >= hold_s - 0.5  # it waited for the other writer (busy timeout) instead of failing
    assert runner.get(job.id).message == "claimed under a lock"
    # and a whole job runs through while another writer holds the lock now and then
    assert runner._transition(job.id, "running", status="queued")
    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    runner.worker(once=True)
    t.join()
    assert runner.get(job.id).status == "succeeded" and registry.get("locked") is not None


# ---------------------------------------------------------------- cancel racing success

def _running_row() -> int:
    with db.session() as s:
        job = Job(kind="upscale", spec={}, status="running", pid=None)
        s.add(job)
        s.commit()
        return job.id


def test_cancel_racing_success_ends_in_one_recorded_state():
    for _ in range(25):
        job_id = _running_row()
        go = threading.Barrier(2)
        won = {}

        def succeed() -> None:
            go.wait()
            won["success"] = runner._transition(job_id, "running", status="succeeded", result={"model": "m"})

        def cancel() -> None:
            go.wait()
            won["cancel"] = runner.cancel(job_id).status

        threads = [threading.Thread(target=succeed), threading.Thread(target=cancel)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        final = runner.get(job_id).status
        assert final == ("succeeded" if won["success"] else "cancelled")
        assert won["cancel"] == final  # cancel reports the state that stands, whichever won


def test_cancel_arriving_while_the_work_finishes_keeps_cancelled_and_says_what_was_made(tiny, monkeypatch):
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="raced"))
    real = runner.work_function("upscale")

    def work(spec, out, progress):
        result = real(spec, out, progress)
        # the row's pid is this test process: cancel signals only a job's own `jobs exec` process (runner._runs_job)
        assert runner.cancel(job.id).status == "cancelled"  # the cancel lands just before success is written
        return result

    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 1
    done = runner.get(job.id)
    assert done.status == "cancelled" and "the work had finished anyway" in done.message
    assert done.result["model"] == "raced"  # the model it made is named, not hidden
    # the other order: success first, a late cancel changes nothing
    job2 = runner.submit(UpscaleSpec(base="tiny", m=1, name="raced2"))
    monkeypatch.setattr(runner.child, "work_function", lambda kind: real)
    assert runner.execute(job2.id) == 0
    assert runner.cancel(job2.id).status == "succeeded" and runner.get(job2.id).status == "succeeded"


# ---------------------------------------------------------------- delete a model others derive from

def test_delete_of_a_parent_asks_then_keeps_the_lineage_readable(tiny, workspace):
    from streamlit.testing.v1 import AppTest

    from backend.__main__ import main

    run_upscale(UpscaleSpec(base="tiny", m=2, name="kid"))
    run_upscale(UpscaleSpec(base="kid", m=1, name="grandkid"))
    assert main(["models", "delete", "kid"]) == 2  # refused: it names the dependants
    assert registry.get("kid") is not None
    with pytest.raises(registry.RegistryError, match=r"made from 'kid': grandkid.*--force"):
        registry.delete("kid")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/models.py").run()
    at.selectbox(key="model").set_value("kid").run()
    assert any("grandkid" in w.value for w in at.warning)  # the confirmation lists them
    assert "although 1 model(s) were made from it" in at.checkbox(key="confirm_delete").label
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert not at.exception and registry.get("kid") is None
    assert not (workspace / "models" / "kid").exists()
    assert registry.get("grandkid").parents == ["kid"]  # lineage still names it
    assert registry.lineage("grandkid") == [("kid", False)]
    at.selectbox(key="model").set_value("grandkid").run()
    assert not at.exception
    assert any("`kid` (deleted) → **grandkid**" in md.value for md in at.markdown)
    assert main(["models", "delete", "tiny"]) == 0  # its only child is gone: no --force needed
    consistent(workspace)
