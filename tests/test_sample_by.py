"""What a row of a .txt file is (DataSource.sample_by): a line, a paragraph or the whole file. Continued
pretraining ends every row with the end-of-text token, so a book read a line a row was taught to stop after each
line; the spec, the command line, the Train page, the job, the saved mix and the held-out check read it alike."""

from __future__ import annotations

import pytest
import yaml

from backend import data, heldout, registry, runner
from backend.specs import CptSpec, DataSource, load_spec
from backend.synth import pipeline
from backend.training import run_train
from tests.test_cli_runner import cli, here
from tests.test_pages import app

BOOK = ("\ufeffChapter one begins\nand goes on.\n\n\nSecond para\n   \n  Third para, indented\r\n\r\n"
        "last para no newline")


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    return path


def test_a_txt_file_reads_as_lines_paragraphs_or_one_document(book):
    rows = {m: list(data.load_source(str(book), sample_by=m)["text"]) for m in data.SAMPLE_BY}
    assert rows["line"] == ["Chapter one begins", "and goes on.", "Second para", "  Third para, indented",
                            "last para no newline"]
    # `datasets`' own paragraphs would join "Second para" and the indented one (a line of spaces between them)
    # and begin the second with a blank line; a paragraph keeps its first line's indentation
    assert rows["paragraph"] == ["Chapter one begins\nand goes on.", "Second para", "  Third para, indented",
                                 "last para no newline"]
    assert rows["document"] == [BOOK.removeprefix("\ufeff").replace("\r\n", "\n")]
    assert data.preview(str(book), "cpt", sample_by="paragraph")["rows"] == 4
    with pytest.raises(data.DataError, match="sample_by 'sentence'"):
        data.load_source(str(book), sample_by="sentence")


def test_other_files_and_the_default_are_unchanged(tmp_path):
    rows = data.load_source("builtin:alpaca-mini", sample_by="document")
    assert len(rows) == len(data.load_source("builtin:alpaca-mini")) == 200
    assert len(data.load_source("builtin:facts-corpus")) == 200  # one fact a line, as before
    assert len(data.load_source("builtin:facts-corpus", sample_by="paragraph")) == 1  # no blank line in it
    assert DataSource(source="x.txt").sample_by == "line"


def test_a_mix_reads_its_txt_members_as_it_is_told(book):
    pipeline.save_mix("book-and-facts", [(str(book), 1.0), ("builtin:facts-corpus", 0.5)], "cpt")
    train, held, report = data.split_mix([("mix:book-and-facts", 1.0, "paragraph")], "cpt")
    assert [(src, rows) for src, _, rows in report] == [(str(book), 4), ("builtin:facts-corpus", 1)]
    assert held is None and "Chapter one begins\nand goes on." in train["text"]
    _, _, by_line = data.split_mix([("mix:book-and-facts", 1.0)], "cpt")  # pairs, as every caller gave them
    assert [rows for _, _, rows in by_line] == [5, 100]


def test_a_cpt_job_trains_on_the_paragraphs(tiny_llama, book, capfd):
    registry.import_folder(tiny_llama, "tiny")
    spec = CptSpec(model="tiny", data=[DataSource(source=str(book), sample_by="paragraph")], max_steps=1,
                   save_steps=1, eval_steps=1, batch_size=2, max_length=32, eval_fraction=0.0, name="tiny-book")
    run_train(spec)
    log = capfd.readouterr()
    said = log.out + log.err
    assert f"data: {book}: a row per paragraph of its .txt files" in said
    assert f"data: {book} (text) -> 4 rows" in said
    assert registry.get("tiny-book").recipe["data"] == [{"source": str(book), "weight": 1.0,
                                                          "sample_by": "paragraph"}]


def test_the_command_line_sets_it_on_every_source_and_the_spec_reruns(tiny_llama, book, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    spec_file = tmp_path / "spec.yaml"
    r = cli("train", "cpt", "--model", "tiny", "--data", str(book), "--data", "builtin:facts-corpus@0.5",
            "--eval-data", str(book), "--sample-by", "paragraph", "--save-spec", str(spec_file), "--queue")
    assert r.returncode == 0, r.stderr
    (job,) = runner.list_jobs()
    assert [d["sample_by"] for d in job.spec["data"]] == ["paragraph", "paragraph"]
    assert job.spec["eval_data"]["sample_by"] == "paragraph"
    assert load_spec(spec_file) == CptSpec.model_validate(job.spec)
    assert yaml.safe_load(spec_file.read_text())["data"][0] == {"source": str(book), "weight": 1.0,
                                                                  "sample_by": "paragraph"}
    bad = here("train", "cpt", "--model", "tiny", "--data", str(book), "--sample-by", "sentence", "--queue")
    assert bad.returncode == 2 and "invalid choice: 'sentence'" in bad.stderr


def test_the_held_out_check_reads_the_training_text_as_the_job_did(tiny_llama, tmp_path):
    """An evaluation item that runs across a line end of a text trained a paragraph a row was in the training data;
    read a line a row, none of its 8-grams were."""
    text = tmp_path / "story.txt"
    words = [f"w{i}" for i in range(24)]
    text.write_text(" ".join(words[:12]) + "\n" + " ".join(words[12:]) + "\n")
    item = " ".join(words[6:18])
    for name, unit in (("by-line", "line"), ("by-paragraph", "paragraph")):
        registry.register(tiny_llama, name, "trained", recipe={"kind": "cpt", "data": [
            {"source": str(text), "weight": 1.0, "sample_by": unit}]})
    assert heldout.training_index("by-line", n=8).overlap(item) == 0.0
    assert heldout.training_index("by-paragraph", n=8).overlap(item) == 1.0
    assert heldout.lineage_sources("by-paragraph")[0] == [str(text)]


def test_the_train_page_sends_each_rows_choice(tiny_llama, book):
    registry.import_folder(tiny_llama, "tiny")
    at = app("train.py")
    at.session_state["sources_cpt_base"] = [{"source": str(book), "weight": 1.0, "sample_by": "paragraph"}]
    at.session_state["sources_cpt_version"] = 1
    at.run()
    assert not at.exception, at.exception
    assert any(e.label == f"{book} — text layout, 4 rows (a row per paragraph of a .txt)" for e in at.expander)
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert job.spec["data"] == [{"source": str(book), "weight": 1.0, "sample_by": "paragraph"}]


def test_datasets_preview_shows_a_source_as_the_job_reads_it(book, tmp_path):
    """The Train page's preview from a shell: the same data.preview, the same refusal."""
    import json

    r = cli("datasets", "preview", str(book), "--for", "cpt", "--sample-by", "paragraph", "--json")
    assert r.returncode == 0, r.stderr
    pv = json.loads(r.stdout)
    assert (pv["layout"], pv["rows"], pv["columns"]) == ("text", 4, ["text"])
    assert pv["examples"][0] == {"text": "Chapter one begins\nand goes on."}
    # the others in this process (the command's own start is checked above): each start paid ~2 s of imports
    text = here("datasets", "preview", "builtin:alpaca-mini", "-n", "1")
    assert text.returncode == 0 and text.stdout.startswith(
        "builtin:alpaca-mini: alpaca layout for sft, 200 rows; columns instruction, input, output\n--- row 1 ")
    wrong = here("datasets", "preview", "builtin:alpaca-mini", "--for", "dpo")
    assert wrong.returncode == 2 and "error: " in wrong.stderr and "Traceback" not in wrong.stderr
    missing = here("datasets", "preview", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and f"{tmp_path / 'none.jsonl'} does not exist" in missing.stderr


def test_sample_by_is_said_to_apply_only_where_a_txt_is_read(book, tmp_path):
    """"(a row per paragraph of a .txt)" stood beside a .jsonl source, on which sample_by does nothing."""
    pipeline.save_mix("book-mix", [(str(book), 1.0)], "cpt")
    assert [data.reads_text_file(s) for s in (str(book), "builtin:facts-corpus", "mix:book-mix",
                                              "builtin:alpaca-mini", str(tmp_path / "x.jsonl"))] == \
        [True, True, True, False, False]
    r = here("datasets", "preview", "builtin:alpaca-mini", "--sample-by", "paragraph", "-n", "1")
    assert r.returncode == 0 and "200 rows (--sample-by paragraph: no .txt here, its rows are its own)" in r.stdout


def test_a_folder_named_like_a_data_file_is_refused_in_words(tmp_path):
    folder = tmp_path / "corpus.jsonl"
    folder.mkdir()
    with pytest.raises(data.DataError, match="corpus.jsonl is a folder, not a data file: give one .jsonl"):
        data.load_source(str(folder))
