"""One JSON Lines reader for QA, seed and lm-eval task files; broad excepts that hid what happened (a config
transformers refuses read as "no per-layer lists", a secrets.toml that does not parse read as "no login
configured", a Ctrl-C during a pickle import leaving its partial weights behind)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from backend import auth, import_convert, qa
from backend.lm_eval_tasks import loaders
from backend.synth import seeds
from storage import db

ROOT = Path(__file__).resolve().parent.parent
ROW = {"id": 1, "question": "q?", "answers": ["a"], "answerable": True}


# ---------------------------------------------------------------- one JSON Lines reader

def test_a_qa_file_that_is_not_json_says_the_column_and_why_as_a_seed_file_does(tmp_path):
    """qa.load_items said only "line 2: not valid JSON."; the seed reader said where on the line and why."""
    (f := tmp_path / "qa.jsonl").write_text(json.dumps(ROW) + "\n{oops\n")
    with pytest.raises(qa.QAError) as e:
        qa.load_items(f)
    assert str(e.value) == "qa.jsonl, line 2, column 2: not valid JSON (Expecting property name enclosed in double " \
                           "quotes)."
    with pytest.raises(seeds.SeedError) as e:
        seeds.read_records(f, "seeds")
    assert str(e.value) == "seeds, line 2, column 2: not valid JSON (Expecting property name enclosed in double " \
                           "quotes)."


def test_the_reader_skips_a_byte_order_mark_and_blank_lines_and_tells_the_check_each_line(tmp_path):
    seen = []
    rows = loaders.json_lines("\ufeff" + json.dumps(ROW) + "\n\n  \n[1]\n", lambda n, row: seen.append(n),
                              lambda n, problem, error: AssertionError((n, problem, error)))
    assert rows == [(1, ROW), (4, [1])] and seen == [1, 4]
    with pytest.raises(ValueError, match=r"^none$"):
        loaders.json_lines("\n \n", lambda n, row: None, lambda n, problem, error: ValueError("none" if n is None
                                                                                               else problem))
    (f := tmp_path / "qa.jsonl").write_text("\ufeff" + json.dumps(ROW) + "\n\n" + json.dumps({**ROW, "id": 2}))
    assert [i["id"] for i in qa.load_items(f)] == ["1", "2"]
    assert seeds.read_records(f, "seeds") == [(1, ROW), (3, {**ROW, "id": 2})]


# ---------------------------------------------------------------- broad excepts

def _config(tmp_path: Path, **cfg) -> SimpleNamespace:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    return SimpleNamespace(folder=folder, config=cfg, num_layers=cfg["num_hidden_layers"])


LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 100}


def test_a_config_transformers_refuses_is_said_not_read_as_no_layer_lists(tmp_path):
    """Any failure of AutoConfig became an empty config: a Llama config.json whose layer_types transformers refuses
    was up-scaled from its own lists, into a model that fails to load the same way, without a word."""
    from backend.upscale import layer_lists

    info = _config(tmp_path, **LLAMA, layer_types=["global"] * 4)
    with pytest.raises(ValueError) as e:
        layer_lists(info)
    said = str(e.value)
    assert said.startswith(f"{info.folder}: transformers cannot read its config.json as a llama configuration (")
    assert "layer_types" in said and said.endswith("fix config.json so that transformers loads the model, then "
                                                   "up-scale it.")


def test_a_model_type_transformers_does_not_know_keeps_its_config_json_lists(tmp_path):
    from backend.upscale import layer_lists

    info = _config(tmp_path, **{**LLAMA, "model_type": "dus-remote-code"}, layer_types=["global", "local"] * 2)
    assert layer_lists(info) == ({"layer_types": ["global", "local"] * 2}, {})


def test_a_secrets_toml_that_does_not_parse_keeps_the_page_locked_and_says_where(tmp_path, monkeypatch):
    """It read as "no login is configured": the page told the operator to configure in secrets.toml the OIDC login
    that was there, one typo away."""
    import streamlit
    from streamlit import config
    from streamlit.runtime.secrets import Secrets

    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nclient_id = "c\n')  # the string never closes
    old = {k: config.get_option(k) for k in ("server.address", "secrets.files")}
    monkeypatch.setattr(streamlit, "secrets", Secrets())  # the process's own is cached, and reads other files
    for var in (auth.PASSWORD_ENV, auth.HASH_ENV, auth.FORCE_ENV):
        monkeypatch.delenv(var, raising=False)
    config.set_option("server.address", "0.0.0.0")
    config.set_option("secrets.files", [str(secrets)])
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    finally:
        for k, v in old.items():
            config.set_option(k, v)
    assert not at.exception and len(at.error) == 1 and not at.text_input and not at.button
    said = at.error[0].value
    assert said.startswith("DUS Studio stays locked: Streamlit's secrets cannot be read, so whether they configure "
                           f"a login cannot be told. Error parsing secrets file at {secrets}: ")
    assert "line 2" in said and "no login is configured" not in said


def test_a_ctrl_c_during_a_pickle_import_removes_its_partial_folder(tmp_path):
    """pickle_to_folder cleaned up on Exception, gguf_to_folder on BaseException: a Ctrl-C (KeyboardInterrupt) while
    reading the weights left the partial folder in workspace/.tmp until the next start."""
    import torch

    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")

    def interrupted(fraction, message):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_convert.pickle_to_folder(folder, interrupted)
    assert [p.name for p in db.tmp_dir().iterdir()] == []
    made = import_convert.pickle_to_folder(folder, lambda f, m: None)  # and an uninterrupted one is kept
    assert made.parent == db.tmp_dir() and (made / "model.safetensors").is_file()
