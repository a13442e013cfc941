"""The studio's three Hugging Face Hub code paths, run for real against a local Hub emulator (tests/hub_server.py):
a model import (backend/registry.py import_hub, and its CLI), a data set load (backend/data.py load_source) and
the synthetic data push (backend/synth/pipeline.py push_to_hub)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backend import registry
from backend.modelinfo import ArchitectureError
from tests.conftest import load_state
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A started emulator that huggingface_hub and datasets talk to, with a fresh HF_HOME and no token.

    Both libraries read HF_ENDPOINT, HF_HOME and the offline switch once, at import (huggingface_hub/constants.py,
    datasets/config.py); conftest imports datasets before any test, so the module values are patched as well as the
    environment (which a CLI subprocess reads).
    """
    import datasets.config
    from huggingface_hub import constants

    server = HubServer().start()
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy set on the machine must not take these calls
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name, value in {"ENDPOINT": server.url,
                        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HUB_OFFLINE": False, "HF_HUB_CACHE": str(home / "hub"),
                        "HF_TOKEN_PATH": str(home / "token")}.items():
        monkeypatch.setattr(constants, name, value)
    for name, value in {"HF_ENDPOINT": server.url,
                        "HUB_DATASETS_URL": server.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
                        "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False,
                        "HF_DATASETS_CACHE": home / "datasets",
                        "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
                        "EXTRACTED_DATASETS_PATH": home / "datasets" / "downloads" / "extracted"}.items():
        monkeypatch.setattr(datasets.config, name, value)
    yield server
    server.close()


def model_repo(src: Path, dst: Path, **extra: bytes) -> Path:
    """A copy of a model folder with extra files beside it (name -> bytes), as a Hub repo would hold them."""
    shutil.copytree(src, dst)
    for name, data in extra.items():
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (dst / name).write_bytes(data)
    return dst


def resolved(hub: HubServer) -> set[str]:
    """The repo files the client asked the emulator for (HEAD or GET of /resolve/)."""
    return {path.split("/resolve/", 1)[1].split("/", 1)[1] for _, path in hub.requests if "/resolve/" in path}


LORA = json.dumps({"peft_type": "LORA", "base_model_name_or_path": "acme/base", "r": 4, "lora_alpha": 8,
                   "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}).encode()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- backend/registry.py import_hub -----------------------------------------------------------------------------


def test_import_hub_registers_the_served_model_and_it_loads(hub, tiny_llama):
    from backend.evaldevice import load_model

    hub.add("model/acme/tiny-llama", tiny_llama)
    rec = registry.import_hub("acme/tiny-llama")
    assert rec.name == "tiny-llama" and rec.source == "hub:acme/tiny-llama" and rec.num_layers == 6
    assert registry.get("tiny-llama").path == rec.path
    served = load_state(tiny_llama)
    assert same_weights(load_state(Path(rec.path)), served)
    _, model = load_model(Path(rec.path))  # the loader of chat and evaluation
    assert same_weights({k: v for k, v in model.state_dict().items() if k in served}, served)
    assert not Path(rec.path, ".cache").exists()  # huggingface_hub's download notes stay out of the model folder
    assert "model.safetensors" in resolved(hub)  # through the Hub's LFS redirect to its CDN
    assert any(path.startswith("/cdn/") for _, path in hub.requests)


def test_import_hub_never_fetches_pickles_or_subfolders(hub, tiny_llama, tmp_path):
    state = {k: v + 1 for k, v in load_state(tiny_llama).items()}  # other values: a load from it would show
    buf = tmp_path / "pickle.bin"
    torch.save(state, buf)
    repo = model_repo(tiny_llama, tmp_path / "repo", **{"pytorch_model.bin": buf.read_bytes(),
                                                        "training_args.bin": buf.read_bytes(),
                                                        "checkpoint-10/model.safetensors": b"x" * 64})
    hub.add("model/acme/tiny-llama", repo)
    rec = registry.import_hub("acme/tiny-llama")
    assert not any(f.endswith(".bin") or "/" in f for f in resolved(hub)), resolved(hub)
    assert sorted(p.name for p in Path(rec.path).iterdir() if p.is_dir()) == []
    assert not list(Path(rec.path).glob("*.bin"))
    assert same_weights(load_state(Path(rec.path)), load_state(tiny_llama))


def test_import_hub_of_full_weights_beside_an_adapter_config_imports_the_full_model(hub, tiny_llama, tmp_path):
    """A repo with a merged model and the LoRA adapter_config.json it was merged from: with that file in the
    folder transformers (peft installed) loads the folder as an adapter and fails on the missing adapter weights."""
    from backend.evaldevice import load_model

    hub.add("model/acme/merged", model_repo(tiny_llama, tmp_path / "repo", **{"adapter_config.json": LORA}))
    rec = registry.import_hub("acme/merged")
    assert not Path(rec.path, "adapter_config.json").exists()
    _, model = load_model(Path(rec.path))
    served = load_state(tiny_llama)
    assert same_weights({k: v for k, v in model.state_dict().items() if k in served}, served)


def test_import_hub_of_a_repo_without_a_tokenizer_says_so_and_leaves_nothing(hub, tiny_llama, tmp_path, workspace):
    """It was registered, and its first training failed in the trainer ("Couldn't instantiate the backend
    tokenizer")."""
    repo = model_repo(tiny_llama, tmp_path / "repo")
    for f in repo.glob("tokenizer*"):
        f.unlink()
    hub.add("model/acme/bare", repo)
    with pytest.raises(registry.RegistryError, match="'acme/bare' has no tokenizer at its root"):
        registry.import_hub("acme/bare")
    assert registry.get("bare") is None and nothing_left(workspace)


def test_import_hub_at_a_pinned_revision_gets_that_commit(hub, tiny_llama, tiny_llama_untied):
    old = hub.add("model/acme/tiny-llama", tiny_llama)
    hub.add("model/acme/tiny-llama", tiny_llama_untied)  # main moved on
    rec = registry.import_hub("acme/tiny-llama", "pinned", revision=old)
    assert same_weights(load_state(Path(rec.path)), load_state(tiny_llama))
    latest = registry.import_hub("acme/tiny-llama", "latest")
    assert same_weights(load_state(Path(latest.path)), load_state(tiny_llama_untied))
    with pytest.raises(registry.RegistryError, match="has no revision 'v9'"):
        registry.import_hub("acme/tiny-llama", "nope", revision="v9")


def consolidated(tmp_path: Path) -> bytes:
    """A Mistral-format weights file (mistral-inference's tensor names, other values): a download of it shows in
    the model folder, and in load_state's reading of every *.safetensors there."""
    from safetensors.torch import save_file

    save_file({"tok_embeddings.weight": torch.ones(300, 32), "norm.weight": torch.ones(32)},
              tmp_path / "consolidated.safetensors")
    return (tmp_path / "consolidated.safetensors").read_bytes()


def sharded(src: Path, dst: Path) -> Path:
    """The model saved as model-0000x-of-0000y.safetensors shards with their index, as large Hub models are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst, max_shard_size="20KB")
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    assert len(list(dst.glob("model-*-of-*.safetensors"))) > 1 and (dst / "model.safetensors.index.json").exists()
    return dst


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_import_hub_skips_mistral_consolidated_weights_beside_the_transformers_ones(hub, tiny_llama, tmp_path,
                                                                                    layout):
    """Mistral repos publish consolidated.safetensors beside the transformers weights: the same model twice."""
    from backend.evaldevice import load_model

    folder = tiny_llama if layout == "single" else sharded(tiny_llama, tmp_path / "sharded")
    hub.add("model/mistralai/tiny", model_repo(folder, tmp_path / "repo",
                                               **{"consolidated.safetensors": consolidated(tmp_path)}))
    rec = registry.import_hub("mistralai/tiny")
    assert "consolidated.safetensors" not in resolved(hub)
    assert not Path(rec.path, "consolidated.safetensors").exists()
    served = load_state(tiny_llama)
    assert same_weights(load_state(Path(rec.path)), served)
    _, model = load_model(Path(rec.path))
    assert same_weights({k: v for k, v in model.state_dict().items() if k in served}, served)


def test_import_hub_of_consolidated_weights_alone_still_fetches_them(hub, tiny_llama, tmp_path):
    """Without transformers weights beside it the file is not skipped: the import fails on what the repo holds,
    not on weights it left out."""
    repo = model_repo(tiny_llama, tmp_path / "repo", **{"consolidated.safetensors": consolidated(tmp_path)})
    (repo / "model.safetensors").unlink()
    hub.add("model/mistralai/raw", repo)
    with pytest.raises(ArchitectureError, match="no numbered stack of layers"):
        registry.import_hub("mistralai/raw")
    assert "consolidated.safetensors" in resolved(hub)


def nothing_left(workspace: Path) -> bool:
    """No model registered, no download left in the workspace's temporary folder and no model folder written."""
    from storage import db

    models = db.models_dir()
    return [r.name for r in registry.list_models()] == [] and not any(db.tmp_dir().iterdir()) and (
        not models.exists() or not any(models.iterdir()))


def test_import_hub_of_a_missing_repo_says_so(hub, workspace):
    with pytest.raises(registry.RegistryError, match="'acme/nothing' is not a Hub model repo"):
        registry.import_hub("acme/nothing")
    assert nothing_left(workspace)


def test_import_hub_of_a_gated_repo_asks_for_hf_token_and_works_with_it(hub, tiny_llama, workspace, monkeypatch):
    hub.add("model/acme/gated", tiny_llama, gated=True)
    with pytest.raises(registry.RegistryError) as err:
        registry.import_hub("acme/gated")
    assert "'acme/gated' is gated" in str(err.value) and "set HF_TOKEN" in str(err.value)
    assert "not a Hub model repo" not in str(err.value)
    assert nothing_left(workspace)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    rec = registry.import_hub("acme/gated")
    assert same_weights(load_state(Path(rec.path)), load_state(tiny_llama))


def test_import_hub_with_a_wrong_token_blames_the_token_not_the_network(hub, tiny_llama, workspace, monkeypatch):
    hub.add("model/acme/tiny-llama", tiny_llama)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(registry.RegistryError) as err:
        registry.import_hub("acme/tiny-llama")
    assert "HF_TOKEN" in str(err.value) and "offline" not in str(err.value)
    assert nothing_left(workspace)


def test_import_hub_with_the_hub_down_gives_the_offline_message(hub, tiny_llama, workspace):
    hub.add("model/acme/tiny-llama", tiny_llama)
    hub.stop()
    start = time.monotonic()
    with pytest.raises(registry.RegistryError, match="offline or the Hub is unreachable.*import the folder instead"):
        registry.import_hub("acme/tiny-llama")
    assert time.monotonic() - start < 10
    assert nothing_left(workspace)


def test_import_hub_of_a_download_cut_off_mid_file_says_so_and_leaves_nothing(hub, tiny_llama, workspace):
    """A connection dropped mid-file ends in the HTTP client's own error, no OSError: it escaped as
    httpx's RemoteProtocolError, not as the message the page and CLI show."""
    hub.add("model/acme/tiny-llama", tiny_llama)
    hub.cut_downloads = True
    with pytest.raises(registry.RegistryError, match="Could not download 'acme/tiny-llama' from the Hugging Face Hub"):
        registry.import_hub("acme/tiny-llama")
    assert any(path.startswith("/cdn/") for method, path in hub.requests if method == "GET")
    assert nothing_left(workspace) and registry.list_models() == []


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: it reads HF_ENDPOINT and HF_HOME from the environment the fixture set."""
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_cli_models_import_from_the_hub(hub, tiny_llama):
    hub.add("model/acme/tiny-llama", tiny_llama)
    r = cli("models", "import", "acme/tiny-llama")
    assert r.returncode == 0, r.stderr
    assert "registered tiny-llama: 6 layers" in r.stdout
    assert "tiny-llama" in cli("models", "list").stdout
    assert same_weights(load_state(Path(registry.get("tiny-llama").path)), load_state(tiny_llama))


# --- backend/data.py load_source ----------------------------------------------------------------------------------


ROWS = [{"prompt": f"What is {i} + {i}?", "completion": f"{2 * i}"} for i in range(7)]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_load_source_reads_a_hub_data_set(hub, tmp_path, fmt):
    import datasets

    from backend import data

    repo = tmp_path / "data-repo" / "data"
    repo.mkdir(parents=True)
    datasets.Dataset.from_list(ROWS).to_json(repo / "train.jsonl") if fmt == "jsonl" else \
        datasets.Dataset.from_list(ROWS).to_parquet(repo / "train.parquet")
    hub.add("dataset/acme/some-data", repo.parent)
    ds = data.load_source("acme/some-data")
    assert ds.to_list() == ROWS
    assert f"data/train.{fmt}" in resolved(hub)


def test_load_source_of_a_missing_hub_data_set_says_so(hub):
    from backend import data

    with pytest.raises(data.DataError, match="'acme/none' is not a data set on the Hugging Face Hub") as err:
        data.load_source("acme/none")
    assert "Offline?" not in str(err.value)  # the Hub answered


# --- backend/synth/pipeline.py push_to_hub --------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path) -> list[Path]:
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "synth"), num_seeds=6))
    return [Path(pipeline.get_dataset(f"synth-math-{k}").path) for k in ("instruct", "alignment")]


def test_push_to_hub_uploads_the_exported_files(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    message = pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    files = hub.files("dataset/acme/synth-math")
    assert {name: files[name] for name in ("math_instruct.jsonl", "math_alignment.jsonl")} == \
        {p.name: p.read_bytes() for p in exported}
    assert f"{hub.url}/datasets/acme/synth-math" in message
    # a second push into the existing repo is fine (exist_ok) and changes nothing
    pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    assert hub.files("dataset/acme/synth-math") == files


def test_push_to_hub_without_a_token_says_to_set_hf_token(hub, exported):
    from backend.synth import pipeline

    with pytest.raises(pipeline.DatasetError, match="needs a Hugging Face token with write access.*set HF_TOKEN") \
            as err:
        pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    assert "online" not in str(err.value)
    assert "dataset/acme/synth-math" not in hub.repos


def test_push_to_hub_with_a_wrong_token_says_the_hub_refused_it(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(pipeline.DatasetError, match="refused the token in HF_TOKEN"):
        pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    assert "dataset/acme/synth-math" not in hub.repos


def test_push_to_hub_with_the_hub_down_says_so(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    hub.stop()
    with pytest.raises(pipeline.DatasetError, match="Could not reach the Hugging Face Hub"):
        pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")


def test_push_to_hub_says_what_it_pushed(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    message = pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    rows = pipeline.get_dataset("synth-math-instruct").rows
    assert rows > 0
    assert message == (f"pushed synth-math-instruct ({rows} rows, math_instruct.jsonl) and synth-math-alignment "
                       f"({rows} rows, math_alignment.jsonl), exported from synth-math-pairs, to "
                       f"{hub.url}/datasets/acme/synth-math")


def test_push_to_hub_never_pushes_mixes_saved_under_the_export_names(hub, workspace, monkeypatch):
    """Mixes saved by hand as NAME-instruct / NAME-alignment before the pairs were ever exported: they are no
    export of NAME-pairs (a mix has no file), and the name alone let push_to_hub take them."""
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    pipeline.save_mix("mine-instruct", [("builtin:alpaca-mini", 1.0)], "sft")
    pipeline.save_mix("mine-alignment", [("builtin:prefs-mini", 1.0)], "dpo")
    with pytest.raises(pipeline.DatasetError, match="A mix data set is already named 'mine-instruct'"):
        pipeline.run_synth_math(SynthMathSpec(name="mine", out=str(workspace / "mine"), num_seeds=6))
    assert pipeline.get_dataset("mine-pairs") is None  # the run is refused before any work; pairs made earlier:
    pipeline.save_dataset("mine-pairs", "synth-pairs", str(workspace / "pairs.jsonl"), 0, {})
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.push_to_hub("mine-pairs", "acme/mine")
    assert str(err.value) == ("'mine-instruct' is a mix data set saved by hand, not an export of mine-pairs. Nothing "
                              "was pushed. The export takes that name: run the synthetic-math job again under "
                              "another name, then export and push that.")
    assert "dataset/acme/mine" not in hub.repos and hub.requests == []


def test_push_to_hub_refuses_a_file_another_run_exported_over(hub, workspace, monkeypatch):
    """Another run's export copied over the first's files, which its records still point at (a second run into the
    same --out folder did it before such a run was refused)."""
    import shutil

    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    out = str(workspace / "shared")
    pipeline.run_synth_math(SynthMathSpec(name="first", out=out, num_seeds=6, seed=1))
    with pytest.raises(pipeline.DatasetError, match="holds the files of first-alignment, first-instruct"):
        pipeline.run_synth_math(SynthMathSpec(name="second", out=out, num_seeds=6, seed=2))
    pipeline.run_synth_math(SynthMathSpec(name="second", out=str(workspace / "second"), num_seeds=6, seed=2))
    for f in ("math_instruct.jsonl", "math_alignment.jsonl"):
        shutil.copy(workspace / "second" / f, Path(out, f))
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.push_to_hub("first-pairs", "acme/first")
    assert str(err.value) == (f"{out}/math_instruct.jsonl no longer holds first-instruct as exported from first-pairs "
                              "(another export into the same folder overwrote it, or pairs were rejected by hand "
                              "since). Nothing was pushed: export first-pairs again, then push.")
    assert "dataset/acme/first" not in hub.repos and hub.requests == []
    pipeline.export("first-pairs")  # its files now hold its own pairs: they go up
    pipeline.push_to_hub("first-pairs", "acme/first")
    assert hub.files("dataset/acme/first")["math_instruct.jsonl"] == Path(out, "math_instruct.jsonl").read_bytes()


def test_push_to_hub_refuses_an_export_older_than_a_hand_rejection(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    pairs = pipeline.get_dataset("synth-math-pairs")
    _, page = pipeline.query_pairs(pairs.id, states=["verified"])
    pipeline.reject_by_hand(page[0].id)
    with pytest.raises(pipeline.DatasetError, match="no longer holds synth-math-instruct as exported from "
                                                    "synth-math-pairs.*export synth-math-pairs again"):
        pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    assert hub.requests == []


def test_push_to_hub_of_an_export_whose_file_is_gone_says_so_before_any_upload(hub, exported, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    exported[1].unlink()
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.push_to_hub("synth-math-pairs", "acme/synth-math")
    assert str(err.value) == (f"The file of synth-math-alignment, {exported[1]}, is gone. Nothing was pushed: export "
                              "synth-math-pairs again, then push.")
    assert "dataset/acme/synth-math" not in hub.repos and hub.requests == []


def test_push_to_hub_of_pairs_never_exported_says_to_export(hub, workspace, monkeypatch):
    from backend.synth import pipeline

    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(pipeline.DatasetError, match="No synthetic pairs named 'nothing-pairs'"):
        pipeline.push_to_hub("nothing-pairs", "acme/nothing")
    pipeline.save_dataset("bare-pairs", "synth-pairs", str(workspace / "pairs.jsonl"), 0, {})
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.push_to_hub("bare-pairs", "acme/bare")
    assert str(err.value) == ("bare-pairs has no export to push: make Synth. Math-Instruct and Synth. Math-Alignment "
                              "first (the Export tab, or `python -m backend datasets export bare-pairs`). Nothing was "
                              "pushed.")
    assert hub.requests == []
