"""What a CLI walk found in the data sets and the QA scores: a synthetic-math run under a taken name, or into a
folder another data set's files are in, replaced that data set without a word (and left the registry naming a row
count its file no longer had); `datasets mix NAME` replaced a mix; and every per-kind QA row recorded the task's
item count instead of its kind's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import func, select

from backend import evalscore, evaluate, qa, registry
from backend.specs import EvalSpec, SynthMathSpec
from backend.synth import pipeline
from backend.synth.rephrase import RulesRephraser
from storage import db
from storage.models import DatasetRecord, EvalScore, Generation, SynthPair


def _state(folder: Path) -> dict:
    """Everything a refused run must leave as it was: the folder's files, the data set rows, the stored pairs."""
    with db.session() as s:
        rows = {(d.name, d.kind, d.path, d.rows, json.dumps(d.provenance, sort_keys=True))
                for d in s.exec(select(DatasetRecord))}
        pairs = s.exec(select(func.count()).select_from(SynthPair)).one()
    files = {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else None
    return {"rows": rows, "pairs": pairs, "files": files}


def test_a_synth_run_under_a_taken_name_is_refused_and_changes_nothing(workspace):
    pipeline.run_synth_math(SynthMathSpec(num_seeds=20))
    folder = workspace / "datasets" / "synth-math"
    before = _state(folder)
    assert len((folder / "pairs.jsonl").read_text().splitlines()) == 20
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.run_synth_math(SynthMathSpec(num_seeds=5))
    assert str(err.value) == (f"A synth-pairs data set is already named 'synth-math-pairs' (20 rows at "
                              f"{folder / 'pairs.jsonl'}). Nothing was made: choose another name for this run "
                              "(--name, or Name on the Synthetic math page); the existing data set stays as it is. "
                              "To export its pairs again: `python -m backend datasets export synth-math-pairs`.")
    assert _state(folder) == before
    assert pipeline.get_dataset("synth-math-pairs").rows == 20
    assert len((folder / "pairs.jsonl").read_text().splitlines()) == 20


def test_a_synth_run_into_another_data_sets_folder_is_refused_and_changes_nothing(workspace):
    folder = workspace / "datasets" / "synth-math"
    pipeline.run_synth_math(SynthMathSpec(num_seeds=20))
    before = _state(folder)
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.run_synth_math(SynthMathSpec(num_seeds=20, name="synth2", out=str(folder)))
    assert str(err.value) == (f"{folder} holds the files of synth-math-alignment, synth-math-instruct, "
                              "synth-math-pairs: this run's pairs.jsonl and export would replace them. Nothing was "
                              "made: choose another output folder (--out), or leave it out to use "
                              f"{workspace / 'datasets' / 'synth2'}.")
    assert _state(folder) == before and pipeline.get_dataset("synth2-pairs") is None
    assert not (workspace / "datasets" / "synth2").exists()


def test_a_synth_run_into_a_folder_holding_other_files_is_refused(workspace, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.run_synth_math(SynthMathSpec(num_seeds=4, out=str(folder)))
    assert str(err.value) == (f"{folder} is not empty (notes.txt): a synthetic-math run writes into a folder of its "
                              "own. Nothing was made: choose an empty or new output folder (--out), or leave it out "
                              f"to use {workspace / 'datasets' / 'synth-math'}.")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and pipeline.list_datasets() == []


def test_a_killed_synth_run_resumes_from_its_rephrase_cache(workspace, monkeypatch):
    """The folder of a run stopped before it registered anything holds only its own cache: running the same spec
    again (a resumed job) goes on from there, as before."""
    calls = []

    class Dying(RulesRephraser):
        def rephrase(self, seeds):
            if calls:
                raise KeyboardInterrupt  # killed during the second batch
            calls.append(len(seeds))
            return super().rephrase(seeds)

    class Counting(RulesRephraser):
        def rephrase(self, seeds):
            calls.append(len(seeds))
            return super().rephrase(seeds)

    spec = SynthMathSpec(num_seeds=20, batch_size=8)
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Dying())
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_synth_math(spec)
    assert pipeline.list_datasets() == [] and calls == [8]
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Counting())
    result = pipeline.run_synth_math(spec)
    assert calls == [8, 8, 4] and result["verified"] == 20 and pipeline.get_dataset("synth-math-pairs").rows == 20


def test_a_re_export_after_a_hand_rejection_updates_the_export_in_place(workspace):
    pipeline.run_synth_math(SynthMathSpec(num_seeds=10))
    first = pipeline.get_dataset("synth-math-instruct")
    _, page = pipeline.query_pairs(pipeline.get_dataset("synth-math-pairs").id)
    pipeline.reject_by_hand(page[0].id)
    assert pipeline.export("synth-math-pairs")["rows"] == 9
    again = pipeline.get_dataset("synth-math-instruct")
    assert (again.id, again.rows, again.path) == (first.id, 9, first.path)
    assert len(Path(again.path).read_text().splitlines()) == 9


def test_an_export_whose_name_a_mix_holds_is_refused_before_any_file_is_written(workspace, tmp_path):
    """Every pair flagged, so the run exports nothing; a mix then takes the export's name. Exporting with the flagged
    pairs wrote both files into the pairs' folder and only then found the name taken."""
    from backend.synth.seeds import generate

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": s.question}) + "\n" for s in generate(6)))
    result = pipeline.run_synth_math(SynthMathSpec(num_seeds=6, benchmark=str(bench), name="sm"))
    assert result["flagged"] == 6 and result["instruct"] is None
    pipeline.save_mix("sm-instruct", [("builtin:alpaca-mini", 1.0)], "sft")
    folder = workspace / "datasets" / "sm"
    before = _state(folder)
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.export("sm-pairs", include_flagged=True)
    assert str(err.value) == ("'sm-instruct' is a mix data set, not an export of sm-pairs. Nothing was exported: the "
                              "export takes that name. Run the synthetic-math job again under another name, then "
                              "export that.")
    assert _state(folder) == before and not (folder / "math_instruct.jsonl").exists()


def test_a_mix_under_a_taken_name_is_refused_and_the_same_mix_saved_again_changes_nothing(workspace):
    first = pipeline.save_mix("sft-v1", [("builtin:alpaca-mini", 1.0)], "sft")
    assert pipeline.save_mix("sft-v1", [("builtin:alpaca-mini", 1.0)], "sft").id == first.id  # the page's button twice
    with pytest.raises(pipeline.DatasetError) as err:
        pipeline.save_mix("sft-v1", [("builtin:orca-mini", 2.0)], "sft")
    assert str(err.value) == ("A mix data set is already named 'sft-v1' (a mix of builtin:alpaca-mini×1 for sft). "
                              "Nothing was saved: choose another name for the mix; the existing one stays as it is.")
    rec = pipeline.get_dataset("sft-v1")
    assert rec.provenance == {"for": "sft", "sources": [{"source": "builtin:alpaca-mini", "weight": 1.0}]}
    assert len(pipeline.list_datasets()) == 1


def test_each_qa_row_per_item_kind_records_that_kinds_item_count(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(evalscore, "generate", lambda tok, model, prompts, n, **k: [("Paris", 1, False)
                                                                                   for _ in prompts])
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["qa"], limit=5))
    with db.session() as s:
        kinds = [g.item_kind for g in s.exec(select(Generation))]
        rows = list(s.exec(select(EvalScore)))
    n = {r.metric: r.n for r in rows}
    per_kind = {k: kinds.count(k) for k in qa.ITEM_KINDS}
    assert len(kinds) == 5 and sorted(per_kind.values()) == [1, 2, 2]  # every kind, each with its own count
    for metric in ("accuracy", "abstention_rate", "hallucination_rate", "cut_off_rate", "precision"):
        assert n[metric] == 5
        for kind, count in per_kind.items():
            if (metric, kind) == ("precision", "math"):  # "Paris" to every math item: nothing answered, no precision
                assert f"{metric}[{kind}]" not in n
                continue
            assert n[f"{metric}[{kind}]"] == count, (metric, kind)
    clean = next(r for r in rows if r.metric == "accuracy").details["clean"]
    assert {k: v for k, v in clean.items() if k.startswith("n")} == {
        "n": 5, **{f"n[{kind}]": count for kind, count in per_kind.items()}}
