"""Defects found reviewing the synthetic-math, compare, arena and recipe pages in a browser, each pinned by a test
that fails without its fix (AppTest on tiny fixtures; seconds each)."""

from __future__ import annotations

import json

import pytest

from backend import registry, runner
from tests.test_pages import app

MATH_ROWS = [{"problem": f"What is ${i}+{i}$?", "level": f"Level {lv}", "type": "Prealgebra",
              "solution": f"${i}+{i}=\\boxed{{{2 * i}}}$"} for i, lv in zip(range(1, 6), range(1, 6))]


def test_synth_file_seeds_keep_every_level_of_a_math_file():
    """MATH levels run 1–5; the generator's 1–3 filter was applied to files and silently dropped levels 4 and 5."""
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    assert not [w for w in at.multiselect if w.key in ("levels", "categories")]  # generator-only controls hidden
    body = "".join(json.dumps(r) + "\n" for r in MATH_ROWS).encode()
    at.file_uploader(key="seed_upload").set_value(("math.jsonl", body, "application/json")).run()
    at.text_input(key="synth_name").set_value("mathfile").run()
    at.button(key="make_pairs").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert job.spec["levels"] == [] and job.spec["categories"] == []
    runner.worker(once=True)
    job = runner.get(job.id)
    assert job.status == "succeeded", job.error
    from backend.synth import pipeline

    assert pipeline.get_dataset("mathfile-pairs").rows == 5  # all five levels, not the three of 1–3


def test_recipe_upload_that_is_not_utf8_is_reported_not_a_traceback():
    at = app("recipe.py")
    before = at.text_area(key="recipe_yaml").value
    at.file_uploader(key="recipe_upload").set_value(("r.yaml", b"\xff\xfe\x00bad \x80", "application/x-yaml")).run()
    assert not at.exception, at.exception
    assert any("not a UTF-8 text file" in e.value for e in at.error)
    assert at.text_area(key="recipe_yaml").value == before  # the text that was there is kept


def test_recipe_smoke_preset_without_a_base_names_the_field_not_a_cli_flag():
    at = app("recipe.py")
    at.selectbox(key="recipe_preset").set_value("smoke").run()
    at.button(key="recipe_load").click().run()
    (err,) = [e.value for e in at.error]
    assert "Base" in err and "--base" not in err


@pytest.fixture
def two_models(tiny_llama_untied, tokenizer_dir, tmp_path):
    from tests.conftest import make_llama

    # untied: a tied random model repeats the prompt's last token ("\n"), and answers that show nothing take no vote
    registry.import_folder(tiny_llama_untied, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5, tie=False), "tiny-b")


def test_arena_show_names_after_a_blind_round_does_not_reveal_it(two_models):
    """The vote of a blind round is stored as blind; turning 'Show names' on before voting showed the names."""
    from backend import arena

    at = app("arena.py")
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    at.toggle(key="arena_show_names").set_value(True).run()
    assert not at.exception, at.exception
    heads = [m.value for m in at.markdown if m.value.startswith("**Model ")]
    assert heads == ["**Model A**", "**Model B**"]  # still blind
    assert not any("tokens/s" in c.value for c in at.caption)
    assert any("names show after the vote" in c.value for c in at.caption)
    at.button(key="vote_a").click().run()
    (v,) = arena.votes()
    assert v.blind
    heads = [m.value for m in at.markdown if m.value.startswith("**Model ")]
    assert heads == [f"**Model A: {v.model_a}**", f"**Model B: {v.model_b}**"]  # revealed after the vote


def test_compare_merge_with_unreadable_weights_offers_no_merge(two_models):
    """A typo in the weights showed an error but left Merge on, which merged with the default (equal) weights."""
    at = app("compare.py")
    at.text_input(key="merge_w").set_value("0.7, abc").run()
    assert any("Weights: numbers" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "merge"]
    at.text_input(key="merge_w").set_value("0.7, 0.3").run()
    at.button(key="merge").click().run()
    (job,) = runner.list_jobs()
    assert job.spec["weights"] == [0.7, 0.3]


def test_compare_merge_name_is_checked_and_a_taken_name_is_explained(two_models):
    at = app("compare.py")
    name_box = next(t for t in at.text_input if t.key and t.key.startswith("merge_name_"))
    name_box.set_value("../escape").run()
    assert any("name '../escape'" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "merge"]
    name_box = next(t for t in at.text_input if t.key and t.key.startswith("merge_name_"))
    name_box.set_value("tiny").run()  # a registered model's name
    assert at.button(key="merge").disabled
    # said before the click, as registry.check_name_free says it (session 26: an info line, the button's help)
    assert any(i.value.startswith("A model named 'tiny' is already registered") for i in at.info)


def test_recipe_page_shows_the_run_just_submitted(tiny_llama):
    """The run picker kept the first run after a second Run, while the page said the second was submitted."""
    from backend import recipe

    registry.import_folder(tiny_llama, "tiny")
    at = app("recipe.py")
    at.selectbox(key="recipe_preset").set_value("smoke").run()
    at.text_input(key="recipe_base").set_value("tiny").run()
    at.button(key="recipe_load").click().run()
    at.button(key="recipe_run").click().run()
    assert at.selectbox(key="recipe_run_pick").value == recipe.runs()[0].id
    text = at.text_area(key="recipe_yaml").value.replace("max_steps: 2", "max_steps: 3", 1)
    at.text_area(key="recipe_yaml").set_value(text).run()
    at.button(key="recipe_run").click().run()
    assert not at.exception, at.exception
    newest = recipe.runs()[0].id
    assert newest == 2 and at.selectbox(key="recipe_run_pick").value == newest


def test_synth_page_shows_the_data_set_just_made():
    """After a second data set was made, the Pairs picker kept showing the first one (its counts, its pairs)."""
    at = app("synth.py")
    at.number_input(key="num_seeds").set_value(6).run()
    at.button(key="make_pairs").click().run()
    runner.worker(once=True)
    at.run()
    assert at.selectbox(key="pairs_set").value == "synth-math-pairs"
    at.text_input(key="synth_name").set_value("second").run()
    at.number_input(key="num_seeds").set_value(4).run()
    at.button(key="make_pairs").click().run()
    runner.worker(once=True)
    at.run()
    assert at.selectbox(key="pairs_set").value == "second-pairs"
    assert next(m.value for m in at.metric if m.label == "pairs") == "4"
    at.selectbox(key="pairs_set").set_value("synth-math-pairs").run()  # picking an older one still works
    assert next(m.value for m in at.metric if m.label == "pairs") == "6"


def test_synth_export_refusal_is_an_error_not_a_traceback():
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    from storage import db

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))
    with db.session() as s:  # the export's name is now held by another kind of data set
        rec = pipeline.get_dataset("synth-math-alignment")
        rec.kind, rec.provenance = "mix", {"for": "dpo", "sources": []}
        s.add(rec)
        s.commit()
    at = app("synth.py")
    at.button(key="export").click().run()
    assert not at.exception, at.exception
    assert any("Not exported" in e.value and "synth-math-alignment" in e.value for e in at.error)


def test_by_bin_figure_orders_length_bins_by_length_whichever_model_comes_first():
    from pages.figures import by_bin_figure

    rows = [{"model": "a", "bin": 2, "range": "20–40 words", "n": 3, "accuracy": 0.5},
            {"model": "b", "bin": 0, "range": "0–10 words", "n": 2, "accuracy": 1.0},
            {"model": "b", "bin": 1, "range": "10–20 words", "n": 2, "accuracy": 0.0},
            {"model": "b", "bin": 2, "range": "20–40 words", "n": 2, "accuracy": 0.5}]
    axis = by_bin_figure(rows, "accuracy").layout.xaxis
    assert axis.categoryorder == "array"
    assert list(axis.categoryarray) == ["0–10 words", "10–20 words", "20–40 words"]


def test_arena_multi_model_vote_starts_with_nothing_chosen(two_models, tokenizer_dir, tmp_path):
    """With 3–4 models the 'Best answer' radio preselected Model A: one careless click was a vote for position A."""
    from backend import arena
    from tests.conftest import make_llama

    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "c", seed=7, tie=False), "tiny-c")
    at = app("arena.py")
    at.multiselect(key="arena_models").set_value(["tiny", "tiny-b", "tiny-c"]).run()
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception, at.exception
    (radio,) = [r for r in at.radio if r.key and r.key.startswith("best_")]
    assert radio.value is None and at.button(key="vote_best").disabled
    radio.set_value("Model B").run()
    at.button(key="vote_best").click().run()
    from storage import db
    from storage.models import ChatTranscript

    votes = arena.votes()
    with db.session() as s:
        t = s.get(ChatTranscript, votes[0].transcript_id)
    winner = t.positions[1]  # Model B beat each of the other two
    assert len(votes) == 2 and all((v.model_a if v.outcome == "a" else v.model_b) == winner for v in votes)


def test_bar_figure_keeps_model_colours_and_never_shows_negative_scores():
    """All-zero accuracies were drawn on a −1…1 axis; a model's colour depended on which models had a score."""
    from pages.figures import PALETTE, bar_figure

    models = ["base", "merged", "sft"]
    zeros = bar_figure([{"model": "sft", "value": 0.0}, {"model": "base", "value": 0.0}], "math (accuracy)", models)
    assert list(zeros.data[0].x) == ["base", "sft"]  # the page's order
    assert list(zeros.data[0].marker.color) == [PALETTE[0], PALETTE[2]]  # sft is the third model's colour
    assert zeros.layout.yaxis.range[0] == 0 and zeros.layout.yaxis.range[1] > 0
    ppl = bar_figure([{"model": m, "value": v} for m, v in zip(models, [43.3, 42.6, 41.9])], "perplexity")
    assert ppl.layout.yaxis.range[0] == 0 and ppl.layout.yaxis.range[1] >= 43.3


def test_compare_with_one_model_explains_the_merge_instead_of_a_validation_error(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    at = app("compare.py")
    assert not [e.value for e in at.error if "models:" in e.value]  # was: "List should have at least 2 items"
    assert any("only one model is registered" in i.value for i in at.info)


def test_synth_failed_pair_is_not_drawn_as_deleted_nor_labelled_chosen(monkeypatch):
    """A pair whose rephrasing failed showed its whole original struck through (a diff against nothing) under
    'Original (rejected)' / 'Rephrased (chosen)', though it enters no data set."""
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    class Broken:
        name = "broken"

        def rephrase(self, seeds):
            return [ValueError("the reply is not in the QUESTION: … SOLUTION: … format") for _ in seeds]

    rules = pipeline.make_rephraser
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Broken())
    pipeline.run_synth_math(SynthMathSpec(num_seeds=2, name="broken"))
    at = app("synth.py")
    bodies = [m.value for m in at.markdown if m.value.startswith(("**Original**", "**Rephrased**"))]
    assert len(bodies) == 4
    assert not any("line-through" in b for b in bodies)
    assert not any("(chosen)" in b or "(rejected)" in b for b in bodies)
    assert sum("(no rephrasing)" in b for b in bodies) == 2
    monkeypatch.setattr(pipeline, "make_rephraser", rules)  # not monkeypatch.undo(): that drops the test workspace
    pipeline.run_synth_math(SynthMathSpec(num_seeds=2, name="good"))  # verified pairs keep their DPO roles
    at = app("synth.py")
    bodies = [m.value for m in at.markdown if m.value.startswith(("**Original**", "**Rephrased**"))]
    assert sum("(chosen)" in b for b in bodies) == 2 and sum("(rejected)" in b for b in bodies) == 2


def test_length_axis_labels_read_as_numbers_and_recovery_charts_name_their_job():
    from pages.figures import hallucination_length_figure, recovery_figure

    fig = hallucination_length_figure({"observed": [{"model": "a", "tokens": 30, "rate": 0.5, "n": 4}],
                                       "fitted": [{"model": "a", "tokens": 30, "rate": 0.4}]})
    axis = fig.layout.xaxis
    assert axis.type == "log" and "20" in axis.ticktext and "50" in axis.ticktext  # not plotly's "2 … 5"
    assert "job 7" in recovery_figure([(0, 3.0), (10, 2.5)], 2.4, "job 7 · cpt · up", "base model").layout.title.text
