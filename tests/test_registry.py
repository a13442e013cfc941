"""Model registry imports: local folders, pickle opt-in with weights_only, broken inputs refused."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from backend import registry
from tests.conftest import load_state


def test_import_folder_registers_in_place_with_facts(tiny_llama):
    rec = registry.import_folder(tiny_llama, "tiny")
    assert rec.path == str(tiny_llama.resolve()) and rec.kind == "base"
    assert (rec.num_layers, rec.hidden_size, rec.dtype) == (6, 32, "F32")
    expected = sum(t.numel() for t in load_state(tiny_llama).values())
    assert rec.num_parameters == expected
    with pytest.raises(ValueError, match="already registered"):
        registry.import_folder(tiny_llama, "tiny")
    assert registry.resolve("tiny") == (tiny_llama.resolve(), "tiny")


def pickle_folder(src: Path, dst: Path) -> Path:
    """`src` as a pickle checkpoint: its config and tokenizer files beside pytorch_model.bin."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, dst / f.name)
    torch.save(load_state(src), dst / "pytorch_model.bin")
    return dst


def test_pickle_weights_are_refused_unless_opted_in_then_loaded_safely(tiny_llama, tmp_path):
    folder = pickle_folder(tiny_llama, tmp_path / "pickled")
    with pytest.raises(ValueError, match="only pickle weights.*allow pickle"):
        registry.import_folder(folder, "p")
    assert registry.list_models() == []
    rec = registry.import_folder(folder, "p", allow_pickle=True)
    converted = load_state(Path(rec.path))
    original = load_state(tiny_llama)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)


class _Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_malicious_pickle_is_not_executed(tiny_llama, tmp_path):
    folder = pickle_folder(tiny_llama, tmp_path / "evil")
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ValueError, match="could not be read safely"):
        registry.import_folder(folder, "evil", allow_pickle=True)
    assert registry.list_models() == []


def test_corrupt_gguf_is_refused(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="Could not read GGUF"):
        registry.import_gguf(bad, "bad")
    assert registry.list_models() == []


def test_delete_removes_row_and_owned_files_only(tiny_llama):
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    registry.import_folder(tiny_llama, "tiny")
    out = Path(run_upscale(UpscaleSpec(base="tiny", m=2, name="big"))["path"])
    assert registry.get("big").parents == ["tiny"]
    assert [c.name for c in registry.children("tiny")] == ["big"]
    registry.delete("big")
    assert not out.exists() and registry.get("big") is None
    registry.delete("tiny")  # registered in place: the user's folder stays
    assert (tiny_llama / "config.json").exists()
