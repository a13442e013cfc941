"""Weights that do not fit the architecture config.json names (review s20): a folder whose config.json said bert
over a Llama's weights was imported ("65.3K parameters", card "BertForMaskedLM · 6 layers"), chatted with, up-scaled
and evaluated (perplexity 302) with every weight random: transformers built BertLMHeadModel and only warned of its
108 missing and 56 unexpected tensors. Now refused as the folder's facts are read (modelinfo.inspect_model: import,
register, up-scale, evaluation's plan) and again where a model is loaded for chat and evaluation (old rows)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backend import evaldevice, registry
from backend.modelinfo import ArchitectureError, inspect_model
from backend.safetensors_stream import open_checkpoint
from tests.conftest import load_state

BERT = {"model_type": "bert", "architectures": ["BertForMaskedLM"]}


def _copy(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in config.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _drop(folder: Path, name: str) -> Path:
    state = load_state(folder)
    del state[name]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_import_refuses_a_config_of_another_architecture(tiny_llama, tmp_path):
    folder = _copy(tiny_llama, tmp_path / "otherarch", **BERT)
    with pytest.raises(ValueError) as said:
        registry.import_any(str(folder), "otherarch")
    msg = str(said.value)
    assert msg.startswith(f"{folder}: config.json says bert (BertForMaskedLM), but the weights do not fit it: none "
                          "of the 108 tensors a BertLMHeadModel needs is in the weights (bert.embeddings.")
    assert "; 56 of theirs have no place in it (model.embed_tokens.weight, model.layers.0." in msg
    assert "Fix config.json (model_type, architectures)" in msg
    assert registry.get("otherarch") is None and registry.list_models() == []
    with pytest.raises(ArchitectureError, match="none of the 108 tensors"):  # a built model is registered alike
        registry.register(folder, "built", "upscaled")


def test_a_config_without_architectures_is_judged_by_its_model_type(tiny_llama, tmp_path):
    with pytest.raises(ArchitectureError,
                       match=r"bert: config.json says bert, but the weights do not fit it: none of "):
        inspect_model(_copy(tiny_llama, tmp_path / "bert", model_type="bert", architectures=None))
    info = inspect_model(_copy(tiny_llama, tmp_path / "llama", architectures=None))  # the loader reads model_type
    assert (info.model_type, info.architecture, info.num_layers) == ("llama", "", 6)


def test_one_missing_tensor_is_refused_and_a_tied_head_is_not_missing(tiny_llama, tiny_llama_untied, tmp_path):
    """An untied Llama without lm_head.weight would chat through a random head; a tied one has none to hold."""
    assert "lm_head.weight" not in open_checkpoint(tiny_llama)
    inspect_model(tiny_llama)
    folder = _drop(_copy(tiny_llama_untied, tmp_path / "headless"), "lm_head.weight")
    with pytest.raises(ArchitectureError, match=r"says llama \(LlamaForCausalLM\), but the weights do not fit it: 1 "
                                                r"of the 57 tensors a LlamaForCausalLM needs are not in the weights "
                                                r"\(lm_head.weight\)\. Loaded"):
        inspect_model(folder)


def test_a_tied_model_stored_under_its_heads_name_is_not_missing_its_embedding(tiny_llama, tmp_path):
    """safetensors' save_model keeps the first name of a tie in sorted order, lm_head.weight, alone: transformers
    loads it with nothing missing, and it was refused ("model.embed_tokens.weight" not in the weights)."""
    folder = _copy(tiny_llama, tmp_path / "head-only")
    state = load_state(folder)
    state["lm_head.weight"] = state.pop("model.embed_tokens.weight")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    inspect_model(folder)  # no ArchitectureError


def test_models_whose_weights_fit_pass_as_transformers_loads_them(tiny_llama_untied, tiny_qwen2, tmp_path):
    """Renamed on loading (Mixtral's per-expert tensors fused into one) or tied: no false refusal."""
    from transformers import MixtralConfig, MixtralForCausalLM

    from backend.modelinfo import weights_fit

    torch.manual_seed(0)
    moe = tmp_path / "moe"
    MixtralForCausalLM(MixtralConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2)).save_pretrained(moe)
    names = list(open_checkpoint(moe))
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in names  # the Hub names: renamed, fused on load
    fit = weights_fit(json.loads((moe / "config.json").read_text()), names)
    assert (fit.model_class, fit.missing, fit.unexpected) == ("MixtralForCausalLM", [], [])
    for folder in (moe, tiny_llama_untied, tiny_qwen2):
        inspect_model(folder)


def test_a_model_type_transformers_does_not_know_is_refused_at_import(tiny_llama, tmp_path):
    import transformers

    folder = _copy(tiny_llama, tmp_path / "mystery", model_type="mystery_lm")
    with pytest.raises(registry.RegistryError, match=rf"config.json has model_type 'mystery_lm', which transformers "
                                                     rf"{transformers.__version__} does not know: .*upgrade"):
        registry.check_import(str(folder))
    with pytest.raises(ArchitectureError, match="has model_type 'mystery_lm'"):  # chat and evaluation: in words
        evaldevice.load_model(folder)
    inspect_model(folder)  # up-scaling reads tensors by name: no class needed
    with pytest.raises(registry.RegistryError, match="config.json has no model_type"):
        registry.check_import(str(_copy(tiny_llama, tmp_path / "typeless", model_type=None)))


def test_a_model_registered_before_the_check_is_not_run_with_random_weights(tiny_llama, tiny_llama_untied, tmp_path):
    """An old row: registered when its config still fit, or before this check. Chat and evaluation load it through
    evaldevice.load_model, which now reads transformers' loading info and refuses missing weights."""
    from backend import chat

    folder = _copy(tiny_llama, tmp_path / "old")
    registry.import_any(str(folder), "old")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | BERT))
    with pytest.raises(ArchitectureError, match=r"old: config.json says bert \(BertForMaskedLM\), but the weights do "
                                                r"not fit it: none of the 108 tensors a BertLMHeadModel needs"):
        evaldevice.load_model(folder)
    with pytest.raises(ArchitectureError, match="none of the 108 tensors"):
        chat.load(folder, "old")
    headless = _drop(_copy(tiny_llama_untied, tmp_path / "headless"), "lm_head.weight")
    with pytest.raises(ArchitectureError, match=r"1 of the 57 tensors a LlamaForCausalLM needs are not in the weights "
                                                r"\(lm_head.weight\)"):
        evaldevice.load_model(headless)
    tok, model = evaldevice.load_model(tiny_llama)  # a model that fits loads as before
    assert torch.equal(model.model.embed_tokens.weight, load_state(tiny_llama)["model.embed_tokens.weight"])


def test_a_fit_found_once_is_not_checked_again_in_another_process(tiny_llama, workspace, monkeypatch):
    """The first check in a process imports torch and transformers' modeling code (seconds): a model checked when
    it was registered is not built again by a page's up-scale preview or a merge job (a workspace marker)."""
    from backend import modelinfo

    modelinfo._weights_problem.cache_clear()
    inspect_model(tiny_llama)
    assert len(list((workspace / ".cache" / "weights-fit").iterdir())) == 1
    modelinfo._weights_problem.cache_clear()  # as a new process

    def build(*a):
        raise AssertionError("checked again")

    monkeypatch.setattr(modelinfo, "weights_fit", build)
    assert inspect_model(tiny_llama).num_layers == 6
    cfg = json.loads((tiny_llama / "config.json").read_text())
    with pytest.raises(AssertionError, match="checked again"):  # another config: another marker
        modelinfo.weights_problem(cfg | {"rms_norm_eps": 1e-5}, open_checkpoint(tiny_llama))


def test_a_model_up_scaled_from_a_checked_one_finds_its_marker(tiny_llama, workspace, tmp_path, monkeypatch):
    """Every up-scale job's register built the model on the meta device: the first build in a process imports torch
    and transformers' modeling code (about 2 s of a job that streams its tensors without them). A fit does not
    depend on the depth: the up-scaled model of a checked one is not checked again."""
    from backend import modelinfo
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    modelinfo._weights_problem.cache_clear()
    inspect_model(tiny_llama)
    modelinfo._weights_problem.cache_clear()
    monkeypatch.setattr(modelinfo, "weights_fit", lambda *a: (_ for _ in ()).throw(AssertionError("checked again")))
    out = Path(run_upscale(UpscaleSpec(base=str(tiny_llama), m=2, name="dus"))["path"])  # registers it: inspected
    assert inspect_model(out).num_layers == 8
    bert = _copy(tiny_llama, tmp_path / "bert", **BERT)  # another architecture over the same names: checked
    with pytest.raises(AssertionError, match="checked again"):
        inspect_model(bert)


def test_a_lora_adapters_weights_are_said_to_be_an_adapters(tiny_llama):
    """A PEFT folder (its adapter weights beside a base's config.json) was told to fix config.json."""
    from backend.modelinfo import mismatch_message, weights_fit

    config = json.loads((tiny_llama / "config.json").read_text())
    names = [f"base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_{ab}.weight"
             for i in range(2) for p in "qv" for ab in "AB"]
    said = mismatch_message(config, weights_fit(config, names))
    assert said.endswith("these are a LoRA adapter's weights, not a model's. Merge the adapter into its base model "
                         "(peft's merge_and_unload, then save_pretrained) and import the merged folder.")
