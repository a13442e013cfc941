"""Review 24 (a CLI user's walk, recipes and logs): `recipe tables` while the run's evaluation is still queued or
running printed Tables 3-7 with ticks and "Paper H6" only, no score column and no word why; `datasets list` showed
every mix with 0 rows, read as an empty data set; continued pretraining of an up-scaled model printed two bare
`{'eval_loss': …}` dicts at step 0 (the second the base's, for the recovery chart); and SFT's log said
`packing = off (auto: full rows (padding-free packing needs a flash kernel …))`, a reason for packing it did not do."""

from __future__ import annotations

import json

from backend import perf, registry, runner, train_entry
from backend.recipe import state, tables
from backend.specs import CptSpec, DataSource, DpoSpec, SftSpec
from backend.synth import pipeline
from storage import db
from tests.test_review_cli import cli
from tests.test_review_s23_recipe import _evaluating_run  # a run whose evaluation is under way

# ---------------------------------------------------------------- 1. tables while the evaluation is not done


def test_tables_of_a_run_whose_evaluation_runs_say_why_the_scores_are_missing():
    run_id, ev = _evaluating_run("running")
    said = (f"Scores not in yet: evaluation job {ev.id} is running, 1 of 3 models scored "
            f"(`python -m backend jobs wait {ev.id}`).")
    assert state.run_scores_note(run_id) == said
    made = tables.run_tables(run_id)
    assert made and all(t.notes[0] == said for t in made)  # every table (the page shows them as its captions)
    rc, out, err = cli("recipe", "tables", str(run_id))
    assert (rc, err) == (0, "") and said in out
    rc, out, err = cli("recipe", "tables", str(run_id), "--format", "csv")  # a CSV has no notes: said on stderr
    assert rc == 0 and said not in out and err == said + "\n"
    rc, out, err = cli("recipe", "tables", str(run_id), "--format", "tex")
    assert rc == 0 and "Scores not in yet: evaluation job" in out


def test_a_queued_evaluation_is_named_and_an_ended_one_says_nothing():
    run_id, ev = _evaluating_run("queued")
    assert state.run_scores_note(run_id) == (f"Scores not in yet: evaluation job {ev.id} is queued "
                                       f"(`python -m backend jobs wait {ev.id}`).")
    done_id, done = _evaluating_run("succeeded")
    assert state.run_scores_note(done_id) == ""
    made = tables.run_tables(done_id)
    assert made and all(not t.notes or not t.notes[0].startswith("Scores not in yet") for t in made)


def test_a_failed_evaluation_says_so_and_how_to_resume_it():
    run_id, ev = _evaluating_run("running")
    runner._update(ev.id, status="failed")
    assert state.run_scores_note(run_id) == (
        f"Scores not in yet: evaluation job {ev.id} failed, 1 of 3 models scored; the scores it stored are kept; "
        f"resume it to score the rest (`python -m backend jobs resume {ev.id}`).")
    # a run cut off before queueing its evaluation
    assert state.scores_note([{"job": None, "status": "not queued", "scored": 0, "of": 3, "skipped": 0}]) == (
        "Scores not in yet: the evaluation is not queued (the run was cut off: run the recipe again to queue it).")
    assert [e["status"] for e in state.evaluations(state.stages(run_id))] == ["failed"]


# ---------------------------------------------------------------- 2. a mix's rows

def test_datasets_list_shows_no_row_count_for_a_mix_and_its_kind():
    path = db.workspace() / "one.jsonl"
    path.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    pipeline.save_dataset("one", "sft", str(path), 1, {})
    for name, purpose in (("m-sft", "sft"), ("m-dpo", "dpo"), ("m-cpt", "cpt")):
        pipeline.save_dataset(name, "mix", "", 0, {"for": purpose, "sources": [{"source": "dataset:one",
                                                                                 "weight": 1.0}]})
    rc, out, err = cli("datasets", "list")
    assert (rc, err) == (0, "")
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert lines["m-dpo"].split()[1:4] == ["mix", "(dpo)", "-"] and "dataset:one×1" in lines["m-dpo"]
    assert lines["m-cpt"].split()[1:4] == ["mix", "(cpt)", "-"]
    assert lines["one"].split()[1:3] == ["sft", "1"]  # a file's rows are its own
    rc, out, err = cli("datasets", "list", "--json")
    rows = {d["name"]: d for d in json.loads(out)}
    assert rows["m-sft"]["rows"] is None and rows["m-sft"]["kind"] == "mix" and rows["one"]["rows"] == 1


# ---------------------------------------------------------------- 3. the base's eval loss, labelled

def test_the_reference_loss_at_step_0_is_labelled_and_printed_once(tiny_llama, tmp_path, capfd):
    """Continued pretraining with a reference (the base of an up-scaled model): the reference's own trainer printed
    a second bare {'eval_loss': …} at step 0; now one dict (the model's) and a labelled line for the base's."""
    registry.import_folder(tiny_llama, "tiny")
    spec = CptSpec(model="tiny", name="c", data=[DataSource(source="builtin:facts-corpus")], max_steps=1,
                   save_steps=100, eval_steps=100, batch_size=2, max_length=32, max_rows=20, eval_fraction=0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"), "model_path": str(tiny_llama),
                                               "reference_path": str(tiny_llama), "name": "c"}))
    capfd.readouterr()
    train_entry.main(run)
    out = capfd.readouterr()
    lines = (out.out + out.err).splitlines()
    start = lines[:next(i for i, ln in enumerate(lines) if "step 1/1" in ln)]  # step 0, before training
    assert sum(ln.startswith("{'eval_loss'") for ln in start) == 1, start
    [said] = [ln for ln in start if "recovery chart" in ln]
    ref = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "reference_eval_loss" in x)
    assert said == (f"[  0.0%] step 0/1 · base model's eval loss (for the recovery chart) "
                    f"{ref['reference_eval_loss']:.4f}")


# ---------------------------------------------------------------- 4. packing's reason fits its value

DATA = [DataSource(source="builtin:alpaca-mini")]


def _packing(spec, cuda: bool, installed=lambda module: True) -> str:
    [line] = [ln for ln in perf.resolve(spec, cuda, installed=installed).lines() if ln.startswith("perf: packing")]
    return line


def test_each_packing_reason_says_why_for_the_value_printed():
    assert _packing(SftSpec(model="m", data=DATA), False) == (
        "perf: packing = off (auto for sft: off without a flash kernel here; padding-free packing is slow without "
        "one, and wrapped packing cuts conversations at max_length and runs them together)")
    assert _packing(SftSpec(model="m", data=DATA, packing=False), True) == "perf: packing = off (packing: false " \
                                                                            "asked for)"
    assert _packing(CptSpec(model="m", data=DATA, packing=False), False) == "perf: packing = off (packing: false " \
                                                                            "asked for)"
    from backend.spec_train import PerfOptions

    given = SftSpec(model="m", data=DATA, perf=PerfOptions(packing_strategy="wrapped"))
    assert _packing(given, False) == ("perf: packing = off (auto on a CPU: off, packing is on by default with CUDA "
                                      "only; packing: true packs here)")
    assert _packing(given, True).startswith("perf: packing = wrapped (asked for")
    assert _packing(SftSpec(model="m", data=DATA, packing=True), False) == (
        "perf: packing = wrapped (packing: true asked for; auto: rows run together and cut into full max_length "
        "sequences; padding-free bfd needs a flash kernel to be fast)")
    assert _packing(CptSpec(model="m", data=DATA), False).startswith("perf: packing = wrapped (auto: rows run "
                                                                     "together")
    assert _packing(DpoSpec(model="m", data=[DataSource(source="builtin:prefs-mini")]), True) == \
        "perf: packing = off (not used: trl's DPO does not pack)"
    liger = [ln for ln in perf.resolve(SftSpec(model="m", data=DATA), True, installed=lambda m: False).lines()
             if ln.startswith("perf: liger")]
    assert liger == ["perf: liger = False (auto: off, liger-kernel is not installed)"]
