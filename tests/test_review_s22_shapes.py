"""Weights whose shapes are not the ones config.json implies (review s22): the import's weights check compared tensor
names with the class transformers builds from config.json, never shapes. A tiny Llama whose config.json said
intermediate_size 128 over weights of 64 was registered ("registered bad: 6 layers", exit 0), and the first chat
failed in transformers' load report ("Reinit due to size mismatch - ckpt: torch.Size([64, 32]) vs model:
torch.Size([128, 32])"). Now refused at import in words, with each shape and the field that makes them fit."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backend import modelinfo, registry
from backend.modelinfo import ArchitectureError, inspect_model
from backend.safetensors_stream import open_checkpoint
from tests.conftest import load_state
from tests.test_review_cli import cli


def _edited(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(cfg | config))
    return dst


SAYS = "config.json says llama (LlamaForCausalLM), but the weights do not fit it: "
LOADED = "transformers refuses to load such weights (size mismatch). "


@pytest.mark.parametrize("field, value, count, shown, fits", [
    ("intermediate_size", 128, 18, "model.layers.N.mlp.down_proj.weight: [32, 64] in the weights, [32, 128] by "
                                   "config.json; model.layers.N.mlp.gate_proj.weight: [64, 32] in the weights, "
                                   "[128, 32] by config.json; ", 64),
    ("hidden_size", 64, 56, "model.embed_tokens.weight: [300, 32] in the weights, [300, 64] by config.json; ", 32),
    ("num_key_value_heads", 4, 12, "model.layers.N.self_attn.k_proj.weight: [16, 32] in the weights, [32, 32] by "
                                   "config.json; model.layers.N.self_attn.v_proj.weight: [16, 32] in the weights, "
                                   "[32, 32] by config.json)", 2),
    # more rows in the checkpoint than config.json's vocabulary: transformers' loader refuses it too (any shape
    # difference is a mismatch in core_model_loading.set_param_for_module)
    ("vocab_size", 200, 1, "(model.embed_tokens.weight: [300, 32] in the weights, [200, 32] by config.json)", 300),
])
def test_a_size_edited_in_config_json_is_refused_at_import(tiny_llama, tmp_path, field, value, count, shown, fits):
    folder = _edited(tiny_llama, tmp_path / field, **{field: value})
    with pytest.raises(ArchitectureError) as refused:  # the old code: registered, 6 layers
        registry.import_any(str(folder), "bad")
    msg = str(refused.value)
    tensors = "1 of the 57 tensors a LlamaForCausalLM needs has another shape" if count == 1 else \
        f"{count} of the 57 tensors a LlamaForCausalLM needs have other shapes"
    assert msg.startswith(f"{folder}: {SAYS}{tensors} in the weights (")
    assert shown in msg
    assert msg.endswith(f"{LOADED}They fit config.json's {field} {fits} (it says {value}): set it back if it was "
                        "edited, or import the folder the model was published in.")
    assert registry.get("bad") is None and registry.list_models() == []


def test_the_cli_import_of_an_edited_config_exits_non_zero_and_registers_nothing(tiny_llama, tmp_path):
    folder = _edited(tiny_llama, tmp_path / "bad", intermediate_size=128)
    rc, out, err = cli("models", "import", str(folder), "--name", "bad")
    assert rc != 0 and "registered" not in out
    assert "18 of the 57 tensors a LlamaForCausalLM needs have other shapes in the weights" in err
    assert "They fit config.json's intermediate_size 64 (it says 128)" in err
    assert registry.list_models() == []


def test_one_layer_of_another_shape_is_refused_and_no_field_is_blamed(tiny_llama, tmp_path):
    """inspect_model checks that every layer holds the same names, not the same shapes: one odd layer is refused,
    and as no single size field makes every shape fit, none is named."""
    folder = _edited(tiny_llama, tmp_path / "odd")
    state = load_state(folder)
    state["model.layers.3.mlp.up_proj.weight"] = torch.zeros(128, 32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ArchitectureError) as refused:
        inspect_model(folder)
    assert str(refused.value) == (
        f"{folder}: {SAYS}1 of the 57 tensors a LlamaForCausalLM needs has another shape in the weights "
        "(model.layers.N.mlp.up_proj.weight: [128, 32] in the weights, [64, 32] by config.json). "
        f"{LOADED}Import the folder the model was published in, or fix config.json's sizes to the weights'.")


def test_intact_models_still_import(tiny_llama, tiny_llama_untied, tiny_qwen2, tmp_path):
    """Tied (lm_head held by the embedding), untied, and Qwen2 with its biases: every shape fits."""
    from tests.test_review_s19_fixes import write_tiny_gguf

    for folder, name in ((tiny_llama, "llama"), (tiny_llama_untied, "untied"), (tiny_qwen2, "qwen2")):
        assert registry.import_any(str(folder), name).num_layers == 6
    rec = registry.import_any(str(write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)), "gguf")  # converted, checked
    assert (rec.name, rec.num_layers) == ("gguf", 1)
    fit = modelinfo.weights_fit(json.loads((tiny_qwen2 / "config.json").read_text()), open_checkpoint(tiny_qwen2))
    assert (fit.missing, fit.unexpected, fit.mismatched) == ([], [], [])


def test_weights_fit_lists_each_tensor_with_both_shapes(tiny_llama):
    config = json.loads((tiny_llama / "config.json").read_text()) | {"num_key_value_heads": 4}
    fit = modelinfo.weights_fit(config, open_checkpoint(tiny_llama))
    assert fit.mismatched[:2] == [("model.layers.0.self_attn.k_proj.weight", (16, 32), (32, 32)),
                                  ("model.layers.0.self_attn.v_proj.weight", (16, 32), (32, 32))]
    assert len(fit.mismatched) == 12 and fit.missing == []
    assert modelinfo.weights_fit(config, list(open_checkpoint(tiny_llama))).mismatched == []  # bare names: no shapes


def test_the_marker_of_a_fit_is_keyed_on_shapes(tiny_llama, workspace, tmp_path, monkeypatch):
    """A fit is remembered per config and names, and whatever the depth: an up-scaled model finds its parent's marker.
    Shapes are in the key now, so weights of other shapes under the same config and names are checked, as is a
    model with one layer changed; and WEIGHTS_CHECK moved on, so no marker of the names-only check (2) is read."""
    modelinfo._weights_problem.cache_clear()
    config = json.loads((tiny_llama / "config.json").read_text())
    tensors = open_checkpoint(tiny_llama)
    assert modelinfo.weights_problem(config, tensors) is None  # checked: a marker written
    marker_dir = workspace / ".cache" / "weights-fit" / f"{modelinfo.WEIGHTS_CHECK}-{version('transformers')}"
    assert modelinfo.WEIGHTS_CHECK != "2" and len(list(marker_dir.iterdir())) == 1
    modelinfo._weights_problem.cache_clear()  # as a new process
    wide = {n: ((128, 32) if n.endswith(("up_proj.weight", "gate_proj.weight")) else
                (32, 128) if n.endswith("down_proj.weight") else t.shape) for n, t in tensors.items()}
    said = modelinfo.weights_problem(config, wide)  # same config, same names: the old code hit the marker
    assert said.startswith(f"{SAYS}18 of the 57 tensors") and "intermediate_size 128 (it says 64)" in said
    odd = dict(tensors, **{"model.layers.3.mlp.up_proj.weight": (128, 32)})  # depth-free, but not shape-free
    assert "1 of the 57 tensors a LlamaForCausalLM needs has another shape" in modelinfo.weights_problem(config, odd)
    modelinfo._weights_problem.cache_clear()
    monkeypatch.setattr(modelinfo, "weights_fit", lambda *a: (_ for _ in ()).throw(AssertionError("checked again")))
    assert modelinfo.weights_problem(config, tensors) is None  # a hit: no model built


def test_a_model_edited_after_its_import_is_refused_in_words_when_loaded(tiny_llama, tmp_path):
    """A model registered before the import compared shapes (or whose config.json was edited since) reached chat and
    evaluation with transformers' report of every tensor ending "You set `ignore_mismatched_sizes` to False"."""
    from backend.evaldevice import load_model

    folder = _edited(tiny_llama, tmp_path / "m", intermediate_size=128)
    with pytest.raises(ArchitectureError) as e:
        load_model(folder)
    assert str(e.value).startswith(f"{folder}: config.json says llama (LlamaForCausalLM), but the weights do not fit")
    assert str(e.value).endswith("They fit config.json's intermediate_size 64 (it says 128): set it back if it was "
                                 "edited, or import the folder the model was published in.")
