"""The training job's log (backend/train_entry.py): every logged value to metrics.jsonl and, inside a job, to its
job_metrics rows and progress, with tokens/s, MFU on a known GPU and peak memory."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from backend.train_job import CUDA

def peak_memory_gib() -> float:
    """The run's peak memory: CUDA memory allocated by this process, or on a CPU the process's peak resident size
    (Linux reports ru_maxrss in KiB)."""
    if CUDA:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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

    def record(self, step: int, values: dict[str, float], what: str | None = None) -> None:
        """Append `values` at `step` to metrics.jsonl and the job's rows, and print the step's line with its loss;
        `what` names a value that is neither a loss nor an eval loss (the first of `values`) in that line."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        done = step - self.start_step
        elapsed = time.time() - self.t0
        eta = elapsed / done * (self.max_steps - step) if done > 0 else None
        what, loss = ((what, next(iter(values.values()))) if what else ("loss", values["loss"]) if "loss" in values
                      else ("eval loss", values.get("eval_loss")))
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
