"""Session 24, where outputs go when the disk says no. A hostile walk found: a training whose --out could not take the
model (disk full, read-only) trained to the end, then failed with shutil.Error's raw list and left truncated files
and the unregistered mark there; a build whose --out was read-only said a bare "[Errno 30]" and left its note in
.tmp; a build killed with kill -9 left its .tmp folder until the worker's next start; a named pipe given as data hung
the CLI and /dev/zero read as "empty"; `--slice 0:-1:3` got argparse's bare "invalid _slice value".

A full disk or a read-only folder is simulated by making the os / shutil call that would meet it raise
OSError(ENOSPC / EROFS) (a chmod'ed folder stops nobody who runs as root)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from backend import data, outputs, registry, runner, training
from backend.data import DataError
from backend.evaltasks import EvalError, read_jsonl
from backend.recipe import inputs as recipe_inputs
from backend.recipe.spec import RecipeError
from backend.runner import loop
from backend.specs import EvalSpec, SftSpec
from backend.synth.seeds import SeedError, read_records
from storage import db
from storage.models import Job, utcnow
from tests.test_review_cli import cli

SFT = ("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--max-steps", "2", "--max-rows", "8")


def _fake_trainer(monkeypatch, tiny_llama: Path, launched: list) -> None:
    """A trainer that ends as train_entry does: checkpoint-2 (the last step), summary.json, the model in final/."""
    def launch(spec, run_dir):
        launched.append(run_dir)
        script = (f"import json, pathlib, shutil; r = pathlib.Path({str(run_dir)!r}); "
                  "c = r / 'checkpoints' / 'checkpoint-2'; c.mkdir(parents=True, exist_ok=True); "
                  "(c / 'trainer_state.json').write_text(json.dumps({'global_step': 2})); "
                  f"shutil.copytree({str(tiny_llama)!r}, r / 'final'); "
                  "(r / 'summary.json').write_text(json.dumps({'global_step': 2, 'train_loss': 1.5}))")
        return [sys.executable, "-c", script]

    monkeypatch.setattr(training, "launch_command", launch)


def _disk_fills_at(monkeypatch, out: Path) -> None:
    """`out` is on another filesystem (the rename says EXDEV, so shutil copies) and the disk fills while the weights
    are copied there: an empty model.safetensors is left, as a real full disk leaves one."""
    real_rename, real_copyfile = os.rename, shutil.copyfile

    def rename(src, dst, *a, **k):
        if Path(dst) == out:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real_rename(src, dst, *a, **k)

    def copyfile(src, dst, *a, **k):
        if Path(dst).is_relative_to(out) and Path(dst).name == "model.safetensors":
            Path(dst).write_bytes(b"")
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copyfile(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)


# ---------------------------------------------------------------- 1. a training whose --out cannot take the model

def test_a_training_whose_out_fills_up_says_disk_full_removes_the_partial_folder_and_a_rerun_finishes_it(
        tiny_llama, monkeypatch, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.delenv("DUS_JOB_ID", raising=False)
    monkeypatch.delenv("DUS_RUN_NAME", raising=False)
    launched: list = []
    _fake_trainer(monkeypatch, tiny_llama, launched)
    out = tmp_path / "full2"
    with monkeypatch.context() as m:
        _disk_fills_at(m, out)
        rc, _, err = cli(*SFT, "--name", "full2", "--out", str(out))
    (run_dir,) = launched
    final = run_dir / "final"
    # old code: "error: [('/…/final/model.safetensors', '/…/full2/model.safetensors', "[Errno 28] No space left …")…]"
    assert rc == 1 and err.strip().splitlines()[-1] == (
        f"error: Disk full while writing the model to {tmp_path}: the partial files were removed and nothing was "
        f"registered. Free some space or choose another output folder. The trained model is kept in {final}: once "
        f"{tmp_path} can take it, the same command with --run-name {run_dir.name} (--out may change) continues from "
        "checkpoint-2, its last step, and registers the model without training again.")
    assert not out.exists()  # old code: an empty model.safetensors and the .dus-unregistered mark were left there
    assert (final / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()
    assert registry.get("full2") is None
    # with room again, the rerun the message names registers the model (the real trainer, resumed from its last
    # step's checkpoint, trains no step: backend/train_job/resume.py CompleteAtCheckpoint)
    rc, out_text, _ = cli(*SFT, "--name", "full2", "--out", str(out), "--run-name", run_dir.name)
    assert rc == 0 and launched == [run_dir, run_dir]
    assert registry.get("full2").path == str(out)
    assert (out / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()
    assert not (out / db.UNREGISTERED_MARK).exists()


def test_a_job_whose_out_is_read_only_at_hand_over_names_jobs_resume(tiny_llama, monkeypatch, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setenv("DUS_JOB_ID", "7")
    launched: list = []
    _fake_trainer(monkeypatch, tiny_llama, launched)
    out = tmp_path / "ro" / "m"
    out.parent.mkdir()
    real_rename = os.rename

    def rename(src, dst, *a, **k):
        if Path(dst) == out:
            raise OSError(errno.EROFS, "Read-only file system", str(src), None, str(dst))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    spec = SftSpec(model="tiny", data=[{"source": "builtin:alpaca-mini"}], max_steps=2, max_rows=8, name="rom",
                   out=str(out))
    with pytest.raises(training.TrainingError) as exc:
        training.run_train(spec)
    (run_dir,) = launched
    assert str(exc.value) == (
        f"cannot write to {out.parent} (a read-only filesystem): choose another output folder. Nothing was "
        f"registered. The trained model is kept in {run_dir / 'final'}: once {out.parent} can take it, python -m "
        "backend jobs resume 7 (or \"Resume from the last checkpoint\" on the Jobs page) continues from checkpoint-2, "
        "its last step, and registers the model without training again. To hand it to another folder instead: the "
        f"job's command run in a terminal with --run-name {run_dir.name} --out NEW_FOLDER.")  # old code: "[Errno 30] Read-only file system: …"
    assert (run_dir / "final" / "config.json").is_file() and not out.exists()


def _read_only(monkeypatch, folder: Path) -> None:
    """os.access says no for `folder`, as a read-only mount answers every user (root too)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == folder else real(p, mode, *a, **k))


def test_a_training_is_refused_before_launch_when_its_out_is_read_only_or_too_small(tiny_llama, monkeypatch,
                                                                                     tmp_path):
    from backend import train_job

    monkeypatch.setattr(train_job, "CUDA", False)  # the space is counted in the dtype a training saves in
    registry.import_folder(tiny_llama, "tiny")
    launched: list = []
    _fake_trainer(monkeypatch, tiny_llama, launched)
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    rc, _, err = cli(*SFT, "--name", "ro1", "--out", str(ro / "sub" / "m"))  # the parent's parent: checked
    assert (rc, err) == (1, f"error: cannot write to {ro} (no permission): choose another output folder. Nothing was "
                            "registered.\n")
    assert launched == [] and not (ro / "sub").exists()  # old code: trained, then failed at the hand-over

    small = tmp_path / "small"
    small.mkdir()
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1 << 20)
                        if Path(p) == small else real_usage(p))
    rc, _, err = cli(*SFT, "--name", "sm1", "--out", str(small / "m"))
    from safetensors.torch import load_file

    # its parameters in float32, as a CPU saves them (session 25: counted in the saving dtype, not the file's size)
    weights = 4 * sum(t.numel() for t in load_file(tiny_llama / "model.safetensors").values())
    assert outputs.weights_bytes("tiny") == weights
    assert rc == 1 and err.startswith(f"error: Not enough disk space in {small}: the new model needs "
                                      f"{outputs.human_bytes(weights)} (and 50 MiB to spare), 1 MiB is free.")
    assert launched == []
    # queued: refused alike, before its row is written (it runs on this machine)
    with pytest.raises(ValueError, match=rf"^cannot write to {ro} \(no permission\)"):
        runner.submit(SftSpec(model="tiny", data=[{"source": "builtin:alpaca-mini"}], name="q1", out=str(ro / "m")))
    with pytest.raises(ValueError, match=rf"^Not enough disk space in {small}"):
        runner.submit(SftSpec(model="tiny", data=[{"source": "builtin:alpaca-mini"}], name="q2",
                              out=str(small / "m")))
    assert runner.list_jobs() == []  # neither refusal left a queued row


# ---------------------------------------------------------------- 2. a build whose --out is read-only

def test_a_build_into_a_read_only_folder_says_so_and_leaves_nothing_in_tmp(tiny_llama, monkeypatch, tmp_path):
    """On another filesystem the build folder sits beside the destination, with a note in .tmp naming it: the note
    was written and the folder made before the `try` whose `finally` removes the note."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_stat, real_mkdir = os.stat, os.mkdir

    def stat(p, *a, **k):  # ro is another filesystem than the workspace's .tmp
        st = real_stat(p, *a, **k)
        return os.stat_result((*st[:2], st.st_dev + 1, *st[3:10])) if Path(p) == ro else st

    def mkdir(p, *a, **k):
        if Path(p).parent == ro:
            raise OSError(errno.EROFS, "Read-only file system", str(p))
        return real_mkdir(p, *a, **k)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(OSError) as exc:
        with outputs.building(ro / "m", "build"):
            pass
    # old code: "[Errno 30] Read-only file system: '/…/ro/.tmp-build-…'", and external-….external left in .tmp
    assert str(exc.value) == (f"cannot write to {ro} (a read-only filesystem): choose another output folder. Nothing "
                              "was registered.")
    assert list(db.tmp_dir().iterdir()) == []


def test_an_upscale_whose_out_turns_read_only_says_so(tiny_llama, monkeypatch, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_rename = os.rename

    def rename(src, dst, *a, **k):  # the build's final rename into place
        if Path(dst).parent == ro:
            raise OSError(errno.EROFS, "Read-only file system", str(src), None, str(dst))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    rc, _, err = cli("upscale", "--base", "tiny", "--m", "1", "--name", "up-ro", "--out", str(ro / "m"))
    assert rc == 1 and err.splitlines()[-1] == (
        f"error: cannot write to {ro} (a read-only filesystem): choose another output folder. Nothing was "
        "registered.")  # old code: "error: [Errno 30] Read-only file system: …"
    assert list(db.tmp_dir().iterdir()) == [] and list(ro.iterdir()) == [] and registry.get("up-ro") is None


def test_disk_full_is_found_inside_shutil_error():
    said = shutil.Error([("/a/final/model.safetensors", "/b/model.safetensors",
                          "[Errno 28] No space left on device: '/b/model.safetensors'")])
    assert outputs.disk_full(said) and not outputs.disk_full(shutil.Error([("/a", "/b", "[Errno 2] No such file")]))
    assert outputs.write_refused(shutil.Error([("/a", "/b", "[Errno 30] Read-only file system: '/b'")])) == errno.EROFS
    # a source this process may not read is no fault of the destination
    denied = PermissionError(errno.EACCES, "Permission denied", "/models/base/model.safetensors")
    assert outputs.write_refused(denied, Path("/out")) is None
    assert outputs.write_refused(denied, Path("/models")) == errno.EACCES


# ---------------------------------------------------------------- 3. a build killed with kill -9

def test_a_dead_job_process_has_its_tmp_folders_removed_when_the_worker_reaps_it(tmp_path):
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    with db.session() as s:
        job = Job(kind="upscale", spec={}, status="running", started=utcnow(), host=runner.host_id(), pid=proc.pid)
        s.add(job)
        s.commit()
        s.refresh(job)
    host = db._host_key(db.host_id())
    tmp = db.tmp_dir()
    built = tmp / f"build-{proc.pid}-0a1b2c3d@{host}"
    built.mkdir()
    (built / "model.safetensors").write_bytes(b"x")
    beside = tmp_path / f".tmp-build-{proc.pid}-1a2b3c4d@{host}"  # a build beside an output on another filesystem
    beside.mkdir()
    note = tmp / f"external-{proc.pid}-1a2b3c4d@{host}{db.EXTERNAL_TMP_SUFFIX}"
    note.write_text(str(beside))
    live = tmp / f"build-{os.getpid()}-5e6f7a8b@{host}"  # another process's (the worker's own CLI build)
    live.mkdir()
    loop._reap_ended({job.id: proc})
    # old code: all kept until the worker's next start (db.clean_stale_tmp in _start_checks)
    assert not built.exists() and not note.exists() and not beside.exists()
    assert live.is_dir()
    assert runner.get(job.id).status == "failed"


# ---------------------------------------------------------------- 4. data paths that are not regular files

@pytest.fixture
def pipe_and_device(tmp_path) -> Iterator[tuple[Path, Path]]:
    """A named pipe, fed a JSON line whenever something opens it (so the old code, which read it, ends instead of
    waiting for a writer forever), and a link to a device (/dev/null: a /dev/zero was read until memory ran out)."""
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader opens it
            except OSError:
                time.sleep(0.01)
                continue
            try:
                os.write(fd, b'{"question": "q", "text": "a line", "problem": "1+1", "answer": "2"}\n')
            except OSError:
                pass
            finally:
                os.close(fd)

    threading.Thread(target=feed, daemon=True).start()
    device = tmp_path / "z.txt"
    device.symlink_to(os.devnull)
    yield fifo, device
    stop.set()


def test_a_named_pipe_or_a_device_given_as_data_is_refused_not_read(pipe_and_device):
    fifo, device = pipe_and_device
    with pytest.raises(DataError) as exc:  # old code: hung, waiting for a writer
        data.load_source(str(fifo))
    assert str(exc.value) == (f"{fifo} is not a regular file (a named pipe): a pipe, device or socket may wait forever "
                              "or never end, so it is not read. Give a data file saved on disk.")
    with pytest.raises(DataError) as exc:  # old code: "Data file z.txt is empty"
        data.check_source(str(device), "cpt")
    assert str(exc.value).startswith(f"{device} is not a regular file (a device): ")


def test_seed_benchmark_eval_and_recipe_readers_refuse_them_alike(pipe_and_device):
    from backend.synth.datasets import DatasetError
    from backend.synth.pipeline import load_benchmark

    fifo, device = pipe_and_device
    with pytest.raises(SeedError, match=r"is not a regular file \(a device\).*Give a \.jsonl or \.json file"):
        read_records(device, "z.txt")  # old code: "z.txt holds no records." (and /dev/zero: read until out of memory)
    with pytest.raises(DatasetError, match=r"is not a regular file \(a device\)"):
        load_benchmark(str(device))
    with pytest.raises(DatasetError, match=r"is not a regular file \(a named pipe\)"):
        load_benchmark(str(fifo))
    with pytest.raises(EvalError, match=r"is not a regular file \(a named pipe\)"):
        read_jsonl(str(fifo), ("question",))
    with pytest.raises(ValueError, match=rf"task 'qa:{fifo}': {fifo} is not a regular file \(a named pipe\)"):
        EvalSpec(models=["m"], tasks=[f"qa:{fifo}"])  # old code: "… does not exist."
    with pytest.raises(RecipeError, match=rf"stages\.a\.data: {device} is not a regular file \(a device\)"):
        recipe_inputs._source_fp(str(device), "stages.a.data", {})  # old code: hashed it (/dev/zero: forever)
    with pytest.raises(RecipeError, match=rf"stages\.s\.seeds: {fifo} is not a regular file"):
        recipe_inputs._synth_fps({"seeds": str(fifo)}, "stages.s")  # old code: "file … does not exist."


# ---------------------------------------------------------------- 5. --slice out of range

@pytest.mark.parametrize("value, said", [
    ("0:-1:3", "start: Input should be greater than or equal to 0"),
    ("2:0:3", "source: Input should be less than or equal to 1")])
def test_a_slice_out_of_range_names_the_field(value, said):
    rc, _, err = cli("upscale", "--base", "tiny", "--method", "slices", "--slice", value)
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"python -m backend upscale: error: argument --slice: --slice {value!r}: {said} (SOURCE is 0, the base model, "
        "or 1, the --second model; START and END are layer numbers, END exclusive)")  # old: invalid _slice value
