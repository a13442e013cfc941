"""Review s20, data and imports: file suffixes in capitals, UTF-16 files, JSON rows wrapped in an object, weights no
mix can take, the built-in model under its own name with its folder gone, and an import's time in its result."""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest

from backend import data, import_checks, registry
from backend.specs import ImportSpec
from storage import db
from tests.test_review_s12_models import write_gguf

ALPACA = [{"instruction": "Add 2 and 2.", "output": "4"}, {"instruction": "Name a colour.", "output": "blue"}]


def rows(ds) -> list[dict]:
    return [dict(r) for r in ds]


def tmp_left() -> list[Path]:
    return list(db.tmp_dir().iterdir()) if db.tmp_dir().exists() else []


# ---------------------------------------------------------------- 1. suffixes in any case

def test_data_files_named_in_capitals_are_read_as_their_kind(tmp_path):
    (tmp_path / "a.JSONL").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    (tmp_path / "b.CSV").write_text("instruction,output\nAdd 2 and 2.,4\n")
    (tmp_path / "c.Json").write_text(json.dumps(ALPACA))
    (tmp_path / "d.TXT").write_text("first line\nsecond line\n")
    assert rows(data.load_source(str(tmp_path / "a.JSONL"))) == ALPACA
    assert rows(data.load_source(str(tmp_path / "b.CSV"))) == ALPACA[:1]  # "4" kept as text: the CSV options
    assert rows(data.load_source(str(tmp_path / "c.Json"))) == ALPACA
    assert rows(data.load_source(str(tmp_path / "d.TXT"))) == [{"text": "first line"}, {"text": "second line"}]
    assert data.reads_text_file(str(tmp_path / "d.TXT"))  # its sample_by is offered as for a .txt
    assert data.preview(str(tmp_path / "d.TXT"), "cpt", sample_by="document")["rows"] == 1
    assert not data.hub_id("someone/rows.JSONL")  # a missing file, not a Hub data set


def test_a_gguf_file_named_in_capitals_is_a_gguf_import(tmp_path, monkeypatch):
    gguf_file = write_gguf(tmp_path / "tiny-model.Q4_K_M.GGUF")
    assert registry.check_import(str(gguf_file)) == ("gguf", "tiny-model")  # was "a file, not a model"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shutil.copy(gguf_file, folder / "weights.GGUF")
    assert import_checks._missing_weights(folder) == [
        f"{folder} holds GGUF weights (weights.GGUF), which are imported as a file: import {folder / 'weights.GGUF'} "
        "itself, not its folder."]
    # transformers tells a GGUF checkpoint by its lower-case suffix: the link it reads is named so
    import transformers

    seen = []

    def stop(folder, gguf_file, **kw):
        seen.append(gguf_file)
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", stop)
    with pytest.raises(registry.RegistryError):
        registry.gguf_to_folder(gguf_file, lambda *_: None)
    assert seen and seen[0].endswith("/tiny-model.Q4_K_M.gguf")


# ---------------------------------------------------------------- 3. UTF-16 and UTF-32 files (a byte-order mark)

@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_read_from_a_utf8_copy_and_left_as_it_was(tmp_path, encoding):
    bom = {"utf-16": b"", "utf-16-be": codecs.BOM_UTF16_BE, "utf-32": b""}[encoding]
    csv = tmp_path / "excel.csv"
    csv.write_bytes(bom + "instruction\toutput\nQuelle café ?\t4\n".encode(encoding))
    txt = tmp_path / "notes.txt"
    txt.write_bytes(bom + "première ligne\r\nzweite Zeile\r\n".encode(encoding))
    before = csv.read_bytes(), txt.read_bytes()
    assert rows(data.load_source(str(csv))) == [{"instruction": "Quelle café ?", "output": "4"}]
    assert rows(data.load_source(str(txt))) == [{"text": "première ligne"}, {"text": "zweite Zeile"}]
    assert data.preview(str(csv), "sft")["examples"][0]["messages"][1]["content"] == "4"
    assert (csv.read_bytes(), txt.read_bytes()) == before  # the user's files untouched
    assert tmp_left() == []  # the copies went with their reads


def test_a_utf16_json_file_is_checked_row_by_row_in_its_own_terms(tmp_path):
    """A column of mixed types is checked from the file itself (data_rows._json_records): decoded as it was read."""
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes("".join(json.dumps(r) + "\n" for r in [ALPACA[0], {**ALPACA[1], "output": 4}]).encode("utf-16"))
    with pytest.raises(data.DataError) as refused:
        data.check_source(str(bad), "sft")
    assert str(refused.value) == "mixed.jsonl, row 2: output must be text; got int. Fix or remove that row."


def test_a_file_that_is_not_utf16_after_its_mark_is_refused_in_words(tmp_path):
    bad = tmp_path / "broken.txt"
    bad.write_bytes(codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(data.DataError) as refused:
        data.load_source(str(bad))
    assert str(refused.value).startswith("broken.txt opens as UTF-16 (its byte-order mark) but is not UTF-16 "
                                         "throughout (")
    assert str(refused.value).endswith("): save it as UTF-8.")
    assert tmp_left() == []


def test_a_utf8_mark_before_json_lines_of_mixed_types_is_no_raw_json_error(tmp_path):
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(codecs.BOM_UTF8 + "".join(json.dumps(r) + "\n" for r in [ALPACA[0], {**ALPACA[1], "output": 4}])
                       .encode())
    with pytest.raises(data.DataError) as refused:  # was json's "Unexpected UTF-8 BOM (decode using utf-8-sig)"
        data.check_source(str(marked), "sft")
    assert str(refused.value) == "marked.jsonl, row 2: output must be text; got int. Fix or remove that row."


# ---------------------------------------------------------------- 4. JSON rows wrapped in an object

def test_json_rows_wrapped_in_an_object_are_read_as_datasets_field_reads_them(tmp_path):
    wrapped = tmp_path / "export.json"
    wrapped.write_text(json.dumps({"data": ALPACA}, indent=2))
    with_meta = tmp_path / "with-meta.json"
    with_meta.write_text(json.dumps({"version": 2, "meta": {"by": "tool"}, "rows": ALPACA}))
    for f in (wrapped, with_meta):
        pv = data.preview(str(f), "sft")
        assert (pv["layout"], pv["rows"]) == ("alpaca", 2)
        assert rows(data.load_source(str(f))) == ALPACA
    # one row of a layout whose column holds a list of objects stays that row
    chat = tmp_path / "one-chat.json"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chat.write_text(json.dumps({"messages": turns}))
    assert rows(data.load_source(str(chat))) == [{"messages": turns}]


def test_wrapped_json_rows_of_mixed_types_are_checked_from_the_file(tmp_path):
    f = tmp_path / "export.json"
    f.write_text(json.dumps({"data": [ALPACA[0], {**ALPACA[1], "output": 4}]}, indent=2))
    with pytest.raises(data.DataError) as refused:
        data.check_source(str(f), "sft")
    assert str(refused.value) == "export.json, row 2: output must be text; got int. Fix or remove that row."


def test_an_object_with_two_lists_of_rows_is_asked_which(tmp_path):
    f = tmp_path / "two.json"
    f.write_text(json.dumps({"train": ALPACA, "test": ALPACA[:1]}))
    with pytest.raises(data.DataError) as refused:
        data.load_source(str(f))
    assert str(refused.value) == ("two.json holds one JSON object whose keys train, test each hold a list of objects: "
                                  "save the list of rows alone as a .json array (or JSON Lines).")


# ---------------------------------------------------------------- 5. weights no mix can take

def test_a_weight_too_large_to_count_rows_is_refused_in_words():
    with pytest.raises(data.DataError) as refused:  # was OverflowError: cannot convert float infinity to integer
        data.prepare("builtin:alpaca-mini", "sft", weight=1e308)
    assert str(refused.value) == ("builtin:alpaca-mini: weight 1e+308 would repeat its rows over 10,000 times; give a "
                                  "weight of at most 10,000 (1 = the whole set once, 2 = twice).")
    assert len(data.prepare("builtin:alpaca-mini", "sft", weight=2.0)[0]) == 400


@pytest.mark.parametrize("weight, said", [(1e308, "weight 1e+308 would repeat its rows over 10,000 times"),
                                          (float("inf"), "weight must be a positive finite number; got inf"),
                                          (float("nan"), "weight must be a positive finite number; got nan")])
def test_a_saved_mix_with_such_a_weight_is_refused_before_queueing(weight, said):
    from backend.synth.datasets import DatasetError, get_dataset, save_dataset, save_mix

    with pytest.raises(DatasetError) as refused:  # refused when saved (`weight <= 0` passed nan, inf and 1e308)
        save_mix("huge", [("builtin:alpaca-mini", weight)], "sft")
    assert str(refused.value).startswith(f"builtin:alpaca-mini: {said}") and get_dataset("huge") is None
    # a mix record edited by hand (or saved by an older studio): refused before queueing
    save_dataset("huge", "mix", "", 0, {"for": "sft", "sources": [{"source": "builtin:alpaca-mini", "weight": weight}]})
    with pytest.raises(data.DataError) as refused:
        data.expand([("mix:huge", 1.0)])
    assert str(refused.value).startswith(f"mix:huge: builtin:alpaca-mini: {said}")


# ---------------------------------------------------------------- 2. the built-in model under its own name

def test_the_builtin_model_named_with_its_folder_gone_is_imported_again(tiny_llama, monkeypatch):
    def converted(path, progress):  # the local GGUF's conversion (15 s, 540 MB) stood in for by the tiny model
        assert path == registry.builtin_gguf()
        tmp = db.new_tmp("import")
        shutil.copytree(tiny_llama, tmp, dirs_exist_ok=True)
        return tmp

    monkeypatch.setattr(registry, "gguf_to_folder", converted)
    first = registry.import_builtin()
    shutil.rmtree(first.path)
    folder, name = registry.resolve(registry.BUILTIN_NAME)  # was "… but that folder is gone"
    assert name == registry.BUILTIN_NAME and (folder / "config.json").is_file()
    assert registry.get(registry.BUILTIN_NAME).source == "builtin"


def test_another_model_under_the_builtin_name_is_not_replaced(tiny_llama, tmp_path):
    copy = shutil.copytree(tiny_llama, tmp_path / "mine")
    registry.import_folder(copy, registry.BUILTIN_NAME)
    shutil.rmtree(copy)
    with pytest.raises(registry.RegistryError, match="that folder is gone"):
        registry.resolve(registry.BUILTIN_NAME)


# ---------------------------------------------------------------- 6. an import says how long it took

def test_an_import_job_says_how_long_its_work_took(tiny_llama):
    from backend import runner
    from pages import common

    result = registry.run_import(ImportSpec(target=str(tiny_llama), name="timed"))
    assert isinstance(result["seconds"], float) and 0 <= result["seconds"] < 60
    assert ("seconds", result["seconds"]) in runner.shown_fields(result)
    assert "work took " in common.result_words(result)


# ---------------------------------------------------------------- other bad rows

def test_a_preference_prompt_that_is_a_number_is_named_as_such(tmp_path):
    f = tmp_path / "prefs.jsonl"
    f.write_text(json.dumps({"prompt": 5, "chosen": "yes", "rejected": "no"}) + "\n")
    with pytest.raises(data.DataError) as refused:  # was "(TypeError: 'int' object is not iterable)"
        data.check_source(str(f), "dpo")
    assert str(refused.value) == ("prefs.jsonl, row 1: prompt must be text or a list of turns; got int. Fix or remove "
                                  "that row.")


def test_a_specs_weight_past_the_repeats_a_mix_takes_is_refused_when_the_spec_is_checked():
    """A source's weight of 1e308 passed the spec (only inf and nan were refused) and failed when the job ran."""
    from pydantic import ValidationError

    from backend.specs import DataSource

    assert DataSource(source="builtin:alpaca-mini", weight=data.MAX_REPEATS).weight == data.MAX_REPEATS
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        DataSource(source="builtin:alpaca-mini", weight=1e308)
