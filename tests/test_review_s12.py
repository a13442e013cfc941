"""Twelfth-session review fixes that stand alone (each test failed before its fix)."""
import json
from pathlib import Path

import pytest

from backend import registry
from backend.specs import MergeSpec, SynthMathSpec
from backend.synth import pipeline


def test_merges_that_differ_only_in_a_setting_the_tag_does_not_spell_get_different_default_names():
    """Two SLERP schedules were both "a_b-slerpsched", and filters, lambda, DARE's seed or dtype were not in the name
    at all, so the second such merge was refused as a taken name although it makes other weights."""
    variants = [MergeSpec(models=["a", "b"], method="slerp", t=[0, 1]),
                MergeSpec(models=["a", "b"], method="slerp", t=[1, 0]),
                MergeSpec(models=["a", "b"], method="slerp", filters={"mlp": [0, 1]}),
                MergeSpec(models=["a", "b"], method="slerp"),
                MergeSpec(models=["a", "b"], method="dare_ties", base="c"),
                MergeSpec(models=["a", "b"], method="dare_ties", base="c", seed=1),
                MergeSpec(models=["a", "b"], method="ties", base="c", **{"lambda": 0.5}),
                MergeSpec(models=["a", "b"], method="ties", base="c"),
                MergeSpec(models=["a", "b"], dtype="bfloat16"),
                MergeSpec(models=["a", "b"])]
    names = [v.default_name() for v in variants]
    assert len(set(names)) == len(names), names
    # the plain merges keep their short, readable names; a setting irrelevant to the method is refused (session 13:
    # it was ignored without a word), so it cannot reach the name
    assert names[3] == "a_b-slerp0.5" and names[7] == "a_b-ties-d1" and names[9] == "a_b-average"
    with pytest.raises(ValueError, match="seed .* is for dare_linear / dare_ties; method 'average' does not use it"):
        MergeSpec(models=["a", "b"], seed=7)
    assert MergeSpec(models=["a", "b"], method="slerp", t=[0, 1]).default_name() == names[0]  # stable


def test_a_setting_spelled_as_its_methods_default_does_not_change_the_name():
    """The page sends normalize=True for an average (mergekit's default for it): the same merge, the same name."""
    assert MergeSpec(models=["a", "b"], normalize=True).default_name() == "a_b-average"
    assert MergeSpec(models=["a", "b"], method="ties", base="c", rescale=False).default_name() == "a_b-ties-d1"
    assert MergeSpec(models=["a", "b"], normalize=False).default_name() != "a_b-average"


# ---------------------------------------------------------------- a re-export under models trained on the export

@pytest.fixture
def sm(workspace) -> Path:
    """A synthetic-math run 'sm' (sm-pairs, sm-instruct, sm-alignment) and a model trained on sm-instruct's file."""
    pipeline.run_synth_math(SynthMathSpec(num_seeds=12, name="sm"))
    return workspace / "datasets" / "sm"


@pytest.mark.parametrize("source", ["dataset:sm-instruct", "path"])
def test_a_reexport_that_would_change_rows_models_trained_on_is_refused(sm, tiny_llama, source):
    """Re-exporting after a hand rejection rewrote the file a model was trained on, so the evaluation's overlap check
    read the new rows as that model's training data and missed the one taken out."""
    registry.import_folder(tiny_llama, "base")
    src = str(sm / "math_instruct.jsonl") if source == "path" else source
    registry.register(tiny_llama, "tuned", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": src, "weight": 1.0}]})
    before = {p: p.read_text() for p in sm.glob("math_*.jsonl")}
    assert pipeline.export("sm-pairs")["rows"] == len(before[sm / "math_instruct.jsonl"].splitlines())  # same rows: ok
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("sm-pairs").id, states=["verified"])
    pipeline.reject_by_hand(pairs[0].id)
    with pytest.raises(pipeline.DatasetError, match=r"1 model\(s\) were trained on sm-instruct as it is: tuned\. "
                                                    r"Nothing was exported"):
        pipeline.export("sm-pairs")
    assert {p: p.read_text() for p in sm.glob("math_*.jsonl")} == before  # neither file was touched
    assert pipeline.get_dataset("sm-instruct").rows == len(before[sm / "math_instruct.jsonl"].splitlines())
    registry.delete("tuned", delete_files=False)  # no model reads it any more: the re-export updates it in place, as before
    assert pipeline.export("sm-pairs")["rows"] == len(before[sm / "math_instruct.jsonl"].splitlines()) - 1


# ---------------------------------------------------------------- a rerun replaces the earlier run whole

def test_a_rerun_of_a_task_replaces_the_earlier_runs_scores_and_answers_whole(tiny_llama):
    """latest_scores kept the newest row per metric and task_records the newest answer per item: after a run on 4
    items with samples=2 and a rerun on 2 with samples=1, the table showed the first run's consistency (n=4) beside
    the second's accuracy (n=2), and the length analysis mixed 2 new answers with 2 old ones."""
    from backend import analysis, evaluate, scoretable
    from backend.recipe import tables
    from backend.specs import EvalSpec

    registry.import_folder(tiny_llama, "tiny")
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["synth-math"], limit=4, samples=2, max_new_tokens=8))
    first = scoretable.latest_scores()
    assert first[("tiny", "synth-math", "consistency")].n == 4 and len(analysis.task_records("synth-math")) == 4
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["synth-math"], limit=2, samples=1, max_new_tokens=8))
    latest = scoretable.latest_scores()
    ours = {metric: r for (model, task, metric), r in latest.items() if (model, task) == ("tiny", "synth-math")}
    assert "consistency" not in ours and {r.n for r in ours.values()} == {2}
    assert len({r.run for r in ours.values()}) == 1 and ours["accuracy"].run != first[("tiny", "synth-math",
                                                                                       "accuracy")].run
    assert len(analysis.task_records("synth-math")) == 2  # the rerun's answers only
    assert "synth-math consistency" not in tables.latest_scores(["tiny"])["tiny"]  # the recipe's tables alike


def test_a_task_checked_against_no_training_data_is_not_called_clean():
    """Base models only: the overlap check had no training set to read, and the note said "no item overlaps any
    model's training data (✓)"."""
    from backend import scoretable
    from tests.test_review_scores11 import add

    unchecked = {"overlap": {"items_over": 0, "share_over": 0.0, "against": [], "unchecked": {},
                             "notes": ["base: base model, its pretraining data is not known here"]}}
    checked = {"overlap": {**unchecked["overlap"], "against": ["builtin:alpaca-mini"]}}
    add(("base", "qa", "accuracy", 0.5, 20, unchecked), ("base", "synth-math", "accuracy", 0.5, 20, unchecked),
        ("tuned", "synth-math", "accuracy", 0.5, 20, checked))
    note = scoretable.overlap_note(scoretable.headline(scoretable.latest_scores()))
    # the base model beside the checked one was checked against nothing: said, not counted clean with it (and the
    # clean claim names the models it was checked for: "any model's" was said with base unchecked)
    assert ("synth-math: no item overlaps the recorded training data of tuned (✓, so no column); base could not be "
            "checked: no training data of its lineage is recorded here") in note
    assert "qa: nothing to check against, as no model's lineage has training data recorded here" in note
    assert "qa: no item overlaps" not in note and "qa, synth-math" not in note


def test_a_model_evaluated_by_its_folder_is_scored_under_its_registered_name(tiny_llama, tmp_path):
    """`eval /path/to/registered-folder` stored the scores under the path: a second row of the table, apart from
    the model's other scores and without its lineage; the CLI now prints them under the name too."""
    import shutil

    from tests.test_review_datasets import cli

    folder = tmp_path / "tuned"
    shutil.copytree(tiny_llama, folder)
    registry.register(folder, "tuned", "trained")
    rc, out, err = cli("eval", str(folder), "--tasks", "perplexity", "--limit", "2")
    assert rc == 0, err
    from backend import scoretable

    assert {m for m, _, _ in scoretable.latest_scores()} == {"tuned"}
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("tuned ")] == [
        ["tuned", "perplexity", m] for m in ("bits_per_byte", "byte_perplexity", "byte_perplexity_stderr", "perplexity",
                                             "perplexity_stderr", "word_perplexity", "word_perplexity_stderr")], out


def test_a_build_whose_default_folder_holds_files_is_refused_before_it_is_queued(tiny_llama):
    """models/leftover held a stray file: the build was queued and then failed with "choose another output folder",
    though the Build page has only a name field."""
    from backend import runner
    from backend.specs import UpscaleSpec
    from storage import db

    registry.import_folder(tiny_llama, "tiny")
    stray = db.models_dir() / "leftover" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    with pytest.raises(ValueError) as refused:  # what the pages show as "Not queued: …"
        runner.submit(UpscaleSpec(base="tiny", m=1, name="leftover"))
    assert str(refused.value) == (
        f"A folder named 'leftover' already holds files in the models folder ({stray.parent}), though no model is "
        "registered under that name: choose another name, or move that folder away. Nothing was changed.")
    assert runner.list_jobs() == [] and stray.read_text() == "mine"
    assert runner.submit(UpscaleSpec(base="tiny", m=1, name="fresh")).status == "queued"  # another name is fine


def test_the_synthetic_math_benchmark_check_reads_unicode_variants_as_the_same_text():
    """The evaluation's overlap check learned one Unicode form; the synthetic-math job's benchmark check (the same
    n-gram words) still missed a benchmark question copied with a soft hyphen, a ligature or "ß"."""
    bench = ["The long street called Hauptstraße runs through the old town to the river and the fifth bridge."]
    index = pipeline.ContaminationIndex(bench, 8)
    for variant in ("The long street called HAUPTSTRASSE runs through the old town to the river and the ﬁfth bridge.",
                    "The long street called Haupt\u00adstraße runs through the old town to the river and the fifth "
                    "bridge."):
        assert index.overlap(variant) == 1.0, variant
    assert pipeline.words("Straße ﬁve") == ["strasse", "five"]


def test_a_job_from_before_run_folders_were_recorded_offers_resume_from_its_job_folder(tiny_llama, workspace):
    """Rows written before training jobs recorded their folder have run_dir "": they trained in runs/job-ID (what a
    resume reads too), so a checkpoint there is offered as a resume, not "no checkpoint was saved"."""
    from backend import runner
    from backend.specs import DataSource, SftSpec
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t"))
    runner._update(job.id, status="interrupted")
    labels = lambda: [b.label for b in app("monitor.py").button if b.key == f"resume_{job.id}"]  # noqa: E731
    assert labels() == ["Restart (no checkpoint was saved)"]
    ckpt = workspace / "runs" / f"job-{job.id}" / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    assert runner.get(job.id).run_dir == "" and labels() == ["Resume from the last checkpoint"]


@pytest.mark.parametrize("text, message", [
    ('[{"text": "a"}, 1, 2]', "arr.json: item 2 of its array, 1, is not a JSON object. A .json file holds one JSON "
                              "array of objects, or one object per line."),
    ("5", "arr.json: it holds 5, not an array of objects. A .json file holds one JSON array of objects, or one object "
          "per line.")])
def test_a_json_array_of_non_objects_is_explained(tmp_path, text, message):
    """A .json array holding numbers got the JSON reader's own error ("Column() changed from object to number")."""
    from backend import data

    path = tmp_path / "arr.json"
    path.write_text(text)
    with pytest.raises(data.DataError) as refused:
        data.load_source(str(path))
    assert str(refused.value) == message


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


PAIR = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
TURNS = {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
         "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}


@pytest.mark.parametrize("bad, message", [
    ({**PAIR, "prompt": None}, "dpo.jsonl, row 25: preference rows with plain-text chosen/rejected need a plain-text "
                               "prompt column."),
    ({**TURNS, "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": None}]},
     "dpo.jsonl, row 25: chosen, turn 2: content must be text; got NoneType (null or missing). Fix or remove that "
     "row.")])
def test_a_bad_preference_row_is_named_by_file_and_row_before_queueing(tmp_path, bad, message):
    """A null prompt came back without file or row; a null turn text in chosen passed and failed later in trl."""
    from backend import data

    good = PAIR if "prompt" in bad else TURNS
    path = _jsonl(tmp_path / "dpo.jsonl", [good] * 24 + [bad] + [good] * 5)
    with pytest.raises(data.DataError) as refused:
        data.check_source(path, "dpo")
    assert str(refused.value) == message


def test_a_mix_preview_checks_each_member_under_its_own_name(tmp_path):
    """The preview of a mix checked the concatenated rows, a Hub member's millions included, and named a row of
    the combination, which no file has."""
    from backend import data

    good = _jsonl(tmp_path / "good.jsonl", [{"instruction": "a", "output": "b"}] * 3)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": None}])
    with pytest.raises(pipeline.DatasetError, match="bad.jsonl, row 2"):  # save_mix checks the rows now (s24)
        pipeline.save_mix("m", [(good, 1.0), (bad, 1.0)], "sft")
    # a mix saved before that check (or a member edited since): its preview names the member's row
    pipeline.save_dataset("m", "mix", "", 0, {"for": "sft", "sources": [{"source": good, "weight": 1.0},
                                                                        {"source": bad, "weight": 1.0}]})
    with pytest.raises(data.DataError) as refused:
        data.preview("mix:m", "sft")
    assert str(refused.value) == "bad.jsonl, row 2: output must be text; got NoneType (null or missing). Fix or " \
                                 "remove that row."


def test_the_rule_of_three_is_for_shares_read_unrounded():
    """A share of 29999 of 30000 read "1.0 ± 0.0" in the 4-decimal cells the note tested; an lm-eval F1 of 0 with a
    stored error of 0 got a rate's rule-of-three bound."""
    from backend import scoretable
    from tests.test_review_scores11 import add

    add(("m", "qa", "accuracy", 29999 / 30000, 30000),
        ("m", "lm-eval:squad", "squad/f1", 0.0, 20), ("m", "lm-eval:squad", "squad/f1_stderr", 0.0, 20))
    latest = scoretable.latest_scores()
    assert not [n for n in scoretable.table_notes(latest, scoretable.table_rows(latest, {})) if "rule of three" in n]
    assert scoretable.interval95(0.0, 0.0, 20, "squad/f1") == (0.0, 0.0)
    assert scoretable.interval95(0.0, 0.0, 20, "squad/exact_match") == (0.0, 0.15)


def test_older_rows_without_a_run_count_one_run_per_job():
    """Rows written before runs were recorded (or by a worker not yet upgraded) all had run "", so every earlier
    job's rows came back beside the newest job's."""
    from backend import scoretable
    from storage import db
    from storage.models import EvalScore

    with db.session() as s:
        s.add_all([EvalScore(job_id=1, model="m", task="synth-math", metric="consistency", value=0.5, n=4),
                   EvalScore(job_id=1, model="m", task="synth-math", metric="accuracy", value=0.5, n=4),
                   EvalScore(job_id=2, model="m", task="synth-math", metric="accuracy", value=0.25, n=2)])
        s.commit()
    latest = scoretable.latest_scores()
    assert {(metric, r.value) for (_, _, metric), r in latest.items()} == {("accuracy", 0.25)}


def test_recording_the_run_folder_never_fails_a_training_run(monkeypatch, tmp_path, capsys):
    """A DUS_JOB_ID with no row behind it (a command started from a job's shell) made run_train fail before it
    trained, over a write that only draws the Resume button."""
    from backend import training

    monkeypatch.setenv("DUS_JOB_ID", "999")
    training.record_run_dir(tmp_path)  # no row 999: nothing to record, nothing raised
    assert "not recorded" not in capsys.readouterr().out
