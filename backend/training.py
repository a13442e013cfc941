"""Training jobs (continued pretraining, SFT, DPO): check the inputs, launch trl through `accelerate launch`,
then register the result with its lineage.

    python -m backend train sft --model SmolLM2-135M-Instruct-dus-m8 --data builtin:alpaca-mini --max-steps 20

Every run goes through `accelerate launch`, so a user with several GPUs or nodes passes their own accelerate
config (DDP, FSDP, DeepSpeed) unchanged. The launched script is `backend/train_entry.py`; it writes checkpoints,
`metrics.jsonl` and the finished model into the run folder. A run folder that already holds checkpoints is
resumed from the last one (a job keeps its run folder: workspace/runs/job-ID).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable

from backend import data, registry
from backend.outputs import output_dir, register_output
from backend.specs import _TrainSpec
from storage import db

Progress = Callable[[float, str], None]
ROOT = Path(__file__).resolve().parent.parent


class TrainingError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dir_for(spec: _TrainSpec) -> Path:
    job = os.environ.get("DUS_JOB_ID")
    name = f"job-{job}" if job else f"{spec.name or spec.default_name()}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = db.workspace() / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow", "wandb": "wandb"}


def check_trackers(spec: _TrainSpec) -> None:
    """report_to names trackers whose packages transformers imports at the first log line: fail before launch."""
    import importlib.util

    for tracker in spec.report_to:
        if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
            raise TrainingError(f"report_to: {tracker} is not installed; `pip install {TRACKER_PACKAGES[tracker]}` "
                                f"or remove {tracker} from report_to.")


def tracker_env(spec: _TrainSpec, run_dir: Path) -> dict[str, str]:
    """Local defaults for the trackers that write files, kept in the run folder unless the user chose elsewhere."""
    env = {}
    if "tensorboard" in spec.report_to:
        env["TENSORBOARD_LOGGING_DIR"] = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(run_dir / "tensorboard")
    if "mlflow" in spec.report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = (run_dir / "mlruns").as_uri()
    return env


def check_inputs(spec: _TrainSpec) -> tuple[Path, str, str | None]:
    """Fail before anything is launched: model, data layouts. Returns (model folder, name, reference)."""
    check_trackers(spec)
    folder, model_name = registry.resolve(spec.model)
    sources = [(d.source, d.weight) for d in spec.data + ([spec.eval_data] if spec.eval_data else [])]
    for source, _ in data.expand(sources):
        ds = data.load_source(source)
        data.check_rows(ds, source, data.detect_layout(ds.column_names, spec.kind), spec.kind)
    name = spec.name or spec.default_name()
    reference = spec.reference_model
    if reference is None and spec.kind == "cpt" and model_name:
        rec = registry.get(model_name)
        # The recovery view: the base's loss as the reference line — when the base is still registered (a deleted
        # base leaves the up-scaled model trainable, only without that line).
        if rec and rec.kind == "upscaled" and rec.parents and registry.get(rec.parents[0]) is not None:
            reference = rec.parents[0]
    ref_folder = str(registry.resolve(reference)[0]) if reference else None
    return folder, name, ref_folder


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints in step order, keeping only complete ones: a process killed while saving leaves a folder
    without trainer_state.json (written last), which cannot be resumed from; such a folder is removed."""
    out = []
    for p in sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        if (p / "trainer_state.json").exists():
            out.append(p)
        else:
            shutil.rmtree(p, ignore_errors=True)
    return out


def launch_command(spec: _TrainSpec, run_dir: Path) -> list[str]:
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if spec.accelerate_config:
        cmd += ["--config_file", str(Path(spec.accelerate_config).expanduser())]
    else:
        cmd += ["--num_processes", str(spec.num_processes), "--num_machines", "1", "--dynamo_backend", "no",
                "--mixed_precision", "bf16" if torch.cuda.is_available() else "no"]
        if spec.num_processes > 1:
            # accelerate's --cpu launcher runs one process (several need MPI); its torchrun launcher starts
            # N processes, which find no GPU and join over gloo: multi-process CPU data parallelism.
            cmd += ["--multi_gpu"]
        elif not torch.cuda.is_available():
            cmd += ["--cpu"]
    cmd += ["--main_process_port", str(_free_port()), "-m", "backend.train_entry", str(run_dir)]
    return cmd


def run_train(spec: _TrainSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    progress = progress or (lambda f, m: None)
    folder, name, ref_folder = check_inputs(spec)
    out_dir = output_dir(out_dir, spec.out, name)  # checked before anything is launched
    run_dir = run_dir_for(spec)
    (run_dir / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"), "model_path": str(folder),
                                                   "reference_path": ref_folder, "name": name}, indent=2))
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    resumed = complete_checkpoints(run_dir)
    progress(0.0, f"launching {spec.kind} on {spec.num_processes} process(es)"
                  + (f", resuming from {resumed[-1].name}" if resumed else ""))
    env = {**os.environ, "DUS_WORKSPACE": str(db.workspace()), "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", **tracker_env(spec, run_dir)}
    proc = subprocess.Popen(launch_command(spec, run_dir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tail: deque[str] = deque(maxlen=40)
    for line in proc.stdout:  # pass the trainer's output through to our log, keep the end for errors
        print(line, end="", flush=True)
        tail.append(line.rstrip())
    rc = proc.wait()
    final = run_dir / "final"
    if rc != 0 or not (final / "config.json").exists():
        errors = [ln for ln in tail if re.match(r"^(\w+Error|error): ", ln) and "CalledProcessError" not in ln]
        raise TrainingError(f"{spec.kind} training failed (exit code {rc}): "
                            f"{errors[0] if errors else (tail[-1] if tail else 'no output')}. "
                            f"Full log above; run folder {run_dir}.")
    summary = json.loads((run_dir / "summary.json").read_text())
    if out_dir.exists():
        out_dir.rmdir()  # empty: output_dir() refused a non-empty one
    shutil.move(str(final), out_dir)  # a rename on the same filesystem
    rec = register_output(out_dir, name, "trained", parents=[spec.model], source=spec.kind,
                          recipe=spec.model_dump(mode="json"))
    if not spec.keep_checkpoints:  # only a run that did not finish resumes: a finished one needs no optimizer states
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    progress(1.0, f"registered {name}: {summary.get('global_step')} steps, train loss {summary.get('train_loss')}")
    return {"model": rec.name, "path": str(out_dir), "run_dir": str(run_dir), **summary}
