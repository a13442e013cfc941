"""Deleting a registered data set (`python -m backend datasets delete`, the Synthetic math page), and the rephrase
cache keyed by what decides a rephrasing.

A data set goes with its synthetic pairs and the files only it uses under workspace/datasets; a file registered from
elsewhere, or one another data set still names, stays. Jobs and mixes that read it refuse the delete; models trained
on it refuse it unless forced, and their evaluation's training-overlap check then says 'unknown', not 'no overlap'.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from sqlmodel import func, select
from streamlit.testing.v1 import AppTest

from backend import data, evaluate, heldout, registry, runner, scoretable
from backend.__main__ import main
from backend.specs import DataSource, EvalSpec, SftSpec, SynthMathSpec
from backend.synth import pipeline
from backend.synth.rephrase import RulesRephraser
from storage import db
from storage.models import SynthPair

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m backend ARGS`, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def pairs_of(dataset_id: int) -> int:
    with db.session() as s:
        return s.exec(select(func.count()).where(SynthPair.dataset_id == dataset_id)).one()


@pytest.fixture
def sm(workspace) -> Path:
    """A synthetic-math run 'sm' (sm-pairs, sm-instruct, sm-alignment) in workspace/datasets/sm."""
    pipeline.run_synth_math(SynthMathSpec(num_seeds=12, name="sm"))
    return workspace / "datasets" / "sm"


def test_each_set_of_a_run_goes_with_its_own_files_only(sm):
    pairs_id = pipeline.get_dataset("sm-pairs").id
    assert sorted(p.name for p in sm.iterdir()) == ["math_alignment.jsonl", "math_instruct.jsonl", "pairs.jsonl",
                                                    "rephrase_cache.jsonl"]
    rc, out, _ = cli("datasets", "delete", "sm-instruct")
    assert rc == 0 and pipeline.get_dataset("sm-instruct") is None
    assert f"removed {sm / 'math_instruct.jsonl'}" in out
    assert sorted(p.name for p in sm.iterdir()) == ["math_alignment.jsonl", "pairs.jsonl", "rephrase_cache.jsonl"]
    # the pairs take their rows and the run's cache; the export made from them stays, with its file
    rc, out, _ = cli("datasets", "delete", "sm-pairs")
    assert rc == 0 and pipeline.get_dataset("sm-pairs") is None and pairs_of(pairs_id) == 0
    assert "its exports sm-alignment stay" in out
    assert [p.name for p in sm.iterdir()] == ["math_alignment.jsonl"]
    assert len(data.load_source("dataset:sm-alignment")) == 12  # still trainable
    rc, out, _ = cli("datasets", "delete", "sm-alignment")
    assert rc == 0 and not sm.exists() and pipeline.list_datasets() == []  # the emptied run folder goes too


def test_a_file_registered_from_elsewhere_is_kept(workspace, tmp_path):
    elsewhere = tmp_path / "my-data"
    pipeline.run_synth_math(SynthMathSpec(num_seeds=6, name="ext", out=str(elsewhere)))
    rc, out, _ = cli("datasets", "delete", "ext-instruct")
    assert rc == 0 and pipeline.get_dataset("ext-instruct") is None
    assert f"its file {elsewhere / 'math_instruct.jsonl'} is outside" in out
    assert "only the registration was removed" in out
    assert (elsewhere / "math_instruct.jsonl").is_file()


def test_a_file_another_set_still_names_is_kept(sm, tmp_path):
    pipeline.run_synth_math(SynthMathSpec(num_seeds=6, name="two", out=str(tmp_path / "two")))
    pipeline.export("two-pairs", sm)  # into sm's folder: two-instruct now names sm's math_instruct.jsonl too
    assert pipeline.get_dataset("two-instruct").path == pipeline.get_dataset("sm-instruct").path
    message = pipeline.delete_dataset("sm-instruct")
    assert "was kept: two-instruct use(s) it too" in message
    assert (sm / "math_instruct.jsonl").is_file() and pipeline.get_dataset("sm-instruct") is None
    assert len(data.load_source("dataset:two-instruct")) == 6


def test_builtin_and_unknown_sets_are_refused(workspace):
    rc, _, err = cli("datasets", "delete", "alpaca-mini")
    assert rc == 2 and "alpaca-mini is a built-in data set" in err and "cannot be deleted" in err
    rc, _, err = cli("datasets", "delete", "builtin:prefs-mini")
    assert rc == 2 and "prefs-mini is a built-in data set" in err
    rc, _, err = cli("datasets", "delete", "nope")
    assert rc == 2 and "No registered data set named 'nope' (registered: none yet)" in err


def test_queued_jobs_and_mixes_that_read_it_refuse_the_delete(sm, tiny_llama):
    registry.import_folder(tiny_llama, "base")
    pipeline.save_mix("math-mix", [("dataset:sm-instruct", 1.0), ("builtin:alpaca-mini", 1.0)], "sft")
    direct = runner.submit(SftSpec(model="base", data=[DataSource(source="dataset:sm-alignment")], name="a"))
    by_path = runner.submit(SftSpec(model="base", name="b", data=[
        DataSource(source=str(sm / "math_alignment.jsonl"))]))
    via_mix = runner.submit(SftSpec(model="base", data=[DataSource(source="mix:math-mix")], name="c"))
    rc, _, err = cli("datasets", "delete", "sm-alignment")
    assert rc == 2 and f"queued or running job(s) {direct.id}, {by_path.id}:" in err
    rc, _, err = cli("datasets", "delete", "math-mix")
    assert rc == 2 and f"job(s) {via_mix.id}:" in err
    rc, _, err = cli("datasets", "delete", "sm-instruct")  # the job reads it through the mix, which names it
    assert rc == 2 and f"job(s) {via_mix.id}:" in err
    for job in (direct, by_path, via_mix):
        runner.cancel(job.id)
    rc, _, err = cli("datasets", "delete", "sm-instruct")
    assert rc == 2 and "a source of the mix(es) math-mix" in err
    assert pipeline.get_dataset("sm-instruct") and (sm / "math_instruct.jsonl").is_file()  # nothing was deleted
    assert cli("datasets", "delete", "math-mix")[0] == 0 and cli("datasets", "delete", "sm-alignment")[0] == 0
    assert cli("datasets", "delete", "sm-instruct")[0] == 0 and pipeline.get_dataset("sm-instruct") is None


@pytest.fixture
def trained_on_it(sm, tiny_llama) -> None:
    """Two models trained on sm-instruct: one by name, one by its file's path."""
    registry.import_folder(tiny_llama, "base")
    registry.register(tiny_llama, "tuned", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": "dataset:sm-instruct", "weight": 1.0}]})
    registry.register(tiny_llama, "tuned-by-path", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": str(sm / "math_instruct.jsonl"), "weight": 1.0}]})


def test_models_trained_on_it_are_named_and_need_force(trained_on_it, sm):
    rc, _, err = cli("datasets", "delete", "sm-instruct")
    assert rc == 2 and "2 model(s) were trained on sm-instruct: tuned, tuned-by-path" in err and "--force" in err
    assert pipeline.get_dataset("sm-instruct") and (sm / "math_instruct.jsonl").is_file()
    rc, out, _ = cli("datasets", "delete", "sm-instruct", "--force")
    assert rc == 0 and pipeline.get_dataset("sm-instruct") is None and not (sm / "math_instruct.jsonl").exists()
    assert "tuned, tuned-by-path still name it in their lineage" in out
    # the freed name would pose as their training data: refused, as a deleted parent's name is
    with pytest.raises(pipeline.DatasetError, match="'sm-instruct' was deleted, but 1 model.*: tuned\\."):
        pipeline.save_mix("sm-instruct", [("builtin:alpaca-mini", 1.0)], "sft")
    assert pipeline.get_dataset("sm-instruct") is None


def test_the_overlap_check_of_a_model_whose_data_set_is_gone_says_unknown(trained_on_it):
    pipeline.delete_dataset("sm-instruct", force=True)
    idx = heldout.training_index("tuned")
    assert idx.sources == ["dataset:sm-instruct"] and "No registered data set named 'sm-instruct'" in \
        idx.unchecked["dataset:sm-instruct"]
    evaluate.run_eval(EvalSpec(models=["tuned"], tasks=["perplexity"], limit=2, max_new_tokens=8))
    latest = scoretable.latest_scores()
    score = latest[("tuned", "perplexity", "perplexity")]
    assert score.details["overlap"]["items_over"] == 0  # nothing could be compared: not "no overlap"
    assert scoretable.badge(score) == "? unknown (1 of 1 training sets unreadable: dataset:sm-instruct)"
    (row,) = scoretable.table_rows(latest, {r.name: r for r in registry.list_models()})
    assert row["perplexity (training overlap)"] == ("? unknown (1 of 1 training sets unreadable: "
                                                    "dataset:sm-instruct)")
    (clean,) = scoretable.table_rows(latest, {}, clean=True)
    assert clean["perplexity"] is None  # the non-overlapping items are not known
    rc, out, _ = cli("eval", "tuned", "--tasks", "perplexity", "--limit", "2")  # the command line says it too
    assert rc == 0 and "note: tuned: overlap unknown: its training data dataset:sm-instruct could not be read (No " \
        "registered data set named 'sm-instruct'" in out


def test_the_row_goes_before_the_files(sm, monkeypatch):
    """A file that cannot be removed leaves a stray file, said in the message, never a row without its file."""
    real = Path.unlink

    def refuse(self, missing_ok=False):
        if self.name == "math_instruct.jsonl":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    rc, out, _ = cli("datasets", "delete", "sm-instruct")
    assert rc == 0 and pipeline.get_dataset("sm-instruct") is None
    assert f"could not remove {sm / 'math_instruct.jsonl'} (Permission denied): remove it by hand" in out
    assert (sm / "math_instruct.jsonl").is_file()


def test_the_synth_page_deletes_after_the_tick_naming_the_models(trained_on_it, sm):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/synth.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="delete_dataset").set_value("sm-instruct").run()
    assert any("2 model(s) were trained on it: `tuned`, `tuned-by-path`" in w.value for w in at.warning)
    assert at.button(key="delete_dataset_button").disabled  # not before the tick
    at.checkbox(key="confirm_dataset").check().run()
    at.button(key="delete_dataset_button").click().run()
    assert not at.exception, at.exception
    assert pipeline.get_dataset("sm-instruct") is None and not (sm / "math_instruct.jsonl").exists()
    assert any("deleted the sft data set sm-instruct" in s.value for s in at.success)
    assert "sm-instruct" not in at.selectbox(key="delete_dataset").options
    assert not at.checkbox(key="confirm_dataset").value  # the tick was for sm-instruct only


# ---------------------------------------------------------------- the rephrase cache

def stopped_before_registering(monkeypatch, spec: SynthMathSpec) -> None:
    """Run `spec` through its rephrasing, then stop it before it registers anything (a killed job): its folder keeps
    only its own files, so a rerun goes on from its rephrase cache."""
    save = pipeline.save_dataset

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_synth_math(spec)
    monkeypatch.setattr(pipeline, "save_dataset", save)


def test_a_run_resumed_with_other_categories_rephrases_its_own_problems(workspace, monkeypatch):
    stopped_before_registering(monkeypatch, SynthMathSpec(num_seeds=8, categories=["arithmetic"], name="f"))
    # the same ids (gen-0-0 …) now name geometry problems: each must get the rephrasing of its own question
    pipeline.run_synth_math(SynthMathSpec(num_seeds=8, categories=["geometry"], name="f"))
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("f-pairs").id, page_size=50)
    rules = RulesRephraser(0)
    assert [p.category for p in pairs] == ["geometry"] * 8
    assert [p.new_question for p in pairs] == [rules.question(p.question) for p in pairs]
    assert [p.status for p in pairs] == ["verified"] * 8


def test_a_run_resumed_with_another_rephraser_setting_is_not_served_stale_rephrasings(workspace, tmp_path,
                                                                                         monkeypatch):
    seeds = tmp_path / "math.jsonl"  # MATH ids hash the problem only, whatever the rephraser's settings
    seeds.write_text("".join(json.dumps({"problem": f"What is {a} + {b}?", "level": "Level 1", "type": "Algebra",
                                         "solution": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}) + "\n"
                             for a, b in [(3, 4), (5, 9), (12, 30), (7, 8), (21, 2), (6, 6)]))
    stopped_before_registering(monkeypatch, SynthMathSpec(seeds=str(seeds), seed=0, name="v"))
    messages = []
    pipeline.run_synth_math(SynthMathSpec(seeds=str(seeds), seed=1, name="v"), progress=lambda f, m: messages.append(m))
    assert "0 already rephrased" in messages[0]
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("v-pairs").id, page_size=50)
    variant = RulesRephraser(1)
    assert [p.new_question for p in pairs] == [variant.question(p.question) for p in pairs]
    assert [p.new_question for p in pairs] != [RulesRephraser(0).question(p.question) for p in pairs]
