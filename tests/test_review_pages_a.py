"""Defects found by driving the Build, Models, Train, Jobs and Monitor pages in a browser, each pinned by AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend import registry, runner
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_learning_rate_plus_moves_by_a_learning_rate_step(tiny):
    # Streamlit's default float step (0.01) made "+" turn 5e-5 into 1.0e-2 in the browser.
    at = app("train.py")
    lr = at.number_input(key="lr_cpt")
    assert lr.value == pytest.approx(5e-5) and lr.step == pytest.approx(1e-5)
    lr.increment().run()
    assert at.number_input(key="lr_cpt").value == pytest.approx(6e-5)
    at.radio(key="kind").set_value("dpo").run()
    assert at.number_input(key="lr_dpo").step == pytest.approx(1e-6)  # DPO's default is 5e-6


def test_each_kind_starts_at_its_own_learning_rate(tiny):
    # One widget key for all kinds kept CPT's 5e-5 when the user switched to SFT (2e-5) or DPO (5e-6).
    at = app("train.py")
    for kind, default in [("sft", 2e-5), ("dpo", 5e-6), ("cpt", 5e-5)]:
        at.radio(key="kind").set_value(kind).run()
        assert at.number_input(key=f"lr_{kind}").value == pytest.approx(default)
    at.radio(key="kind").set_value("dpo").run()
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert job.kind == "dpo" and job.spec["learning_rate"] == pytest.approx(5e-6)


def test_a_malformed_upload_is_reported_when_it_is_uploaded(tiny):
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    at.file_uploader(key="upload").set_value(("broken.jsonl", b'{"prompt": "hi", "completion": "yo"}\n{"prompt": "x\n',
                                              "application/json")).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["broken.jsonl, line 2, column 12: not valid JSON (Unterminated string "
                                           "starting there). Each line must be one JSON object."]  # the file named once
    assert not [b for b in at.button if b.key == "add_upload"]  # nothing to add
    at.file_uploader(key="upload").set_value(("rows.csv", b'a,b\n1,"2\n', "text/csv")).run()
    (error,) = [e.value for e in at.error]
    assert error.count("rows.csv") == 1, error  # was "rows.csv: Could not read rows.csv as CSV: …"


def test_an_upload_is_previewed_and_added_to_the_sources_keeping_the_rows_typed(tiny, tmp_path):
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    rows = [{"prompt": f"What is {i} + 1?", "completion": str(i + 1)} for i in range(12)]
    at.file_uploader(key="upload").set_value(("mine.jsonl", "\n".join(map(json.dumps, rows)).encode(),
                                              "application/json")).run()
    assert any("mine.jsonl saved as" in c.value and "prompt_completion layout, 12 rows" in c.value
               for c in at.caption), [c.value for c in at.caption]
    at.button(key="add_upload").click().run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "add_upload"]  # it is in the table now
    at.number_input(key="max_steps").set_value(2).run()
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    sources = [d["source"] for d in job.spec["data"]]
    assert sources[0] == "builtin:alpaca-mini" and len(sources) == 2
    saved = Path(sources[1])
    assert saved.name.endswith("-mine.jsonl")  # under a generated name in workspace/uploads
    assert [json.loads(line) for line in saved.read_text().splitlines()] == rows


def test_an_emptied_model_name_takes_the_suggestion_again(tiny):
    at = app()
    at.text_input(key="name").set_value("").run()
    assert at.text_input(key="name").value == "tiny-dus-m2"
    assert not at.error
    at.select_slider(key="m").set_value(1).run()
    assert at.text_input(key="name").value == "tiny-dus-m1"


def test_size_on_disk_fits_its_metric():
    from backend.names import human_bytes as short

    assert short(736_296_960) == "702 MiB"  # SmolLM2-135M dus m=8, float32: was "702.20 MiB", cut to "702.20 …"
    assert short(1_320_000_000) == "1.23 GiB"
    assert short(12_600) == "12.3 KiB" and short(512) == "512 B"
    assert max(len(short(n)) for n in range(0, 2**40, 2**27 + 12345)) <= 9


def test_a_new_import_attempt_does_not_show_the_last_ones_failure(tiny):
    at = app("models.py")
    at.text_input(key="import_target").set_value("/nowhere/at/all").run()
    at.button(key="import").click().run()  # refused before it is queued (runner.check_before_queueing)
    assert any("/nowhere/at/all" in e.value for e in at.error) and not runner.list_jobs()
    at.text_input(key="import_name").set_value("bad name!").run()
    at.button(key="import").click().run()
    errors = [e.value for e in at.error]
    assert any("use ASCII letters" in e for e in errors)
    assert not any("/nowhere/at/all" in e for e in errors), errors


def test_jobs_page_log_is_plain_text_and_says_when_there_is_none_yet(tiny):
    from backend.specs import UpscaleSpec

    runner.submit(UpscaleSpec(base="tiny", m=2))
    at = app("jobs.py")
    assert any("No log yet" in c.value for c in at.caption)  # queued: used to show nothing at all
    runner.worker(once=True)
    at.run()
    (log,) = [c for c in at.code if "started in process" in c.value]
    assert log.language == "text"
    job = runner.list_jobs()[0]
    assert at.dataframe[0].value["created"][0] == job.created.strftime("%m-%d %H:%M:%S")  # the day too


def test_jobs_table_shows_why_a_job_failed(tiny):
    from backend.specs import UpscaleSpec

    runner.submit(UpscaleSpec(base="tiny", m=2, name="gone-before-it-ran"))
    registry.delete("tiny", delete_files=False, force=True)  # gone by the time the job runs
    runner.worker(once=True)
    at = app("jobs.py")
    table = at.dataframe[0].value
    assert list(table.columns) == ["id", "kind", "output", "status", "progress", "message", "created", "seconds"]
    assert table["message"][0] == f"failed: {runner.list_jobs()[0].error}"
    assert "tiny" in table["message"][0] and table["output"][0] == "gone-before-it-ran"


def test_monitor_page_log_is_plain_text(tiny, tmp_path):
    from backend.specs import CptSpec, DataSource

    job = runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")], max_steps=1))
    log = tmp_path / "job.log"
    log.write_text("step 1/1 for the run in progress\n")
    from storage import db
    from storage.models import Job

    with db.session() as s:
        row = s.get(Job, job.id)
        row.log_path = str(log)
        s.add(row)
        s.commit()
    at = app("monitor.py")
    (code,) = [c for c in at.code if "step 1/1" in c.value]
    assert code.language == "text"
    at.multiselect(key="monitor_jobs").set_value([]).run()
    assert any("Choose one or more jobs" in c.value for c in at.caption)  # was a blank page


def test_a_source_is_read_once_not_on_every_rerun(tiny, tmp_path, monkeypatch):
    # Offline, a Hub id took ~24 s to fail, and the page read every source on each rerun (any click).
    import streamlit as st

    from backend import data

    st.cache_data.clear()
    calls = []
    real = data.preview

    def counted(source, kind, n=5, sample_by="line"):
        calls.append(source)
        if source == "someone/unreachable":
            raise data.DataError("Could not load 'someone/unreachable' from the Hugging Face Hub.")
        return real(source, kind, n, sample_by)

    monkeypatch.setattr(data, "preview", counted)
    at = app("train.py")
    at.session_state["sources_cpt"] = {"edited_rows": {0: {"source": "someone/unreachable"}}, "added_rows": [],
                                       "deleted_rows": []}
    at.run()
    assert any("someone/unreachable: Could not load" in e.value for e in at.error)
    at.number_input(key="max_steps").set_value(7).run()
    at.number_input(key="batch_size").set_value(3).run()
    assert any("someone/unreachable: Could not load" in e.value for e in at.error)  # still said
    assert at.button(key="launch").disabled
    assert calls.count("someone/unreachable") == 1
    corpus = tmp_path / "c.txt"
    corpus.write_text("one line\n")
    at.session_state["sources_cpt"] = {"edited_rows": {0: {"source": str(corpus)}}, "added_rows": [],
                                       "deleted_rows": []}
    at.run()
    assert any("1 row" in x.label and "1 rows" not in x.label for x in at.expander), [x.label for x in at.expander]
    corpus.write_text("one line\nand a second, longer line\n")  # a changed file is read again
    at.run()
    assert any("2 rows" in x.label for x in at.expander), [x.label for x in at.expander]


def test_the_delete_tick_does_not_carry_over_to_the_next_model(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-two")
    registry.import_folder(tiny_llama, "tiny-three")
    at = app("models.py")
    assert at.selectbox(key="model").value == "tiny-three"
    at.checkbox(key="confirm_delete").check().run()
    at.selectbox(key="model").set_value("tiny-two").run()  # changed their mind: another model
    assert not at.checkbox(key="confirm_delete").value and at.button(key="delete").disabled
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert [r.name for r in registry.list_models()] == ["tiny", "tiny-three"]
    shown = at.selectbox(key="model").value
    assert "Yes, delete " + shown in at.checkbox(key="confirm_delete").label
    assert not at.checkbox(key="confirm_delete").value and at.button(key="delete").disabled


def test_a_half_filled_slice_row_is_named_not_dropped_silently(tiny):
    at = app()
    at.radio(key="method").set_value("slices").run()
    assert not [w for w in at.warning if "left out" in w.value]
    at.session_state["slices"] = {"edited_rows": {}, "added_rows": [{"source": 0, "start": 2}], "deleted_rows": []}
    at.run()
    assert not at.exception
    assert [w.value for w in at.warning if "left out" in w.value] == [
        "Row 3 is left out until its source, start and end are filled in."]
    assert at.metric[0].value == "6 → 8"  # the two complete rows


def test_chat_with_a_model_whose_folder_is_gone_says_so(tiny, tiny_llama, tmp_path):
    import shutil

    shutil.copytree(tiny_llama, tmp_path / "m")
    registry.register(tmp_path / "m", "gone", "base", source="test")
    shutil.rmtree(tmp_path / "m")
    at = app("models.py")
    assert at.selectbox(key="model").value == "gone"
    assert any("is gone or holds no config.json" in w.value for w in at.warning)
    at.chat_input(key="chat_input").set_value("hello").run()
    assert not at.exception, at.exception  # was CheckpointError's traceback
    assert any(e.value.startswith("gone cannot be loaded:") and "no config.json" in e.value for e in at.error)
    assert not at.session_state["chat"]["gone"]


def test_a_second_click_does_not_queue_the_same_model_twice(tiny):
    at = app()
    at.button(key="build").click().run()  # the page reruns: Build is off beside the queued job (a fast second
    # click before that rerun is refused by the page's `not building` guard)
    assert [(j.kind, j.spec["name"]) for j in runner.list_jobs()] == [("upscale", "tiny-dus-m2")]
    assert at.button(key="build").disabled
    assert any("queued to build 'tiny-dus-m2'" in i.value for i in at.info)
    at = app("train.py")
    at.button(key="launch").click().run()
    assert [j.kind for j in runner.list_jobs()] == ["cpt", "upscale"]
    assert at.button(key="launch").disabled
    assert any("queued to train 'tiny-cpt'" in i.value for i in at.info)


def test_a_run_stopped_before_any_checkpoint_offers_a_restart_not_a_resume(tiny, workspace, monkeypatch):
    import sys

    from backend import training
    from backend.specs import DataSource, SftSpec

    # run as the worker's child runs it (runner.execute, restored after the test), its trainer ending before its
    # first step: the row records the folder the run used (DUS_RUN_NAME chooses another than job-ID), none set here
    monkeypatch.setenv("DUS_JOB_ID", "0")
    monkeypatch.setenv("DUS_JOB_PID", "0")
    monkeypatch.setenv("DUS_RUN_NAME", "chosen")
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    monkeypatch.setattr(training, "launch_command", lambda spec, run_dir: [
        sys.executable, "-c", "raise SystemExit('error: stopped before its first step')"])
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t"))
    assert runner.execute(job.id) == 1
    run_dir = workspace / "runs" / "chosen"
    assert (runner.get(job.id).status, runner.get(job.id).run_dir) == ("failed", str(run_dir))
    at = app("monitor.py")
    assert [b.label for b in at.button if b.key == f"resume_{job.id}"] == ["Restart (no checkpoint was saved)"]
    ckpt = run_dir / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    at = app("monitor.py")
    assert [b.label for b in at.button if b.key == f"resume_{job.id}"] == ["Resume from the last checkpoint"]


def _kinds(node, out: list) -> list:
    """Element types in page order (AppTest's tree, depth first)."""
    out.append(getattr(node, "type", None))
    children = getattr(node, "children", None)
    for child in children.values() if isinstance(children, dict) else []:
        _kinds(child, out)
    return out


def test_the_conversation_is_drawn_above_the_chat_input(tiny):
    # in a column the input is drawn inline: messages written after it appeared below it until the next rerun
    at = app("models.py")
    at.chat_input(key="chat_input").set_value("hello").run()
    order = [t for t in _kinds(at._tree, []) if t in ("chat_message", "chat_input")]
    assert order == ["chat_message", "chat_message", "chat_input"], order
