"""The script `accelerate launch` runs on every process: one trl training run, in fixed steps
(setup, reference score, train, save). Launched by backend/training.py; by hand:

    accelerate launch --cpu --num_processes 1 -m backend.train_entry workspace/runs/RUN   # RUN/spec.json

trl's trainers do the work (no hand-written loop). What this adds: the held-out loss at step 0 and of a reference
model (the recovery view), a callback that writes every logged value to metrics.jsonl and the job's rows (with
tokens/s, MFU on a known GPU, peak memory), resume from the run folder's last checkpoint, a finished model folder
written only when complete, and the hardware choices of backend/perf.py (compile, Liger, optimizer, attention,
packing, DPO reference precompute), printed with their reasons at the start of the log.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from backend import data, perf
from backend.specs import spec_from_dict
from backend.training import complete_checkpoints

CUDA = torch.cuda.is_available()


def peak_memory_gib() -> float:
    """The run's peak memory: CUDA memory allocated by this process, or on a CPU the process's peak resident size
    (Linux reports ru_maxrss in KiB)."""
    if CUDA:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class RunComplete(Exception):
    """Raised before a step that would go past max_steps (see CompleteAtCheckpoint)."""


class CompleteAtCheckpoint(TrainerCallback):
    """A run resumed from a checkpoint saved at its last step (killed after the trainer's final save, before the
    model was handed over) must train no further. transformers 5.24 checks `global_step >= max_steps` only after a
    step, so such a resume ran one step more (step 5 of 4, at learning rate 0). The checkpoint's weights and state
    are loaded before the first step begins, so stopping there leaves the model as the checkpoint holds it."""

    def on_step_begin(self, args, state, control, **kw):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise RunComplete


def train_or_finish(trainer, checkpoint: Path | None):
    """trainer.train from the checkpoint; a checkpoint that already holds every step gives its result untrained."""
    from transformers.trainer_utils import TrainOutput

    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except RunComplete:  # no step in this session: its loss, as transformers gives it for no step, is 0
        return TrainOutput(trainer.state.global_step, 0.0, {"train_runtime": 0.0})


def run_train_loss(result, log_history: list[dict], checkpoint: Path | None) -> float:
    """The mean loss over the run's steps, as an uninterrupted run reports it. transformers' TrainOutput.training_loss
    is the mean over the steps of this train() call only (5.24 Trainer._finalize_training divides by
    global_step minus the step it resumed at), so a resumed run reported another number than the same run
    unstopped, for the same weights. The steps before the checkpoint come from its logged losses, each the mean
    over the steps since the previous log; MetricsCallback logs at every checkpoint, so none is left out."""
    start = int(checkpoint.name.split("-")[1]) if checkpoint else 0
    session = result.global_step - start
    total, steps, last = result.training_loss * session, session, 0
    for h in log_history:
        if "loss" in h and h["step"] <= start:  # the checkpoint's history: the sessions before this one
            span = h["step"] - last
            total, steps, last = total + h["loss"] * span, steps + span, h["step"]
    return total / steps if steps else float("nan")


def _logged_step(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a line that is not whole JSON (cut by a kill)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class MetricsCallback(TrainerCallback):
    """Every log line goes to metrics.jsonl and, inside a job, to job_metrics rows and the job's progress.
    flops_per_token and peak_flops (all processes together) add an `mfu` beside `tokens_per_s`. `tokens_per_s` is
    the training's throughput: the seconds spent evaluating and saving checkpoints between two logged losses are left
    out (a window holding an evaluation read slower than the training ran).

    `mfu` counts what a training step computes per token (model_flops_per_token): the policy's forward and
    backward (6·N + 12·L·d·s; LoRA 4·N + 2·adapters + 12·L·d·s) and, in DPO whose reference runs every step, the
    reference's forward (2·N + 4·L·d·s). DPO's reference precomputed (precompute_ref_log_probs) is a forward pass
    over the data before step 1, in no step's window: it gets its own line at the step the run starts from
    (`ref_precompute_tokens`, `ref_precompute_tokens_per_s`, `ref_precompute_mfu` at 2·N + 4·L·d·s per token)."""

    def __init__(self, run_dir: Path, max_steps: int, job_id: int | None, flops_per_token: float | None = None,
                 peak_flops: float | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.max_steps, self.job_id = max_steps, job_id
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.t0 = self.last_t = self.mark = time.time()
        self.start_step = 0
        self.last_tokens = 0
        self.paused = 0.0  # seconds of evaluation and checkpointing since last_t
        self.precompute: dict[str, float] = {}  # the DPO reference precompute's line, written by on_train_begin

    def on_train_begin(self, args, state, control, **kw):
        self.start_step = state.global_step  # > 0 when resumed
        self.t0 = self.last_t = self.mark = time.time()
        self.paused = 0.0
        self.last_tokens = state.num_input_tokens_seen or 0
        if state.is_world_process_zero and self.start_step:
            self.forget_after(self.start_step)  # values logged after the checkpoint will be logged again
        if state.is_world_process_zero and self.precompute:  # a run resumed twice from one checkpoint precomputed
            self.forget_at(self.start_step, set(self.precompute))  # twice: its line at that step is the last one
            self.record(self.start_step, self.precompute)

    def precomputed(self, tokens: int, seconds: float, flops_per_token: float) -> None:
        """The DPO reference precompute (tokens of every process, seconds, forward FLOPs per token): logged at the
        step the run starts from, once its earlier lines are settled (on_train_begin)."""
        if tokens <= 0 or seconds <= 0:
            return
        self.precompute = {"ref_precompute_tokens": float(tokens), "ref_precompute_tokens_per_s": tokens / seconds}
        if self.peak_flops:
            self.precompute["ref_precompute_mfu"] = tokens / seconds * flops_per_token / self.peak_flops

    def forget_after(self, step: int) -> None:
        """Drop what was logged past `step`, in metrics.jsonl and the job's metric rows: a resumed run logs those
        steps again (-1: everything, for a run that starts over because it was stopped before its first checkpoint).
        metrics.jsonl was left a plain log, so a resumed run's file held steps 11, 12, 13, 11, 12, …: a reader of it
        (a foreground run has no rows; bench/gpu_train_mfu.py takes its tokens_per_s) counted those steps twice."""
        self._drop(lambda at, names: at > step, lambda m: [m.step > step])

    def forget_at(self, step: int, names: set[str]) -> None:
        """Drop the lines at `step` that hold any of `names`, in metrics.jsonl and the job's metric rows."""
        self._drop(lambda at, logged: at == step and bool(names & logged),
                   lambda m: [m.step == step, m.name.in_(names)])

    def _drop(self, goes, rows) -> None:
        """metrics.jsonl without the lines for which goes(step, names) holds (and a line cut by a kill), and the
        job's rows matching rows(JobMetric) deleted."""
        if self.path.exists():
            kept = [ln + "\n" for ln in self.path.read_text().splitlines()
                    if (at := _logged_step(ln)) is not None and not goes(at, set(json.loads(ln)))]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)  # whole, or not at all: a kill here leaves the old log
        if not self.job_id:
            return
        from sqlmodel import delete
        from storage import db
        from storage.models import JobMetric

        with db.session() as s:
            s.exec(delete(JobMetric).where(JobMetric.job_id == self.job_id, *rows(JobMetric)))
            s.commit()

    def on_step_end(self, args, state, control, **kw):
        self.mark = time.time()  # the Trainer logs, then evaluates, then saves after a step ends
        if control.should_save:  # the loss since the last log goes into the checkpoint's history, so a resumed
            control.should_log = True  # run's loss covers every step (run_train_loss), whatever logging_steps is

    def on_evaluate(self, args, state, control, **kw):
        self._pause()

    def on_save(self, args, state, control, **kw):
        self._pause()

    def _pause(self) -> None:
        """The seconds since the step ended (or the evaluation before this save) were not training."""
        now = time.time()
        self.paused += now - self.mark
        self.mark = now

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        tokens = state.num_input_tokens_seen or 0
        training = now - self.last_t - self.paused
        if tokens > self.last_tokens and training > 0 and "loss" in values:
            values["tokens_per_s"] = (tokens - self.last_tokens) / training
            self.last_tokens, self.last_t, self.paused = tokens, now, 0.0
            if self.flops_per_token and self.peak_flops:
                values["mfu"] = values["tokens_per_s"] * self.flops_per_token / self.peak_flops
        if "loss" in values:
            values["peak_memory_gib"] = peak_memory_gib()
        self.record(state.global_step, values)

    def record(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        done = step - self.start_step
        elapsed = time.time() - self.t0
        eta = elapsed / done * (self.max_steps - step) if done > 0 else None
        what, loss = ("loss", values["loss"]) if "loss" in values else ("eval loss", values.get("eval_loss"))
        msg = f"step {step}/{self.max_steps}" + (f" · {what} {loss:.4f}" if loss is not None else "") + \
            (f" · ETA {int(eta) // 60}:{int(eta) % 60:02d}" if eta is not None else "")
        print(f"[{step / self.max_steps:6.1%}] {msg}", flush=True)
        if not self.job_id:
            return
        from sqlalchemy import update

        from storage import db
        from storage.models import Job, JobMetric

        # one conditional UPDATE: read, checked, then written, a cancel landing in between lost its message; and
        # only while the row is this run's (DUS_JOB_PID: runner.execute), not a resumed run's
        cond = [Job.id == self.job_id, Job.status == "running"]
        if os.environ.get("DUS_JOB_PID"):
            cond.append(Job.pid == int(os.environ["DUS_JOB_PID"]))
        with db.session() as s:
            for k, v in values.items():
                s.add(JobMetric(job_id=self.job_id, step=step, name=k, value=v))
            s.exec(update(Job).where(*cond).values(progress=min(step / self.max_steps, 0.999), message=msg))
            s.commit()


def load_model(path: str, attention: str | None = None):
    """bf16 on CUDA, float32 on a CPU; attention: perf's choice (None: transformers' default). trust_remote_code off,
    said: left to decide, transformers asks on a terminal whether to run a remote-code model's own code."""
    kwargs = {"dtype": torch.bfloat16 if CUDA else torch.float32, "trust_remote_code": False}
    if attention:
        kwargs["attn_implementation"] = attention
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def make_config(spec, run_dir: Path, has_eval: bool, r: perf.Resolved | None = None):
    """trl's config for the spec; r: backend/perf.py's choices (default: resolved for this machine)."""
    from trl import DPOConfig, SFTConfig

    r = r or perf.resolve(spec, CUDA)

    common = dict(
        output_dir=str(run_dir / "checkpoints"), max_steps=spec.max_steps, per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=spec.weight_decay, logging_steps=spec.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=2,
        eval_strategy="steps" if has_eval else "no", eval_steps=spec.eval_steps if has_eval else None,
        # trl defaults bf16 and gradient checkpointing on; on a CPU neither helps, so both follow the hardware.
        bf16=CUDA, fp16=False, use_cpu=not CUDA, activation_checkpointing=spec.gradient_checkpointing,
        report_to=list(spec.report_to) or "none", run_name=run_dir.name,  # trackers: off unless the spec asks
        seed=spec.seed, max_length=spec.max_length, disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen="all",
        # backend/perf.py's choices; "regional" compilation is applied to the layers in main(), not here
        use_liger_kernel=r.liger, torch_compile=r.compile == "full", **({"optim": r.optim} if r.optim else {}),
    )
    if spec.kind == "dpo":
        return DPOConfig(beta=spec.beta, loss_type=[spec.loss_type], precompute_ref_log_probs=bool(r.precompute_ref),
                         **common)
    # trl's default "bfd" is padding-free and needs flash-attention kernels to be fast; with sdpa it measured six
    # times slower on an H200 (trl 1.16, 1.1B Llama shape, sequence 2048: 7.6k vs 37.5k tokens/s) — perf.resolve
    # picks it only with a flash kernel.
    # CPT packs with "bfd_split" (perf.resolve): "bfd" cuts every document at max_length; SFT keeps "bfd": a
    # conversation cut in two teaches its second half without its question.
    return SFTConfig(packing=r.packing, packing_strategy=r.packing_strategy, padding_free=r.padding_free,
                     dataset_text_field="text", completion_only_loss=bool(getattr(spec, "completion_only_loss", False))
                     if spec.kind == "sft" else None, **common)


def check_replies_fit(spec, rows, prepared, packed: bool, what: str = "") -> None:
    """With completion_only_loss and no packing, trl drops every conversation whose last reply lies past max_length
    after truncation (it would add no loss): long multi-turn conversations, the ones the option is for, went without
    a word, and with none left the job failed with "num_samples should be a positive integer value"."""
    if not getattr(spec, "completion_only_loss", False) or packed:
        return
    kept = len(prepared)
    if kept == 0:
        raise SystemExit(f"error: every {what}conversation's last reply lies past max_length {spec.max_length}, so "
                         f"completion_only_loss has nothing to {'score' if what else 'learn'}: raise --max-length, or "
                         "turn completion_only_loss off" + (", or hold out other conversations" if what else ""))
    if kept < len(rows):
        print(f"data: {len(rows) - kept} of {len(rows)} {what}conversations dropped: their last reply lies past "
              f"max_length {spec.max_length} (completion_only_loss); raise --max-length to keep them", flush=True)


def note_cut_rows(spec, args, rows, prepared, what: str = "", say: bool = True) -> None:
    """Say how many rows max_length cuts, which trl does without a word: unpacked and bfd-packed SFT/CPT rows keep
    their first max_length tokens (a reply's end and its end-of-turn token unlearned), DPO drops a pair whose prompt
    alone fills max_length and cuts the others' replies (their ends never compared). A row exactly max_length long
    is counted too: its tokens cannot be told from a cut one's. Wrapped and bfd_split packing lose nothing. say:
    print (rank 0); every rank refuses a DPO run whose every pair was dropped."""
    import pyarrow.compute as pc

    n = spec.max_length
    if spec.kind == "dpo":
        columns, unit, over = ["prompt_ids", "chosen_ids", "rejected_ids"], "pairs", n + 1  # untruncated here
        if not len(prepared):  # trl's sampler then failed with "num_samples should be a positive integer value"
            raise SystemExit(f"error: every {what}pair's prompt alone fills max_length {n}, so DPO has nothing to "
                             "compare: raise --max-length")
        if (dropped := len(rows) - len(prepared)) and say:
            print(f"data: {dropped} of {len(rows)} {what}pairs dropped: their prompt alone fills max_length {n}; "
                  "raise --max-length to keep them", flush=True)
    elif args.packing and args.packing_strategy != "bfd":
        return
    else:  # truncated to max_length by trl: a row (or a bfd-packed sequence) that long was cut, or fit exactly
        columns, unit, over = ["seq_lengths" if args.packing else "input_ids"], "rows", n
    if not say:
        return
    cut = total = 0
    for batch in prepared.select_columns(columns).with_format("arrow").iter(batch_size=10_000):  # bounded memory
        if spec.kind == "dpo":
            length = pc.add(pc.list_value_length(batch["prompt_ids"]),
                            pc.max_element_wise(pc.list_value_length(batch["chosen_ids"]),
                                                pc.list_value_length(batch["rejected_ids"])))
        else:
            length = pc.list_flatten(batch[columns[0]]) if args.packing else pc.list_value_length(batch[columns[0]])
        cut += pc.sum(pc.greater_equal(length, over)).as_py() or 0
        total += len(length)
    if cut:
        print(f"data: {cut} of {total} {what}{unit} cut at max_length {n}: their tokens past it are never trained "
              "on; raise --max-length" + (" or pack them" if spec.kind == "cpt" and not args.packing else ""),
              flush=True)


def without_chat_template(spec, model_path: str, layouts: set[str], train, evals):
    """(train, evals) for a model without a chat template (a base model): SFT on prompt/completion files and DPO on
    one-turn preference pairs (a plain-text prompt/chosen/rejected file) as trl's plain-text rows: the reply follows
    the prompt as written, then EOS (completion_only_loss scores the completion alone). Conversations need a
    template. The job refused both before, telling the user to "use a prompt/completion file with a base model",
    which it refused too."""
    def single(ds) -> bool:
        import pyarrow.compute as pc

        table = ds.with_format("arrow")[:]
        return all(pc.all(pc.equal(pc.list_value_length(table[c]), 1)).as_py() for c in table.column_names)

    def plain(ds):
        return ds.map(lambda r: {k: r[k][0]["content"] for k in r}, remove_columns=ds.column_names)

    if spec.kind == "sft" and layouts == {"prompt_completion"}:
        to_plain = data.to_prompt_completion  # [user, assistant] -> prompt [user], completion [assistant]
    elif spec.kind == "dpo" and layouts == {"preference"} and all(single(ds) for ds in (train, evals)
                                                                  if ds is not None):
        to_plain = None
    else:
        raise SystemExit(f"error: {model_path} has no chat template; {spec.kind} on conversations "
                         f"({', '.join(sorted(layouts))}) needs one. Without one, train SFT on a prompt/completion "
                         "file or DPO on plain-text prompt/chosen/rejected, or use an instruct model.")
    print("data: no chat template: each prompt and reply as plain text", flush=True)
    return tuple(plain(to_plain(ds) if to_plain else ds) if ds is not None else None for ds in (train, evals))


def build_trainer(spec, model, ref_model, tok, args, train, evals, callbacks):
    from trl import DPOTrainer, SFTTrainer

    peft_config = None
    if spec.lora:
        from peft import LoraConfig

        targets = spec.lora.target_modules
        peft_config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                                 target_modules=targets if targets == "all-linear" else targets.split(","),
                                 task_type="CAUSAL_LM")
    if spec.kind == "dpo":
        # The reference is passed explicitly (trl would reload it from config._name_or_path otherwise); with LoRA
        # the frozen base with adapters disabled is the reference.
        return DPOTrainer(model=model, ref_model=None if spec.lora else ref_model, args=args, train_dataset=train,
                          eval_dataset=evals, processing_class=tok, callbacks=callbacks, peft_config=peft_config)
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tok,
                      callbacks=callbacks, peft_config=peft_config)


def reference_each_step(spec, trainer) -> bool:
    """Whether trl's DPO runs the reference forward in every step (its log-probs not precomputed)."""
    return spec.kind == "dpo" and not getattr(trainer.args, "precompute_ref_log_probs", False)


def model_flops_per_token(spec, trainer) -> float:
    """FLOPs of a training step per token (what MetricsCallback's `mfu` counts): perf.flops_per_token of the model
    as it trains (with LoRA, peft's adapters trainable beside the frozen base), and in DPO without precomputed
    reference log-probs the reference's forward on the same tokens (trl's _compute_loss; with LoRA the base with its
    adapters off). Left out before, such a DPO run's MFU read 6/8 of what the GPU did."""
    m = trainer.model
    adapters = m.num_parameters(only_trainable=True) if spec.lora else None
    flops = perf.flops_per_token(m.config, m.num_parameters(), spec.max_length, adapters)
    if reference_each_step(spec, trainer):
        flops += perf.forward_flops_per_token(m.config, m.num_parameters() - (adapters or 0), spec.max_length)
    return flops


def resume_token_count(trainer, checkpoint: Path) -> None:
    """trl (1.16) logs `num_tokens` from trainer._total_train_tokens, set to 0 in every SFTTrainer and DPOTrainer
    and not saved in the checkpoint (transformers' num_input_tokens_seen is, in its trainer state): a resumed run
    counted from 0 again. It goes on from the count logged at the checkpoint's step (MetricsCallback logs at every
    save)."""
    if not hasattr(trainer, "_total_train_tokens"):
        return
    history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("log_history", [])
    counts = [h["num_tokens"] for h in history if "num_tokens" in h]
    if counts:
        trainer._total_train_tokens = int(counts[-1])


def main(run_dir: Path, extra_summary: dict | None = None) -> None:
    """One training run from run_dir/spec.json. extra_summary: added to summary.json by rank 0 (Ray Train records
    which node each rank ran on, backend/cluster/ray_train.py)."""
    cfg = json.loads((run_dir / "spec.json").read_text())
    spec = spec_from_dict(cfg["spec"])
    job_id = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    torch.manual_seed(spec.seed)

    # --- setup
    tok = AutoTokenizer.from_pretrained(cfg["model_path"], trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # The held-out share is split off each source before its weight repeats it (backend/data.py split_mix).
    train, evals, report = data.split_mix([(d.source, d.weight, d.sample_by) for d in spec.data], spec.kind,
                                          spec.seed, spec.max_rows,
                                          eval_fraction=0.0 if spec.eval_data else spec.eval_fraction)
    for d in spec.data + ([spec.eval_data] if spec.eval_data else []):
        if d.sample_by != "line" and data.reads_text_file(d.source):
            print(f"data: {d.source}: a row per {d.sample_by} of its .txt files", flush=True)
    for source, layout, rows in report:
        print(f"data: {source} ({layout}) -> {rows} rows", flush=True)
    if not spec.eval_data and spec.eval_fraction:  # an empty split gave no eval loss, no recovery view, no word
        print(f"data: {len(evals)} distinct rows held out ({spec.eval_fraction:g} of each source's), none of them "
              "trained on" if evals is not None else "data: no rows held out (fewer than 10 rows): no eval loss",
              flush=True)
    layouts = {layout for _, layout, _ in report}
    if spec.eval_data:
        evals, eval_layout = data.prepare(spec.eval_data.source, spec.kind, max_rows=spec.max_rows,
                                           sample_by=spec.eval_data.sample_by)
        layouts.add(eval_layout)
    if spec.kind in ("sft", "dpo") and not tok.chat_template:
        train, evals = without_chat_template(spec, cfg["model_path"], layouts, train, evals)
    elif getattr(spec, "completion_only_loss", False):
        train = data.to_prompt_completion(train)
        evals = data.to_prompt_completion(evals) if evals is not None else None
        print("loss: on each conversation's last assistant reply only (completion_only_loss)", flush=True)
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
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    with perf.count_reference_forwards() as precompute:  # trl's reference precompute runs inside DPOTrainer()
        trainer = build_trainer(spec, model, ref_model, tok, args, train, evals, [callback, CompleteAtCheckpoint()])
    callback.flops_per_token = model_flops_per_token(spec, trainer)
    if spec.kind == "dpo" and not reference_each_step(spec, trainer):  # (every process: the gather is collective)
        tokens = int(trainer.accelerator.gather(torch.tensor([precompute.tokens], device=trainer.args.device)).sum())
        m = trainer.model
        base = m.num_parameters() - (m.num_parameters(only_trainable=True) if spec.lora else 0)
        callback.precomputed(tokens, precompute.seconds, perf.forward_flops_per_token(m.config, base, spec.max_length))
        if trainer.is_world_process_zero() and tokens:
            print(f"perf: reference log-probs precomputed: {tokens} tokens in {precompute.seconds:.1f} s before "
                  "step 1 (logged as ref_precompute_*; mfu counts the policy's steps alone)", flush=True)
    packed = bool(getattr(args, "packing", False))  # DPOConfig has none
    check_replies_fit(spec, train, trainer.train_dataset, packed)
    if evals is not None:  # dropped alike: an empty held-out set scored no eval_loss, and the reference's crashed
        check_replies_fit(spec, evals, trainer.eval_dataset, packed, what="held-out ")
    note_cut_rows(spec, args, train, trainer.train_dataset, say=trainer.is_world_process_zero())
    if evals is not None:
        note_cut_rows(spec, args, evals, trainer.eval_dataset, what="held-out ", say=trainer.is_world_process_zero())
    if choices.compile == "regional":  # after the trainer: peft (LoRA) has put its adapters into the layers
        perf.compile_layers(trainer.model)
    checkpoints = complete_checkpoints(run_dir)

    if not checkpoints and trainer.is_world_process_zero():
        callback.forget_after(-1)  # a run stopped before its first checkpoint starts over: its rows would repeat

    # --- step-0 scores: the model before training, and the reference (the base of an up-scaled model)
    if evals is not None and not checkpoints and spec.kind != "dpo":
        trainer.evaluate()  # logged at step 0 through the callback
        if cfg.get("reference_path"):
            ref = load_model(cfg["reference_path"], choices.attention)
            ref_trainer = build_trainer(spec.model_copy(update={"lora": None}), ref, None, tok,
                                        make_config(spec, run_dir / "reference", True, choices), train, evals,
                                        [])
            ref_loss = ref_trainer.evaluate()["eval_loss"]
            del ref_trainer, ref
            shutil.rmtree(run_dir / "reference", ignore_errors=True)
            if trainer.is_world_process_zero():
                callback.record(0, {"reference_eval_loss": ref_loss})

    # --- train (from the last checkpoint when the run folder has one)
    if checkpoints:
        resume_token_count(trainer, checkpoints[-1])
    result = train_or_finish(trainer, checkpoints[-1] if checkpoints else None)
    # transformers (5.24 DefaultFlowCallback) evaluates at the last step itself, before the final checkpoint is saved,
    # when it is not an eval step: evaluating again here logged a second eval_loss at that step in every such run
    if evals is not None and not any("eval_loss" in h and h.get("step") == result.global_step
                                     for h in trainer.state.log_history):
        trainer.evaluate()  # (a run whose last step went without one, e.g. a checkpoint of an older version)
    evals_logged = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    final_eval = {"eval_loss": evals_logged[-1]} if evals_logged else {}

    # --- save: into final.partial, renamed when complete
    if trainer.is_world_process_zero():
        out = run_dir / "final.partial"
        shutil.rmtree(out, ignore_errors=True)
        model = trainer.model
        if spec.lora:
            model = model.merge_and_unload()
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(out)
        train_loss = run_train_loss(result, trainer.state.log_history, checkpoints[-1] if checkpoints else None)
        summary = {"global_step": result.global_step, "train_loss": round(train_loss, 4),
                   "eval_loss": round(final_eval["eval_loss"], 4) if "eval_loss" in final_eval else None,
                   "resumed_from": checkpoints[-1].name if checkpoints else None,
                   "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
                   "tokens_seen": int(trainer.state.num_input_tokens_seen or 0),
                   "world_size": trainer.args.world_size, "peak_memory_gib": round(peak_memory_gib(), 3),
                   "perf": choices.as_dict(), **(extra_summary or {})}
        (out / "README.md").write_text(
            f"# {cfg['name']}\n\n{spec.kind.upper()} of `{spec.model}` by DUS Studio with trl.\n\n"
            f"Data: {', '.join(f'{d.source} ×{d.weight:g}' for d in spec.data)}\n\n"
            f"Steps: {result.global_step}; train loss {summary['train_loss']}; eval loss {summary['eval_loss']}.\n\n"
            f"## Spec\n```yaml\n{spec.to_yaml()}```\n")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        out.rename(run_dir / "final")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
