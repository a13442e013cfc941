"""The training path read again (session 18): a resume killed after the final evaluation, DPO's FLOPs, trl's token
count across a resume. Each test failed before its fix: a run whose last step is not an eval step logged its final
evaluation twice at that step (once more when killed then and resumed), DPO's `mfu` counted the policy alone (no
reference forward, no precompute pass), and trl's `num_tokens` started again at 0 after a resume.

The runs are train_entry.main in this process (what `accelerate launch` runs on one CPU process), to stay fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from backend import data, perf, runner, train_entry
from backend.specs import DataSource, DpoSpec, LoraSpec, SftSpec
from backend.train_entry import MetricsCallback
from storage import db


def _sft(**kw) -> SftSpec:
    return SftSpec(model="tiny", name="s", **{
        "data": [DataSource(source="builtin:alpaca-mini")], "max_steps": 4, "save_steps": 2, "eval_steps": 3,
        "keep_checkpoints": True, "batch_size": 2, "max_length": 32, "max_rows": 24, "eval_fraction": 0.2,
        "learning_rate": 1e-2, "lr_scheduler": "constant", **kw})


def _job() -> int:
    """A running training job's row, for the metric rows a run writes beside metrics.jsonl."""
    from storage.models import Job

    with db.session() as s:
        job = Job(kind="sft", status="running")
        s.add(job)
        s.commit()
        return job.id


def _run_folder(name: str, spec, model) -> Path:
    run = db.workspace() / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"), "model_path": str(model),
                                               "reference_path": None, "name": name}))
    return run


def _logged(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _killed_copy(whole, name: str, step: int, model, spec):
    """A run folder as `whole`'s run left it had it been killed after its checkpoint at `step` and everything it
    logged after it (at step 4: train()'s summary line), before the finished model was handed over."""
    part = _run_folder(name, spec, model)
    shutil.copytree(whole / "checkpoints" / f"checkpoint-{step}", part / "checkpoints" / f"checkpoint-{step}")
    shutil.copy(whole / "metrics.jsonl", part / "metrics.jsonl")
    return part


@pytest.fixture(scope="module")
def whole_run(tiny_llama, tmp_path_factory):
    """One 4-step SFT run with held-out rows (eval at steps 0, 3 and 4, the last), saved at steps 2 and 4: made
    once, each test resumes copies of its folder."""
    spec = _sft()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUS_WORKSPACE", str(tmp_path_factory.mktemp("whole")))
        mp.delenv("DUS_JOB_ID", raising=False)
        run = _run_folder("whole", spec, tiny_llama)
        train_entry.main(run)
    return spec, run


def test_a_run_killed_after_its_final_evaluation_logs_it_once_when_resumed(whole_run, tiny_llama, monkeypatch):
    """Step 4 is the last and not an eval step. transformers 5.24 evaluates there itself, before it saves
    checkpoint-4, and train_entry evaluated again after train(): eval_loss at step 4 twice in every such run. Killed
    after that and resumed from checkpoint-4, forget_after(4) rightly kept every line at step 4, and the resumed run
    (no step left) evaluated once more: three. Now the run evaluates only where no evaluation was logged at its last
    step, and the resumed run's log and job rows are the killed run's, each value once."""
    spec, whole = whole_run
    assert [r["step"] for r in _logged(whole) if "eval_loss" in r] == [0, 3, 4]
    job = _job()
    monkeypatch.setenv("DUS_JOB_ID", str(job))
    part = _killed_copy(whole, "part", 4, tiny_llama, spec)
    (part / "metrics.jsonl").unlink()
    cb = MetricsCallback(part, 4, job)
    for row in _logged(whole):  # the killed run's log and rows, as its callback wrote them
        cb.record(row["step"], {k: v for k, v in row.items() if k not in ("step", "time")})
    before = [(r["step"], sorted(set(r) - {"time"})) for r in _logged(part)]
    train_entry.main(part)
    rows = _logged(part)
    assert [(r["step"], sorted(set(r) - {"time"})) for r in rows] == before
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3, 4]
    final = [r for r in rows if "eval_loss" in r][-1]
    assert json.loads((part / "summary.json").read_text())["eval_loss"] == round(final["eval_loss"], 4)
    kept = [(m.step, m.name) for m in runner.metrics([job])]
    assert kept.count((4, "eval_loss")) == 1 and kept.count((3, "eval_loss")) == 1
    assert sorted(kept) == sorted((r["step"], k) for r in rows for k in r if k not in ("step", "time"))


def test_trl_num_tokens_goes_on_across_a_resume(whole_run, tiny_llama):
    """trl 1.16 keeps num_tokens in trainer._total_train_tokens, set to 0 in __init__ and not in the checkpoint's
    state, so a run resumed from checkpoint-2 logged num_tokens from 0 again at step 3 (transformers'
    num_input_tokens_seen is in the state and went on)."""
    spec, whole = whole_run
    half = _killed_copy(whole, "half", 2, tiny_llama, spec)
    train_entry.main(half)
    want = {r["step"]: r["num_tokens"] for r in _logged(whole) if "num_tokens" in r and "loss" in r}
    got = {r["step"]: r["num_tokens"] for r in _logged(half) if "num_tokens" in r and "loss" in r}
    assert got == want and want[3] > want[2] > 0
    evals = lambda run: [r["eval_num_tokens"] for r in _logged(run) if "eval_num_tokens" in r]  # noqa: E731
    assert evals(half)[-1] == evals(whole)[-1] == want[4]
    assert json.loads((half / "summary.json").read_text())["tokens_seen"] == \
        json.loads((whole / "summary.json").read_text())["tokens_seen"]


PREFS = [DataSource(source="builtin:prefs-mini")]


def _dpo_trainer(tiny_llama, tmp_path, precompute: bool, lora=None, count: bool = False, own_ref: bool = False):
    import contextlib

    from transformers import AutoTokenizer

    spec = DpoSpec(model="x", data=PREFS, max_length=64, max_steps=2, batch_size=2, lora=lora,
                   precompute_ref_log_probs=precompute)
    rows, _ = data.prepare("builtin:prefs-mini", "dpo", max_rows=8)
    choices = perf.resolve(spec, False, train_rows=len(rows))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = train_entry.load_model(str(tiny_llama))
    # own_ref: a reference copy beside the precompute, as trl loads one itself under FSDP
    ref = None if (precompute and not own_ref) or lora else train_entry.load_model(str(tiny_llama))
    if own_ref:  # other weights: trl caches a precompute by the data's and the reference's hash
        with torch.no_grad():
            ref.model.norm.weight.add_(1.0)
    args = train_entry.make_config(spec, tmp_path / f"{precompute}{bool(lora)}", False, choices)
    with perf.count_reference_forwards() if count else contextlib.nullcontext() as pre:
        trainer = train_entry.build_trainer(spec, model, ref, tok, args, rows, None, [])
    return spec, trainer, pre


def test_dpo_flops_count_the_reference_forward_each_step(tiny_llama, tmp_path):
    """Without precomputed reference log-probs every step runs the reference forward on the batch's tokens
    (2·N + 4·L·d·s per token: forward only) beside the policy's 6·N + 12·L·d·s. Before: 6·N + 12·L·d·s only, so
    such a DPO run's MFU read 6·N / 8·N of what the GPU did. With LoRA the reference is the base with its adapters
    off: 2·(N - adapters)."""
    from backend import memplan

    n = train_entry.load_model(str(tiny_llama)).num_parameters()  # tied: the embedding is the LM head
    attention = 6 * 32 * 64  # layers × hidden × max_length
    spec, trainer, _ = _dpo_trainer(tiny_llama, tmp_path, precompute=False)
    assert train_entry.model_flops_per_token(spec, trainer) == (6 * n + 12 * attention) + (2 * n + 4 * attention)
    spec, trainer, _ = _dpo_trainer(tiny_llama, tmp_path, precompute=True)
    assert train_entry.model_flops_per_token(spec, trainer) == 6 * n + 12 * attention  # its reference: before step 1
    adapters = memplan.load_shape(tiny_llama).lora_params(4)
    spec, trainer, _ = _dpo_trainer(tiny_llama, tmp_path, precompute=False, lora=LoraSpec(r=4))
    assert train_entry.model_flops_per_token(spec, trainer) == \
        (4 * (n + adapters) + 2 * adapters + 12 * attention) + (2 * n + 4 * attention)


def test_dpo_precompute_pass_is_measured_and_logged(tiny_llama, tmp_path):
    """trl's precompute_ref_log_probs runs the reference forward over every training row inside DPOTrainer(),
    before step 1 and outside every tokens/s window: its tokens are what trl's own DataLoader hands the model
    (padded batches of chosen and rejected), and the run logs its rate and MFU at the step it starts from, once
    at that step however often it was resumed from there. Before: counted nowhere."""
    from types import SimpleNamespace

    spec, trainer, pre = _dpo_trainer(tiny_llama, tmp_path, precompute=True, count=True)
    loader = torch.utils.data.DataLoader(trainer.train_dataset.remove_columns(["ref_chosen_logps",
                                                                               "ref_rejected_logps"]),
                                         batch_size=2, collate_fn=trainer.data_collator, shuffle=False)
    want = sum(b["input_ids"].numel() for b in loader)
    assert pre.tokens == want > 0 and pre.seconds > 0
    # the reference a copy of its own (trl loads one under FSDP): hooks on the policy counted none of its forwards
    assert _dpo_trainer(tiny_llama, tmp_path, precompute=True, count=True, own_ref=True)[2].tokens == want
    flops = perf.forward_flops_per_token(trainer.model.config, trainer.model.num_parameters(), spec.max_length)
    assert flops == 2 * trainer.model.num_parameters() + 4 * 6 * 32 * 64
    job = _job()
    for start in (0, 2, 2):  # a fresh run, then two resumes from checkpoint-2
        cb = MetricsCallback(tmp_path, 4, job, peak_flops=1e12)
        cb.precomputed(pre.tokens, pre.seconds, flops)
        cb.on_train_begin(None, SimpleNamespace(global_step=start, num_input_tokens_seen=0,
                                                is_world_process_zero=True), None)
        if start == 0:
            cb.record(1, {"loss": 1.0})
            cb.record(2, {"loss": 1.0})
    lines = _logged(tmp_path)
    assert [(r["step"], "loss" in r) for r in lines] == [(0, False), (1, True), (2, True), (2, False)]
    line = lines[0]
    assert line["ref_precompute_tokens"] == want
    assert line["ref_precompute_tokens_per_s"] == pytest.approx(want / pre.seconds)
    assert line["ref_precompute_mfu"] == pytest.approx(want / pre.seconds * flops / 1e12)
    assert sorted((m.step, m.name) for m in runner.metrics([job]) if m.name.startswith("ref_")) == \
        sorted((s, f"ref_precompute_{k}") for s in (0, 2) for k in ("mfu", "tokens", "tokens_per_s"))
    _, trainer, pre = _dpo_trainer(tiny_llama, tmp_path, precompute=False, count=True)
    assert pre.tokens == 0  # no pass: the reference runs in each step
