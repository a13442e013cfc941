"""The training path read end to end (session 17): resume, metrics.jsonl, the reference model. Each test failed
before its fix: a run folder's checkpoints were resumed under a changed spec without a word (the checkpoint's
learning rate replaced the spec's), a resumed run's metrics.jsonl held the steps past its checkpoint twice, and a
reference_model that nothing would score was loaded, checked and left unused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from backend import data, memplan, perf, registry, train_entry, training
from backend.specs import DataSource, DpoSpec, PerfOptions, SftSpec
from backend.train_entry import MetricsCallback
from storage import db
from tests.conftest import load_state


@pytest.fixture
def tiny(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    return "tiny"


def _sft(name: str, **kw) -> SftSpec:
    return SftSpec(model="tiny", name=name, **{
        "data": [DataSource(source="builtin:alpaca-mini")], "max_steps": 4, "save_steps": 2, "keep_checkpoints": True,
        "batch_size": 2, "max_length": 32, "max_rows": 16, "eval_fraction": 0.0, "learning_rate": 1e-2,
        "lr_scheduler": "constant", **kw})


def _logged(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _folder_with_checkpoint(spec, name: str, step: int):
    """workspace/runs/NAME as a run of `spec` leaves it when killed after its checkpoint at `step`."""
    run = db.workspace() / "runs" / name
    (run / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (run / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    return run


@pytest.mark.parametrize("change, said", [
    ({"learning_rate": 1e-3}, "learning_rate 0.01 -> 0.001"),
    ({"data": [DataSource(source="builtin:alpaca-mini", weight=2.0)]}, "data [{"),
    ({"perf": {"optimizer": "adamw"}}, 'perf.optimizer "auto" -> "adamw"'),
    ({"lora": {"r": 4}}, "lora null -> {"),
])
def test_a_run_folder_resumed_under_another_spec_is_refused_naming_the_change(tiny, monkeypatch, change, said):
    """Before: resumed without a word; a learning rate of 1e-3 trained at the checkpoint's 1e-2 (the Trainer loads
    the scheduler's base learning rate from the checkpoint), other data had the old run's count of batches skipped."""
    run = _folder_with_checkpoint(_sft("a"), "a", 2)
    monkeypatch.setenv("DUS_RUN_NAME", "a")
    with pytest.raises(training.TrainingError, match="another spec") as exc:
        training.run_train(_sft("a", **change))
    assert said in str(exc.value) and "--run-name" in str(exc.value)
    assert json.loads((run / "spec.json").read_text())["spec"] == _sft("a").model_dump(mode="json")  # kept
    with pytest.raises(training.TrainingError, match="max_steps 1, but .* holds checkpoint-2, already past it"):
        training.run_train(_sft("a", max_steps=1))
    assert registry.get("a") is None


def test_a_resumed_run_equals_the_run_unstopped_and_a_longer_one_logs_each_step_once(tiny, monkeypatch):
    """One 4-step run ("whole": logged every 3 steps, a checkpoint every 2, a constant learning rate) resumed from
    its checkpoint-2 twice (sessions 12, 13 and 17 each trained a `whole` of their own for this):
    - to step 4, in a run folder holding only that checkpoint (killed before step 3 ended): the same weights and the
      same train loss as the run unstopped, in its card too. Before: the loss of steps 3-4 alone (session 12); then,
      logged every 3 steps, the checkpoint's history held no loss and the resumed loss left steps 1-2 out (5.3242,
      not 5.3725: session 13).
    - to step 6 (--run-name: its folder as the killed run left it, metrics.jsonl holding steps 3 and 4 it logged
      past the checkpoint): the start says the schedule ends later, and metrics.jsonl holds each logged step once.
      Before: steps 3 and 4 were there twice ([1, 2, 3, 4, 3, 4, 5, 6] logging every step: session 17)."""
    monkeypatch.setenv("DUS_RUN_NAME", "whole")
    whole = training.run_train(_sft("whole", logging_steps=3))
    runs = db.workspace() / "runs"
    checkpoint = runs / "whole" / "checkpoints" / "checkpoint-2"

    shutil.copytree(checkpoint, runs / "part" / "checkpoints" / "checkpoint-2")
    monkeypatch.setenv("DUS_RUN_NAME", "part")
    part = training.run_train(_sft("part", logging_steps=3))
    assert (whole["resumed_from"], part["resumed_from"], part["global_step"]) == (None, "checkpoint-2", 4)
    a, b = load_state(registry.get("whole").path), load_state(registry.get("part").path)
    assert set(a) == set(b) and a and all(torch.equal(a[k], b[k]) for k in a)  # the same weights...
    assert part["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-4)  # ...the same loss
    assert f"train loss {whole['train_loss']}" in (db.models_dir() / "part" / "README.md").read_text()

    shutil.copytree(checkpoint, runs / "longer" / "checkpoints" / "checkpoint-2")
    for f in ("spec.json", "metrics.jsonl"):  # as the killed run left them: it had logged steps 3 and 4
        shutil.copy(runs / "whole" / f, runs / "longer" / f)
    monkeypatch.setenv("DUS_RUN_NAME", "longer")
    said = []
    out = training.run_train(_sft("longer", max_steps=6, logging_steps=3), progress=lambda f, m: said.append(m))
    assert out["resumed_from"] == "checkpoint-2" and out["global_step"] == 6
    assert "resuming from checkpoint-2 to max_steps 6 (was 4: its learning-rate schedule now ends at step 6)" \
        in said[0]
    rows = _logged(runs / "longer")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 6]  # 5: neither a 3rd step nor a save
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert {r["learning_rate"] for r in rows if "loss" in r} == {1e-2}
    unstopped = {r["step"]: r["loss"] for r in _logged(runs / "whole") if "loss" in r}
    assert sorted(unstopped) == [1, 2, 3, 4]  # every step of it logged, every 3 steps asked (each save logs too)
    assert [r["loss"] for r in rows if "loss" in r][:4] == pytest.approx([unstopped[s] for s in (1, 2, 3, 4)],
                                                                           abs=1e-6)


def test_forget_after_keeps_the_steps_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    cb = MetricsCallback(tmp_path, 10, None)
    for step in (0, 1, 2, 3):
        cb.record(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # the process was killed while writing
    cb.forget_after(2)
    assert [r["step"] for r in _logged(tmp_path)] == [0, 1, 2]
    cb.forget_after(-1)  # a run that starts over
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_a_reference_model_that_nothing_would_score_is_refused(tiny):
    """reference_model is scored on the held-out set at step 0 of cpt and sft (the recovery view). Before: on a DPO
    spec (whose reference is its start model) or with nothing held out, it was loaded and checked, then unused."""
    dpo = DpoSpec(model="tiny", data=[DataSource(source="builtin:prefs-mini")], reference_model="tiny", name="d")
    with pytest.raises(training.TrainingError, match=r"reference_model 'tiny': DPO compares the policy with the model "
                                                     r"it starts from \(tiny\)"):
        training.check_inputs(dpo)
    with pytest.raises(training.TrainingError, match="holds none out .*set eval_fraction or eval_data"):
        training.check_inputs(_sft("s", reference_model="tiny"))
    assert training.check_inputs(_sft("s", reference_model="tiny", eval_fraction=0.1))[2] == \
        str(registry.get("tiny").path)


def test_sft_on_cuda_without_a_flash_kernel_keeps_each_conversation_whole(tiny_llama, tmp_path):
    """SFT's auto packing on CUDA without flash-attn (torch alone) was "wrapped": the conversations run together and
    cut every max_length tokens, so a training sequence began mid-conversation ('ompute the result.\n\n4 times
    3<|im_end|>') and learned a reply without its question, attending to the conversation before it. Now unpacked
    there (trl's default); padding-free bfd with a flash kernel; and packed as asked when the spec says so."""
    import dataclasses

    from transformers import AutoTokenizer

    spec = SftSpec(model="x", data=[DataSource(source="builtin:alpaca-mini")], max_length=64, max_steps=1,
                   eval_fraction=0.0)
    torch_only = perf.resolve(spec, True, installed=lambda module: module != "flash_attn")
    assert (torch_only.packing, torch_only.padding_free) == (False, False)
    assert "cuts conversations" in torch_only.reasons["packing"]
    assert "perf: packing = off (auto for sft: off without a flash kernel" in "\n".join(torch_only.lines())
    flash = perf.resolve(spec, True, installed=lambda module: True)
    assert (flash.packing, flash.packing_strategy, flash.padding_free) == (True, "bfd", True)
    asked = perf.resolve(spec.model_copy(update={"packing": True}), True, installed=lambda module: False)
    assert (asked.packing, asked.packing_strategy) == (True, "wrapped")
    wrapped = perf.resolve(spec.model_copy(update={"perf": PerfOptions(packing_strategy="wrapped")}), True,
                           installed=lambda module: False)
    assert (wrapped.packing, wrapped.packing_strategy) == (True, "wrapped")  # a strategy asked for: packed
    assert perf.resolve(spec, False).packing is False  # the CPU: as before
    # what the trainer is handed with the torch-only choice (replayed on the CPU): one whole conversation a row
    rows, _ = data.prepare("builtin:alpaca-mini", "sft", max_rows=8)
    on_cpu = dataclasses.replace(perf.resolve(spec, False), packing=torch_only.packing,
                                 packing_strategy=torch_only.packing_strategy, padding_free=torch_only.padding_free)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    trainer = train_entry.build_trainer(spec, train_entry.load_model(str(tiny_llama)), None, tok,
                                        train_entry.make_config(spec, tmp_path / "run", False, on_cpu), rows, None,
                                        [])
    texts = [tok.decode(r["input_ids"]) for r in trainer.train_dataset]
    assert len(texts) == 8 and all(t.startswith("<|im_start|>user\n") and t.count("<|im_start|>user") == 1
                                   for t in texts), texts
    # the memory plan counts what the job runs: unpacked rows, padded (this machine has no flash-attn)
    assert memplan.setup_for_spec(spec, "cuda").padded is True


def test_mfu_counts_no_weight_gradient_for_the_frozen_base_of_lora(tiny_llama, tmp_path):
    """6·N per token is forward 2N + backward 2N (inputs' gradients) + 2N (weights' gradients); LoRA's frozen base
    has no weight gradient: 4·N + 2·adapters (+ attention). Before: 6·N, and a LoRA run's MFU read 1.5× too high."""
    from transformers import AutoTokenizer

    from backend.specs import LoraSpec

    rows, _ = data.prepare("builtin:alpaca-mini", "sft", max_rows=4)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    attention = 12 * 6 * 32 * 64  # layers × hidden × max_length
    flops = {}
    for lora in (None, LoraSpec(r=4)):
        spec = SftSpec(model="x", data=[DataSource(source="builtin:alpaca-mini")], max_length=64, lora=lora)
        args = train_entry.make_config(spec, tmp_path / str(bool(lora)), False, perf.resolve(spec, False))
        trainer = train_entry.build_trainer(spec, train_entry.load_model(str(tiny_llama)), None, tok, args, rows,
                                            None, [])
        flops[bool(lora)] = train_entry.model_flops_per_token(spec, trainer)
    base = train_entry.load_model(str(tiny_llama)).num_parameters()  # tied: the embedding is also the LM head
    adapters = memplan.load_shape(tiny_llama).lora_params(4)
    assert flops[False] == 6 * base + attention
    assert flops[True] == 4 * (base + adapters) + 2 * adapters + attention


def test_a_spec_json_from_before_a_field_was_added_resumes(workspace):
    """The comparison fills in the defaults of fields added since the killed run wrote its spec.json: an upgrade
    between the kill and the resume is not a changed spec."""
    spec = _sft("a")
    run = _folder_with_checkpoint(spec, "a", 2)
    old = spec.model_dump(mode="json")
    for d in old["data"]:
        del d["sample_by"]
    del old["perf"], old["completion_only_loss"]
    (run / "spec.json").write_text(json.dumps({"spec": old}))
    assert training.check_resume(spec, run) == ""
    assert training.check_resume(spec.model_copy(update={"max_steps": 8}), run).startswith(" to max_steps 8 (was 4")
    with pytest.raises(training.TrainingError, match="seed 0 -> 1"):
        training.check_resume(spec.model_copy(update={"seed": 1}), run)


def test_a_resume_on_another_number_of_processes_is_said_not_refused(tiny, tmp_path):
    """num_processes was refused while the same change made through accelerate_config passed without a word: a run
    resumed on other hardware (a node lost) may change either, and the start line says each step's rows change."""
    run = _folder_with_checkpoint(_sft("w"), "w", 2)
    assert training.check_resume(_sft("w", num_processes=4), run) == (
        " (num_processes 1 -> 4: each step now sees the rows of the new number of processes (batch_size x gradient "
        "accumulation x processes))")
    cfg = tmp_path / "ddp4.yaml"
    cfg.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    note = training.check_resume(_sft("w", accelerate_config=str(cfg), max_steps=9), run)
    assert note.startswith(" to max_steps 9 (was 4: ") and f'accelerate_config null -> "{cfg}"' in note
    assert training.check_resume(_sft("w"), run) == ""
