"""Walk 12 (session 12's walk), findings 2, 3, 4 and 8: bad rows and malformed uploads are named before a job
is queued, by the name the file was sent under, and the Train page does not launch without an upload it shows."""

from __future__ import annotations

import json

import pytest

from backend import data, registry, runner, uploads
from backend.specs import DataSource, SftSpec
from tests.test_pages import app


def alpaca(n: int, bad: dict[int, object]) -> bytes:
    """`n` Alpaca rows as JSON Lines; row k (from 1) in `bad` gets that value as its output."""
    rows = [{"instruction": f"Say {i}", "input": "", "output": bad.get(i + 1, str(i))} for i in range(n)]
    return "\n".join(map(json.dumps, rows)).encode() + b"\n"


def upload(body: bytes, name: str) -> str:
    return str(uploads.store_upload(body, name)[0])


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


NULL25 = ("null25.jsonl, row 25: output must be text; got NoneType (null or missing). Fix or remove "
          "that row.")


def test_a_null_output_after_row_20_is_refused_before_queueing(tiny):
    """Finding 2: check_rows read 20 rows, so row 25's null passed and failed the job in trl's chat template."""
    path = upload(alpaca(30, {25: None}), "null25.jsonl")
    with pytest.raises(data.DataError) as exc:
        runner.submit(SftSpec(model="tiny", data=[DataSource(source=path)]))
    assert str(exc.value) == NULL25
    assert runner.list_jobs() == []


def test_a_number_in_a_text_column_is_named_at_its_own_row():
    """Finding 3: `datasets` made the mixed column Json and decoded row 1's "0" as 0, so row 1 was blamed."""
    path = upload(alpaca(30, {25: 12345}), "int25.jsonl")
    with pytest.raises(data.DataError) as exc:
        data.check_source(path, "sft")
    assert str(exc.value) == ("int25.jsonl, row 25: output must be text; got int. Fix or remove "
                              "that row.")


def test_the_preview_refuses_what_launch_refuses_in_the_files_own_terms():
    """Finding 3: the preview said "alpaca layout, 6 rows"; Launch then named the stored path, `messages` and
    "got list"."""
    path = upload(alpaca(6, {2: None, 4: None, 6: None}), "nulls.jsonl")
    said = ("nulls.jsonl, row 2: output must be text; got NoneType (null or missing). Fix or remove "
            "that row.")
    for check in (data.preview, data.check_source):
        with pytest.raises(data.DataError) as exc:
            check(path, "sft")
        assert str(exc.value) == said


def test_a_conversation_turn_without_text_is_named_by_turn():
    path = upload(b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}\n',
                  "chat.jsonl")
    with pytest.raises(data.DataError) as exc:
        data.preview(path, "sft")
    assert str(exc.value) == ("chat.jsonl, row 1: messages, turn 2: content must be text; got int. "
                              "Fix or remove that row.")


def test_a_hub_set_is_sampled_before_queueing_and_its_job_names_a_later_bad_row(monkeypatch):
    """A Hub set is only sampled before queueing; the job's own loading (data.prepare, as train_entry runs it)
    named nothing: trl failed with a Jinja error. Now it names the set, the row and the column."""
    import datasets

    rows = [{"instruction": f"Say {i}", "output": None if i == data.HUB_SAMPLE + 4 else str(i)}
            for i in range(data.HUB_SAMPLE + 10)]
    monkeypatch.setattr(data, "load_source", lambda source, split="train", **_: datasets.Dataset.from_list(rows))
    data.check_source("someone/some-set", "sft")  # the sample holds no bad row
    with pytest.raises(data.DataError) as exc:
        data.prepare("someone/some-set", "sft")
    assert str(exc.value) == (f"someone/some-set, row {data.HUB_SAMPLE + 5}: output must be text; "
                              "got NoneType (null or missing). Fix or remove that row.")


def test_every_row_of_a_good_local_file_converts():
    path = upload(alpaca(2500, {}), "good.jsonl")
    assert data.preview(path, "sft")["rows"] == 2500
    data.check_source(path, "sft")


@pytest.mark.parametrize("name, body, said", [
    ("blank.jsonl", b"\n\n  \n\n", "Data file blank.jsonl holds only blank lines: it has no rows."),
    ("numbers.jsonl", b"1\n2\n3\n", "numbers.jsonl, line 1: 1 is not a JSON object. Each line must be one JSON "
                                    "object."),
    ("later.jsonl", b'{"text": "a"}\n"b"\n', 'later.jsonl, line 2: "b" is not a JSON object. Each line must be '
                                              "one JSON object."),
    ("latin1.jsonl", '{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"),
     "latin1.jsonl, line 2, column 14: not UTF-8 (byte 0xe9): save the file as UTF-8."),
    ("latin1.csv", "text\ncaf\u00e9\n".encode("latin-1"),
     "latin1.csv, line 2, column 4: not UTF-8 (byte 0xe9): save the file as UTF-8."),
    ("empty.jsonl", b"", "Data file empty.jsonl is empty: it has no rows."),
    ("empty.csv", b"", "Data file empty.csv is empty: it has no rows."),
])
def test_a_malformed_upload_is_explained_by_its_sent_name(name, body, said):
    """Finding 8: library errors ("Instruction "train" corresponds to no data!", "Column() changed from object to
    number", "'utf-8' codec can't decode") and the stored hash-prefixed path of an empty file."""
    with pytest.raises(data.DataError) as exc:
        data.preview(upload(body, name), "cpt")
    assert str(exc.value) == said


def upload_notes(at) -> list[str]:
    """The page's warnings about the upload (the worker banner warns too: no worker runs in tests)."""
    return [w.value for w in at.warning if "upload" in w.value and "worker" not in w.value]


def save_spec(at):
    (button,) = [b.proto for b in at.get("download_button") if b.proto.label == "Save spec (YAML)"]
    return button


def test_an_upload_not_added_holds_launch_and_save_spec_back(tiny):
    """Finding 4: Launch trained on the default set alone when the uploaded file was not added."""
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    at.file_uploader(key="upload").set_value(("mine.jsonl", alpaca(12, {}), "application/json")).run()
    assert at.button(key="launch").disabled
    assert upload_notes(at) == ["mine.jsonl is uploaded but not a source yet: add it with the button "
                                             "above, or remove the upload (× beside it), to launch or save the spec."]
    assert save_spec(at).disabled
    at.button(key="add_upload").click().run()
    assert not upload_notes(at) and not at.button(key="launch").disabled and not save_spec(at).disabled
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert [uploads.shown_name(d["source"]) for d in job.spec["data"]] == ["builtin:alpaca-mini", "mine.jsonl"]


def test_an_upload_that_cannot_be_read_holds_launch_back(tiny):
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    at.file_uploader(key="upload").set_value(("null25.jsonl", alpaca(30, {25: None}), "application/json")).run()
    assert [e.value for e in at.error] == [NULL25]  # the preview refuses it, as Launch would
    assert at.button(key="launch").disabled
    assert upload_notes(at) == ["null25.jsonl cannot be used as it is: fix the file and upload it "
                                             "again, or remove the upload (× beside it), to launch or save the spec."]
    assert save_spec(at).disabled
    at.file_uploader(key="upload").set_value(None).run()
    assert not upload_notes(at) and not at.button(key="launch").disabled and not save_spec(at).disabled
