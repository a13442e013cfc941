"""Training jobs (continued pretraining, SFT, DPO): check the inputs, launch trl through `accelerate launch`,
then register the result with its lineage.

    python -m backend train sft --model SmolLM2-135M-Instruct-dus-m8 --data builtin:alpaca-mini --max-steps 20

Every run goes through `accelerate launch`, so a user with several GPUs or nodes passes their own accelerate
config (DDP, FSDP, DeepSpeed) unchanged. The launched script is `backend/train_entry.py`; it writes checkpoints,
`metrics.jsonl` and the finished model into the run folder. A run folder that already holds checkpoints is
resumed from the last one (a job keeps its run folder: workspace/runs/job-ID), under the spec it was started with:
another is refused, naming what changed, but for more steps and where and how fast it runs (check_resume).

Several machines (num_machines > 1): each runs the same spec with its own machine_rank against a shared workspace
(same DUS_WORKSPACE path and database everywhere); the run folder's name is derived from the spec, so all find it.

    python -m backend train sft --model M --data D --num-machines 2 --machine-rank 0|1 --main-process-ip HOST0
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from backend import data, perf, registry, runner
from backend.modelinfo import inspect_model
from backend.names import check_name
from backend.outputs import check_companions, move_output, output_dir, register_output, weights_bytes
from backend.specs import _TrainSpec
from backend.training_checkpoints import (PLACEMENT_FIELDS, TrainingError, check_resume, complete_checkpoints,
                                          resumable_checkpoints, resume_words)
from backend.words import plural
from storage import db

Progress = Callable[[float, str], None]
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 29500  # accelerate's and torchrun's default rendezvous port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multi_machine_run_name(spec: _TrainSpec) -> str:
    """The run folder of a multi-machine run, the same on every machine without talking to the others: the name
    plus a hash of the spec without its placement fields. Rerunning the same spec (a Slurm job requeued or
    resubmitted after a crash) finds the same folder and resumes from its last checkpoint; DUS_RUN_NAME chooses
    the folder instead (e.g. to continue a finished run with more steps)."""
    data = {k: v for k, v in spec.model_dump(mode="json").items() if k not in PLACEMENT_FIELDS}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.name or spec.default_name()}-x{spec.num_machines}-{digest}"


def run_dir_for(spec: _TrainSpec) -> Path:
    """workspace/runs/NAME: DUS_RUN_NAME when set; with several machines a name every machine derives alike (a job
    id is known to machine 0 only); else job-ID inside a job (a resumed job keeps its folder), or a timestamp."""
    job = os.environ.get("DUS_JOB_ID")
    if os.environ.get("DUS_RUN_NAME"):
        name = check_name(os.environ["DUS_RUN_NAME"], "DUS_RUN_NAME (--run-name)")
    elif spec.num_machines > 1:
        name = multi_machine_run_name(spec)
    else:
        name = f"job-{job}" if job else f"{spec.name or spec.default_name()}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = db.workspace() / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_run_dir(run_dir: Path) -> None:
    """Inside a job (DUS_JOB_ID, set by backend/runner/child.py execute), write the run folder into its row: the pages
    offer "Resume from the last checkpoint" only when they find one there (pages/common.py job_status). Only this
    process knows the folder (DUS_RUN_NAME and multi-machine runs do not use job-ID); a Ray Train run
    (backend/cluster/ray_train.py) trains in the folder chosen here too."""
    if not (job := os.environ.get("DUS_JOB_ID")):
        return
    try:  # it only draws the Resume button: a database away for a moment, or a DUS_JOB_ID inherited by a command
        runner.record_run_dir(int(job), str(run_dir))  # started from a job's shell, must not fail the training
    except Exception as exc:  # noqa: BLE001
        print(f"note: the job's run folder was not recorded ({type(exc).__name__}: {exc})", flush=True)


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow", "wandb": "wandb"}


def default_report_to() -> list[str]:
    """The workspace's default trackers for new training jobs: DUS_REPORT_TO="tensorboard,mlflow" (empty: none).
    The Train page and `train` preselect them; what a spec says is what runs (a saved spec names its trackers)."""
    raw = os.environ.get("DUS_REPORT_TO", "")
    names = [t.strip().lower() for t in raw.split(",") if t.strip() and t.strip().lower() != "none"]
    unknown = [t for t in names if t not in TRACKER_PACKAGES]
    if unknown:
        raise TrainingError(f"DUS_REPORT_TO={raw!r}: unknown tracker {', '.join(unknown)}; choose from "
                            f"{', '.join(TRACKER_PACKAGES)} (comma-separated), or leave it empty for none.")
    return list(dict.fromkeys(names))


def check_trackers(spec: _TrainSpec) -> None:
    """report_to names trackers whose packages transformers imports at the first log line: fail before launch."""
    import importlib.util

    for tracker in spec.report_to:
        if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
            raise TrainingError(f"report_to: {tracker} is not installed; `pip install {TRACKER_PACKAGES[tracker]}` "
                                f"or remove {tracker} from report_to.")
    if "wandb" in spec.report_to and not wandb_can_log():
        raise TrainingError("report_to: wandb has no API key on this machine, and the job would fail at its first "
                            "log line (\"No API key configured\"): run `wandb login`, set WANDB_API_KEY, or set "
                            "WANDB_MODE=offline to keep the run in the run folder's wandb/ (`wandb sync` uploads it "
                            "later).")


def wandb_can_log() -> bool:
    """Whether a W&B run can start without a prompt: offline or disabled, an API key or identity token in the
    environment, or `wandb login`'s netrc entry for the W&B host (WANDB_BASE_URL, else api.wandb.ai). A job has no
    terminal, so W&B's interactive login fails it after the model loaded."""
    from requests.utils import get_netrc_auth  # what W&B reads its key with: ~/.netrc or ~/_netrc, any mode

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") \
            or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    return get_netrc_auth(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai") is not None


def tracker_env(spec: _TrainSpec, run_dir: Path) -> dict[str, str]:
    """Local defaults for the trackers that write files, kept in the run folder unless the user chose elsewhere."""
    env = {}
    if "tensorboard" in spec.report_to:
        env["TENSORBOARD_LOGGING_DIR"] = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(run_dir / "tensorboard")
    if "trackio" in spec.report_to and not os.environ.get("TRACKIO_DIR"):
        env["TRACKIO_DIR"] = str(run_dir / "trackio")  # (trackio's default: one folder in HF_HOME for every run)
    if "wandb" in spec.report_to and not os.environ.get("WANDB_DIR"):
        env["WANDB_DIR"] = str(run_dir)  # W&B writes its wandb/ there (offline runs too)
    if "mlflow" in spec.report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        # a SQLite store, MLflow's own default since 3.7: its file store (./mlruns) now refuses to start ("in
        # maintenance mode … set MLFLOW_ALLOW_FILE_STORE=true"), which failed the job at its first log line
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    return env


def check_inputs(spec: _TrainSpec) -> tuple[Path, str, str | None, str]:
    """Fail before anything is launched: model, data layouts. Returns (model folder, name, reference folder, parent):
    the parent is the model's registered name ("builtin" resolved), else its folder, as upscale and merge record it."""
    if spec.machine_rank == 0:  # first: a rerun of a saved spec under its taken name was refused after the data
        registry.check_name_free(spec.name or spec.default_name())  # loaded (10 s), not at once
    perf.check(spec)  # kernels and packages the spec's perf block asks for (backend/perf.py)
    check_trackers(spec)
    folder, model_name = registry.resolve(spec.model)
    inspect_model(folder)  # a truncated or broken folder is refused here, as upscale, merge and eval refuse it
    if problem := registry.missing_tokenizer(folder):  # (a registered one too: made from such a folder before)
        raise TrainingError(problem[0])
    check_companions(folder)  # the trained model re-saves the tokenizer files it loads: none through a link out
    sources = [(d.source, d.weight) for d in spec.data + ([spec.eval_data] if spec.eval_data else [])]
    for source, _ in data.expand(sources):
        data.check_source(source, spec.kind)
    name = spec.name or spec.default_name()
    reference = spec.reference_model
    if reference is not None:  # train_entry scores it on the held-out set at step 0 of cpt/sft only: it was loaded
        # and checked here, then left unused without a word (DPO's reference is the model it starts from)
        if spec.kind == "dpo":
            raise TrainingError(f"reference_model {reference!r}: DPO compares the policy with the model it starts "
                                f"from ({spec.model}), not with another; the held-out score of another model is "
                                "taken for cpt and sft. Remove reference_model, or train DPO from that model.")
        if spec.eval_data is None and not spec.eval_fraction:
            raise TrainingError(f"reference_model {reference!r} is scored on the held-out set, and this spec holds "
                                "none out (eval_fraction 0, no eval_data): set eval_fraction or eval_data, or remove "
                                "reference_model.")
    if reference is None and spec.kind == "cpt" and model_name:
        rec = registry.get(model_name)
        # The recovery view: the base's loss as the reference line — when the base is still registered (a deleted
        # base leaves the up-scaled model trainable, only without that line).
        if rec and rec.kind == "upscaled" and rec.parents and registry.get(rec.parents[0]) is not None:
            reference = rec.parents[0]
    ref_folder = str(registry.resolve(reference)[0]) if reference else None
    if ref_folder:
        inspect_model(Path(ref_folder))  # loaded beside the model: refused alike
    check_memory(spec, folder)
    return folder, name, ref_folder, model_name or str(folder)


def check_memory(spec: _TrainSpec, folder: Path) -> None:
    """Refuse, before loading, a job whose memory plan does not fit the visible GPUs (CPU: the RAM), naming what it
    needs and which strategy would fit (issue 13). An architecture the plan cannot model is not refused."""
    if not spec.memory_check:
        return
    from backend import memplan

    try:
        refusal = memplan.check_spec(spec, folder)
    except memplan.PlanError as exc:
        raise TrainingError(f"memory plan: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - an estimate that cannot be made must not block training
        print(f"memory plan skipped ({type(exc).__name__}: {exc})", flush=True)
        return
    if refusal:
        raise TrainingError(f"{refusal} Set memory_check: false (--no-memory-check) to launch anyway.")


def launch_command(spec: _TrainSpec, run_dir: Path) -> list[str]:
    """`accelerate launch` for this machine. With several machines every one runs this with its own machine_rank:
    accelerate hands --num_machines/--machine_rank/--main_process_ip/--main_process_port to torchrun's static
    rendezvous at IP:PORT (hosted by machine 0), and its --num_processes is the TOTAL over all machines (it starts
    num_processes // num_machines here), while the spec's num_processes counts one machine's processes."""
    import torch

    machines = spec.num_machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if spec.accelerate_config:  # the config decides processes and backend; the spec only places this machine
        cmd += ["--config_file", str(Path(spec.accelerate_config).expanduser())]
        if machines > 1:
            cmd += ["--num_machines", str(machines)]
    else:
        total = spec.num_processes * machines
        cmd += ["--num_processes", str(total), "--num_machines", str(machines), "--dynamo_backend", "no",
                "--mixed_precision", "bf16" if torch.cuda.is_available() else "no"]
        if total > 1:
            # accelerate's --cpu launcher runs one process (several need MPI); its torchrun launcher starts
            # N processes, which find no GPU and join over gloo: multi-process CPU data parallelism (also across
            # machines: one process on each of two machines is two processes in all).
            cmd += ["--multi_gpu"]
        elif not torch.cuda.is_available():
            cmd += ["--cpu"]
    if machines > 1:
        cmd += ["--machine_rank", str(spec.machine_rank), "--main_process_ip", str(spec.main_process_ip),
                "--main_process_port", str(spec.main_process_port or DEFAULT_PORT)]
    else:  # one machine: a free port, so two runs side by side never collide
        cmd += ["--main_process_port", str(spec.main_process_port or _free_port())]
    cmd += ["-m", "backend.train_entry", str(run_dir)]
    return cmd


# An exception line of a traceback: its name may carry a module path (safetensors._safetensors_rust.SafetensorError)
_ERROR_LINE = re.compile(r"^((?:\w+\.)*\w+(?:Error|Exception)|error): ")


# Lines that are progress, never a cause: the Trainer's logged metrics ("{'loss': '5.511', 'grad_norm': …}") and
# tqdm's bars ("  3%|▎  | 2/60 [00:01<00:30, 1.9it/s]"); a trainer killed mid-run leaves one of them last
_PROGRESS_LINE = re.compile(r"^\s*\{'[\w/]+': |.*\d+%\|.*\||.*\[\d+:\d\d<")
# How a launcher reports a trainer that a signal ended: accelerate's single-process launcher re-raises the child's
# CalledProcessError ("died with <Signals.SIGKILL: 9>."), torchrun's ChildFailedError report says "exitcode : -9" and
# "Signal 9 (SIGKILL) received by PID"
_SIGNAL_LINE = re.compile(r"died with <Signals\.SIG\w+: (\d+)>|Signal (\d+) \(SIG\w+\) received|exitcode\s*:\s*-(\d+)")


def failure_line(tail: Sequence[str]) -> str:
    """The line of the launched trainer's output that names the cause: its first exception line, not the launcher's
    CalledProcessError that only repeats the exit code; else its last line that is no metrics dict or progress bar."""
    errors = [ln for ln in tail if _ERROR_LINE.match(ln) and "CalledProcessError" not in ln]
    if errors:
        return errors[0]
    said = [ln for ln in tail if ln.strip() and not _PROGRESS_LINE.match(ln)]
    return said[-1] if said else "no error line in its output" if tail else "no output"


def killed_by(rc: int, tail: Sequence[str]) -> signal.Signals | None:
    """The signal that ended the trainer: the launcher's own negative exit code (the launcher and its child were
    killed), or the launcher's report of its child's (only the trainer process was killed: the launcher exits 1)."""
    if rc < 0:
        return _signal(-rc)
    # torchrun's report lists every rank under "Failures" (one that NCCL's abort stopped: -6, -15) and the one that
    # failed first under "Root Cause (first observed failure)": only that one's exit code says why
    roots = [i for i, ln in enumerate(tail) if "Root Cause (first observed failure)" in ln]
    for ln in reversed(tail[roots[-1]:] if roots else tail):
        if m := _SIGNAL_LINE.search(ln):
            return _signal(int(next(g for g in m.groups() if g)))
    return None


def _signal(number: int) -> signal.Signals | None:
    try:
        return signal.Signals(number)
    except ValueError:
        return None


# A signal's usual cause, said to a user who never sent it (a cancel of ours kills this process too: no reason is
# written for it)
SIGNAL_WORDS = {
    signal.SIGKILL: "was killed (SIGKILL — most often the system ran out of memory and the kernel's OOM killer ended "
                    "it; `dmesg` or `journalctl -k` says \"Out of memory\" if so)",
    signal.SIGTERM: "was stopped (SIGTERM, not from a cancel in DUS: a shutdown, a scheduler's time limit or a "
                    "`kill` ended it)",
    signal.SIGSEGV: "crashed (SIGSEGV, a segmentation fault in native code: a CUDA driver, kernel library or "
                    "extension fault; the log's last lines name the library)",
    signal.SIGABRT: "aborted (SIGABRT: native code gave up, e.g. a CUDA or NCCL error; the log's last lines say which)",
    signal.SIGBUS: "crashed (SIGBUS: often a shared-memory area (/dev/shm) too small for the data loader's workers, "
                   "as in a container)",
    signal.SIGINT: "was interrupted (SIGINT: Ctrl-C)",
}


def _stop_trainer(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """After a Ctrl-C here: the trainer got it too when it shares the terminal's process group; one started apart
    (the command run with & from a script) did not. Ask it as Ctrl-C would, then end it, so that no trainer goes on
    writing checkpoints into the run folder a rerun with --run-name resumes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def failure_reason(rc: int, tail: Sequence[str], run_dir: Path, job: str | None) -> str:
    """Why the launched trainer failed, in words, as "training failed" goes on (": …" or " (exit code 1): …"): a
    signal that ended it with what to do next (naming the checkpoint a resume continues from), else its exit code
    and failure_line. `job`: its job id (None: a foreground run)."""
    if (sig := killed_by(rc, tail)) is None:
        return f" (exit code {rc}): {failure_line(tail).rstrip('.')}"
    said = SIGNAL_WORDS.get(sig, f"was ended by signal {sig.name}")
    resume = resume_words(run_dir, job)
    if sig == signal.SIGKILL:  # a resume keeps its spec (check_resume): less memory takes a new run
        return (f": the trainer {said}. To need less memory, train anew with a smaller batch_size or max_length, "
                f"or gradient_checkpointing on; {resume}")
    return f": the trainer {said}; {resume}"


def run_train(spec: _TrainSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    """Train (continued pretraining, SFT or DPO) with trl in a launched process (`accelerate launch -m
    backend.train_entry`, or Ray Train workers) and register the result. The run folder (workspace/runs/job-ID in a
    job, run_dir_for) holds spec.json, the checkpoints and summary.json; the trained model is moved from its
    final/ into the output folder and registered as "trained", with the input model as its parent. With several
    machines each one trains and machine 0 saves and registers. A resume (the same job, or the same run folder)
    continues from the newest complete checkpoint there, refused if the spec changed in more than RESUME_MAY_CHANGE;
    the checkpoints are removed once the model is registered unless spec.keep_checkpoints."""
    progress = progress or (lambda f, m: None)
    folder, name, ref_folder, parent = check_inputs(spec)
    main_machine = spec.machine_rank == 0  # the others train, and leave saving and registering to machine 0
    if main_machine:
        # checked before anything is launched: free, writable, and room for about the model's weights
        out_dir = output_dir(out_dir, spec.out, name, needed=weights_bytes(folder))
    run_dir = run_dir_for(spec)
    record_run_dir(run_dir)
    stretched = check_resume(spec, run_dir)  # before spec.json is replaced: it holds the checkpoints' spec
    # Every machine writes spec.json into the shared run folder: replaced whole, so a machine whose processes are
    # reading it never sees half a file (the copies differ only in machine_rank, which train_entry does not read).
    tmp = run_dir / f".spec.json.{spec.machine_rank}"
    tmp.write_text(json.dumps({"spec": spec.model_dump(mode="json"), "model_path": str(folder),
                               "reference_path": ref_folder, "name": name}, indent=2))
    os.replace(tmp, run_dir / "spec.json")
    if main_machine:
        shutil.rmtree(run_dir / "final", ignore_errors=True)
    # machine 0 alone removes cut checkpoints: the run folder is shared, and a machine starting late must not remove
    # the one machine 0 may be saving (the others read the complete ones, the same list)
    resumed = complete_checkpoints(run_dir) if main_machine else resumable_checkpoints(run_dir)
    where = (f" x {spec.num_machines} machines (this is machine {spec.machine_rank}, rank 0 at "
             f"{spec.main_process_ip}:{spec.main_process_port or DEFAULT_PORT})" if spec.num_machines > 1 else "")
    progress(0.0, f"launching {spec.kind} on {spec.num_processes} process(es){where}"
                  + (f", resuming from {resumed[-1].name}{stretched}" if resumed else ""))
    env = {**os.environ, "DUS_WORKSPACE": str(db.workspace()), "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", **tracker_env(spec, run_dir)}
    if spec.ray_workers > 1:  # the same train_entry.main on each Ray Train worker: DDP across the cluster's nodes
        from backend.cluster import ray_train

        try:
            ray_train.cluster_address()
        except ray_train.RayNotConfigured as e:
            raise TrainingError(str(e)) from None
        progress(0.0, f"launching {spec.kind} on {spec.ray_workers} Ray Train workers"
                      + (f", resuming from {resumed[-1].name}{stretched}" if resumed else ""))
        rc, tail = ray_train.fit(spec, run_dir, env)
    else:
        proc = subprocess.Popen(launch_command(spec, run_dir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tail: deque[str] = deque(maxlen=40)
        try:
            for line in proc.stdout:  # pass the trainer's output through to our log, keep the end for errors; on
                # stderr, as every progress line (a job's stdout and stderr are both its log): a foreground
                # `train`'s stdout is its result alone, for a script to read
                print(line, end="", file=sys.stderr, flush=True)
                tail.append(line.rstrip())
        except KeyboardInterrupt:
            if os.environ.get("DUS_JOB_ID"):  # a job's: its worker says what goes on (jobs resume)
                raise
            # a foreground run: its folder is stamped, so a plain rerun starts at step 0; the words name the folder
            # and how to continue (backend/__main__.py prints them as the Ctrl-C's line)
            _stop_trainer(proc)
            raise KeyboardInterrupt(f"the {spec.kind} stopped before it finished; it ran here, not as a job: run "
                                    f"folder {run_dir}; {resume_words(run_dir, None)} (with --queue the worker "
                                    "runs it, and closing the terminal does not stop it)") from None
        rc = proc.wait()
    final = run_dir / "final"
    if rc == 0 and not main_machine:  # machine 0's rank-0 process saves the model; machine 0 registers it
        progress(1.0, f"machine {spec.machine_rank} of {spec.num_machines} done; machine 0 registers {name}")
        return {"model": None, "machine_rank": spec.machine_rank, "run_dir": str(run_dir)}
    if rc != 0 or not (final / "config.json").exists():
        job = os.environ.get("DUS_JOB_ID")  # a foreground run (the CLI without --queue) has no job: its log was
        where = (f"the job's log (Jobs page, or its path in `python -m backend jobs show {job}`)" if job  # the terminal
                 else "the trainer's output above")
        raise TrainingError(f"{spec.kind} training failed{failure_reason(rc, tail, run_dir, job)}. "
                            f"The whole log: {where}; run folder {run_dir}.")
    summary = json.loads((run_dir / "summary.json").read_text())
    # marked as backend/outputs.py marks its builds: a kill between the move and the row leaves a folder the next
    # start (or the resume's output_dir) removes, not one that blocks the name and fails every resume
    db.mark_unregistered(final)
    try:
        move_output(final, out_dir)  # a rename on the same filesystem
    except OSError as exc:  # disk full or read-only: the trained model stays in final/, its checkpoints with it
        job, saved = os.environ.get("DUS_JOB_ID"), resumable_checkpoints(run_dir)
        button = "Resume from the last checkpoint" if saved else "Restart (no checkpoint was saved)"
        how = (f"python -m backend jobs resume {job} (or \"{button}\" on the Jobs page)" if job else
               f"the same command with --run-name {run_dir.name} (--out may change)")
        # a job's spec keeps its --out: another folder is the foreground command's, on the job's run folder
        elsewhere = (f" To hand it to another folder instead: the job's command run in a terminal with --run-name "
                     f"{run_dir.name} --out NEW_FOLDER." if job and saved else "")
        raise TrainingError(f"{exc} The trained model is kept in {final}: once {out_dir.parent} can take it, {how} "
                            + (f"continues from {saved[-1].name}, its last step, and registers the model without "
                               "training again." if saved else "trains it again (no checkpoint was saved).")
                            + elsewhere) from None
    rec = register_output(out_dir, name, "trained", parents=[parent], source=spec.kind,
                          recipe=spec.model_dump(mode="json"))
    if not spec.keep_checkpoints:  # only a run that did not finish resumes: a finished one needs no optimizer states
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    progress(1.0, f"registered {name}: {plural(summary.get('global_step'), 'step')}, train loss "
                  f"{summary.get('train_loss')}")
    return {"model": rec.name, "path": str(out_dir), "run_dir": str(run_dir), **summary}
