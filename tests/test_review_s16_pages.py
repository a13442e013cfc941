"""What a walk through the pages in a browser found misleading, held on the pages: the push form's button and
refusal above the card preview, the Jobs table's columns, a deleted model named as such on the Models, Arena and
Merge views, the layer map's legend, the Synthetic math page's export notes, and the merge form's ancestors."""

from __future__ import annotations

import json

import pytest

from backend import registry, runner
from backend.merge import run_merge
from backend.specs import CptSpec, DataSource, MergeSpec
from storage import db
from storage.models import EvalScore
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def in_order(node):
    """Every element under `node` in the order the page draws them (AppTest keeps each block's children by index)."""
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for i in sorted(children):
        yield from in_order(children[i])


def position(at, match) -> int:
    return next(i for i, el in enumerate(in_order(at.main)) if match(el))


# ---- 1. Models: the push form's button, refusal and job sit under the repo box, the card preview below them ------

def test_push_form_keeps_its_button_and_refusal_above_the_card_preview(tiny):
    at = app("models.py")
    at.toggle(key="push_card_tiny").set_value(True).run()
    at.text_input(key="push_repo_tiny").set_value("no repo id").run()
    assert not at.exception
    refusal = position(at, lambda el: el.type == "error" and "owner/name" in getattr(el, "value", ""))
    button = position(at, lambda el: getattr(el, "key", None) == "push_tiny")
    card = position(at, lambda el: el.type == "markdown" and "How it was made" in el.value)
    # was: card (about 2,500 px with its spec) → refusal → greyed Push, out of sight of the box being typed in
    assert refusal < button < card
    assert at.button(key="push_tiny").disabled
    assert not any("no repo id" in m.value for m in at.markdown)  # the refused id is not the card's title
    assert any(m.value.startswith("#### tiny\n") for m in at.markdown)  # the placeholder's name instead


# ---- 2. Jobs: an output name of 28 characters and the kind synth-math are not clipped by their columns ------------

def test_jobs_table_columns_hold_a_cut_name_and_the_longest_kind(tiny):
    runner.submit(CptSpec(model="tiny", name="SmolLM2-135M-Instruct-dus-m8-cpt",
                          data=[DataSource(source="builtin:facts-corpus")]))
    at = app("jobs.py")
    table = at.dataframe[0].value
    assert table["output"][0] == "SmolLM2-135M-…uct-dus-m8-cpt"  # short_name's 28 characters: ~197 px of text
    config = json.loads(at.dataframe[0].proto.columns)
    widths = {c: config[c]["width"] for c in table.columns}
    assert widths["output"] >= 210  # was 200: shown as "SmolLM2-135M-…uct-dus-m8-cp", a model that does not exist
    assert widths["kind"] >= 80  # was 60: "synth-math" read "synth-ma"
    assert widths["status"] >= 80  # "interrupted"
    assert sum(widths.values()) <= 820  # still beside the sidebar of a 1280 px window


# ---- 3. a model deleted elsewhere while a page shows it: said, and a question typed to it is not sent elsewhere ---

def test_models_page_says_the_shown_model_was_deleted_and_does_not_send_its_question_on(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-b")
    at = app("models.py")
    assert at.selectbox(key="model").value == "tiny-b"
    registry.delete("tiny-b")  # another tab, or `models delete tiny-b`
    at.chat_input(key="chat_input").set_value("hello").run()
    assert not at.exception
    assert at.selectbox(key="model").value == "tiny"
    # was: nothing said, and "hello" was answered by tiny, the model shown in its place
    assert any("tiny-b was deleted since this page showed it" in w.value for w in at.warning), at.warning
    assert any(w.value.startswith("Not sent: tiny-b") for w in at.warning)
    assert not at.chat_message and not at.session_state["chat"].get("tiny")
    at.chat_input(key="chat_input").set_value("hello").run()  # typed again, to the model shown: answered
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert not any("tiny-b" in w.value for w in at.warning)  # said once


def test_models_page_says_its_own_deletion_as_done(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-b")
    at = app("models.py")
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert registry.get("tiny-b") is None
    assert [s.value for s in at.success] == ["Deleted tiny-b."]
    assert not any("tiny-b" in w.value for w in at.warning)  # not "deleted since this page showed it"


def test_arena_says_a_chosen_model_was_deleted(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-b")
    registry.import_folder(tiny_llama, "tiny-c")
    at = app("arena.py")
    assert at.multiselect(key="arena_models").value == ["tiny-b", "tiny-c"]
    registry.delete("tiny-c")
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception
    assert at.multiselect(key="arena_models").value == ["tiny-b"]
    # was only "Choose at least two models.": the choice had lost tiny-c without a word
    assert any(w.value.startswith("tiny-c was deleted since you chose it") for w in at.warning), at.warning
    assert any(w.value == "Choose at least two models." for w in at.warning)


# ---- 4. Compare: a merge's candidate with no scores is named under the merge view, not silently missing ----------

def test_merge_view_names_the_candidates_it_cannot_show(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-b")
    registry.import_folder(tiny_llama, "tiny-c")
    run_merge(MergeSpec(models=["tiny-b", "tiny-c"], method="slerp", t=0.5, name="mix"))
    with db.session() as s:  # the merge and one candidate evaluated, the other not
        for m in ("tiny-b", "mix"):
            s.add(EvalScore(model=m, task="perplexity", metric="perplexity", value=40.0, n=8))
        s.commit()
    at = app("compare.py")
    assert not at.exception, at.exception
    assert sorted([list(d.value["model"]) for d in at.dataframe][-1]) == ["mix", "tiny-b"]  # the merge view
    # was: nothing said; the merge sat beside one of its two candidates
    assert "Not in this table: `tiny-c`, no scores yet (Evaluate above)." in [c.value for c in at.caption]
    registry.delete("tiny-c", force=True)
    at.run()
    assert "Not in this table: `tiny-c` (deleted)." in [c.value for c in at.caption]


# ---- 5. Build: the layer map says what its grey and green cells are ----------------------------------------------

def test_layer_map_says_what_grey_and_green_cells_are(tiny):
    from backend.specs import UpscaleSpec
    from backend.upscale import plan_upscale
    from pages.figures import layer_map_figure

    dus = layer_map_figure(plan_upscale(UpscaleSpec(base="tiny", m=2))).layout.title.text
    assert "grey: layers that row leaves out" in dus and "green" not in dus  # was no title: no key to the colours
    pro = layer_map_figure(plan_upscale(UpscaleSpec(base="tiny", method="llama-pro", groups=2))).layout.title.text
    assert "green: added identity block" in pro


# ---- 6. Synthetic math: a pair rejected by hand after the export says the exported files still hold it ------------

def test_synth_page_says_the_export_predates_a_rejection_by_hand():
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))  # registers the pairs and their export (4 rows each)
    at = app("synth.py")
    assert not any("exported before" in w.value for w in at.warning)
    next(b for b in at.button if b.key and b.key.startswith("reject_")).click().run()
    # was: "rejected by hand 1" and nothing else, while the files training reads still held the pair
    (said,) = [w.value for w in at.warning if "exported before" in w.value]
    assert "`synth-math-instruct` and `synth-math-alignment` hold 4 pairs" in said and "would write 3" in said
    at.button(key="export").click().run()
    assert not at.exception, at.exception
    assert not any("exported before" in w.value for w in at.warning)  # said again only while it is so
    assert any(s.value.startswith("3 pairs → `synth-math-instruct`") for s in at.success)


def test_synth_page_does_not_promise_a_re_export_a_trained_model_blocks(tiny, tiny_llama, tmp_path):
    import shutil

    from backend.specs import SftSpec, SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))
    spec = SftSpec(model="tiny", name="tiny-sft", max_steps=1, data=[DataSource(source="dataset:synth-math-instruct")])
    # registered as training.run_train registers what it trained (the spec is the recipe, which export() reads): the
    # training itself, a job process with accelerate and the trainer (~15 s), made nothing else this test reads
    registry.register(shutil.copytree(tiny_llama, tmp_path / "tiny-sft"), "tiny-sft", "trained", parents=["tiny"],
                      source=spec.kind, recipe=spec.model_dump(mode="json"))
    at = app("synth.py")
    next(b for b in at.button if b.key and b.key.startswith("reject_")).click().run()
    (said,) = [w.value for w in at.warning if "exported before" in w.value]
    assert "make them again on the Export tab" not in said  # export() refuses: a model was trained on them
    assert "`tiny-sft` was trained on them as they are" in said


# ---- 7. Compare: the merge form does not preselect a model and its grandparent, and says so when chosen -----------

def test_merge_form_leaves_out_ancestors_and_warns_of_them(tiny, tiny_llama, tmp_path):
    import shutil

    for name in ("cpt", "sft", "other", "m"):
        shutil.copytree(tiny_llama, tmp_path / name)
    registry.register(tmp_path / "cpt", "cpt", "trained", parents=["tiny"])
    registry.register(tmp_path / "other", "other", "trained", parents=["tiny"])
    registry.register(tmp_path / "sft", "sft", "trained", parents=["cpt"])
    registry.register(tmp_path / "m", "m", "merged", parents=["sft", "other"])
    at = app("compare.py")
    # was ["cpt", "m"]: only a parent counted, so the merge and its grandparent were offered as candidates
    assert at.multiselect(key="merge_models").value == ["other", "sft"]
    assert not any("own ancestor" in w.value for w in at.warning)
    at.multiselect(key="merge_models").set_value(["cpt", "m"]).run()
    assert any(w.value.startswith("m is made from cpt") and "own ancestor" in w.value for w in at.warning)


# ---- 8. Arena: Regenerate after one of the round's models was deleted says so instead of a traceback -------------

def test_arena_regenerate_with_a_deleted_model_says_so(tiny, tiny_llama):
    registry.import_folder(tiny_llama, "tiny-b")
    at = app("arena.py")  # a round of tiny and tiny-b
    registry.import_folder(tiny_llama, "tiny-c")  # two models stay registered: the page stays open
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception
    round_id = at.session_state["arena_round"]
    registry.delete("tiny-b")
    at.button(key="regenerate").click().run()
    # was AttributeError: 'NoneType' object has no attribute 'path', as a traceback
    assert not at.exception, at.exception
    assert any(e.value.startswith("Not run: tiny-b was deleted since") for e in at.error)
    assert at.session_state["arena_round"] == round_id  # the round shown stays, its answers still readable
