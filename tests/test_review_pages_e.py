"""The Train and Evaluate pages offer what the spec and `python -m backend train` / `eval` offer: max rows per
source, a separate held-out set, keep checkpoints, the seed, gradient accumulation, the LR schedule, warmup and
weight decay (pages/train.py), and the generation batch and overlap threshold (pages/compare.py) were YAML or CLI
only. Each widget starts at the spec's default; the queued job and the saved YAML carry what was set."""

from __future__ import annotations

import shutil

import pytest
import yaml

from backend import data, registry, runner
from backend.specs import EvalSpec, SftSpec, load_spec
from backend.synth import pipeline
from tests import test_review_pages_c
from tests.test_pages import app

saved = test_review_pages_c.saved  # the download buttons' YAML, by file name

ADVANCED = {"grad_accum": 4, "lr_scheduler": "linear", "warmup_ratio": 0.1, "weight_decay": 0.01, "max_rows": 50,
            "seed": 7, "keep_checkpoints": True}
KEYS = {"seed": "train_seed"}  # the widget keys that are not the field's name


def widget(at, field: str):
    """The Train page's widget for a spec field."""
    kind = {"lr_scheduler": at.selectbox, "keep_checkpoints": at.checkbox}.get(field, at.number_input)
    return kind(key=KEYS.get(field, field))


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


@pytest.fixture
def held_out(tmp_path) -> str:
    """A registered SFT data set (a copy of the built-in Alpaca set), as a job names it."""
    path = tmp_path / "held.jsonl"
    shutil.copy(data.builtin_path("alpaca-mini"), path)
    pipeline.save_dataset("held", "sft", str(path), 200, {"from": "test"})
    return "dataset:held"


def test_train_page_starts_at_the_spec_defaults_and_sends_the_advanced_settings(tiny, held_out, saved,
                                                                                tmp_path):
    at = app("train.py")
    at.radio(key="kind").set_value("sft").run()
    defaults = {f: SftSpec.model_fields[f].default for f in [*ADVANCED, "eval_data"]}
    assert defaults == {"grad_accum": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.0, "weight_decay": 0.0,
                        "max_rows": None, "seed": 0, "keep_checkpoints": False, "eval_data": None}
    assert {f: widget(at, f).value for f in ADVANCED} == {f: defaults[f] for f in ADVANCED}
    assert at.text_input(key="eval_data").value == ""
    assert "dataset:held" in at.text_input(key="eval_data").help  # the registered sets are named
    assert SftSpec.model_fields["max_rows"].description in at.number_input(key="max_rows").help

    for f, v in ADVANCED.items():
        widget(at, f).set_value(v).run()
    at.text_input(key="eval_data").set_value(held_out).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert at.number_input(key="eval_fraction").disabled  # a held-out set replaces the share
    assert any(c.value.startswith("Held-out set: alpaca layout, 200 rows") for c in at.caption)
    at.button(key="launch").click().run()

    (job,) = runner.list_jobs()
    assert {f: job.spec[f] for f in ADVANCED} == ADVANCED
    assert job.spec["eval_data"] == {"source": "dataset:held", "weight": 1.0, "sample_by": "line"}
    text = saved["tiny-sft.yaml"]
    assert {f: yaml.safe_load(text)[f] for f in ADVANCED} == ADVANCED
    (tmp_path / "spec.yaml").write_text(text)
    assert load_spec(tmp_path / "spec.yaml") == SftSpec.model_validate(job.spec)  # the YAML re-loads as that spec


def test_a_held_out_set_that_cannot_be_read_is_named_and_holds_the_launch_back(tiny, tmp_path):
    at = app("train.py")
    at.text_input(key="eval_data").set_value(str(tmp_path / "missing.jsonl")).run()
    (err,) = [e.value for e in at.error]
    assert err.startswith(f"Held-out set {tmp_path / 'missing.jsonl'}: ") and "does not exist" in err
    assert at.button(key="launch").disabled


def test_evaluate_starts_at_the_spec_defaults_and_sends_batch_and_threshold(tiny, saved, tmp_path):
    at = app("compare.py")
    batch, threshold = at.number_input(key="eval_batch"), at.number_input(key="eval_overlap")
    assert (batch.value, threshold.value) == (EvalSpec.model_fields["batch_size"].default,
                                              EvalSpec.model_fields["overlap_threshold"].default) == (None, 0.3)
    assert threshold.help == EvalSpec.model_fields["overlap_threshold"].description
    assert not at.toggle(key="eval_fan_out").value  # one model: one job, the toggle as it was
    at.multiselect(key="eval_tasks").set_value(["perplexity"]).run()
    batch.set_value(4).run()
    at.number_input(key="eval_overlap").set_value(0.5).run()
    at.number_input(key="eval_ngram").set_value(6).run()
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception

    (job,) = runner.list_jobs()
    assert (job.spec["batch_size"], job.spec["overlap_threshold"], job.spec["ngram"]) == (4, 0.5, 6)
    text = saved["eval.yaml"]
    assert (yaml.safe_load(text)["batch_size"], yaml.safe_load(text)["overlap_threshold"]) == (4, 0.5)
    (tmp_path / "eval.yaml").write_text(text)
    assert load_spec(tmp_path / "eval.yaml") == EvalSpec.model_validate(job.spec)
