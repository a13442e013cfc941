"""Review fixes of session 13."""

from __future__ import annotations

import pytest
import torch

from backend import evaldevice, evaluate, registry
from backend.specs import EvalSpec

# Qwen2.5-7B's shape: 28 layers, 4 KV heads of 128, a 152k vocabulary
QWEN7B = evaldevice.ModelShape(num_parameters=7_615_616_512, num_layers=28, kv_heads=4, head_dim=128,
                               vocab_size=152_064)


def test_a_perplexity_batch_counts_the_logits_of_every_position():
    """Scoring a 256-token text whole holds logits over the vocabulary at every position (bf16, their float32
    copy, the log-softmax): 0.37 GiB for Qwen2.5, 25 times its KV cache. The generation batch (KV cache and one
    logits row) would have put 256 texts, about 96 GiB of logits, on an 80 GiB GPU."""
    per_text = evaldevice.scoring_bytes_per_sequence(QWEN7B, 256)
    assert per_text == 2 * 28 * 4 * 128 * 2 * 256 + 10 * 256 * 152_064
    free = 80 * 2**30
    p = evaldevice.plan(QWEN7B, cuda=True, free_bytes=free, seq_len=512, score_len=256)
    room = free - p.weights_bytes - evaldevice.RESERVE
    assert p.batch_size == 256  # generation: the cap
    assert p.scoring_batch_size == room // per_text < 256
    assert p.scoring_batch_size * per_text <= room < (p.scoring_batch_size + 1) * per_text
    assert f"scoring whole texts: batch {p.scoring_batch_size}" in p.note
    assert evaldevice.plan(QWEN7B, cuda=True, free_bytes=free, batch_size=4).scoring_batch_size == 4
    cpu = evaldevice.plan(QWEN7B, cuda=False, batch_size=3)
    assert (cpu.batch_size, cpu.scoring_batch_size) == (3, 3)


def test_the_perplexity_task_runs_at_the_scoring_batch(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (80 * 2**30, 80 * 2**30))
    monkeypatch.setattr(evaldevice, "model_shape", lambda folder: QWEN7B)
    real_load, seen = evaldevice.load_model, []
    monkeypatch.setattr(evaldevice, "load_model", lambda folder, plan=None: real_load(folder, None))
    real_items = evaluate.perplexity_items

    def items(tok, model, texts, max_length=evaluate.MAX_LENGTH, batch_size=8):
        seen.append(batch_size)
        return real_items(tok, model, texts, max_length, batch_size)

    monkeypatch.setattr(evaluate, "perplexity_items", items)
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=2))
    want = evaldevice.plan(QWEN7B, cuda=True, free_bytes=80 * 2**30, seq_len=256 + EvalSpec.model_fields["max_new_tokens"].default)
    assert seen == [want.scoring_batch_size] and want.scoring_batch_size < want.batch_size


@pytest.mark.parametrize("keep", [8, 100, -500], ids=["header-only", "cut-in-metadata", "cut-in-tensor-data"])
def test_a_gguf_cut_short_is_refused_before_queueing(tmp_path, keep):
    """It was queued, and failed only when the import job's turn came (behind a busy queue)."""
    from backend import runner
    from backend.specs import ImportSpec
    from tests.test_review_s12_models import write_gguf

    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep] if keep > 0 else whole[:len(whole) + keep])
    with pytest.raises(ValueError) as refused:
        runner.submit(ImportSpec(target=str(cut), name="cut"))
    assert str(refused.value) == (f"Could not read GGUF file {cut} ({cut.stat().st_size:,} bytes): it looks "
                                  "truncated or damaged (an interrupted download or copy?). Download it again.")
    assert runner.list_jobs() == []
    registry.check_import(str(tmp_path / "whole.gguf"), "whole")  # the whole file passes the check


def test_the_training_jobs_own_check_names_a_mixed_type_row_at_its_own_row():
    """The check before queueing named row 25; the job's own check (its data loading, for a file changed after
    queueing) saw `datasets`' decoded Json column and blamed row 1."""
    from backend import data
    from tests.test_review_s12_data import alpaca, upload

    path = upload(alpaca(30, {25: 12345}), "int25.jsonl")
    said = "int25.jsonl, row 25: output must be text; got int. Fix or remove that row."
    for load in (lambda: data.prepare(path, "sft"), lambda: data.split_mix([(path, 1.0)], "sft", eval_fraction=0.1)):
        with pytest.raises(data.DataError) as exc:
            load()
        assert str(exc.value) == said


def test_a_resumed_runs_loss_covers_the_steps_between_its_last_log_and_the_checkpoint(tiny_llama, monkeypatch):
    """Logged every 3 steps, checkpointed at step 2: the checkpoint's history held no loss, so the resumed run's
    loss left steps 1-2 out (5.3242, not 5.3725) instead of equalling the same run unstopped."""
    import shutil

    from backend import training
    from backend.specs import DataSource, SftSpec
    from storage import db

    registry.import_folder(tiny_llama, "tiny")

    def run(name: str) -> dict:
        monkeypatch.setenv("DUS_RUN_NAME", name)
        spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=4,
                       save_steps=2, keep_checkpoints=True, batch_size=2, max_length=32, max_rows=16,
                       eval_fraction=0.0, learning_rate=1e-2, logging_steps=3)
        return training.run_train(spec)

    whole = run("whole")
    runs = db.workspace() / "runs"
    shutil.copytree(runs / "whole" / "checkpoints" / "checkpoint-2", runs / "part" / "checkpoints" / "checkpoint-2")
    part = run("part")
    assert (part["resumed_from"], part["global_step"]) == ("checkpoint-2", 4)
    assert part["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-4)
