"""Review session 23, a user bringing their own data (walk23b): a good upload refused as "not JSON" and deleted while
another session imported transformers, previews that carried whole rows, a mix of a bad file saved, and the upload
limit said only in a tooltip (.jsonl.gz and the like refused though `datasets` reads them)."""

from __future__ import annotations

import gzip
import importlib
import json
import sys
import threading
import types

import pytest

from backend import data, data_reading, uploads
from backend.data import DataError
from backend.synth import pipeline
from tests.test_review_cli import cli

ALPACA = [{"instruction": f"Name a colour number {i}.", "input": "", "output": f"Blue {i}."} for i in range(6)]

# A transformers that a thread is still importing: it waits for `release`, then replaces itself in sys.modules by
# the finished module, as transformers' own __init__ does (its _LazyModule). `datasets`' pickler read
# `transformers.PreTrainedTokenizerBase` from the half-made one.
HALF_IMPORTED = '''import sys, types
hook = sys.modules["s23_import_hook"]
hook.started.set()
hook.release.wait(30)
done = types.ModuleType(__name__)
done.__spec__, done.PreTrainedTokenizerBase = __spec__, type("PreTrainedTokenizerBase", (), {})
sys.modules[__name__] = done
'''


def _alpaca_json(folder, name="alpaca.json"):
    path = folder / name
    path.write_text(json.dumps(ALPACA, indent=1))
    return path


# ---------------------------------------------------------------- 1. the import race

def test_a_preview_while_another_thread_imports_transformers_waits_for_it_and_reads_the_file(tmp_path, monkeypatch):
    path = _alpaca_json(tmp_path)
    assert data.preview(str(path), "sft", n=1)["rows"] == 6  # `datasets`' own modules loaded first
    fake = tmp_path / "half" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(HALF_IMPORTED)
    hook = types.ModuleType("s23_import_hook")
    hook.started, hook.release = threading.Event(), threading.Event()
    monkeypatch.setitem(sys.modules, "s23_import_hook", hook)
    monkeypatch.setitem(sys.modules, "transformers", None)  # the real one (or none) put back afterwards
    monkeypatch.delitem(sys.modules, "transformers")
    monkeypatch.syspath_prepend(str(tmp_path / "half"))
    monkeypatch.setattr(data_reading, "_READY", False)  # a fresh server: nothing read yet
    importer = threading.Thread(target=importlib.import_module, args=("transformers",), daemon=True)
    importer.start()
    try:
        assert hook.started.wait(30)
        threading.Timer(1.0, hook.release.set).start()  # another session's import ends a second later
        pv = data.preview(str(path), "sft", n=1)  # was "Could not read alpaca.json as JSON: module 'transformers'
    finally:  # has no attribute 'PreTrainedTokenizerBase'"
        hook.release.set()
        importer.join(30)
    assert (pv["layout"], pv["rows"]) == ("alpaca", 6)
    assert hasattr(sys.modules["transformers"], "PreTrainedTokenizerBase")


def test_a_read_that_fails_for_no_fault_of_the_file_is_not_called_bad_json(tmp_path, monkeypatch):
    path = _alpaca_json(tmp_path)

    def half_imported(*_, **__):
        raise AttributeError("module 'transformers' has no attribute 'PreTrainedTokenizerBase'")

    monkeypatch.setattr(data, "_load_file", half_imported)
    with pytest.raises(data.ReaderFailed) as failed:
        data.preview(str(path), "sft")
    said = str(failed.value)
    assert not isinstance(failed.value, ValueError)  # the page's refusals (and discard_refused) are ValueErrors
    assert "as JSON" not in said and said.startswith("Reading alpaca.json failed, not for anything in the file "
                                                     "(AttributeError: module 'transformers' has no attribute")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n{"instruction": \n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, column 17: not valid JSON"):  # the file's fault:
        data.preview(str(bad), "sft")  # said as before, whatever the reader raised


def test_the_page_keeps_an_upload_whose_read_failed_for_no_fault_of_its_own_and_says_the_upload_limit(
        tiny, monkeypatch):
    from tests.test_pages import app

    at = app("train.py")
    caption = next(c.value for c in at.caption if c.value.startswith("Uploads:"))
    assert "up to 200 MB a file" in caption and "type its path" in caption and ".jsonl.gz" in caption

    load_file, broken = data._load_file, [True]

    def half_imported(*args, **kwargs):
        if broken:
            raise AttributeError("module 'transformers' has no attribute 'PreTrainedTokenizerBase'")
        return load_file(*args, **kwargs)

    monkeypatch.setattr(data, "_load_file", half_imported)
    body = json.dumps(ALPACA + [{"instruction": "kept", "input": "", "output": "s23"}]).encode()
    at.radio(key="kind").set_value("sft").run()
    at.file_uploader(key="upload").set_value(("alpaca.json", body, "application/json")).run()
    assert not at.exception
    (error,) = [e.value for e in at.error if "alpaca.json" in e.value]  # (the table's default source fails too)
    assert "as JSON" not in error and "not for anything in the file" in error
    assert [p.name.split("-", 1)[1] for p in uploads.uploads_dir().iterdir()] == ["alpaca.json"]  # kept
    assert any("could not be read just now" in w.value for w in at.warning)
    broken.clear()  # the reader works again: the same upload reads (the failure was not remembered)
    at.run()
    assert not at.error and any("alpaca layout, 7 rows" in c.value for c in at.caption)


@pytest.fixture
def tiny(tiny_llama):
    from backend import registry

    return registry.import_folder(tiny_llama, "tiny")


# ---------------------------------------------------------------- 4. previews cut long texts

def test_a_preview_cuts_long_texts_and_says_so_on_the_command_line(tmp_path):
    book = tmp_path / "one_line.txt"
    line = "".join(f"word{i} " for i in range(20_000))  # ~190k characters on one line
    book.write_text(line + "\n")
    pv = data.preview(str(book), "cpt", n=1)
    (example,) = pv["examples"]
    assert pv["cut"] == 1 and example["text"] == (
        f"{line[:data.PREVIEW_CHARS]}… [cut here: {len(line) - data.PREVIEW_CHARS:,} more characters]")
    rc, out, _ = cli("datasets", "preview", str(book), "--for", "cpt", "-n", "1")
    assert rc == 0 and len(out) < 3 * data.PREVIEW_CHARS
    assert out.rstrip().endswith("1 example text over 2,000 characters cut short here (each marked where it "
                                 "stops); training reads it whole.")
    short = data.preview("builtin:alpaca-mini", "sft", n=2)
    assert short["cut"] == 0 and data.cut_said(short) == ""


# ---------------------------------------------------------------- 5. a mix's members' rows checked before saving

def test_a_mix_with_a_bad_row_in_a_member_is_refused_naming_it_and_nothing_is_saved(tmp_path):
    good = tmp_path / "alpaca.jsonl"
    good.write_text("\n".join(map(json.dumps, ALPACA)) + "\n")
    bad = tmp_path / "missing.jsonl"
    bad.write_text("\n".join(map(json.dumps, ALPACA[:3] + [{"instruction": "q", "input": ""}])) + "\n")
    rc, out, err = cli("datasets", "mix", "m_x", "--for", "sft", str(good), str(bad))
    assert rc == 2 and "saved" not in out
    assert err.strip() == ("error: missing.jsonl, row 4: output must be text; got NoneType (null or missing). Fix "
                           "or remove that row.")
    assert pipeline.get_dataset("m_x") is None
    rc, out, _ = cli("datasets", "mix", "m_y", "--for", "sft", f"{good}@0.5", "builtin:alpaca-mini")
    assert rc == 0 and pipeline.get_dataset("m_y").provenance["sources"][0]["weight"] == 0.5


# ---------------------------------------------------------------- 6. gzipped files, the upload limit

def test_gzipped_files_read_as_their_plain_selves_and_a_broken_one_is_refused_in_words(tmp_path):
    plain = tmp_path / "rows.jsonl"
    plain.write_text("\n".join(map(json.dumps, ALPACA)) + "\n")
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert data.preview(str(packed), "sft") == data.preview(str(plain), "sft")
    train, _ = data.prepare(str(packed), "sft")
    assert train[:] == data.prepare(str(plain), "sft")[0][:]  # the job reads it too
    book = tmp_path / "book.txt.gz"
    book.write_bytes(gzip.compress(b"One paragraph\nof two lines.\n\nAnother.\n"))
    assert data.reads_text_file(str(book))
    assert [r["text"] for r in data.preview(str(book), "cpt", sample_by="paragraph")["examples"]] == [
        "One paragraph\nof two lines.", "Another."]
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:40])
    with pytest.raises(DataError, match=r"^cut.jsonl.gz is not a whole gzip file \(.*\): compress it again"):
        data.preview(str(cut), "sft")
    (tmp_path / "rows.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(DataError, match=r"rows.parquet.gz: unsupported file type; use .jsonl, .json, .csv, "
                                        r".parquet or .txt \(or .jsonl.gz, .json.gz, .csv.gz, .txt.gz\)"):
        data.load_source(str(tmp_path / "rows.parquet.gz"))


def test_an_upload_keeps_its_two_suffixes_and_the_limit_is_the_configured_one():
    import tomllib
    from pathlib import Path

    body = gzip.compress(b'{"text": "a"}\n')
    path, _ = uploads.store_upload(body, "My Rows.JSONL.GZ")
    assert path.name.endswith("-My-Rows.jsonl.gz") and uploads.shown_name(path) == "My-Rows.jsonl.gz"
    assert data.preview(str(path), "cpt")["rows"] == 1
    for refused in ("x.tar.gz", ".jsonl.gz", "x.gz"):
        with pytest.raises(ValueError, match="only .jsonl, .json, .csv, .parquet, .txt, .jsonl.gz"):
            uploads.upload_name(body, refused, uploads.DATA_SUFFIXES)
    config = tomllib.loads((Path(__file__).parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 200
