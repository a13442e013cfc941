"""Model imports left over (session 24): a GGUF import of a model merges with that model (its config's floats as the
source wrote them, no unk_token_id of its own), a Hub import records the commit it downloaded, and `models list`
and the Models page show each model's architecture and vocabulary size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend import hubpush, registry
from backend.modelinfo import float32_shortest, inspect_model
from tests.test_hub import hub, model_repo  # noqa: F401 - the Hub emulator fixture


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows as llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) writes them; transformers undoes it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_of(folder: Path, path: Path) -> Path:
    """Llama model folder `folder` (tied embeddings, a byte-level BPE tokenizer) written as an F32 GGUF file the way
    llama.cpp's converter writes one: float settings as float32, the tokenizer's unk id in tokenizer.ggml."""
    import gguf

    cfg = json.loads((folder / "config.json").read_text())
    tj = json.loads((folder / "tokenizer.json").read_text())
    tokens = [t for t, _ in sorted(tj["model"]["vocab"].items(), key=lambda x: x[1])]
    special = {t["id"] for t in tj["added_tokens"]}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_unk_token_id(tj["model"]["vocab"]["<unk>"])
    w.add_pad_token_id(cfg["pad_token_id"])
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in load_file(folder / "model.safetensors").items():
        a = t.float().numpy()
        if name == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif name == "model.norm.weight":
            name = "output_norm.weight"
        else:
            i, part = name.split(".")[2], ".".join(name.split(".")[3:-1])
            if part in ("self_attn.q_proj", "self_attn.k_proj"):
                a = _permute(a, cfg["num_attention_heads" if part.endswith("q_proj") else "num_key_value_heads"])
            name = f"blk.{i}.{parts[part]}.weight"
        w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def source(tiny_llama, tmp_path) -> Path:
    """tiny_llama with SmolLM2's rms_norm_eps, 1e-05 (no float32 value: GGUF stores 9.999999747378752e-06), and its
    initializer_range, 1/24 (which no GGUF file stores)."""
    folder = shutil.copytree(tiny_llama, tmp_path / "source")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-05,
                                                    "initializer_range": 0.041666666666666664}, indent=2))
    return folder


# ---------------------------------------------------------------- 1. a GGUF import merges with its source


def test_a_gguf_import_of_a_model_has_its_config_and_merges_with_it(source, tmp_path):
    from backend.merge import run_merge
    from backend.merge.plan import check_registered
    from backend.specs import MergeSpec

    registry.import_folder(source, "src")
    imp = registry.import_gguf(write_gguf_of(source, tmp_path / "src.F32.gguf"), "src-gguf")
    got = json.loads(Path(imp.path, "config.json").read_text())
    assert got["rms_norm_eps"] == 1e-05  # was 9.999999747378752e-06
    assert "unk_token_id" not in got  # was 0: transformers' loader put the file's unknown_token_id there
    want = json.loads((source / "config.json").read_text())
    skip = {"transformers_version", "dtype", "torch_dtype", "initializer_range"}  # the last: transformers' 0.02
    assert {k: v for k, v in got.items() if k not in skip} == {k: v for k, v in want.items() if k not in skip}
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(imp.path).unk_token_id == 0  # the tokenizer still says it

    spec = MergeSpec(models=["src", "src-gguf"], method="average", name="twice")
    check_registered(spec)
    made = run_merge(spec)  # was "the models differ in architecture (config: rms_norm_eps: …; unk_token_id: …)"
    merged, src = load_file(Path(made["path"]) / "model.safetensors"), load_file(source / "model.safetensors")
    assert merged.keys() == src.keys() and all(torch.allclose(merged[k], src[k]) for k in src)  # the same model


def test_configs_are_compared_at_float32_precision_and_without_the_tokenizers_ids(source, tmp_path):
    """A GGUF import made before the fix (config.json as transformers saved it) still merges with its source; a
    setting that really differs is still refused."""
    from backend.merge import MergeError, check_mergeable

    old = shutil.copytree(source, tmp_path / "old-import")
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 9.999999747378752e-06, "unk_token_id": 0,
                                                 "initializer_range": 0.02}))
    check_mergeable([inspect_model(source), inspect_model(old)], ["src", "old"])  # was refused
    other = shutil.copytree(source, tmp_path / "other-eps")
    (other / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-06}))
    with pytest.raises(MergeError) as e:
        check_mergeable([inspect_model(source), inspect_model(other)], ["src", "other"])
    assert str(e.value) == ("src and other cannot be merged: The models differ in architecture (config: rms_norm_eps: "
                            "1e-05 vs 1e-06); only models of the same architecture and shapes can be combined.")


def test_float32_shortest_rewrites_float32_values_only():
    f32 = float(np.float32(1e-05))
    assert f32 == 9.999999747378752e-06
    assert float32_shortest({"eps": f32, "rope": {"theta": 100000.0, "factor": float(np.float32(0.1))},
                             "list": [float(np.float32(3.4e38))], "n": 7, "flag": True, "name": "x"}) == {
        "eps": 1e-05, "rope": {"theta": 100000.0, "factor": 0.1}, "list": [3.4e38], "n": 7, "flag": True, "name": "x"}
    # a float that is no float32 value (a source's own 1/24, 1e300) is kept exactly, unless compared
    assert float32_shortest([0.041666666666666664, 1e300, float("inf")]) == [0.041666666666666664, 1e300,
                                                                            float("inf")]
    assert float32_shortest(0.041666666666666664, exact_only=False) == float32_shortest(
        float(np.float32(0.041666666666666664)), exact_only=False) == 0.041666668


# ---------------------------------------------------------------- 2. a Hub import records its commit


def test_a_hub_import_records_the_commit_it_downloaded_in_its_provenance_and_card(hub, tiny_llama, tmp_path):
    first = hub.add("model/acme/tiny-llama", model_repo(tiny_llama, tmp_path / "v1"))
    rec = registry.import_hub("acme/tiny-llama", "tiny-v1")
    assert rec.recipe == {"import": "hub:acme/tiny-llama", "hub_commit": first}
    line = f"imported from the Hub's acme/tiny-llama, downloaded at commit {first}"
    assert line in hubpush.step_line(rec)  # was "imported from the Hub's acme/tiny-llama": which weights?
    assert line in hubpush.model_card("tiny-v1", "me/tiny-v1")
    # main moves on: the next import records the new commit, the first keeps its own
    second = hub.add("model/acme/tiny-llama", model_repo(tiny_llama, tmp_path / "v2", **{"NOTE.txt": b"v2\n"}))
    assert second != first
    assert registry.import_hub("acme/tiny-llama", "tiny-v2").recipe["hub_commit"] == second
    assert registry.get("tiny-v1").recipe["hub_commit"] == first
    tagged = registry.import_hub("acme/tiny-llama", "tiny-at", revision=first)
    assert tagged.recipe == {"import": "hub:acme/tiny-llama", "hub_commit": first, "hub_revision": first}


# ---------------------------------------------------------------- 3. models list: architecture and vocabulary


def test_models_list_shows_each_models_architecture_and_vocabulary(tiny_llama, tiny_qwen2, tmp_path, capsys):
    from backend.__main__ import main

    registry.import_folder(tiny_llama, "llama")
    registry.import_folder(tiny_qwen2, "qwen")
    wide = shutil.copytree(tiny_llama, tmp_path / "wide")  # a config whose vocabulary says another number
    cfg = json.loads((wide / "config.json").read_text())
    registry.import_folder(wide, "wide")
    (wide / "config.json").write_text(json.dumps({**cfg, "vocab_size": 49152}))  # read now, not at registration
    gone = registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "gone"), "gone")
    shutil.rmtree(gone.path)
    assert main(["models", "list"]) in (0, None)
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["name", "kind", "arch", "layers", "vocab", "params", "dtype", "parents"]
    cells = {r.split()[0]: r.split()[1:5] for r in rows}
    assert cells == {"llama": ["base", "LlamaForCausalLM", "6", "300"],
                     "qwen": ["base", "Qwen2ForCausalLM", "6", "300"],
                     "wide": ["base", "LlamaForCausalLM", "6", "49152"],
                     "gone": ["base", "LlamaForCausalLM", "6", "?"]}  # the row's architecture, no config to read
    for r in rows:  # the columns line up under their headings
        assert r[header.index("arch"):].startswith(cells[r.split()[0]][1])
        assert r[:header.index("vocab") + len("vocab")].endswith(cells[r.split()[0]][3].rjust(len("vocab")))
    assert main(["models", "list", "--json"]) in (0, None)
    listed = {m["name"]: (m["architecture"], m["vocab_size"]) for m in json.loads(capsys.readouterr().out)}
    assert listed == {"llama": ("LlamaForCausalLM", 300), "qwen": ("Qwen2ForCausalLM", 300),
                      "wide": ("LlamaForCausalLM", 49152), "gone": ("LlamaForCausalLM", None)}


def test_the_models_page_table_shows_architecture_and_vocabulary(tiny_qwen2):
    from tests.test_pages import app

    registry.import_folder(tiny_qwen2, "qwen")
    at = app("models.py")
    assert not at.exception
    table = at.dataframe[0].value.set_index("name")
    assert (table.loc["qwen", "arch"], table.loc["qwen", "vocab"]) == ("Qwen2ForCausalLM", 300)
