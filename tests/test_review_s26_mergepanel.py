"""A user's walk of the Compare page's merge form: choosing SLERP threw away the candidates picked (the widget's
`max_selections` changed with the method, so Streamlit reset it to its default pair); the default pair was often one
the merge refuses (a 30-layer base and its 32-layer up-scaled model), said only after the click; the candidates sat
in a third of the width, their names cut; and a merge of a model and its fine-tune was named "…-sft_Instruct-…"."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend import registry, runner
from backend.spec_base import distinct_tail
from backend.specs import MergeSpec
from tests.conftest import make_llama
from tests.test_pages import app

BASE = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def deep(tokenizer_dir, tmp_path_factory) -> Path:
    return make_llama(tokenizer_dir, tmp_path_factory.mktemp("deep"), layers=8)


def row(name: str, layers: int = 30, hidden: int = 576, parents: tuple = ()) -> SimpleNamespace:
    return SimpleNamespace(name=name, num_layers=layers, hidden_size=hidden, model_type="llama", parents=list(parents),
                           path=f"/models/{name}")


def register_copies(src: Path, tmp_path: Path, *names: str, parents: tuple = ()) -> None:
    for name in names:  # a folder each: two names of one folder are one model, which the merge refuses
        registry.register(shutil.copytree(src, tmp_path / name), name, "trained", parents=list(parents))


# ---- 2. the preselected pair is one the merge accepts ------------------------------------------------------------

def test_the_default_pair_is_the_newest_of_one_shape_else_none():
    from pages.compare_pick import merge_defaults  # was the page's own (pages/compare.py, a script)

    base, dus = row("base"), row("base-dus", 32, parents=("base",))
    assert merge_defaults([base, dus]) == []  # was ["base", "base-dus"]: 30 vs 32 layers, refused at the click
    sft = row("base-sft", parents=("base",))
    # no unrelated pair of one shape: the newest related one (the form warns of the ancestry), not base + dus
    assert merge_defaults([base, sft, dus]) == ["base", "base-sft"]
    other = row("base-other", parents=("base",))
    assert merge_defaults([base, sft, other, dus]) == ["base-sft", "base-other"]  # siblings, as SOLAR merges
    assert merge_defaults([row("a"), row("b", hidden=960)]) == []  # one depth, two widths: refused too
    assert merge_defaults([row("a"), row("b", 0, 0)]) == ["a", "b"]  # a shape not read: not compared, as the merge
    assert merge_defaults([row("a")]) == []
    # two names of one folder are one model, which the merge refuses: not offered (the page said so on opening)
    assert merge_defaults([row("a"), row("b"), SimpleNamespace(**{**vars(row("c")), "path": "/models/b"})]) == ["a", "c"]


def test_an_incompatible_pair_is_said_when_chosen_and_none_is_preselected(tiny_llama, deep):
    registry.import_folder(tiny_llama, "tiny")
    registry.register(deep, "tiny-dus", "upscaled", parents=["tiny"])
    at = app("compare.py")
    assert at.multiselect(key="merge_models").value == []  # were both: a pair the merge refuses
    assert not at.error
    at.multiselect(key="merge_models").set_value(["tiny", "tiny-dus"]).run()
    # before any click, in the runner's words, and the Merge button off
    assert [e.value for e in at.error] == ["tiny and tiny-dus cannot be merged: they have different layers or tensors "
                                           "(6 vs 8 layers). Choose other candidates."]
    assert at.button(key="merge").disabled and "(6 vs 8 layers)" in at.button(key="merge").help
    assert runner.list_jobs() == []


# ---- 1 and 3. the pick survives a change of method; SLERP's two are checked, not enforced by the widget ------------

def test_choosing_slerp_keeps_the_candidates_and_says_when_there_are_too_many(tiny_llama, tmp_path):
    register_copies(tiny_llama, tmp_path, "a", "b", "c")
    at = app("compare.py")
    at.multiselect(key="merge_models").set_value(["a", "b", "c"]).run()
    assert not at.error
    at.selectbox(key="merge_method").set_value("slerp").run()
    assert at.multiselect(key="merge_models").value == ["a", "b", "c"]  # was reset to the default pair
    assert [e.value for e in at.error] == ["SLERP merges exactly two models, and 3 are chosen: remove 1 of a, b, c, "
                                           "or choose another method to merge them all."]
    assert not [b for b in at.button if b.key == "merge"]  # nothing to merge until two are left
    at.multiselect(key="merge_models").set_value(["c", "a"]).run()
    assert not at.error
    assert next(t for t in at.text_input if t.key.startswith("merge_name_")).value == "c_a-slerp0.5"
    at.selectbox(key="merge_method").set_value("average").run()
    assert at.multiselect(key="merge_models").value == ["c", "a"]
    assert next(t for t in at.text_input if t.key.startswith("merge_name_")).value == "c_a-average-0.5-0.5"
    # a row of its own, not a third-width column: the names were cut and the second chip hidden
    panel = next(e for e in at.expander if e.label == "Merge candidates")
    assert "merge_models" in [getattr(child, "key", None) for child in panel.children.values()]


# ---- 4. a merge of a model and its fine-tune names both ------------------------------------------------------------

def test_a_candidate_that_starts_the_first_ones_name_is_kept_whole():
    assert distinct_tail(f"{BASE}-sft", BASE) == BASE  # was "Instruct", which read as another model
    assert distinct_tail(BASE, f"{BASE}-sft") == "sft"  # what the fine-tune adds, as before
    assert distinct_tail("m-dus-m8", "m-dus-m8-cpt") == "cpt"
    assert distinct_tail(f"{BASE}-sft", "SmolLM2-135M-Base") == "Base"  # shared words, neither the start of the other
    assert distinct_tail("m2-sft", "m") == "m"
    names = {tuple(models): MergeSpec(models=models, weights=[0.5, 0.5]).default_name()
             for models in ([f"{BASE}-sft", BASE], [BASE, f"{BASE}-sft"])}
    assert names == {(f"{BASE}-sft", BASE): f"{BASE}-sft_{BASE}-average-0.5-0.5",  # was "…-sft_Instruct-average-…"
                     (BASE, f"{BASE}-sft"): f"{BASE}_sft-average-0.5-0.5"}
    assert MergeSpec(models=[f"{BASE}-sft", BASE], method="slerp").default_name() == f"{BASE}-sft_{BASE}-slerp0.5"
    # too long even whole (past safe_name's 100): cut with a digest, as any long pair
    long = "x" * 60
    name = MergeSpec(models=[f"{long}-sft", long], method="slerp").default_name()
    assert len(name) <= 60 and name.endswith("-slerp0.5")


def test_the_page_names_a_merge_of_a_model_and_its_fine_tune_by_both(tiny_llama, tmp_path):
    register_copies(tiny_llama, tmp_path, BASE)
    register_copies(tiny_llama, tmp_path, f"{BASE}-sft", parents=(BASE,))
    at = app("compare.py")
    assert at.multiselect(key="merge_models").value == [BASE, f"{BASE}-sft"]  # related, of one shape: warned
    assert any("own ancestor" in w.value for w in at.warning)
    at.multiselect(key="merge_models").set_value([f"{BASE}-sft", BASE]).run()
    assert next(t for t in at.text_input if t.key.startswith("merge_name_")).value == \
        f"{BASE}-sft_{BASE}-average-0.5-0.5"
