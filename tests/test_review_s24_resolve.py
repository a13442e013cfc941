"""A model folder given by path to a job (session 24's hostile walk): refused as `models import` refuses it. A link out
of the folder (`upscale --base` copied its target, someone's key, into a registered model a push uploads: refused
wherever its files are copied into a new model: session 25), no tokenizer or one that cannot be used (a registered model nothing could chat
with: refused before a job is queued or run in the foreground); a tokenizer with more tokens than the model's
vocabulary ("index out of range in self" in chat), at import too; a weights name that is a folder (a bare
"[Errno 21] Is a directory").
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from backend import import_checks, registry, runner
from backend.__main__ import main as cli
from backend.merge import run_merge
from backend.specs import ImportSpec, MergeSpec, UpscaleSpec
from backend.upscale import run_upscale


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _nothing_built(workspace: Path, keep: tuple[str, ...] = ()) -> None:
    assert sorted(r.name for r in registry.list_models()) == sorted(keep) and runner.list_jobs() == []
    models = workspace / "models"
    assert not models.exists() or not list(models.iterdir())


def _refused(capsys, argv: list[str]) -> str:
    """The CLI's refusal (exit 2) of a foreground run, its message on one line."""
    capsys.readouterr()
    assert cli(argv) == 2
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture
def linked(tiny_llama, tmp_path) -> tuple[Path, Path]:
    """(a copy of the tiny model whose special_tokens_map.json links to a secret outside it, the secret)."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    folder = _copy(tiny_llama, tmp_path / "evil")
    (folder / "special_tokens_map.json").symlink_to(secret)
    return folder, secret


def test_a_folder_linking_out_is_refused_by_every_job_that_copies_its_files(linked, tiny_llama, workspace):
    """Session 25 narrowed the guard to where a folder's files are copied into the model a job makes (an upscale's
    base, a merge's donor or tokenizer source): a job that only reads the folder is not refused
    (test_review_s25_outputs)."""
    folder, secret = linked
    said = f"{folder}/special_tokens_map.json is a link to {secret}, outside the model folder: a push of the model " \
           "would upload that file and a build would copy it. Copy the file itself into the folder (`cp -L`) or " \
           "remove the link, then try again."
    assert registry.resolve(str(folder)) == (folder.resolve(), None)  # read as it is: nothing is copied yet
    with pytest.raises(registry.RegistryError, match="then import again"):  # the import's own words, as before
        registry.import_any(str(folder), "evil")
    registry.import_folder(tiny_llama, "tiny")
    specs = [UpscaleSpec(base=str(folder), m=1), UpscaleSpec(base=str(folder), method="llama-pro", groups=1),
             MergeSpec(models=[str(folder), "tiny"]),
             MergeSpec(models=["tiny", str(_copy(tiny_llama, folder.parent / "other"))], base=str(folder),
                       method="task_arithmetic")]
    for spec in specs:
        with pytest.raises(registry.RegistryError) as exc:  # the work itself (a job, the Python API)
            (run_merge if spec.kind == "merge" else run_upscale)(spec)
        assert str(exc.value) == said
        with pytest.raises(ValueError) as exc:  # queued: refused before its row is written
            runner.submit(spec)
        assert str(exc.value) == said
    _nothing_built(workspace, keep=("tiny",))
    assert not [p for p in workspace.rglob("*") if p.is_file() and "OPENSSH" in p.read_text(errors="replace")]
    # a link inside the folder is no problem: the folder is used as before
    (folder / "special_tokens_map.json").unlink()
    (folder / "special_tokens_map.json").symlink_to(folder / "tokenizer_config.json")
    assert registry.resolve(str(folder)) == (folder.resolve(), None)


def test_a_folder_without_a_usable_tokenizer_is_refused_before_a_build(tiny_llama, tmp_path, workspace, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama / f, bare / f)
    missing = (f"{bare} has no tokenizer (none of tokenizer.json, tokenizer.model, spiece.model, "
               "sentencepiece.bpe.model, vocab.json, vocab.txt, *.tiktoken): training, evaluation and chat need one. "
               "Copy the tokenizer files of the model these weights came from into the folder, then try again.")
    assert _refused(capsys, ["upscale", "--base", str(bare), "--m", "1"]) == f"error: {missing}"  # foreground
    broken = _copy(tiny_llama, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{not json")
    said = _refused(capsys, ["merge", "--models", str(tiny_llama), str(broken)])
    assert said.startswith(f"error: {broken}'s tokenizer could not be loaded (") and said.endswith(
        "Copy the tokenizer files of the model these weights came from into the folder, then try again."), said
    with pytest.raises(ValueError, match="tokenizer could not be loaded"):  # queued
        runner.submit(UpscaleSpec(base=str(broken), m=1))
    _nothing_built(workspace)
    # a folder that is no model says that alone, as before
    assert "has no config.json: it is not a Hugging Face model folder" in _refused(
        capsys, ["upscale", "--base", str(tmp_path), "--m", "1"])


def test_resolve_never_loads_the_tokenizer(tiny_llama, tmp_path, monkeypatch):
    """resolve runs on each page rerun (the Train page's memory plan): the tokenizer (0.1 s for a real one) is
    loaded once per job, by the checks before it is queued or run in the foreground."""
    folder = _copy(tiny_llama, tmp_path / "fine")
    loads = []
    real = import_checks.tokenizer_problem
    monkeypatch.setattr(import_checks, "tokenizer_problem", lambda f, again="": loads.append(f) or real(f, again))
    for _ in range(3):
        assert registry.resolve(str(folder)) == (folder.resolve(), None)
    assert loads == []
    registry.check_folder_ref(str(folder))
    assert loads == [folder]
    registry.import_folder(folder, "fine")  # a registered model's folder by path: its row, not checked again
    registry.check_folder_ref(str(folder))
    assert loads == [folder]


def _more_tokens(folder: Path, extra: int) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens([f"<extra_{i}>" for i in range(extra)])
    tok.save_pretrained(folder)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tiny_llama, tokenizer_dir, tmp_path, workspace, capsys):
    big = _copy(tiny_llama, tmp_path / "big-tok")
    _more_tokens(big, 20)
    said = (f"{big}'s tokenizer has 320 tokens, but the model's vocabulary (config.json vocab_size, its embedding's "
            "rows) has only 300: token ids 300 and up would index past the embedding, and training and chat fail "
            "(\"index out of range in self\"). The tokenizer is not the one these weights were trained with: copy "
            "the tokenizer files of the model the weights came from into the folder, then ")
    with pytest.raises(registry.RegistryError) as exc:
        registry.import_any(str(big), "big")
    assert str(exc.value) == said + "import again."
    with pytest.raises(ValueError) as exc:  # a queued import: refused before its row is written
        runner.submit(ImportSpec(target=str(big), name="big"))
    assert str(exc.value) == said + "import again."
    assert _refused(capsys, ["upscale", "--base", str(big), "--m", "1"]) == f"error: {said}try again."
    with pytest.raises(ValueError) as exc:
        runner.submit(UpscaleSpec(base=str(big), m=1))
    assert str(exc.value) == said + "try again."
    _nothing_built(workspace)
    # an embedding padded past the tokenizer (Qwen2.5: 151,665 tokens, vocab_size 151,936) is fine
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    padded = tmp_path / "padded"
    LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(padded)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(padded)
    assert len(AutoTokenizer.from_pretrained(padded)) == 300 and import_checks.folder_problems(padded) == []
    assert registry.import_any(str(padded), "padded").num_layers == 2
    # a vocab_size edited in config.json is said as that, not blamed on the tokenizer (modelinfo's words)
    edited = _copy(tiny_llama, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "vocab_size": 200}))
    with pytest.raises(ValueError, match=r"model.embed_tokens.weight: \[300, 32\] in the weights, \[200, 32\] by"):
        registry.import_any(str(edited), "edited")


def test_a_weights_file_that_is_a_folder_is_said(tiny_llama, tmp_path, workspace):
    folder = _copy(tiny_llama, tmp_path / "dir-weights")
    os.rename(folder / "model.safetensors", tmp_path / "w.safetensors")
    (folder / "model.safetensors").mkdir()
    shutil.move(tmp_path / "w.safetensors", folder / "model.safetensors" / "model.safetensors")
    said = (f"{folder}/model.safetensors is a folder, not a safetensors file: the model's weights are not there (an "
            "archive unpacked into a folder of the file's name, or a copy that went wrong?). Put the model's "
            "model.safetensors file itself in its place, then try again.")
    for attempt in (lambda: registry.check_import(str(folder), "w"),  # before an import is queued
                    lambda: registry.import_any(str(folder), "w"),
                    lambda: run_upscale(UpscaleSpec(base=str(folder), m=1))):
        with pytest.raises(ValueError) as exc:
            attempt()
        assert str(exc.value) == said
    # a shard an index names, as a folder
    sharded = _copy(tiny_llama, tmp_path / "sharded")
    from safetensors import safe_open

    with safe_open(sharded / "model.safetensors", "pt") as f:
        names = list(f.keys())
    (sharded / "model.safetensors").unlink()
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: "model-00001-of-00001.safetensors" for n in names}}))
    (sharded / "model-00001-of-00001.safetensors").mkdir()
    with pytest.raises(ValueError, match="model-00001-of-00001.safetensors is a folder, not a safetensors file"):
        registry.import_any(str(sharded), "s")
    _nothing_built(workspace)
