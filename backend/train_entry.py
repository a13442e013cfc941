"""The script `accelerate launch` runs on every process: one trl training run, in fixed steps
(setup, reference score, train, save). Launched by backend/training.py; by hand:

    accelerate launch --cpu --num_processes 1 -m backend.train_entry workspace/runs/RUN   # RUN/spec.json

trl's trainers do the work (no hand-written loop). What this adds: the held-out loss at step 0 and of a reference
model (the recovery view), a callback that writes every logged value to metrics.jsonl and the job's rows (with
tokens/s, MFU on a known GPU, peak memory), resume from the run folder's last checkpoint, a finished model folder
written only when complete, and the hardware choices of backend/perf.py (compile, Liger, optimizer, attention,
packing, DPO reference precompute), printed with their reasons at the start of the log. The parts live in
backend/train_job/ (model and trainer, rows, metrics, resume); main() below puts them together.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from transformers.trainer_callback import PrinterCallback

from backend import perf
from backend.specs import spec_from_dict
from backend.train_job import CUDA
from backend.train_job.metrics import MetricsCallback, peak_memory_gib
from backend.train_job.model import (build_trainer, load_model, load_tokenizer, make_config, model_flops_per_token,
                                     reference_each_step)
from backend.train_job.resume import (CompleteAtCheckpoint, RunComplete, StepsFromSpec, resume_token_count,
                                      run_train_loss, train_or_finish)
from backend.train_job.rows import check_replies_fit, load_rows, note_cut_rows, without_chat_template
from backend.training_checkpoints import complete_checkpoints, resumable_checkpoints

__all__ = ["CUDA", "CompleteAtCheckpoint", "MetricsCallback", "RunComplete", "StepsFromSpec", "build_trainer",
           "check_replies_fit", "load_model", "load_rows", "load_tokenizer", "main", "make_config",
           "model_flops_per_token", "note_cut_rows", "peak_memory_gib", "reference_each_step", "resume_token_count",
           "run_train_loss", "train_or_finish", "without_chat_template"]


def main(run_dir: Path, extra_summary: dict | None = None) -> None:
    """One training run from run_dir/spec.json. extra_summary: added to summary.json by rank 0 (Ray Train records
    which node each rank ran on, backend/cluster/ray_train.py)."""
    cfg = json.loads((run_dir / "spec.json").read_text())
    spec = spec_from_dict(cfg["spec"])
    job_id = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    torch.manual_seed(spec.seed)

    # --- setup
    tok = load_tokenizer(cfg["model_path"])
    train, evals = load_rows(spec, cfg["model_path"], tok)
    world = int(os.environ["WORLD_SIZE"]) if os.environ.get("WORLD_SIZE") else None  # set by torchrun and Ray Train
    choices = perf.resolve(spec, CUDA, train_rows=len(train), processes=world)
    if int(os.environ.get("RANK", "0")) == 0:
        for line in choices.lines():
            print(line, flush=True)
    model = load_model(cfg["model_path"], choices.attention)
    # With the reference precomputed, trl scores the data with the policy before its first step (or, with LoRA,
    # with the adapters off): no second copy of the model is loaded, nor run every step.
    ref_model = load_model(cfg["model_path"], choices.attention) \
        if spec.kind == "dpo" and not spec.lora and not choices.precompute_ref else None
    peak = perf.gpu_peak_flops(torch.cuda.get_device_name()) if CUDA else None
    args = make_config(spec, run_dir, evals is not None, choices)
    callback = MetricsCallback(run_dir, spec.max_steps, job_id, None, peak * (world or 1) if peak else None)
    callback.eval_rows = len(evals) if evals is not None else None  # named in the status while evaluating
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    with perf.count_reference_forwards() as precompute:  # trl's reference precompute runs inside DPOTrainer()
        trainer = build_trainer(spec, model, ref_model, tok, args, train, evals,
                                [callback, CompleteAtCheckpoint(), StepsFromSpec()])
    callback.flops_per_token = model_flops_per_token(spec, trainer)
    if spec.kind == "dpo" and not reference_each_step(spec, trainer):  # (every process: the gather is collective)
        _record_precompute(spec, trainer, callback, precompute)
    _check_rows_after_tokenizing(spec, args, trainer, train, evals)
    if choices.compile == "regional":  # after the trainer: peft (LoRA) has put its adapters into the layers
        perf.compile_layers(trainer.model)
    # the world's first process alone removes cut checkpoints (every process of every machine reads the run folder)
    checkpoints = (complete_checkpoints if trainer.is_world_process_zero() else resumable_checkpoints)(run_dir)

    if not checkpoints and trainer.is_world_process_zero():
        callback.forget_after(-1)  # a run stopped before its first checkpoint starts over: its rows would repeat

    # --- step-0 scores: the model before training, and the reference (the base of an up-scaled model)
    if evals is not None and not checkpoints and spec.kind != "dpo":
        trainer.evaluate()  # logged at step 0 through the callback
        if cfg.get("reference_path"):
            if trainer.is_world_process_zero():  # a second evaluation, by a trainer without the callback
                callback.say(0, f"scoring the reference model on {len(evals)} held-out rows…")
            ref_loss = _reference_loss(spec, cfg["reference_path"], run_dir, choices, tok, train, evals)
            if trainer.is_world_process_zero():  # labelled: a second bare eval loss at step 0 read as a repeat
                whose = f"reference model {spec.reference_model}'s" if spec.reference_model else "base model's"
                callback.record(0, {"reference_eval_loss": ref_loss}, f"{whose} eval loss (for the recovery chart)")

    # --- train (from the last checkpoint when the run folder has one)
    if checkpoints:
        resume_token_count(trainer, checkpoints[-1])
    result = train_or_finish(trainer, checkpoints[-1] if checkpoints else None)
    final_eval = _final_eval(trainer, evals, result)

    # --- save: into final.partial, renamed when complete
    if trainer.is_world_process_zero():
        out = run_dir / "final.partial"
        _save_model(out, spec, trainer, tok)
        summary = _summary(trainer, result, final_eval, checkpoints, choices, extra_summary)
        _write_card(out, cfg["name"], spec, result, summary)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        out.rename(run_dir / "final")


def _record_precompute(spec, trainer, callback: MetricsCallback, precompute) -> None:
    """DPO with the reference precomputed: trl scored every row with the reference inside DPOTrainer(), before step
    1. Its tokens (every process's) and seconds are logged apart (ref_precompute_*), so that the steps' MFU counts
    the policy's work alone."""
    tokens = int(trainer.accelerator.gather(torch.tensor([precompute.tokens], device=trainer.args.device)).sum())
    m = trainer.model
    base = m.num_parameters() - (m.num_parameters(only_trainable=True) if spec.lora else 0)
    callback.precomputed(tokens, precompute.seconds, perf.forward_flops_per_token(m.config, base, spec.max_length))
    if trainer.is_world_process_zero() and tokens:
        print(f"perf: reference log-probs precomputed: {tokens} tokens in {precompute.seconds:.1f} s before "
              "step 1 (logged as ref_precompute_*; mfu counts the policy's steps alone)", flush=True)


def _check_rows_after_tokenizing(spec, args, trainer, train, evals) -> None:
    """The rows as the trainer tokenized them: a run whose replies were all cut off fails here, with the reason,
    and rows cut to max_length are counted in the log (the training rows, then the held-out ones)."""
    packed = bool(getattr(args, "packing", False))  # DPOConfig has none
    check_replies_fit(spec, train, trainer.train_dataset, packed)
    if evals is not None:  # dropped alike: an empty held-out set scored no eval_loss, and the reference's crashed
        check_replies_fit(spec, evals, trainer.eval_dataset, packed, what="held-out ")
    note_cut_rows(spec, args, train, trainer.train_dataset, say=trainer.is_world_process_zero())
    if evals is not None:
        note_cut_rows(spec, args, evals, trainer.eval_dataset, what="held-out ", say=trainer.is_world_process_zero())


def _reference_loss(spec, reference_path: str, run_dir: Path, choices, tok, train, evals) -> float:
    """The reference model's held-out loss (the recovery view: the base an up-scaled model was made from), scored by
    a trainer of its own (no LoRA) whose folder and model are gone before training starts."""
    ref = load_model(reference_path, choices.attention)
    ref_trainer = build_trainer(spec.model_copy(update={"lora": None}), ref, None, tok,
                                make_config(spec, run_dir / "reference", True, choices), train, evals, [])
    # its own trainer printed its metrics dict, a second {'eval_loss': …} at step 0 with no word that it was the
    # base's: the labelled line MetricsCallback.record prints says it instead
    ref_trainer.remove_callback(PrinterCallback)
    ref_loss = ref_trainer.evaluate()["eval_loss"]
    del ref_trainer, ref
    shutil.rmtree(run_dir / "reference", ignore_errors=True)
    return ref_loss


def _final_eval(trainer, evals, result) -> dict:
    """The last held-out loss logged ({} without a held-out set): evaluated here only where the last step went
    without one."""
    # transformers (5.24 DefaultFlowCallback) evaluates at the last step itself, before the final checkpoint is saved,
    # when it is not an eval step: evaluating again here logged a second eval_loss at that step in every such run
    if evals is not None and not any("eval_loss" in h and h.get("step") == result.global_step
                                     for h in trainer.state.log_history):
        trainer.evaluate()  # (a run whose last step went without one, e.g. a checkpoint of an older version)
    evals_logged = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    return {"eval_loss": evals_logged[-1]} if evals_logged else {}


def _save_model(out: Path, spec, trainer, tok) -> None:
    """The trained model (LoRA merged into plain weights), its tokenizer and generation config, into a fresh `out`
    (final.partial: renamed only when the run's files are all written)."""
    shutil.rmtree(out, ignore_errors=True)
    model = trainer.model
    if spec.lora:
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def _summary(trainer, result, final_eval: dict, checkpoints: list, choices, extra_summary: dict | None) -> dict:
    """summary.json: the run's losses, steps, time, tokens, memory peak and the hardware choices it ran with."""
    train_loss = run_train_loss(result, trainer.state.log_history, checkpoints[-1] if checkpoints else None)
    return {"global_step": result.global_step, "train_loss": round(train_loss, 4),
            "eval_loss": round(final_eval["eval_loss"], 4) if "eval_loss" in final_eval else None,
            "resumed_from": checkpoints[-1].name if checkpoints else None,
            "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
            "tokens_seen": int(trainer.state.num_input_tokens_seen or 0),
            "world_size": trainer.args.world_size, "peak_memory_gib": round(peak_memory_gib(), 3),
            "device": "cuda" if CUDA else "cpu",  # which memory peak_memory_gib read (the pages say it)
            "perf": choices.as_dict(), **(extra_summary or {})}


def _write_card(out: Path, name: str, spec, result, summary: dict) -> None:
    """The model folder's README.md: what made it, from which data, how far it trained, and its spec."""
    (out / "README.md").write_text(
        f"# {name}\n\n{spec.kind.upper()} of `{spec.model}` by DUS Studio with trl.\n\n"
        f"Data: {', '.join(f'{d.source} ×{d.weight:g}' for d in spec.data)}\n\n"
        f"Steps: {result.global_step}; train loss {summary['train_loss']}; eval loss {summary['eval_loss']}.\n\n"
        f"## Spec\n```yaml\n{spec.to_yaml()}```\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
