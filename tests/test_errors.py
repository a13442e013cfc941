"""Bad input gets a clear error and registers nothing: no row, no folder under models/, no temp leftovers."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections import namedtuple
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend import registry
from backend.specs import SliceRange, UpscaleSpec
from backend.upscale import MismatchError, run_upscale
from storage import db
from tests.conftest import make_llama


def assert_nothing_registered(workspace: Path) -> None:
    assert registry.list_models() == []
    assert list((workspace / "models").iterdir()) == []
    assert list((workspace / ".tmp").iterdir()) == []


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("m", [3, 4, 6, 100])
def test_m_out_of_range_names_the_valid_range(tiny_llama, workspace, m):
    with pytest.raises(ValueError, match=r"choose 1 <= m <= 2"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), m=m))
    assert_nothing_registered(workspace)


def test_m_below_one_and_missing_fields_fail_in_the_spec():
    with pytest.raises(ValidationError, match="m=0: m must be at least 1"):
        UpscaleSpec(base="x", m=0)
    with pytest.raises(ValidationError, match="needs m"):
        UpscaleSpec(base="x")
    with pytest.raises(ValidationError, match="needs groups"):
        UpscaleSpec(base="x", method="llama-pro")
    with pytest.raises(ValidationError, match="no second model"):
        UpscaleSpec(base="x", method="slices", slices=[SliceRange(source=1, start=0, end=2)])
    with pytest.raises(ValidationError, match="Extra inputs"):
        UpscaleSpec(base="x", m=2, mm=3)


def test_out_of_range_slices(tiny_llama, workspace):
    with pytest.raises(ValueError, match=r"\[2, 7\) is out of range .* half-open"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), method="slices",
                                slices=[SliceRange(start=0, end=3), SliceRange(start=2, end=7)]))
    assert_nothing_registered(workspace)


def test_llama_pro_groups_must_divide(tiny_llama, workspace):
    with pytest.raises(ValueError, match=r"choose one of \[1, 2, 3, 6\]"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), method="llama-pro", groups=4))
    assert_nothing_registered(workspace)


def test_missing_shard(tiny_llama, tmp_path, workspace):
    src = copy_model(tiny_llama, tmp_path / "broken")
    (src / "model.safetensors").rename(src / "model-00001-of-00002.safetensors")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match="missing shard.*model-00002-of-00002"):
        run_upscale(UpscaleSpec(base=str(src), m=2))
    assert_nothing_registered(workspace)


@pytest.mark.parametrize("damage", ["header_length", "header_json", "truncated"])
def test_corrupt_header(tiny_llama, tmp_path, workspace, damage):
    src = copy_model(tiny_llama, tmp_path / "corrupt")
    f = src / "model.safetensors"
    raw = bytearray(f.read_bytes())
    if damage == "header_length":
        raw[:8] = struct.pack("<Q", len(raw) * 2)
    elif damage == "header_json":
        raw[10:20] = b"\x00garbage!\xff"
    else:
        raw = raw[: len(raw) - 100]
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt|truncated"):
        run_upscale(UpscaleSpec(base=str(src), m=2))
    assert_nothing_registered(workspace)


def test_mismatched_sources(tiny_llama, tiny_qwen2, tokenizer_dir, tmp_path, workspace):
    with pytest.raises(MismatchError, match="differ in architecture"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), second=str(tiny_qwen2), method="slices",
                                slices=[SliceRange(start=0, end=3), SliceRange(source=1, start=3, end=6)]))
    untied = make_llama(tokenizer_dir, tmp_path / "untied", tie=False)
    with pytest.raises(MismatchError, match="lm_head|tie_word_embeddings"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), second=str(untied), method="slices",
                                slices=[SliceRange(start=0, end=3), SliceRange(source=1, start=3, end=6)]))
    assert_nothing_registered(workspace)


def test_unknown_architecture(tiny_llama, tmp_path, workspace):
    src = copy_model(tiny_llama, tmp_path / "weird")
    cfg = json.loads((src / "config.json").read_text())
    del cfg["num_hidden_layers"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Unknown architecture 'llama'.*layer count"):
        run_upscale(UpscaleSpec(base=str(src), m=2))
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        run_upscale(UpscaleSpec(base=str(tmp_path), m=2))
    assert_nothing_registered(workspace)


def test_not_enough_disk_space(tiny_llama, workspace, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match="Not enough disk space.*needs"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), m=2))
    assert_nothing_registered(workspace)


def test_name_taken_and_output_folder_not_empty(tiny_llama, workspace, tmp_path):
    run_upscale(UpscaleSpec(base=str(tiny_llama), m=2, name="one"))
    with pytest.raises(ValueError, match="already registered"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), m=1, name="one"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), m=1, name="two", out=str(busy)))
    assert (busy / "keep.txt").read_text() == "mine"
    assert [r.name for r in registry.list_models()] == ["one"]


def test_failure_mid_write_leaves_nothing(tiny_llama, workspace, monkeypatch):
    import backend.safetensors_stream as st

    def boom(*a, **k):
        raise OSError("disk exploded")

    monkeypatch.setattr(st, "_copy_range", boom)
    with pytest.raises(OSError, match="disk exploded"):
        run_upscale(UpscaleSpec(base=str(tiny_llama), m=2))
    assert_nothing_registered(workspace)


def test_leftovers_of_a_killed_build_are_cleaned_but_live_ones_kept(workspace):
    db.workspace()
    dead = db.tmp_dir() / "build-999999-deadbeef"  # no such pid
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    live = db.tmp_dir() / f"build-{os.getppid()}-cafe0000"
    live.mkdir()
    removed = db.clean_stale_tmp()
    assert dead in removed and not dead.exists() and live.exists()


def test_unregistered_name_is_explained(workspace):
    with pytest.raises(ValueError, match="neither a registered model"):
        run_upscale(UpscaleSpec(base="no-such-model", m=2))
