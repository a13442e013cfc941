"""Walk 12, findings 6 and 7 (session 12's walk): imports of a folder without weights and of a cut-off GGUF.

6. A folder with config.json but no weights was queued, then failed with "Import the model first", which loops for a
   user who is importing it. It is refused before a job is queued, and Build/eval/train given such a folder as a
   model path are told to copy the weights in.
7. A GGUF file cut short (header only, or a real one missing its end) failed with a raw struct or numpy error. It
   is called truncated or damaged, with what to do, and nothing is registered or written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from backend import registry, runner
from backend.modelinfo import inspect_model
from backend.safetensors_stream import CheckpointError
from backend.specs import ImportSpec
from storage import db


def weightless(tiny_llama: Path, out: Path) -> Path:
    """The tiny model's folder as a partial download leaves it: config and tokenizer, no weights."""
    shutil.copytree(tiny_llama, out)
    (out / "model.safetensors").unlink()
    return out


def write_gguf(path: Path) -> Path:
    """A small but well-formed GGUF (a one-layer Llama header and one float32 tensor) written with gguf's writer."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.arange(32 * 8, dtype=np.float32).reshape(32, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def nothing_written() -> None:
    """No model row, and no folder left under the workspace's models or temporary folders."""
    assert registry.list_models() == []
    for folder in (db.models_dir(), db.tmp_dir()):
        assert not folder.exists() or list(folder.iterdir()) == []


# ---------------------------------------------------------------- 6. a folder with config.json but no weights

def test_an_import_of_a_folder_without_weights_is_refused_before_queueing(tiny_llama, tmp_path):
    folder = weightless(tiny_llama, tmp_path / "noweights")
    with pytest.raises(registry.RegistryError) as refused:
        runner.submit(ImportSpec(target=str(folder)))
    assert str(refused.value) == (
        f"{folder} has config.json but no weights (.safetensors, or .bin/.pt with 'allow pickle'): the download or "
        "copy is incomplete. Copy the model's weight files into it, then import it again.")
    assert runner.list_jobs() == []
    nothing_written()


def test_an_import_of_a_folder_holding_only_trainer_files_is_refused_too(tiny_llama, tmp_path):
    """training_args.bin and optimizer.pt are pickles but no weights: such a folder has none either."""
    folder = weightless(tiny_llama, tmp_path / "trainer-leftovers")
    (folder / "training_args.bin").write_bytes(b"not weights")
    (folder / "optimizer.pt").write_bytes(b"not weights")
    with pytest.raises(registry.RegistryError, match=r"has config\.json but no weights"):
        runner.submit(ImportSpec(target=str(folder), allow_pickle=True))
    assert runner.list_jobs() == []
    nothing_written()


def test_an_import_of_a_folder_holding_a_gguf_names_the_file_to_import(tiny_llama, tmp_path):
    folder = weightless(tiny_llama, tmp_path / "ggufdir")
    write_gguf(folder / "tiny.Q4.gguf")
    with pytest.raises(registry.RegistryError) as refused:
        runner.submit(ImportSpec(target=str(folder)))
    assert str(refused.value) == (f"{folder} holds GGUF weights (tiny.Q4.gguf), which are imported as a file: import "
                                  f"{folder / 'tiny.Q4.gguf'} itself, not its folder.")
    assert runner.list_jobs() == []
    nothing_written()


def test_a_model_path_without_weights_is_told_to_copy_them_in_not_to_import(tiny_llama, tmp_path):
    """What Build, evaluation and training read a model folder through (modelinfo.inspect_model)."""
    folder = weightless(tiny_llama, tmp_path / "noweights")
    with pytest.raises(CheckpointError) as refused:
        inspect_model(folder)
    assert str(refused.value) == (f"No safetensors weights in {folder}, nor any other weight file: the download or "
                                  "copy is incomplete. Copy the model's .safetensors files into it.")


def test_a_model_path_holding_only_trainer_files_is_told_to_copy_weights_in(tiny_llama, tmp_path):
    """training_args.bin is no weights file: advice to import it would loop (the import refuses such a folder)."""
    folder = weightless(tiny_llama, tmp_path / "trainer-leftovers")
    (folder / "training_args.bin").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match=r"nor any other weight file: the download or copy is incomplete"):
        inspect_model(folder)


def test_a_model_path_with_pickle_weights_is_still_told_to_import_them(tiny_llama, tmp_path):
    folder = weightless(tiny_llama, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError) as refused:
        inspect_model(folder)
    assert str(refused.value) == (
        f"No safetensors weights in {folder}, only pytorch_model.bin. Import the model first (Models page or "
        "`python -m backend models import`; .bin/.pt need 'allow pickle'), which converts them to safetensors, "
        "then use the imported model.")


# ---------------------------------------------------------------- 7. a GGUF file cut short

@pytest.mark.parametrize("keep", [
    pytest.param(lambda size: 8, id="header-only"),  # magic and version, as walk12's hdronly.gguf
    pytest.param(lambda size: 100, id="cut-in-metadata"),
    pytest.param(lambda size: size - 500, id="cut-in-tensor-data"),  # as walk12's cut.gguf
])
def test_a_gguf_cut_short_is_called_truncated_and_nothing_is_written(tmp_path, keep):
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep(len(whole))])
    with pytest.raises(registry.RegistryError) as refused:
        registry.import_any(str(cut), "cut")
    assert str(refused.value) == (f"Could not read GGUF file {cut} ({cut.stat().st_size:,} bytes): it looks "
                                  "truncated or damaged (an interrupted download or copy?). Download it again.")
    nothing_written()


def test_a_whole_gguf_that_fails_for_another_reason_is_not_called_truncated(tmp_path):
    """The same file uncut holds no tokenizer: transformers' own reason stands, not a false 'download it again'."""
    whole = write_gguf(tmp_path / "whole.gguf")
    with pytest.raises(registry.RegistryError) as refused:
        registry.import_any(str(whole), "whole")
    assert str(refused.value).startswith(f"Could not read GGUF file {whole}: ")
    assert "truncated" not in str(refused.value)
    assert "tokenizer" in str(refused.value)
    nothing_written()


def test_a_whole_gguf_of_a_newer_tensor_type_is_not_called_truncated(tmp_path, monkeypatch):
    """Every error of gguf's reader counted as a cut-off file: a whole file whose tensor type the installed gguf
    does not know ("250 is not a valid GGMLQuantizationType") was told to download again, which fails alike."""
    import gguf

    whole = write_gguf(tmp_path / "whole.gguf")

    def newer(path, *a, **k):
        raise ValueError("250 is not a valid GGMLQuantizationType")

    monkeypatch.setattr(gguf, "GGUFReader", newer)
    assert registry._gguf_cut_short(whole) is False
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: (_ for _ in ()).throw(ValueError("cannot reshape array")))
    assert registry._gguf_cut_short(whole) is True
