"""Review s19 of a walk through the app in Chromium: the Models picker agrees with what it shows after a delete, a
push without a token is warned about, the Synth Export tab keeps the page above it, the Recipe preset follows the
picked run, the Jobs table says which seconds are which, a CPU job's peak memory is not called GPU memory, and the
Evaluate form picks the newest models."""

from __future__ import annotations

import pytest

from backend import registry
from tests.test_pages import app


@pytest.fixture
def two(tiny_llama):
    registry.import_folder(tiny_llama, "older")
    registry.import_folder(tiny_llama, "newer")


def test_delete_leaves_the_picker_on_the_model_shown(two):
    at = app("models.py")
    assert at.selectbox(key="model").value == "newer"
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert not at.exception
    picker = at.selectbox(key="model")
    assert list(picker.options) == ["older"]
    # the browser keeps a widget's old value unless the page sets it: the value is set in the session, so it is sent
    assert at.session_state["model"] == "older" and picker.value == "older"
    assert picker.proto.set_value and picker.proto.raw_value == "older"
    assert [s.value for s in at.subheader][0] == "older"
    assert any("Deleted newer." in s.value for s in at.success)


@pytest.mark.parametrize("token", [None, "hf_test"])
def test_push_form_warns_when_no_token_is_visible(tiny_llama, monkeypatch, token):
    import huggingface_hub

    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    at = app("models.py")
    warned = [w.value for w in at.warning if "No Hugging Face token" in w.value]
    if token is None:
        assert len(warned) == 1 and "HF_TOKEN" in warned[0] and "hf auth login" in warned[0]
    else:
        assert warned == []
    at.text_input(key="push_repo_tiny").input("me/tiny").run()
    assert not at.button(key="push_tiny").disabled  # a warning, not a refusal: the worker may hold a token


def _tabs_at(at) -> int:
    """Where the tabs sit on the page: the browser opens the first tab when they move (a block at another place)."""
    (where,) = [i for i, node in at.main.children.items() if getattr(node, "type", None) == "tab_container"]
    return where


def test_the_export_tab_keeps_its_place_when_the_stale_warning_goes():
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))
    pipeline.export("synth-math-pairs")
    with pipeline.db.session() as s:
        first = s.exec(pipeline.select(pipeline.SynthPair.id).order_by(pipeline.SynthPair.id)).first()
    pipeline.reject_by_hand(first)
    at = app("synth.py")
    assert any("exported before" in w.value for w in at.warning)
    before = _tabs_at(at)
    at.button(key="export").click().run()
    assert not at.exception
    assert not any("exported before" in w.value for w in at.warning)
    assert _tabs_at(at) == before  # the same place: the user stays on Export
    export_tab = at.tabs[2]
    assert export_tab.label == "Export"
    assert [s.value for s in export_tab.success if "3 pairs →" in s.value]


def test_the_preset_picker_names_the_picked_run_s_preset(tiny_llama):
    import yaml

    from backend import recipe

    smoke = recipe.preset("smoke", str(tiny_llama))
    (first,) = recipe.run_recipe(smoke)  # queued only
    (mine,) = recipe.run_recipe(yaml.safe_dump({**yaml.safe_load(recipe.preset("smoke", str(tiny_llama), m=1)),
                                                "name": "my-try"}))
    at = app("recipe.py")
    assert at.selectbox(key="recipe_run_pick").value == mine
    # a recipe of its own: no preset named (solar-mini was, and Load preset replaced the run's recipe with it)
    assert at.selectbox(key="recipe_preset").value is None and at.button(key="recipe_load").disabled
    at.selectbox(key="recipe_run_pick").select(first).run()
    assert "name: smoke" in at.text_area(key="recipe_yaml").value  # the editor follows the run picked
    assert at.selectbox(key="recipe_preset").value == "smoke" and not at.button(key="recipe_load").disabled


def test_the_preset_picker_opens_on_solar_mini_without_runs():
    at = app("recipe.py")
    assert at.selectbox(key="recipe_preset").value == "solar-mini"
    assert "name: solar-mini" in at.text_area(key="recipe_yaml").value


def test_the_jobs_table_says_which_seconds_are_which(tiny_llama):
    import json

    from backend import runner
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    up = runner.submit(UpscaleSpec(base="tiny", m=2, name="tiny-dus")).id
    runner._update(up, status="succeeded", progress=1.0, result={"model": "tiny-dus", "seconds": 150.0},
                   message="done: model tiny-dus, seconds 150.0")
    at = app("jobs.py")
    table = at.dataframe[0]
    # the message says the work's own time; the column (its data still "seconds") is headed and explained as wall time
    assert table.value.set_index("id").loc[up, "message"] == "done: model tiny-dus, work took 2 min 30 s"
    shown = json.loads(table.proto.columns)["seconds"]
    assert shown["label"] == "run s" and "start-up included" in shown["help"] and "work took" in shown["help"]


@pytest.mark.parametrize(("device", "said"), [
    (None, "peak memory 589 MiB (GPU or CPU RAM)"), ("cpu", "peak RAM 589 MiB"), ("cuda", "peak GPU memory 589 MiB")])
def test_peak_memory_is_not_called_gpu_memory_without_a_gpu(device, said):
    from pages.common import result_words

    result = {"global_step": 2, "peak_memory_gib": 589 / 1024, **({"device": device} if device else {})}
    assert result_words(result) == f"2 steps, {said}"  # the device is said by the peak's words, not again
    assert "GPU" not in result_words({"peak_memory_gib": 0.5, "device": "cpu"})


def test_evaluate_preselects_the_two_newest_models_without_scores(tiny_llama):
    for name in ("builtin-ish", "a", "b"):
        registry.import_folder(tiny_llama, name)
    at = app("compare.py")
    ms = at.multiselect(key="eval_models")
    assert ms.value == ["a", "b"] and "two newest" in ms.help  # was all three, the oldest (the built-in) too


def test_an_evaluations_result_whose_device_is_a_dict_is_said():
    """An evaluation's result names a device per model ({"tiny": "CPU: float32"}): the Jobs page raised "unhashable
    type: 'dict'" on it, looking it up among the training jobs' "cpu"/"cuda"."""
    from pages.common import result_words

    said = result_words({"models": 1, "device": {"tiny": "CPU: float32"}, "seconds": 12.5})
    assert said == "models 1, work took 12 s"
    assert result_words({"device": "cuda", "peak_memory_gib": 2.0}) == "peak GPU memory 2 GiB"
