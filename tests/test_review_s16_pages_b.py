"""What misled or broke on the Train, Monitor and Recipe pages: a folder data source, a job to start after that
has ended, the log of every chosen job, what a recipe run queued and reuses, how an uploaded .txt was counted, and
the recipe tables keeping the model and the paper's number in view."""

from __future__ import annotations

import pytest

from backend import registry, runner
from backend.specs import CptSpec, DataSource
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. a source that names a folder (Spark's x.parquet/, a folder called corpus.jsonl) -------------------------

def test_train_page_names_a_folder_source_instead_of_a_traceback(tiny, tmp_path):
    folder = tmp_path / "corpus.jsonl"
    folder.mkdir()
    at = app("train.py")
    at.session_state["sources_cpt_base"] = [{"source": str(folder), "weight": 1.0, "sample_by": "line"}]
    at.run()
    assert not at.exception, at.exception  # was IsADirectoryError: [Errno 21] Is a directory: '…/corpus.jsonl'
    assert [e.value for e in at.error] == [f"{folder}: {folder} is a folder, not a data file: give one .jsonl / "
                                           ".json / .csv / .parquet / .txt file in it."]
    assert at.button(key="launch").disabled


# ---- 2. "Start after job" silently became "start now" when the chosen job ended ----------------------------------

def test_train_page_says_the_job_to_start_after_has_ended(tiny):
    job = runner.submit(CptSpec(model="tiny", name="first", data=[DataSource(source="builtin:facts-corpus")]))
    at = app("train.py")
    at.selectbox(key="after").set_value(job.id).run()
    assert at.selectbox(key="after").value == job.id
    runner._update(job.id, status="failed", error="boom")
    at.run()
    assert at.selectbox(key="after").value is None  # Streamlit drops a choice that is no longer offered
    said = [w.value for w in at.warning if "start after" in w.value]
    assert said == [f"Job {job.id}, which this run was to start after, has ended (failed: a run waiting for it would "
                    "not have started). *Start after job* now reads *start now*: Launch starts the run at once. "
                    "Choose again above."]
    at.run()  # still said on the next rerun (any click), until the choice is made again
    assert [w.value for w in at.warning if "start after" in w.value] == said
    at.button(key="launch").click().run()  # launched at once, as said: not said again after that
    assert runner.get(at.session_state["train_job"]).after is None
    at.run()
    assert not [w.value for w in at.warning if "start after" in w.value]


# ---- 3. Monitor: with several jobs chosen, only the first one's log could be read ---------------------------------

def test_monitor_offers_the_log_of_every_chosen_job(tiny):
    a = runner.submit(CptSpec(model="tiny", name="a", data=[DataSource(source="builtin:facts-corpus")]))
    b = runner.submit(CptSpec(model="tiny", name="b", data=[DataSource(source="builtin:facts-corpus")]))
    runner._update(b.id, status="failed", error="boom")
    at = app("monitor.py")
    at.multiselect(key="monitor_jobs").set_value([a.id, b.id]).run()
    assert at.selectbox(key="monitor_log_of").options == [f"{a.id} · cpt · a", f"{b.id} · cpt · b"]
    at.selectbox(key="monitor_log_of").set_value(b.id).run()
    assert at.expander[-1].label == f"Log of job {b.id} (last 40 lines)"  # was always job a's


# ---- 4. Recipe: Run said "Submitted recipe run 2; the worker runs the stages" when it queued nothing new ---------

def test_recipe_run_says_what_it_queued_and_a_rerun_reuses(tiny_llama):
    import yaml

    from backend import recipe

    text = yaml.safe_dump({**yaml.safe_load(recipe.preset("smoke", str(tiny_llama))),
                           "budget": {"max_steps": 1, "max_rows": 5, "eval_limit": 3}}, sort_keys=False)
    at = app("recipe.py")
    at.text_area(key="recipe_yaml").set_value(text).run()
    at.button(key="recipe_run").click().run()
    first = [s.value for s in at.success]
    assert len(first) == 1 and first[0].startswith("Submitted recipe run 1: smoke: ") and "0 reused" in first[0]
    assert first[0].endswith("The worker runs the new stages in dependency order.")
    at.button(key="recipe_run").click().run()
    [again] = [s.value for s in at.success]
    assert again.startswith("Submitted recipe run 2: smoke: 0 to run, ") and " already queued." in again
    assert again.endswith("Nothing new to train: every stage is reused or already queued by an earlier run.")


# ---- 5. an uploaded .txt: "5 rows" beside the table's "3 rows (a row per paragraph)" for the same file --------------

def test_train_page_says_how_an_uploaded_txt_was_counted(tiny):
    book = b"First para line one.\nline two.\n\nSecond para.\n\n\nThird para\nwith two lines.\n"
    at = app("train.py")
    at.file_uploader(key="upload").set_value(("book.txt", book, "text/plain")).run()
    [said] = [c.value for c in at.caption if c.value.startswith("book.txt saved as")]
    assert said.endswith("— text layout, 5 rows read a line a row (its *rows of a .txt* cell in the table can make "
                         "a row a paragraph or the whole file).")  # was "— text layout, 5 rows."
    at.button(key="add_upload").click().run()
    path = said.split("`")[1]
    at.session_state["sources_cpt_base"] = [{"source": path, "weight": 1.0, "sample_by": "paragraph"}]
    at.session_state["sources_cpt_version"] = 2
    at.run()
    assert f"{path} — text layout, 3 rows (a row per paragraph of a .txt)" in [e.label for e in at.expander]


# ---- 6. "Saved for cpt: none yet (Synthetic math page)": that page makes SFT and DPO sets and mixes only ---------

def test_train_page_does_not_send_a_cpt_user_to_the_synthetic_math_page(tiny):
    at = app("train.py")
    [data] = [c.value for c in at.caption if c.value.startswith("Sources:")]
    assert data.endswith("Saved for cpt: none yet (`python -m backend datasets mix NAME --for cpt SOURCE@WEIGHT …` "
                         "saves a mix).")
    at.radio(key="kind").set_value("sft").run()
    [data] = [c.value for c in at.caption if c.value.startswith("Sources:")]
    assert data.endswith("Saved for sft: none yet (Synthetic math page).")


# ---- 7. Recipe: the paper's column sat off-screen at 1280 px behind six synth-math columns ------------------------

def test_recipe_tables_keep_the_model_and_the_papers_number_in_view(tiny_llama):
    import json

    import yaml

    from backend import recipe

    text = yaml.safe_dump({**yaml.safe_load(recipe.preset("smoke", str(tiny_llama))),
                           "budget": {"max_steps": 1, "max_rows": 5, "eval_limit": 3}}, sort_keys=False)
    recipe.run_recipe(text)  # queued only: the tables list the run's models before any score
    at = app("recipe.py")
    tables = [d for d in at.dataframe if "Paper H6" in d.value.columns]
    assert tables
    for d in tables:
        config = json.loads(d.proto.columns)
        assert config["Model"].get("pinned") is True and config["Paper H6"].get("pinned") is True, config
