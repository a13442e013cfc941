"""Review s21, data files: JSON nested too deep for its readers, one object wrapping a list of texts, UTF-16 without a
byte-order mark, an upload the user may not touch, one JSON Lines reader for the evaluation files, and lm-eval's
task index under a development install."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from backend import data, evaltasks, lmeval, uploads
from backend.lm_eval_tasks import loaders
from tests.test_review_s20_data import rows, tmp_left

SAID = ("JSON nested {:,} levels deep (arrays and objects inside each other); a row can nest at most 63 (the limit of "
        "Arrow, where `datasets` keeps the rows). Flatten the rows, or save a deep value as JSON text (a string).")


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


# ---------------------------------------------------------------- 1. JSON nested deeper than a row can be

@pytest.mark.parametrize("name, body, line, depth", [
    # pyarrow's JSON reader crashed the process on this line (a segmentation fault: the app's server with it)
    ("deep.jsonl", nested(100_000) + "\n", 1, 100_000),
    # Python's json: a RecursionError traceback ("maximum recursion depth exceeded while decoding a JSON array")
    ("deep.json", "[" * 5_000 + "]" * 5_000, 1, 5_000),
    ("pretty.json", '{"text": "x", "m":\n' + '{"a":\n' * 3_000 + "1\n" + "}\n" * 3_000 + "}\n", 64, 3_001),
    # Arrow's own limit: "Could not read rows.jsonl as JSON: Recursion level in ArrowSchema struct exceeded"
    ("rows.jsonl", json.dumps({"text": "x", "m": json.loads(nested(63))}) + "\n", 1, 64),
])
def test_json_nested_deeper_than_a_row_can_be_is_refused_in_words(tmp_path, name, body, line, depth):
    (tmp_path / name).write_text(body)
    with pytest.raises(data.DataError) as refused:
        data.check_source(str(tmp_path / name), "cpt")
    assert str(refused.value) == f"{name}, line {line}: " + SAID.format(depth)
    assert tmp_left() == []


def test_json_as_deep_as_a_row_can_be_is_still_read(tmp_path):
    """63 levels in a row, inside a .json array's bracket: what Arrow holds, so not refused."""
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps([{"text": "x", "m": json.loads(nested(62))}]))
    assert rows(data.load_source(str(deep)))[0]["text"] == "x"


def test_an_evaluation_file_nested_too_deep_names_its_line(tmp_path):
    """mc: and gsm8k: files raised a bare RecursionError when the job was queued; lm-eval's local task files too."""
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n" + "[" * 5_000 + "]" * 5_000
                    + "\n")
    with pytest.raises(evaltasks.EvalError) as refused:
        evaltasks.check_task(f"mc:{task}", 5)
    assert str(refused.value) == ("task.jsonl, line 2: nested too deeply (arrays and objects about 1,000 inside each "
                                  "other).")
    with pytest.raises(ValueError) as refused:
        loaders._read(task, loaders._mc_problem)
    assert str(refused.value) == (f"task.jsonl, line 2: nested too deeply (arrays and objects about 1,000 inside each "
                                  f"other). ({loaders.REMAKE})")


# ---------------------------------------------------------------- 2. one object wrapping a list of texts

@pytest.mark.parametrize("name", ["corpus.json", "corpus.jsonl"])
def test_one_object_wrapping_a_list_of_texts_is_read_as_a_text_column(tmp_path, name):
    """As `datasets` reads a .json array of texts, and a list of texts under field=KEY: "Columns ['data'] fit no
    layout" before."""
    corpus = tmp_path / name
    corpus.write_text(json.dumps({"data": ["text one", "text two"], "meta": {"source": "notes"}}))
    assert rows(data.load_source(str(corpus))) == [{"text": "text one"}, {"text": "text two"}]
    assert data.preview(str(corpus), "cpt")["layout"] == "text"
    assert tmp_left() == []


def test_an_object_of_several_lists_of_texts_asks_which_and_a_row_stays_a_row(tmp_path):
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    with pytest.raises(data.DataError) as refused:
        data.load_source(str(two))
    assert str(refused.value) == ("two.json holds one JSON object whose keys train, test each hold a list of texts: "
                                  "save the list of rows alone as a .json array (or JSON Lines).")
    row = tmp_path / "row.json"  # a text field beside the list: one row, whose tags are not texts to train on
    row.write_text(json.dumps({"question": "q", "tags": ["a", "b"]}))
    assert rows(data.load_source(str(row))) == [{"question": "q", "tags": ["a", "b"]}]


# ---------------------------------------------------------------- 3. UTF-16 without a byte-order mark

@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_mark_is_read_as_utf16(tmp_path, encoding):
    """Read as UTF-8 it was text with a NUL after every letter, trained on, or "not valid JSON" on line 1."""
    txt, jsonl = tmp_path / "notes.txt", tmp_path / "rows.jsonl"
    txt.write_bytes("première ligne\r\nzweite Zeile\r\n".encode(encoding))
    jsonl.write_bytes("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ("café", "tea"))
                      .encode(encoding))
    before = txt.read_bytes(), jsonl.read_bytes()
    assert rows(data.load_source(str(txt))) == [{"text": "première ligne"}, {"text": "zweite Zeile"}]
    assert rows(data.load_source(str(jsonl))) == [{"text": "café"}, {"text": "tea"}]
    assert (txt.read_bytes(), jsonl.read_bytes()) == before and tmp_left() == []


def test_a_text_file_holding_a_nul_byte_is_refused_in_words(tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b'{"text": "a\x00b"}\n')
    with pytest.raises(data.DataError) as refused:
        data.load_source(str(odd))
    assert str(refused.value) == ("odd.jsonl, line 1, column 12: a NUL byte (0x00), which no text holds: a UTF-16 or "
                                  "UTF-32 file without its byte-order mark, or no text file at all. Save it as UTF-8.")


# ---------------------------------------------------------------- 4. an upload the user may not touch

def test_an_upload_whose_times_cannot_be_set_is_stored_and_refused_without_an_error(monkeypatch):
    """Only a file's owner may set its times: a second upload of another user's file raised PermissionError."""
    path, written = uploads.store_upload(b'{"text": "hi"}\n', "mine.jsonl")

    def not_owner(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(uploads.os, "utime", not_owner)
    assert uploads.store_upload(b'{"text": "hi"}\n', "mine.jsonl") == (path, None)
    monkeypatch.setattr(type(path), "unlink", not_owner)
    assert uploads.discard_refused(path, written) is False and path.exists()
    assert not hasattr(uploads, "save_upload")  # one way to store an upload


# ---------------------------------------------------------------- 6. lm-eval's index under a development install

def test_lm_eval_index_follows_tasks_added_to_a_development_install(monkeypatch, tmp_path):
    """The version stays while tasks are added to an editable checkout; the task folder's own time changed only for
    a file directly in it, so a task in a folder of its own stayed unknown."""
    checkout = tmp_path / "checkout" / "lm_eval"
    (checkout / "tasks" / "arc").mkdir(parents=True)
    (checkout / "__init__.py").write_text("")
    (checkout / "tasks" / "arc" / "arc_easy.yaml").write_text("task: arc_easy\n")
    monkeypatch.setitem(sys.modules, "lm_eval", types.SimpleNamespace(__file__=str(checkout / "__init__.py")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class Manager:  # lm-eval's TaskManager as the index reads it: one task per YAML
        def __init__(self):
            self.all_tasks = sorted(p.stem for p in (checkout / "tasks").rglob("*.yaml"))

    monkeypatch.setattr(lmeval, "_hub_manager", Manager)
    evaltasks.lm_eval_index.cache_clear()
    try:
        assert evaltasks.lm_eval_index() == {"arc_easy"}
        top = os.stat(checkout / "tasks").st_mtime_ns
        (checkout / "tasks" / "arc" / "arc_hard.yaml").write_text("task: arc_hard\n")
        assert os.stat(checkout / "tasks").st_mtime_ns == top  # what the key held: unchanged
        evaltasks.lm_eval_index.cache_clear()  # as a new process
        assert evaltasks.lm_eval_index() == {"arc_easy", "arc_hard"}
    finally:
        evaltasks.lm_eval_index.cache_clear()  # the real index for the other tests
