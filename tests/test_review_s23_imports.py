"""Imports of models from the wild (walk 23c): a byte-level GGUF's tokenizer holds the file's tokens only, a Hub
import keeps the card and licence files, a folder whose tokenizer cannot load is refused in words, a Hub repo of
.bin or .gguf files is refused naming what it holds, and a GGUF model's card says what its weights were stored as.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from backend import hubpush, registry
from tests.test_hub import hub, model_repo, resolved  # noqa: F401 - the Hub emulator fixture

# A byte-level (gpt2-type) vocabulary as Llama-3 GGUFs store it: no "<|endoftext|>", its specials at its end.
TOKENS = [chr(c) for c in range(33, 127)] + ["ab", "<|begin_of_text|>", "<|end_of_text|>"]


def write_gguf(path: Path, qtype: str = "F32", *, rows: int | None = None, seed: int = 0) -> Path:
    """A one-layer Llama GGUF (hidden 32, so Q8_0/Q4_0 blocks of 32 fit) with the byte-level TOKENS; `rows`: the
    embedding's rows and vocab_size when they differ from the token count (a file whose parts disagree)."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    n, hidden, ff = len(TOKENS), 32, 64
    rows = rows or n
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in [(w.add_block_count, 1), (w.add_context_length, 64), (w.add_embedding_length, hidden),
                       (w.add_feed_forward_length, ff), (w.add_head_count, 4), (w.add_head_count_kv, 2),
                       (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_dimension_count, 8), (w.add_vocab_size, rows)]:
        add(value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(TOKENS)
    w.add_token_types([1] * (n - 2) + [3, 3])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(n - 2)
    w.add_eos_token_id(n - 1)
    shapes = {"token_embd.weight": (rows, hidden), "output_norm.weight": (hidden,), "output.weight": (rows, hidden)}
    for part, shape in [("attn_norm", (hidden,)), ("attn_q", (hidden, hidden)), ("attn_k", (hidden // 2, hidden)),
                        ("attn_v", (hidden // 2, hidden)), ("attn_output", (hidden, hidden)),
                        ("ffn_norm", (hidden,)), ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)),
                        ("ffn_down", (hidden, ff))]:
        shapes[f"blk.0.{part}.weight"] = shape
    for name, shape in shapes.items():
        a = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1 or qtype == "F32":
            w.add_tensor(name, a)
        else:
            kind = getattr(gguf.GGMLQuantizationType, qtype)
            w.add_tensor(name, quantize(a, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------- 1. a GGUF's tokenizer holds the file's tokens


def test_a_byte_level_gguf_without_endoftext_imports_with_the_files_tokens_only(tmp_path):
    """transformers' GGUF loader builds a gpt2-type vocabulary with GPT2Tokenizer, whose defaults appended
    "<|endoftext|>" at id len(vocab): one past the embedding (training: "index out of range")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rec = registry.import_gguf(write_gguf(tmp_path / "tiny-llama3.Q8_0.gguf", "Q8_0"), "tiny")
    tok = AutoTokenizer.from_pretrained(rec.path)
    model = AutoModelForCausalLM.from_pretrained(rec.path)
    rows = model.get_input_embeddings().num_embeddings
    assert len(tok) == rows == model.config.vocab_size == len(TOKENS)  # was 98 tokens for 97 rows
    assert "<|endoftext|>" not in tok.get_vocab()
    assert tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|end_of_text|>"]) == [95, 96]
    assert (tok.bos_token, tok.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")
    ids = torch.arange(len(tok)).unsqueeze(0)  # every id the tokenizer can give
    with torch.no_grad():
        assert model(ids).logits.shape == (1, len(tok), rows)
    # the file's specials stay whole, as before
    assert tok("ab<|end_of_text|>", add_special_tokens=False)["input_ids"] == [94, 96]


def test_a_gguf_whose_tokens_outnumber_its_embedding_is_refused_and_nothing_is_registered(tmp_path):
    with pytest.raises(registry.RegistryError) as e:
        registry.import_gguf(write_gguf(tmp_path / "odd.gguf", rows=90), "odd")
    assert str(e.value) == (
        "odd.gguf's tokenizer has 97 tokens but its embedding only 90 rows: token ids 90…96 ('{', '|', '}', '~', "
        "'ab') would index past it in training and chat. The file's vocabulary and weights disagree, so nothing was "
        "registered: import another conversion of the model (or its safetensors folder).")
    assert registry.list_models() == []
    from storage import db

    assert not any(db.models_dir().iterdir()) and not list((db.workspace() / ".tmp").glob("import*"))


# ---------------------------------------------------------------- card: the GGUF's stored types


def test_a_gguf_models_card_says_what_its_weights_were_stored_as(tmp_path):
    rec = registry.import_gguf(write_gguf(tmp_path / "tiny.Q4_0.gguf", "Q4_0"), "tiny")
    assert rec.recipe == {"import": f"gguf:{tmp_path / 'tiny.Q4_0.gguf'}", "gguf_weights": "Q4_0"}
    line = "imported from a local GGUF file (not on the Hub), its Q4_0 weights de-quantized to float32 safetensors"
    assert line in hubpush.step_line(rec)  # was "imported from a local gguf (not on the Hub)", the card's "F32"
    assert line in hubpush.model_card("tiny", "acme/tiny")
    f32 = registry.import_gguf(write_gguf(tmp_path / "other.gguf"), "other")
    assert "its F32 weights converted to float32 safetensors" in hubpush.step_line(f32)


# ---------------------------------------------------------------- 2. a Hub import keeps the card and licence


def test_a_hub_import_keeps_the_card_and_licence_files_and_a_push_card_carries_the_licence(hub, tiny_llama,
                                                                                           tmp_path):
    card = b"---\nlicense: other\nlicense_name: acme-model-1.0\nlicense_link: LICENSE\n---\n# tiny\n\nBy Acme.\n"
    repo = model_repo(tiny_llama, tmp_path / "repo", **{"README.md": card, "LICENSE": b"Acme model licence 1.0\n",
                                                        "USE_POLICY.md": b"Use it kindly.\n"})
    hub.add("model/acme/tiny-llama", repo)
    rec = registry.import_hub("acme/tiny-llama")
    kept = {p.name for p in Path(rec.path).iterdir()}
    assert {"README.md", "LICENSE", "USE_POLICY.md"} <= kept  # were not fetched
    assert Path(rec.path, "LICENSE").read_bytes() == b"Acme model licence 1.0\n"
    meta = yaml.safe_load(hubpush.model_card(rec.name, "me/tiny-llama").split("---")[1])
    assert {k: meta[k] for k in ("license", "license_name", "license_link")} == {
        "license": "other", "license_name": "acme-model-1.0", "license_link": "LICENSE"}  # was no licence
    assert "LICENSE" in hubpush.model_files(Path(rec.path))  # pushed with the model


# ---------------------------------------------------------------- 4. a tokenizer that cannot load is refused


def _without_tokenizer_json(tiny_llama: Path, folder: Path) -> Path:
    shutil.copytree(tiny_llama, folder)
    (folder / "tokenizer.json").unlink()
    return folder


def test_a_folder_with_only_a_sentencepiece_model_is_refused_naming_the_package(tiny_llama, tmp_path):
    """Imported, its chat then failed on "`tiktoken` is required to read a `tiktoken` file"."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed here: such a folder loads")
    folder = _without_tokenizer_json(tiny_llama, tmp_path / "sp-only")
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    with pytest.raises(registry.RegistryError) as e:
        registry.import_any(str(folder))
    assert str(e.value) == (
        f"{folder}'s tokenizer is a SentencePiece model (tokenizer.model) without a tokenizer.json: reading it needs "
        "the sentencepiece package (pip install sentencepiece) or a tokenizer.json. Install sentencepiece, or copy "
        "the model's tokenizer.json into the folder, then import again.")
    assert registry.list_models() == []


def test_a_folder_whose_tokenizer_json_is_broken_is_refused_before_registering(tiny_llama, tmp_path):
    folder = _without_tokenizer_json(tiny_llama, tmp_path / "broken")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(registry.RegistryError) as e:
        registry.import_any(str(folder))
    assert str(e.value).startswith(f"{folder}'s tokenizer could not be loaded (")
    assert str(e.value).endswith("): training, evaluation and chat load it the same way (AutoTokenizer, no remote "
                                 "code). Copy the tokenizer files of the model these weights came from into the "
                                 "folder, then import again.")
    assert registry.list_models() == []


def test_a_hub_repo_whose_tokenizer_cannot_load_leaves_nothing_behind(hub, tiny_llama, tmp_path):
    repo = _without_tokenizer_json(tiny_llama, tmp_path / "repo")
    (repo / "tokenizer.json").write_text("{}")
    hub.add("model/acme/broken", repo)
    with pytest.raises(registry.RegistryError) as e:
        registry.import_hub("acme/broken")
    assert str(e.value).startswith("acme/broken's tokenizer could not be loaded (")
    from storage import db

    assert registry.list_models() == [] and not list((db.workspace() / ".tmp").glob("hub*"))


# ---------------------------------------------------------------- 6. a Hub repo of .bin or .gguf files


def test_a_hub_repo_of_pickle_weights_is_refused_naming_them_and_the_way_forward(hub, tiny_llama, tmp_path,
                                                                              capfd):
    from tests.conftest import load_state

    repo = tmp_path / "bin-repo"
    repo.mkdir()
    shutil.copy2(tiny_llama / "config.json", repo / "config.json")
    torch.save(load_state(tiny_llama), repo / "pytorch_model.bin")
    (repo / "training_args.bin").write_bytes(b"x")
    hub.add("model/acme/tiny-bin", repo)
    with pytest.raises(registry.RegistryError) as e:
        registry.import_hub("acme/tiny-bin")
    assert str(e.value) == (
        "'acme/tiny-bin' holds its weights only as pickle files (pytorch_model.bin), which a Hub import never "
        "downloads: a pickle can run code when loaded. Download the repo (`hf download acme/tiny-bin --local-dir "
        "tiny-bin`) and import that folder with --allow-pickle ('allow pickle' on the page), which reads them with "
        "torch.load(weights_only=True).")
    assert resolved(hub) == set()  # nothing downloaded for a refusal
    assert "No files matched" not in "".join(capfd.readouterr())


def test_a_hub_repo_of_gguf_files_is_refused_naming_them_and_the_way_forward(hub, tmp_path, capfd):
    repo = tmp_path / "gguf-repo"
    repo.mkdir()
    write_gguf(repo / "tiny.Q8_0.gguf", "Q8_0")
    shutil.copy2(repo / "tiny.Q8_0.gguf", repo / "tiny.Q4_0.gguf")
    (repo / "README.md").write_text("# tiny GGUF\n")
    hub.add("model/acme/tiny-GGUF", repo)
    with pytest.raises(registry.RegistryError) as e:
        registry.import_any("acme/tiny-GGUF")
    assert str(e.value) == (
        "'acme/tiny-GGUF' holds GGUF files (tiny.Q4_0.gguf, tiny.Q8_0.gguf), which a Hub import does not download: "
        "download the one you want (`hf download acme/tiny-GGUF tiny.Q4_0.gguf --local-dir .`) and import that "
        "file. (There is no local folder 'acme/tiny-GGUF' either.)")
    assert resolved(hub) == set()
    assert "No files matched" not in "".join(capfd.readouterr())
