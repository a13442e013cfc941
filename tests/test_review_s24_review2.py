"""A review of the session's output checks: an error is blamed on the output folder only when it names a path the
build writes; the space a training needs counts the weights a loader reads; a hand-over into a folder another job
filled meanwhile names it; a copied hand-over is marked before its first file lands."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from backend import outputs
from storage import db


def test_only_errors_on_the_written_paths_are_the_destinations_fault(tmp_path):
    out = tmp_path / "models" / "new"
    unreadable = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "models" / "base" / "x.safetensors"))
    assert outputs.write_refused(unreadable, out) is None  # a source model beside it: no fault of the destination
    assert outputs.write_refused(PermissionError(errno.EACCES, "Permission denied", str(out / "a")), out) == errno.EACCES
    cache = OSError(errno.EROFS, "Read-only file system", "/home/u/.cache/huggingface/modules/x.py")
    assert outputs.write_refused(cache, out) is None  # a read-only cache elsewhere
    assert outputs.write_refused(OSError(errno.EROFS, "Read-only file system"), out) == errno.EROFS  # no path named
    copy = shutil.Error([("a", str(out / "a"), "[Errno 30] Read-only file system: 'x'")])
    assert outputs.write_refused(copy, out) == errno.EROFS


def test_the_space_a_training_needs_counts_the_weights_a_loader_reads(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from backend import train_job

    monkeypatch.setattr(train_job, "CUDA", False)  # saved in float32 (session 25: counted in the saving dtype)
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"w": torch.zeros(250)}, folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    # a Mistral snapshot's copy no loader reads
    save_file({"w": torch.zeros(1250)}, folder / "consolidated.safetensors")
    assert outputs.weights_bytes(folder) == 1000
    assert outputs.weights_bytes(tmp_path / "gone") is None and outputs.weights_bytes(None) is None


def test_a_hand_over_into_a_folder_filled_meanwhile_names_it_and_keeps_the_model(tmp_path):
    src, out = tmp_path / "final", tmp_path / "out"
    src.mkdir()
    (src / "config.json").write_text("{}")
    out.mkdir()
    (out / "other.safetensors").write_text("theirs")
    with pytest.raises(FileExistsError, match="was taken while this job ran: it now holds another job's files"):
        outputs.move_output(src, out)
    assert (src / "config.json").is_file() and (out / "other.safetensors").read_text() == "theirs"


def test_a_copied_hand_over_is_marked_before_its_first_file(tmp_path, monkeypatch):
    src, out = tmp_path / "final", tmp_path / "out"
    src.mkdir()
    (src / "config.json").write_text("{}")
    seen = []

    def rename(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def copytree(a, b, **kw):  # a kill mid-copy: what is in the folder when the first file would land
        seen.append(sorted(p.name for p in Path(b).iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "rename", rename)
    monkeypatch.setattr(outputs.shutil, "copytree", copytree)
    with pytest.raises(KeyboardInterrupt):
        outputs.move_output(src, out)
    assert seen == [[db.UNREGISTERED_MARK]]  # a resume's output_dir may replace it, as a build's
