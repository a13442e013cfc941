"""Session 17's page and data items: the Jobs table's blank seconds, its ETA and its live Job picker; the Train
page's held-out row choice wherever a .txt is read; a saved mix's members keeping what a row of their .txt is."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlmodel import select

from backend import data, heldout, registry, runner
from backend.specs import CptSpec, DataSource
from backend.synth import pipeline
from storage import db
from storage.models import Job
from tests.test_browser import ARGS, CHROMIUM, need_chromium, streamlit_app
from tests.test_pages import app

BOOK = "Chapter one begins\nand goes on.\n\nSecond para\nstill second.\n\nThird para"


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    return path


def _cpt(name: str) -> int:
    return runner.submit(CptSpec(model="tiny", name=name, data=[DataSource(source="builtin:facts-corpus")])).id


def _running(job_id: int, message: str) -> None:
    """The row as a worker leaves it mid-run: started just now here (runner._local_run_alive), a progress line."""
    with db.session() as s:
        job = s.exec(select(Job).where(Job.id == job_id)).one()
        job.status, job.progress, job.message = "running", 0.12, message
        job.started, job.host = datetime.now(timezone.utc), runner.host_id()
        s.add(job)
        s.commit()


def _offered(page, picker, want: str, within: float = 30.0) -> list[str]:
    """The options a picker lists once `want` is among them, or after `within` seconds (a loaded machine is slow)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + within
    while True:
        try:  # a click that lands during the page's rerun is tried again, not left to wait out Playwright's 30 s
            picker.click(timeout=5_000)
        except PlaywrightTimeout:
            if time.monotonic() > deadline:  # twice in ~60 full-suite runs, never alone: what the page showed then
                shot = Path(__file__).resolve().parent / "artifacts" / "picker-timeout.png"
                shot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                raise AssertionError(f"the picker could not be clicked for {within:.0f} s; the page: {shot}")
            continue
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        if want in options or time.monotonic() > deadline:
            return options
        page.wait_for_timeout(1000)


# ---- 1. Jobs table: a queued job's seconds blank, a running job's ETA in view, the picker current ----------------

def test_jobs_table_leaves_a_queued_jobs_seconds_blank_and_puts_the_eta_first(tiny):
    queued, running = _cpt("q-cpt"), _cpt("r-cpt")
    _running(running, "step 120/1000 · loss 2.3456 · ETA 12:34")  # backend/train_entry.py's progress line
    at = app("jobs.py")
    table = at.dataframe[0].value.set_index("id")
    # was "step 120/1000 · loss 2.3456 · E" in the 180 px column: the ETA, the one thing looked for, cut off
    assert table.loc[running, "message"] == "ETA 12:34 · step 120/1000 · loss 2.3456"
    assert table.loc[queued, "message"] != "" and not table.loc[queued, "message"].startswith("ETA")
    assert table["seconds"].isna()[queued] and not table["seconds"].isna()[running]
    # was Streamlit's "None" for a job that has not run yet
    assert at.dataframe[0].proto.HasField("placeholder") and at.dataframe[0].proto.placeholder == ""
    # the status box below says the progress line as written
    assert any("step 120/1000 · loss 2.3456 · ETA 12:34" in p.proto.text for p in at.get("progress"))


@pytest.mark.browser
def test_the_job_picker_offers_a_job_queued_after_the_page_opened(workspace, tiny):
    need_chromium()
    from playwright.sync_api import sync_playwright

    first = _cpt("first-cpt")
    second = _cpt("second-cpt")
    with streamlit_app({**os.environ, "DUS_WORKSPACE": str(workspace)}, worker=False) as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 2600})
        page.goto(url + "/jobs")
        picker = page.get_by_role("combobox", name="Job", exact=True)
        picker.wait_for(timeout=30_000)
        picker.click()  # the user picks the older job: a new one must not take its place
        page.get_by_role("option", name=f"{first} · cpt · first-cpt").click()
        page.get_by_text(f"Job {first} (cpt): queued").wait_for(timeout=10_000)
        late = _cpt("late-cpt")  # another tab, the CLI, a recipe's next stage
        options = _offered(page, picker, f"{late} · cpt · late-cpt")  # the table's refresh is every 2 s
        kept = picker.input_value()
        browser.close()
    # was: the picker listed only the jobs of the page's last full run, until something else reran it
    assert options == [f"{late} · cpt · late-cpt", f"{second} · cpt · second-cpt", f"{first} · cpt · first-cpt"]
    assert kept == f"{first} · cpt · first-cpt"  # the job being read stays chosen


@pytest.mark.browser
def test_the_monitor_offers_a_training_job_queued_after_the_page_opened(workspace, tiny):
    need_chromium()
    from playwright.sync_api import sync_playwright

    first = _cpt("first-cpt")
    with streamlit_app({**os.environ, "DUS_WORKSPACE": str(workspace)}, worker=False) as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 2600})
        page.goto(url + "/monitor")
        page.get_by_text(f"Job {first} (cpt): queued").wait_for(timeout=30_000)
        late = _cpt("late-cpt")
        # the page's watch runs every 2 s
        options = _offered(page, page.get_by_role("combobox", name="Jobs"), f"{late} · cpt · late-cpt")
        browser.close()
    # was: only the jobs of the page's last full run
    assert options == [f"{late} · cpt · late-cpt"]  # the chosen first-cpt is not offered again


# ---- 2. Train page: the held-out set's row choice wherever its data is read from a .txt -------------------------

def test_held_out_row_choice_is_offered_wherever_a_txt_is_read(tiny, book):
    pipeline.save_dataset("book-set", "cpt", str(book), 3, {"from": "test"})
    pipeline.save_mix("book-mix", [(str(book), 1.0)], "cpt")
    at = app("train.py")
    offered = {}
    for held in ("builtin:facts-corpus", "dataset:book-set", "mix:book-mix", str(book), "builtin:alpaca-mini"):
        at.text_input(key="eval_data").set_value(held).run()
        assert not at.exception, at.exception
        offered[held] = any(s.key == "eval_sample_by" for s in at.selectbox)
    # was offered for the typed .txt path alone: the other three were read a line a row with no say
    assert offered == {"builtin:facts-corpus": True, "dataset:book-set": True, "mix:book-mix": True,
                       str(book): True, "builtin:alpaca-mini": False}
    at.text_input(key="eval_data").set_value("dataset:book-set").run()
    at.selectbox(key="eval_sample_by").set_value("paragraph").run()
    assert any(c.value.startswith("Held-out set: text layout, 3 rows") for c in at.caption)  # 3 paragraphs, not 5
    at.button(key="launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job,) = runner.list_jobs()
    assert job.spec["eval_data"] == {"source": "dataset:book-set", "weight": 1.0, "sample_by": "paragraph"}


# ---- 3. a saved mix's members keep what a row of their .txt is -----------------------------------------------------

@pytest.fixture
def lines(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("one line\nanother line\na third line\n", encoding="utf-8")
    return path


def _mix_record(name: str, members: list[dict]) -> None:
    """A mix as its record holds it (pipeline.save_mix writes {"source", "weight"} today; "sample_by" is kept
    where given)."""
    pipeline.save_dataset(name, "mix", "", 0, {"for": "cpt", "sources": members})


def test_a_mix_member_saved_with_its_rows_is_read_so_wherever_the_mix_is_used(book, lines):
    _mix_record("book-by-para", [{"source": str(book), "weight": 1.0, "sample_by": "paragraph"},
                                 {"source": str(lines), "weight": 1.0}])
    paragraphs = ["Chapter one begins\nand goes on.", "Second para\nstill second.", "Third para"]
    three_lines = ["one line", "another line", "a third line"]
    # used a line a row (every use's default): the book stays by paragraph, the member saved without one follows
    assert list(data.load_source("mix:book-by-para")["text"]) == paragraphs + three_lines
    assert data.expand_rows([("mix:book-by-para", 2.0, "document")]) == [(str(book), 2.0, "paragraph"),
                                                                         (str(lines), 2.0, "document")]
    assert data.expand([("mix:book-by-para", 2.0)]) == [(str(book), 2.0), (str(lines), 2.0)]  # as before
    _, _, report = data.split_mix([("mix:book-by-para", 1.0, "line")], "cpt")
    assert [(src, rows) for src, _, rows in report] == [(str(book), 3), (str(lines), 3)]
    # the held-out check reads the training text as the job did
    assert heldout.source_texts("mix:book-by-para") == paragraphs + three_lines
    # a mix inside a mix: the outer member's own applies to the inner members that have none
    _mix_record("outer", [{"source": "mix:book-by-para", "weight": 0.5, "sample_by": "document"}])
    assert data.expand_rows([("mix:outer", 1.0, "line")]) == [(str(book), 0.5, "paragraph"),
                                                              (str(lines), 0.5, "document")]
    pv = data.preview("mix:book-by-para", "cpt", sample_by="line")
    assert pv["rows"] == 6 and pv["text_rows"] == [(str(book), "paragraph", True), (str(lines), "line", False)]


def test_a_mix_saved_without_member_rows_reads_as_its_use_says(book):
    pipeline.save_mix("old-mix", [(str(book), 1.0)], "cpt")  # {"source", "weight"}: every mix saved so far
    assert pipeline.get_dataset("old-mix").provenance["sources"] == [{"source": str(book), "weight": 1.0}]
    assert len(data.load_source("mix:old-mix", sample_by="paragraph")) == 3
    assert len(data.load_source("mix:old-mix", sample_by="line")) == 5
    assert data.text_rows("mix:old-mix", "paragraph") == [(str(book), "paragraph", False)]


def test_a_mix_member_with_an_unknown_row_unit_is_named(book):
    _mix_record("bad-mix", [{"source": str(book), "weight": 1.0, "sample_by": "sentence"}])
    with pytest.raises(data.DataError, match="sample_by 'sentence'"):
        data.load_source("mix:bad-mix")


def test_train_page_says_how_a_mix_reads_its_members(tiny, book, lines):
    _mix_record("book-by-para", [{"source": str(book), "weight": 1.0, "sample_by": "paragraph"},
                                 {"source": str(lines), "weight": 1.0}])
    at = app("train.py")
    # the source table as the page rebuilds it after an upload (its rows, under a new key)
    at.session_state["sources_cpt_base"] = [{"source": "mix:book-by-para", "weight": 1.0, "sample_by": "document"}]
    at.session_state["sources_cpt_version"] = 1
    at.run()
    assert not at.exception, at.exception
    (label,) = [e.label for e in at.expander if e.label.startswith("mix:book-by-para")]
    # was "(a row per document of a .txt)": the book, saved by paragraph, is not read so
    assert label == (f"mix:book-by-para — text layout, 4 rows (a row per document of a .txt; {book}: a row per "
                     "paragraph, as its mix saved it)")
    at.text_input(key="eval_data").set_value("mix:book-by-para").run()  # the held-out set's caption says it too
    assert any(c.value == f"Held-out set: text layout, 6 rows ({book}: a row per paragraph, as its mix saved it); "
               "the held-out share is not used." for c in at.caption), [c.value for c in at.caption]


def test_a_mix_of_a_txt_and_an_alpaca_file_previews_each_in_its_own_layout(tiny, book):
    pipeline.save_mix("book-and-alpaca", [(str(book), 1.0), ("builtin:alpaca-mini", 0.5)], "cpt")
    pv = data.preview("mix:book-and-alpaca", "cpt", n=7, sample_by="paragraph")
    # was a TypeError: both read as one table in the alpaca layout, the book's rows had no instruction
    assert (pv["layout"], pv["rows"]) == ("text + alpaca", 3 + 200)
    assert [row.get("text") for row in pv["examples"][:3]] == ["Chapter one begins\nand goes on.",
                                                             "Second para\nstill second.", "Third para"]
    alpaca = data.load_source("builtin:alpaca-mini")
    assert pv["examples"][3:] == [data.convert_row(alpaca[i], "alpaca", "cpt") for i in range(4)]
    at = app("train.py")  # the Train page's preview of that source: was the traceback
    at.session_state["sources_cpt_base"] = [{"source": "mix:book-and-alpaca", "weight": 1.0, "sample_by": "line"}]
    at.session_state["sources_cpt_version"] = 1
    at.run()
    assert not at.exception, at.exception
    assert any(e.label == "mix:book-and-alpaca — text + alpaca layout, 205 rows" for e in at.expander)


def test_datasets_mix_sample_by_is_kept_with_the_mixs_txt_members(book, capsys):
    """The writer: `datasets mix --sample-by paragraph` stores it with the .txt member only (a .jsonl has rows of
    its own), `datasets list` shows it, and the mix reads the book by paragraph under a use that says line; without
    the option nothing is stored (mixes read as before)."""
    from backend.__main__ import main

    main(["datasets", "mix", "bm", f"{book}@1", "builtin:alpaca-mini@0.5", "--for", "cpt", "--sample-by", "paragraph"])
    sources = pipeline.get_dataset("bm").provenance["sources"]
    assert sources == [{"source": str(book), "weight": 1.0, "sample_by": "paragraph"},
                       {"source": "builtin:alpaca-mini", "weight": 0.5}]
    main(["datasets", "list"])
    assert f"{book}×1 by paragraph, builtin:alpaca-mini×0.5" in capsys.readouterr().out
    assert data.expand_rows([("mix:bm", 1.0, "line")]) == [(str(book), 1.0, "paragraph"),
                                                           ("builtin:alpaca-mini", 0.5, "line")]
    main(["datasets", "mix", "bm2", f"{book}@1", "--for", "cpt"])
    assert pipeline.get_dataset("bm2").provenance["sources"] == [{"source": str(book), "weight": 1.0}]


def test_datasets_preview_says_a_mix_members_own_rows(book, capsys):
    """`datasets preview` said "a row per line" (its option) of a mix whose book was saved by paragraph; it now says
    what the Train page says (data.rows_said)."""
    from backend.__main__ import main

    main(["datasets", "mix", "bm", f"{book}@1", "--for", "cpt", "--sample-by", "paragraph"])
    capsys.readouterr()
    main(["datasets", "preview", "mix:bm", "--for", "cpt", "-n", "1"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"mix:bm: text layout for cpt, 3 rows ({book}: a row per paragraph, as its mix saved it)")
