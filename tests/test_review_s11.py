"""Honest reports: a job whose worker is gone ("running?") shows its last progress as stale, not as a live bar; a
deleted export's name that models trained on it still name is not taken again by a re-export; a malformed data file
reports one clean error, without the `datasets` library's own "Failed to load JSON … ArrowInvalid" line before it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend import data, registry, runner
from backend.specs import SynthMathSpec
from backend.synth import pipeline
from storage import db
from storage.models import Job
from tests.test_pages import app
from tests.test_review_jobs2 import GONE, _beat, _dead_pid, _running

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- 1. the status box of a "running?" job

def _logged(job, tmp_path: Path, seconds_ago: float) -> None:
    """Give the job a log last written `seconds_ago`: the job prints each progress line there."""
    log = tmp_path / f"job-{job.id}.log"
    log.write_text("[ 40.0%] step 3/6\n")
    os.utime(log, (time.time() - seconds_ago,) * 2)
    with db.session() as s:
        row = s.get(Job, job.id)
        row.log_path = str(log)
        s.add(row)
        s.commit()


def test_a_running_job_without_worker_shows_its_progress_as_stale_and_can_be_cancelled(tmp_path):
    _beat(runner.host_id(), age=130)
    dead = _running(runner.host_id(), _dead_pid())
    _logged(dead, tmp_path, seconds_ago=125)
    at = app("jobs.py")
    at.selectbox(key="job").set_value(dead.id).run()
    assert not at.get("progress")  # no live bar
    assert [w.value for w in at.warning if w.value.startswith(f"Job {dead.id}")] == [
        f"Job {dead.id} (upscale): {GONE.format(dead.id)}"]
    assert "Last progress 40% (step 3/6); its log was last written 2 min ago: not live, nothing advances it until " \
           "the job is resumed." in [c.value for c in at.caption]
    at.button(key=f"cancel_{dead.id}").click().run()
    assert runner.get(dead.id).status == "cancelled"


def test_a_job_whose_worker_beats_keeps_its_live_progress_bar():
    _beat("machine-b", age=2)
    beating = _running("machine-b", 2 ** 22 + 12345)
    at = app("jobs.py")
    at.selectbox(key="job").set_value(beating.id).run()
    bars = at.get("progress")
    assert [(b.proto.value, b.proto.text) for b in bars] == [(40, f"Job {beating.id} (upscale): running — step 3/6")]
    assert not [c.value for c in at.caption if c.value.startswith("Last progress")]
    assert at.button(key=f"cancel_{beating.id}")


# ---------------------------------------------------------------- 2. a re-export under a deleted export's name

@pytest.fixture
def sm(workspace) -> Path:
    """A synthetic-math run 'sm' (sm-pairs, sm-instruct, sm-alignment)."""
    pipeline.run_synth_math(SynthMathSpec(num_seeds=12, name="sm"))
    return workspace / "datasets" / "sm"


def test_a_reexport_does_not_take_back_a_deleted_export_that_models_name(sm, tiny_llama):
    registry.import_folder(tiny_llama, "base")
    registry.register(tiny_llama, "tuned", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": "dataset:sm-instruct", "weight": 1.0}]})
    pipeline.delete_dataset("sm-instruct", force=True)
    alignment = pipeline.get_dataset("sm-alignment")
    with pytest.raises(pipeline.DatasetError) as refused:
        pipeline.export("sm-pairs")
    assert str(refused.value) == (
        "'sm-instruct' was deleted, but 1 model(s) were trained on it and still name it: tuned. A new data set under "
        "that name would pose as their training data. Choose another name. Nothing was exported: the export of "
        "sm-pairs is always named sm-instruct. Run the synthetic-math job again under another name (--name, or Name "
        "on the Synthetic math page), then export that.")
    # nothing was written or registered: the alignment set stays as it was, no instruct file reappears
    assert pipeline.get_dataset("sm-instruct") is None and not (sm / "math_instruct.jsonl").exists()
    assert pipeline.get_dataset("sm-alignment").model_dump() == alignment.model_dump()


def test_a_reexport_takes_back_a_deleted_export_no_model_names(sm):
    pipeline.delete_dataset("sm-instruct")
    out = pipeline.export("sm-pairs")
    assert (out["instruct"], out["alignment"]) == ("sm-instruct", "sm-alignment")
    rec = pipeline.get_dataset("sm-instruct")
    assert (rec.kind, rec.provenance["pairs"], rec.rows) == ("sft", "sm-pairs", out["rows"])
    assert (sm / "math_instruct.jsonl").is_file()


# ---------------------------------------------------------------- 3. a malformed file: our error only

@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    return path


def test_loading_a_malformed_json_file_raises_without_the_librarys_error_line(bad_jsonl, caplog):
    with caplog.at_level(logging.DEBUG), pytest.raises(data.DataError) as failed:
        data.load_source(str(bad_jsonl))
    assert str(failed.value) == ("bad.jsonl, line 2, column 10: not valid JSON (Expecting value). Each line must be "
                                 "one JSON object.")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "ArrowInvalid" not in caplog.text
    # the filter went with the call: the loader's logger reports to others as before
    assert logging.getLogger("datasets.packaged_modules.json.json").filters == []


def test_the_cli_prints_one_clean_line_for_a_malformed_file(bad_jsonl):
    done = subprocess.run([sys.executable, "-m", "backend", "datasets", "mix", "m", str(bad_jsonl)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: bad.jsonl, line 2, column 10: not valid JSON (Expecting value). "
                                        "Each line must be one JSON object."]
    assert pipeline.get_dataset("m") is None


def test_a_broken_json_array_file_is_not_told_to_hold_one_object_per_line(tmp_path):
    """A .json file is read as one array (or JSON Lines); its error said "Each line must be one JSON object", wrong
    for the array a user wrote."""
    bad = tmp_path / "rows.json"
    bad.write_text('[{"prompt": "hi", "completion": "yo"},\n {"prompt": "x" "completion": "y"}]\n')
    with pytest.raises(data.DataError) as exc:
        data.load_source(str(bad))
    assert str(exc.value) == ("rows.json, line 2, column 17: not valid JSON (Expecting ',' delimiter). A .json file "
                              "holds one JSON array of objects, or one object per line.")


def test_eval_names_a_base_model_once_in_its_note(tiny_llama, capsys):
    """The note already names the lineage's model it is about; the command put the evaluated name before it again
    ("note: tiny: tiny: base model, …")."""
    from backend.__main__ import main as cli

    registry.import_folder(tiny_llama, "tiny")
    assert cli(["eval", "tiny", "--tasks", "perplexity", "--limit", "2"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: tiny: base model, its pretraining data is not known here"]
