"""Training jobs end to end on a tiny model: trl through accelerate launch, registered with lineage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from backend import registry
from backend.specs import CptSpec, DataSource, DpoSpec, LoraSpec, SftSpec, UpscaleSpec
from backend.training import run_train
from backend.upscale import run_upscale
from tests.conftest import load_state

FAST = dict(max_steps=6, save_steps=3, eval_steps=3, batch_size=2, max_length=64, max_rows=40)


def metrics_of(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def changed(a: Path, b: Path) -> int:
    sa, sb = load_state(a), load_state(b)
    assert sa.keys() == sb.keys()
    return sum(not torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_sft_trains_and_registers_with_lineage(tiny, tiny_llama):
    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini"),
                                       DataSource(source="builtin:orca-mini", weight=0.5)],
                   learning_rate=1e-3, name="tiny-sft", **FAST)
    result = run_train(spec)
    rec = registry.get("tiny-sft")
    assert rec.kind == "trained" and rec.parents == ["tiny"] and rec.recipe["data"][1]["weight"] == 0.5
    assert changed(tiny_llama, Path(rec.path)) > 10  # full fine-tuning moved the weights
    losses = [m["loss"] for m in metrics_of(result["run_dir"]) if "loss" in m]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert result["global_step"] == 6 and result["world_size"] == 1
    assert (Path(rec.path) / "tokenizer.json").exists() and "alpaca-mini" in (Path(rec.path) / "README.md").read_text()
    # a finished run keeps its metrics but not its checkpoints (weights + optimizer states: ~3× the model)
    assert not (Path(result["run_dir"]) / "checkpoints").exists() and (Path(result["run_dir"]) / "metrics.jsonl").exists()


# DPO's first loss (ln 2: the reference is the start model), its logged rewards and its moved weights are checked
# on tests/test_train_perf.py's DPO run without precomputed reference log-probs (a test and a run of its own here).


def test_cpt_on_an_upscaled_model_records_the_recovery(tiny):
    run_upscale(UpscaleSpec(base="tiny", m=2, name="tiny-dus"))
    result = run_train(CptSpec(model="tiny-dus", data=[DataSource(source="builtin:facts-corpus")],
                               learning_rate=3e-3, name="tiny-dus-cpt", **{**FAST, "max_steps": 12}))
    rows = metrics_of(result["run_dir"])
    step0 = {k: v for m in rows if m["step"] == 0 for k, v in m.items()}
    # the base (the up-scaled model's parent) is scored on the same held-out text as the reference line
    assert "reference_eval_loss" in step0 and "eval_loss" in step0
    final = [m["eval_loss"] for m in rows if "eval_loss" in m][-1]
    assert final < step0["eval_loss"]  # continued pretraining lowers the held-out loss
    assert registry.get("tiny-dus-cpt").parents == ["tiny-dus"] and registry.get("tiny-dus-cpt").num_layers == 8


def test_lora_is_merged_into_plain_weights_and_keep_checkpoints_keeps_them(tiny, tiny_llama):
    # keep_checkpoints had a test (and a training run) of its own
    result = run_train(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], learning_rate=5e-3,
                               lora=LoraSpec(r=4, alpha=8), name="tiny-lora", keep_checkpoints=True, **FAST))
    assert sorted(p.name for p in (Path(result["run_dir"]) / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-3", "checkpoint-6"]
    out = Path(result["path"])
    assert not (out / "adapter_config.json").exists()
    state = load_state(out)
    assert not any("lora" in k for k in state)
    assert set(state) == set(load_state(tiny_llama))
    assert changed(tiny_llama, out) > 0


def test_accelerate_launch_with_two_cpu_processes(tiny, tiny_llama):
    result = run_train(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], learning_rate=1e-3,
                               num_processes=2, name="tiny-ddp", **FAST))
    assert result["world_size"] == 2 and result["global_step"] == 6
    assert changed(tiny_llama, Path(result["path"])) > 10


@pytest.mark.parametrize("content, message", [
    ('{"instruction": "a", "output": "b"}\n{"broken json\n', "bad.jsonl, line 2, column 2: not valid JSON"),
    ('{"question": "q", "answer": "a"}\n', "fit no layout usable for sft"),
])
def test_bad_data_fails_before_launch_and_registers_nothing(tiny, tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(ValueError, match=message):
        run_train(SftSpec(model="tiny", data=[DataSource(source=str(bad))], name="never", **FAST))
    assert registry.get("never") is None


def test_dpo_on_sft_data_names_the_missing_columns(tiny):
    with pytest.raises(ValueError, match=r"preference: chosen, rejected \(missing chosen, rejected\)"):
        run_train(DpoSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], **FAST))


def test_a_checkpoint_cut_off_by_a_kill_is_not_resumed_from(tmp_path):
    from backend.training import complete_checkpoints

    for step, complete in ((5, True), (10, True), (15, False)):
        ckpt = tmp_path / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"x")
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10"]
    assert not (tmp_path / "checkpoints" / "checkpoint-15").exists()


def test_cpt_on_an_upscaled_model_whose_base_was_deleted_has_no_reference_line(tiny):
    from backend.training import check_inputs

    run_upscale(UpscaleSpec(base="tiny", m=2, name="tiny-dus"))
    spec = CptSpec(model="tiny-dus", data=[DataSource(source="builtin:facts-corpus")], **FAST)
    assert check_inputs(spec)[2] == str(registry.get("tiny").path)
    registry.delete("tiny", force=True)
    assert check_inputs(spec)[2] is None  # trainable still; before, "neither a registered model" failed the job
