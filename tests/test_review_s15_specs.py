"""Review of the typed specs and the model registry (session 15): each test failed before its fix."""

from __future__ import annotations

import errno
import shutil

import pytest
import torch
from pydantic import ValidationError

from backend import registry
from backend.specs import CptSpec, DataSource, DpoSpec, LoraSpec, SftSpec, SliceRange, UpscaleSpec, explain
from backend.names import check_name
from storage import db
from tests.conftest import load_state


def test_a_gguf_import_that_fails_writing_leaves_no_partial_folder(tiny_llama, tmp_path, monkeypatch):
    """A full disk while the dequantised weights were written left them in workspace/.tmp (513 MiB for the built-in
    model) until the worker's next start: import_gguf had no cleanup before _finish."""
    import transformers

    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")  # the reading is stubbed: the tiny Llama stands for what transformers dequantised
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: transformers.PreTrainedTokenizerFast.from_pretrained(tiny_llama))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: transformers.LlamaForCausalLM.from_pretrained(tiny_llama))
    real = transformers.PreTrainedModel.save_pretrained

    def full_disk(self, folder, *a, **k):
        real(self, folder, *a, **k)  # the weights are partly on disk when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full_disk)
    with pytest.raises(OSError, match="No space left"):
        registry.import_gguf(gguf, name="tiny")
    assert list(db.tmp_dir().iterdir()) == [] and registry.list_models() == []


@pytest.mark.parametrize("file, name", [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Qwen2.5-0.5B-Instruct-Q4_K_M"),  # was "Qwen2"
    ("Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf", "Meta-Llama-3.1-8B-Instruct"),  # was "Meta-Llama-3"
    ("phi-3.5-mini.IQ3_XS.gguf", "phi-3.5-mini"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),  # the built-in's, as before
    ("tiny.f16.gguf", "tiny"),
    ("model.gguf", "model"),
])
def test_a_gguf_file_is_named_after_its_whole_model_name_not_up_to_its_first_dot(tmp_path, file, name):
    """Cut at the first dot, Qwen2.5-0.5B and Qwen2.5-1.5B were both registered as "Qwen2" (the second refused as
    taken): only a trailing quantization tag is left out."""
    path = tmp_path / file
    path.write_bytes(b"GGUF")
    assert registry.check_import(str(path), read_gguf=False) == ("gguf", name)
    assert registry.gguf_default_name(path) == name


def test_a_pickle_checkpoint_with_more_than_tensors_is_refused_by_name(tiny_llama, tmp_path):
    """A training script's {"model": state_dict, "epoch": 3} reached the user as "AttributeError: 'dict' object has no
    attribute 'data_ptr'" with a traceback (exit 1), not as a refused input."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for f in tiny_llama.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, folder / f.name)
    torch.save({"model": load_state(tiny_llama), "epoch": 3}, folder / "pytorch_model.bin")
    with pytest.raises(registry.RegistryError, match=r"more than the weights \(not tensors: 'model', 'epoch'\)"):
        registry.import_any(str(folder), "from-pt", allow_pickle=True)
    assert registry.list_models() == [] and list(db.tmp_dir().iterdir()) == []


def test_lora_target_modules_written_with_spaces_reach_peft_without_them():
    """"q_proj, v_proj" passed the spec; the trainer split at "," alone and peft matched nothing to " v_proj", so
    v_proj got no adapter without a word."""
    assert LoraSpec(target_modules="q_proj, v_proj").target_modules == "q_proj,v_proj"
    assert LoraSpec(target_modules=" all-linear ").target_modules == "all-linear"
    with pytest.raises(ValidationError) as bad:
        SftSpec(model="m", data=[DataSource(source="builtin:alpaca-mini")], lora={"target_modules": "q_proj,,v_proj"})
    assert explain(bad.value).startswith("lora.target_modules: 'q_proj,,v_proj': all-linear, or module names")


def test_an_infinite_data_weight_is_refused_by_the_spec():
    """weight: .inf (or --data SOURCE@inf) passed, and the job's mix failed on int(inf) with an OverflowError."""
    with pytest.raises(ValidationError, match="finite number"):
        DataSource(source="builtin:alpaca-mini", weight=float("inf"))
    assert DataSource(source="builtin:alpaca-mini", weight=1e-7).weight == 1e-7


def test_the_slices_default_name_names_the_second_model_its_slices_take_from():
    """The same ranges taken from two different second models got one default name."""
    sl = [SliceRange(source=0, start=0, end=4), SliceRange(source=1, start=2, end=6)]
    a = UpscaleSpec(base="base", method="slices", slices=sl, second="math-sft").default_name()
    b = UpscaleSpec(base="base", method="slices", slices=sl, second="/models/code-sft").default_name()
    assert (a, b) == ("base_math-sft-slices-0.0-4_1.2-6", "base_code-sft-slices-0.0-4_1.2-6")
    only_base = [SliceRange(source=0, start=0, end=4)]  # a second no slice uses is not in the model
    assert UpscaleSpec(base="base", method="slices", slices=only_base, second="x").default_name() == \
        "base-slices-0.0-4"


def test_default_names_of_a_long_named_model_keep_their_tags():
    """Names may be 100 characters; safe_name's cut took the tag off: m 4 and m 8, dpo and dus of one model of 98
    characters got one name, and at 100 characters the base's own."""
    data = [DataSource(source="builtin:alpaca-mini")]
    for base in ["b" * 98, "c" * 100, "SmolLM2-135M-Instruct-dus-m8-cpt-sft-v3-dpo-v2_" * 2]:
        names = [UpscaleSpec(base=base, m=4).default_name(), UpscaleSpec(base=base, m=8).default_name(),
                 UpscaleSpec(base=base, method="llama-pro", groups=4).default_name(),
                 CptSpec(model=base, data=data).default_name(), SftSpec(model=base, data=data).default_name(),
                 DpoSpec(model=base, data=data).default_name()]
        assert len(set(names)) == len(names) and base not in names
        assert [n.rsplit("-", 1)[-1] for n in names] == ["m4", "m8", "g4", "cpt", "sft", "dpo"]
        for n in names:
            check_name(n)
    # a short name is unchanged
    assert UpscaleSpec(base="/models/tiny", m=2).default_name() == "tiny-dus-m2"
    assert SftSpec(model="tiny", data=data).default_name() == "tiny-sft"
    many = [SliceRange(start=0, end=2)] * 12 + [SliceRange(start=0, end=3)]
    fewer = [SliceRange(start=0, end=2)] * 12 + [SliceRange(start=0, end=4)]
    long_ones = [UpscaleSpec(base="a" * 90, method="slices", slices=s).default_name() for s in (many, fewer)]
    assert long_ones[0] != long_ones[1] and all(len(n) <= 100 for n in long_ones)



def test_deleting_a_model_keeps_another_models_folder_inside_its_own(tiny_llama):
    """B built with `--out workspace/models/A/deeper`: `models delete A --force` removed A's folder whole, B's files
    with it, and B's row stayed, registered at a folder that was gone."""
    shutil.copytree(tiny_llama, db.models_dir() / "A")
    registry.import_folder(db.models_dir() / "A", "A")
    shutil.copytree(tiny_llama, db.models_dir() / "A" / "deeper")
    registry.register(db.models_dir() / "A" / "deeper", "B", "upscaled", parents=["A"])
    registry.delete("A", force=True)
    assert registry.resolve("B")[0] == (db.models_dir() / "A" / "deeper").resolve()
    b_files = sorted(f.name for f in (db.models_dir() / "A" / "deeper").iterdir())
    assert b_files == sorted(f.name for f in tiny_llama.iterdir())  # B whole
    # and A's own files are gone (they stayed, with no row to own them: the page had said they would go)
    assert sorted(f.name for f in (db.models_dir() / "A").iterdir()) == ["deeper"]
    registry.delete("B")
    assert not (db.models_dir() / "A" / "deeper").exists()


@pytest.mark.parametrize("field", ["beta", "weight_decay"])
def test_an_infinite_training_setting_is_refused_by_the_spec(field):
    """beta: .inf or weight_decay: .inf passed: the DPO run logged losses of 0.0 and registered a model whose 20
    tensors were all NaN (spec15/beta_inf.py, spec15/wd_inf.py)."""
    with pytest.raises(ValidationError) as bad:
        DpoSpec(model="m", data=[DataSource(source="builtin:prefs-mini")], **{field: float("inf")})
    assert explain(bad.value) == f"{field}: Input should be a finite number"
    assert DpoSpec(model="m", data=[DataSource(source="builtin:prefs-mini")], **{field: 0.5}).model_dump()[field] == 0.5
