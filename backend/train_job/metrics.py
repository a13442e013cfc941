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


def evals_to_come(step: int, max_steps: int, every: int | None, evaluated_at_step: bool) -> int:
    """The held-out evaluations still to run after a line at `step`: one every `every` steps (None: no evaluation)
    and one at the last step when it is not a multiple (transformers 5.24 DefaultFlowCallback). A training line at
    an evaluation step comes before that step's evaluation (evaluated_at_step False), its eval line after it."""
    if not every:
        return 0
    at = set(range(every, max_steps + 1, every)) | {max_steps}
    return sum(s > step for s in at) + (step in at and not evaluated_at_step)


def eta_seconds(done: int, steps_left: int, train_seconds: float, evals_left: int,
                eval_runtime: float | None) -> float | None:
    """Seconds to the end of the run: the steps left at the rate of the `done` steps (their `train_seconds` leave
    the evaluations out) and the evaluations to come at the last measured eval_runtime. None before a step is done."""
    if done <= 0:
        return None
    return max(train_seconds, 0.0) / done * steps_left + evals_left * (eval_runtime or 0.0)


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


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
        # the ETA's evaluations: every `eval_every` steps (None: none), the last one's seconds, the seconds spent
        # evaluating since on_train_begin (left out of the steps' rate), the step evaluated last; eval_rows: the
        # held-out rows the status line names while an evaluation runs (set by train_entry)
        self.eval_every: int | None = None
        self.eval_runtime: float | None = None
        self.eval_seconds = 0.0
        self.last_eval_step: int | None = None
        self.eval_rows: int | None = None
        self.training = self.evaluating = False

    def on_train_begin(self, args, state, control, **kw):
        self.start_step = state.global_step  # > 0 when resumed
        self.t0 = self.last_t = self.mark = time.time()
        self.paused = 0.0
        self.eval_seconds, self.training = 0.0, True
        self.last_tokens = state.num_input_tokens_seen or 0
        if state.is_world_process_zero and self.start_step:
            self.forget_after(self.start_step)  # values logged after the checkpoint will be logged again
            if self.eval_runtime is None:  # a resumed run's ETA: the evaluation before the stop, until one runs
                self.eval_runtime = self._last_eval_runtime()
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

    def _last_eval_runtime(self) -> float | None:
        """The seconds of the last evaluation in metrics.jsonl (None: none logged)."""
        if not self.path.exists():
            return None
        runtimes = [json.loads(ln)["eval_runtime"] for ln in self.path.read_text().splitlines()
                    if _logged_step(ln) is not None and "eval_runtime" in ln]
        return float(runtimes[-1]) if runtimes else None

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
        self.evaluating = False
        self._pause()

    def on_prediction_step(self, args, state, control, **kw):
        """The first batch of an evaluation: the status says so, with the evaluation in the ETA (a run's last
        evaluation ran 98 s under "step 2/2 · ETA 0:00")."""
        if self.evaluating or not state.is_world_process_zero:
            return
        self.evaluating = True
        self._follow(args, state)
        rows = self.eval_rows
        if rows is None:
            dl = kw.get("eval_dataloader")
            rows = len(dl.dataset) if dl is not None and hasattr(dl.dataset, "__len__") else None
        what = f"evaluating {rows} held-out rows…" if rows is not None else "evaluating the held-out rows…"
        self.say(state.global_step, what)

    def _follow(self, args, state) -> None:
        """The evaluation interval as the trainer runs it: the arguments' eval_steps resolved as
        TrainerState.compute_steps does (the state's own is a default 500 before train(), the step-0 evaluation's)."""
        strategy = getattr(args, "eval_strategy", None)
        every = args.eval_steps if str(getattr(strategy, "value", strategy)) == "steps" else None
        self.eval_every = (math.ceil(self.max_steps * every) if every < 1 else int(every)) if every else None

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
        self._follow(args, state)
        self.record(state.global_step, values)

    def record(self, step: int, values: dict[str, float], what: str | None = None) -> None:
        """Append `values` at `step` to metrics.jsonl and the job's rows, and print the step's line with its loss;
        `what` names a value that is neither a loss nor an eval loss (the first of `values`) in that line."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        if "eval_runtime" in values:  # an evaluation's line: logged when it is done
            self.eval_runtime, self.last_eval_step = values["eval_runtime"], step
            if self.training:  # (the step-0 evaluation ran before on_train_begin, outside the clock)
                self.eval_seconds += values["eval_runtime"]
        what, loss = ((what, next(iter(values.values()))) if what else ("loss", values["loss"]) if "loss" in values
                      else ("eval loss", values.get("eval_loss")))
        self._publish(step, f"step {step}/{self.max_steps}" + (f" · {what} {loss:.4f}" if loss is not None else ""),
                      values)

    def say(self, step: int, text: str) -> None:
        """A status line at `step` (an evaluation running, the reference being scored), with the ETA."""
        self._publish(step, f"step {step}/{self.max_steps} · {text}", {})

    def eta(self, step: int) -> float | None:
        """Seconds left after `step`: training steps at the rate measured without the evaluations, and the
        evaluations still to come at the last one's measured seconds."""
        evals = evals_to_come(step, self.max_steps, self.eval_every, self.last_eval_step == step)
        return eta_seconds(step - self.start_step, self.max_steps - step,
                           time.time() - self.t0 - self.eval_seconds, evals, self.eval_runtime)

    def _publish(self, step: int, msg: str, values: dict[str, float]) -> None:
        """Print `msg` with the ETA and, inside a job, write it as the job's message with `values` as metric rows."""
        eta = self.eta(step)
        msg += f" · ETA {_clock(eta)}" if eta is not None else ""
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
