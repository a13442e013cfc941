"""Session 25, what the last session left in its output and link checks:
1. a link out of a model folder was refused wherever the folder became a model, evaluation, chat and training
   too, which copy nothing (a checkpoint whose tokenizer.json links to ../base/tokenizer.json); now refused where
   the folder's files are copied into a new model (a build's tokenizer source) or uploaded (push), and
   copy_companions no longer follows a link a registered model gained after its import;
2. `jobs cancel` wrote what a resume does before the process was killed: a training that registered its model in
   its hand-over meanwhile read "resume it to continue from its last checkpoint" while the button read "Mark done";
3. the space a training needs was its base's safetensors size: an F32 base trained in bf16 was counted twice;
4. an existing empty folder (a disk's mount point) given as --out was refused "cannot write to PARENT" without a
   word of where the model could go.
A read-only folder or a mount point is simulated through os.access / os.path.ismount (root passes a chmod)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from backend import hubpush, outputs, registry, runner, train_job
from backend.runner import hosts, resume_step
from backend.specs import DataSource, EvalSpec, MergeSpec, SftSpec, SliceRange, UpscaleSpec
from backend.upscale import run_upscale
from storage import db
from storage.models import Job, ModelRecord, utcnow
from tests.conftest import make_llama
from tests.test_review_cli import cli

DATA = [DataSource(source="builtin:alpaca-mini")]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return secret


def _no_secret_in(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.is_file() and "OPENSSH" in p.read_text(errors="replace")]


# ---------------------------------------------------------------- 1. links: refused where copied, not where read

def test_a_checkpoint_whose_tokenizer_links_to_its_base_is_read_by_evaluation_and_refused_by_copiers(tiny_llama,
                                                                                                  tmp_path):
    base = _copy(tiny_llama, tmp_path / "base")
    ckpt = _copy(tiny_llama, tmp_path / "ckpt")
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.json").symlink_to(Path("..") / "base" / "tokenizer.json")
    assert (ckpt / "tokenizer.json").resolve() == base / "tokenizer.json"
    # old code: "…/ckpt/tokenizer.json is a link to …/base/tokenizer.json, outside the model folder: …"
    assert registry.resolve(str(ckpt)) == (ckpt.resolve(), None)
    registry.check_folder_ref(str(ckpt))  # a reader's checks: the tokenizer loads through the link
    ev = runner.submit(EvalSpec(models=[str(ckpt)], tasks=["perplexity"]))
    assert (runner.get(ev.id).status, runner.get(ev.id).spec["models"]) == ("queued", [str(ckpt)])
    from backend.training import check_inputs

    # a training re-saves the tokenizer files it loads: through the link they would come out as plain files
    with pytest.raises(registry.RegistryError, match="is a link to .*outside the model folder"):
        check_inputs(SftSpec(model=str(ckpt), data=DATA, name="ck-sft", max_steps=1))
    with pytest.raises(ValueError, match="is a link to .*outside the model folder"):
        runner.submit(SftSpec(model=str(ckpt), data=DATA, name="ck-sft", max_steps=1))
    registry.import_folder(base, "base")  # a slices upscale reads its second model's layers, copies none of its files
    sliced = runner.submit(UpscaleSpec(base="base", method="slices", second=str(ckpt), name="sl",
                                       slices=[SliceRange(start=0, end=3), SliceRange(source=1, start=3, end=6)]))
    assert runner.get(sliced.id).status == "queued"
    # a build whose tokenizer comes from it copies through the link: refused before it is queued, as an import is
    said = (f"{ckpt}/tokenizer.json is a link to {base / 'tokenizer.json'}, outside the model folder: a push of the "
            "model would upload that file and a build would copy it. Copy the file itself into the folder (`cp -L`) "
            "or remove the link, then try again.")
    for spec in (UpscaleSpec(base=str(ckpt), m=1, name="up"), MergeSpec(models=["base", str(ckpt)],
                                                                        tokenizer_source=str(ckpt), name="mg")):
        with pytest.raises(ValueError) as exc:
            runner.submit(spec)
        assert str(exc.value) == said
    with pytest.raises(registry.RegistryError) as exc:
        registry.check_folder_ref(str(ckpt), copies=True)
    assert str(exc.value) == said
    assert sorted(j.id for j in runner.list_jobs()) == sorted([ev.id, sliced.id])  # no row for the copiers


def test_a_link_a_registered_model_gained_after_its_import_is_neither_copied_nor_pushed(tiny_llama, tmp_path,
                                                                                         workspace):
    secret = _secret(tmp_path)
    mine = _copy(tiny_llama, tmp_path / "mine")
    registry.import_folder(mine, "mine")
    (mine / "LICENSE").symlink_to(secret)  # added after the import, which would have refused it
    said = (f"{mine}/LICENSE is a link to {secret}, outside the model folder: a push of the model would upload that "
            "file and a build would copy it. Copy the file itself into the folder (`cp -L`) or remove the link, then "
            "try again.")
    # old code: the build copied id_rsa into the up-scaled model as its LICENSE, and registered it
    with pytest.raises(registry.RegistryError) as exc:
        run_upscale(UpscaleSpec(base="mine", m=1, name="up"))
    assert str(exc.value) == said
    assert registry.get("up") is None and not (db.models_dir() / "up").exists() and _no_secret_in(workspace)
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(registry.RegistryError):  # the last guard, whoever copies
        outputs.copy_companions(mine, dst)
    assert list(dst.iterdir()) == []
    with pytest.raises(hubpush.PushRefused) as exc:  # old code: uploaded id_rsa as the model's LICENSE
        hubpush.check_pushable("mine")
    assert str(exc.value) == f"mine: {said.replace('then try again', 'then push again')} Nothing was pushed."
    from backend.training import check_inputs

    template = mine / "special_tokens_map.json"
    kept = template.read_bytes() if template.exists() else None
    template.unlink(missing_ok=True)
    template.symlink_to(secret)  # a training re-saves the tokenizer's files it loads: the key came out as a file
    with pytest.raises(registry.RegistryError, match="special_tokens_map.json is a link to"):
        check_inputs(SftSpec(model="mine", data=DATA, name="mine-sft", max_steps=1))
    template.unlink()
    if kept is not None:
        template.write_bytes(kept)
    # copied as a file, it goes as before
    (mine / "LICENSE").unlink()
    (mine / "LICENSE").write_text("Apache-2.0\n")
    run_upscale(UpscaleSpec(base="mine", m=1, name="up"))
    assert (Path(registry.get("up").path) / "LICENSE").read_text() == "Apache-2.0\n"


def test_a_cached_snapshots_links_into_its_own_blobs_are_still_copied(tiny_llama, tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in tiny_llama.iterdir():
        blob = repo / "blobs" / f"h-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    dst = tmp_path / "dst"
    dst.mkdir()
    outputs.copy_companions(snap, dst)
    assert (dst / "tokenizer.json").read_bytes() == (tiny_llama / "tokenizer.json").read_bytes()
    assert not (dst / "tokenizer.json").is_symlink()


# ---------------------------------------------------------------- 2. a cancel says what a resume does once it ended

def test_a_training_cancelled_as_its_hand_over_registers_its_model_is_told_mark_done(tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    spec = SftSpec(model="tiny", data=DATA, name="t1")
    with db.session() as s:
        job = Job(kind="sft", spec=spec.model_dump(mode="json"), status="running", started=utcnow(),
                  run_dir=str(tmp_path / "run"), host=hosts.host_id())
        s.add(job)
        s.commit()
        s.refresh(job)
    # the job's process (its command line holds `jobs exec ID`, as the worker starts it), reaped as it ends
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job.id)],
                            start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()
    runner._update(job.id, pid=proc.pid)
    real_killpg = os.killpg

    def killpg(pgid, sig):  # the hand-over registers the model as the SIGTERM lands
        if pgid == proc.pid and sig != 0 and registry.get("t1") is None:
            with db.session() as s:
                s.add(ModelRecord(name="t1", path=str(tmp_path / "t1"), kind="trained", num_layers=4, job_id=job.id))
                s.commit()
        return real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    rc, out, err = cli("jobs", "cancel", str(job.id))
    label = "Mark done (t1 is registered)"
    step = (f"its last run registered t1; resume it to mark it succeeded, nothing runs again (python -m backend jobs "
            f"resume {job.id}, or \"{label}\" on the Jobs page)")
    assert (rc, out, err) == (0, f"job {job.id}: cancelled; {step}\n", "")
    row = runner.get(job.id)
    # old code: the row (the Jobs page's message) read "cancelled; resume it to continue from its last checkpoint,
    # checkpoint-20 (…, or "Resume from the last checkpoint" on the Jobs page)", written before the kill, while its
    # button read "Mark done"
    assert (row.status, row.message, row.pid, proc.poll() is not None) == ("cancelled", f"cancelled; {step}", None,
                                                                           True)
    assert resume_step.resume_action(row).label == label


def test_a_job_cancelled_from_another_machine_gets_its_step_when_its_process_has_ended(tmp_path):
    """The worker of the job's machine kills it and clears its pid (hosts._clear_stopped): the step is written then,
    once, from what the run left."""
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    spec = SftSpec(model="tiny", data=DATA, name="t2")
    with db.session() as s:
        job = Job(kind="sft", spec=spec.model_dump(mode="json"), status="cancelled", started=utcnow(),
                  finished=utcnow(), message="cancelled", pid=proc.pid, host=hosts.host_id(),
                  run_dir=str(tmp_path / "none"))
        s.add(job)
        s.commit()
        s.refresh(job)
    hosts._clear_stopped()
    hosts._clear_stopped()  # said once
    row = runner.get(job.id)
    assert row.pid is None and row.message == (
        f"cancelled; no checkpoint was saved; resume it to start the training over from step 0 (python -m backend "
        f"jobs resume {job.id}, or \"Restart (no checkpoint was saved)\" on the Jobs page)")


# ---------------------------------------------------------------- 3. the space a training needs

def test_the_space_a_training_needs_is_its_parameters_in_the_dtype_it_saves(tiny_llama, tokenizer_dir, tmp_path,
                                                                              monkeypatch):
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(tiny_llama / "model.safetensors").values())
    registry.import_folder(tiny_llama, "tiny")  # stored in float32
    monkeypatch.setattr(train_job, "CUDA", True)  # trained (and saved) in bf16
    assert outputs.weights_bytes("tiny") == 2 * params  # old code: the file's size, about 4 × params
    monkeypatch.setattr(train_job, "CUDA", False)
    assert outputs.weights_bytes("tiny") == 4 * params
    bf16 = make_llama(tokenizer_dir, tmp_path / "bf16", dtype=torch.bfloat16)
    assert outputs.weights_bytes(bf16) == 4 * params  # a bf16 base trained on a CPU saves float32: twice its file
    # a disk with room for the bf16 model, not for the float32 file: queued (old code: "Not enough disk space")
    monkeypatch.setattr(train_job, "CUDA", True)
    small = tmp_path / "small"
    small.mkdir()
    real_usage = shutil.disk_usage
    free = (50 << 20) + 3 * params
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=free) if Path(p) == small
                        else real_usage(p))
    job = runner.submit(SftSpec(model="tiny", data=DATA, name="q1", out=str(small / "m")))
    assert runner.get(job.id).status == "queued"
    monkeypatch.setattr(train_job, "CUDA", False)  # float32 needs 4 × params: refused, in numbers
    with pytest.raises(ValueError, match=rf"^Not enough disk space in {small}: the new model needs "
                                         rf"{outputs.human_bytes(4 * params)} "):
        runner.submit(SftSpec(model="tiny", data=DATA, name="q2", out=str(small / "m2")))


# ---------------------------------------------------------------- 4. an empty folder (a mount point) as --out

def _not_writable(monkeypatch, folder: Path) -> None:
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == folder else real(p, mode, *a, **k))


def test_an_empty_folder_given_as_out_is_told_where_the_model_can_go(tiny_llama, tmp_path, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    mnt = tmp_path / "mnt"
    disk = mnt / "disk2"
    disk.mkdir(parents=True)
    _not_writable(monkeypatch, mnt)
    said = (f"cannot write to {mnt} (no permission), where the model's folder {disk} would replace the empty folder "
            f"of that name. --out names the model's own folder, not the folder it goes in: to put the model inside "
            f"{disk}, give --out {disk / 'up'}. Nothing was registered.")
    rc, _, err = cli("upscale", "--base", "tiny", "--m", "1", "--name", "up", "--out", str(disk))
    assert (rc, err) == (1, f"error: {said}\n")  # old code: "cannot write to …/mnt (no permission): choose another…"
    with pytest.raises(ValueError) as exc:
        runner.submit(UpscaleSpec(base="tiny", m=1, name="up", out=str(disk)))
    assert str(exc.value) == said
    rc, _, _ = cli("upscale", "--base", "tiny", "--m", "1", "--name", "up", "--out", str(disk / "up"))
    assert rc == 0 and registry.get("up").path == str(disk / "up")


def test_a_mount_point_as_out_is_told_where_the_model_can_go(tiny_llama, tmp_path, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    disk = tmp_path / "disk2"
    disk.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == disk or real(p))
    # empty, its parent writable: the build's rename could not replace it ("Device or resource busy", after the work)
    with pytest.raises(OSError) as exc:
        outputs.output_dir(None, str(disk), "up")
    assert str(exc.value) == (
        f"{disk} is a mount point, which the model's folder cannot replace (a build renames its folder into place). "
        f"--out names the model's own folder, not the folder it goes in: to put the model inside {disk}, give --out "
        f"{disk / 'up'}. Nothing was registered.")
    (disk / "lost+found").mkdir()  # a fresh ext4 disk's
    with pytest.raises(FileExistsError) as exc:
        outputs.output_dir(None, str(disk), "up")
    assert str(exc.value) == (f"{disk} already exists and is not empty: choose another output folder (--out names the "
                              f"model's own folder, not the folder it goes in: to put the model inside it, give --out "
                              f"{disk / 'up'}).")
    assert outputs.output_dir(None, str(disk / "up"), "up") == disk / "up"
