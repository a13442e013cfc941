"""Training on several nodes with Ray Train: the same trl run as `accelerate launch`, on `spec.ray_workers` Ray
workers joined in one DDP process group (gloo on CPUs, nccl on GPUs). backend/training.py `run_train` calls `fit`
when `ray_workers > 1`; everything around the launch (checks, registration, errors, keep_checkpoints) is shared.

    RAY_ADDRESS=HEAD:6379 python -m backend run sft.yaml    # the spec has `ray_workers: 2` (and `resources:`)

Each worker runs `backend.train_entry.main(run_dir)` — the function `accelerate launch` runs on every process.
Ray Train's TorchTrainer (Train V2, the default in Ray 2.60) starts the workers, sets RANK/WORLD_SIZE/LOCAL_RANK/
MASTER_ADDR and calls `torch.distributed.init_process_group`; transformers' TrainingArguments then builds
accelerate's PartialState, which finds the group already up and uses it, so HF Trainer runs DDP as under torchrun.
Ray's own HF glue (`prepare_trainer`, `RayTrainReportCallback`) is not used: it reports checkpoints into Ray's
storage, while ours stay in the run folder (which every node must see: a shared workspace), where train_entry
writes checkpoints, metrics.jsonl (rank 0), summary.json and final/, and where a later run resumes from.

Which cluster: inside a Ray Job (backend/cluster/ray_jobs.py submits jobs so), Ray sets RAY_ADDRESS to the GCS
address for the entrypoint; otherwise RAY_ADDRESS or DUS_RAY_ADDRESS as a GCS address (host:port, or
ray://host:10001 for Ray Client). A dashboard URL (http://..., what the Jobs API takes) cannot be joined by a
driver: such a job must be queued, so that the worker submits it to the cluster.
The workers import this project: from a Ray Job's working_dir, or else from the same path as here (every node has
the project where the driver has it, as with a shared workspace).
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# Variables the workers need from the job's environment (workspace, database, job id for metric rows, trackers'
# settings, Hugging Face caches); the rest of this process's environment (PATH, the venv) belongs to its node.
WORKER_ENV_PREFIXES = ("DUS_", "DATABASE_URL", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "PYTHONUNBUFFERED",
                       "TENSORBOARD_", "MLFLOW_", "WANDB_", "TRACKIO_")
# The dashboard's login is no worker's business, and the env rides in train_loop_config, which Ray Train's run state
# records as it is (RAY_TRAIN_ENABLE_STATE_TRACKING=1: the Ray dashboard's Train runs).
WORKER_ENV_NEVER = ("DUS_PASSWORD", "DUS_PASSWORD_HASH")


class RayNotConfigured(RuntimeError):
    pass


def cluster_address() -> str:
    """The address `ray.init` joins, or RayNotConfigured saying what to set."""
    for var in ("RAY_ADDRESS", "DUS_RAY_ADDRESS"):
        addr = os.environ.get(var, "").strip()
        if not addr:
            continue
        if addr.startswith(("http://", "https://")):
            raise RayNotConfigured(
                f"ray_workers > 1: {var}={addr} is a Ray dashboard (the Jobs API); a training driver joins the "
                "cluster's GCS instead. Queue the job (`--queue`: the worker hands it to the cluster as a Ray Job, "
                "inside which Ray sets RAY_ADDRESS), or set RAY_ADDRESS=HEAD:6379 (the address `ray start --head` "
                "prints).")
        return addr
    raise RayNotConfigured("ray_workers > 1 trains on a Ray cluster, and none is configured: set DUS_RAY_ADDRESS "
                           "to the cluster's dashboard and queue the job (or RAY_ADDRESS=HEAD:6379 to drive it from "
                           "here), or use num_processes for several processes on this machine.")


def _runtime_env(address: str) -> dict | None:
    """What this driver's tasks and actors get, where the Ray Job that runs us does not already set it (ray.init
    refuses a runtime_env that conflicts with the job's): PYTHONPATH to import this project, unless the job ships
    it (working_dir); RAY_ADDRESS, because Ray Train's own actors (the placement-group cleaner) look the cluster up
    through the state API, which fails when one machine hosts two clusters."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    job_vars = job.get("env_vars") or {}
    env = {}
    if not job.get("working_dir") and "PYTHONPATH" not in job_vars:
        env["PYTHONPATH"] = str(ROOT)
    if "RAY_ADDRESS" not in job_vars and not address.startswith("ray://"):
        env["RAY_ADDRESS"] = address
    return {"env_vars": env} if env else None


def check_fits(spec) -> None:
    """Refuse a worker group that the cluster's live nodes cannot hold. Ray Train checks this only on an
    autoscaling cluster (against its configured maximum); on a fixed one it waits for resources, retrying its
    60-second start forever."""
    import ray

    try:
        from ray._private.state import state

        if state.get_max_resources_from_cluster_config():
            return  # an autoscaler can add nodes: Ray Train checks its maximum itself
    except Exception:  # a private API; without it, check the live nodes
        pass
    need = {k: v for k, v in _per_worker(spec).items() if v > 0}
    if not need:
        return
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    slots = sum(min(int(node.get(k, 0) // v) for k, v in need.items()) for node in nodes)
    if slots < spec.ray_workers:
        have = ", ".join("{" + ", ".join(f"{k}: {node.get(k, 0):g}" for k in need) + "}" for node in nodes)
        raise RuntimeError(f"ray_workers: {spec.ray_workers} workers of {need} do not fit on the cluster's "
                           f"{len(nodes)} node(s) ({have}); room for {slots}. Lower ray_workers or resources, "
                           "or add nodes.")


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The part of the job's environment the Ray Train workers get."""
    return {k: v for k, v in env.items() if k.startswith(WORKER_ENV_PREFIXES) and k not in WORKER_ENV_NEVER}


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker, inside the process group Ray set up."""
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    os.environ.update(config["env"])
    os.chdir(config["cwd"])  # relative data paths in the spec mean what they mean for `accelerate launch`
    ctx = ray.train.get_context()
    me = {"rank": ctx.get_world_rank(), "node_id": ray.get_runtime_context().get_node_id(),
          "host": socket.gethostname(), "pid": os.getpid(), "backend": dist.get_backend(),
          "threads": torch.get_num_threads()}  # Ray sets OMP_NUM_THREADS to the worker's CPUs
    workers: list = [None] * ctx.get_world_size()
    dist.all_gather_object(workers, me)  # every rank learns where the others run; rank 0 records it
    print(f"ray train: rank {me['rank']}/{ctx.get_world_size()} on node {me['node_id'][:12]} ({me['host']}, "
          f"pid {me['pid']}), backend {me['backend']}", flush=True)

    from backend import train_entry

    try:
        train_entry.main(Path(config["run_dir"]), extra_summary={"ray_ranks": workers})
    except SystemExit as e:  # train_entry's "error: ..." exits; a Ray worker reports exceptions, not exit codes
        raise RuntimeError(str(e)) from None


def _per_worker(spec) -> dict[str, float]:
    res = spec.resources
    per_worker: dict[str, float] = {"CPU": res.cpus}
    if res.gpus:
        per_worker["GPU"] = res.gpus
    if res.memory_gb:
        per_worker["memory"] = res.memory_gb * 1024 ** 3  # Ray's memory resource is in bytes
    per_worker.update(res.custom)  # e.g. {"a100": 1}: workers only on the nodes started with that resource
    return per_worker


def _scaling(spec):
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=spec.ray_workers, use_gpu=spec.resources.gpus > 0,
                         resources_per_worker=_per_worker(spec))


def _error_lines(err: BaseException) -> list[str]:
    """`Type: message` of the first worker's failure (or the controller's), the form run_train's error quotes."""
    failures = getattr(err, "worker_failures", None) or {}
    cause = next(iter(failures.values()), None) or getattr(err, "controller_failure", None) or err
    cause = getattr(cause, "cause", None) or cause  # a RayTaskError wraps the worker's own exception
    return [ln for ln in "".join(traceback.format_exception_only(type(cause), cause)).splitlines() if ln.strip()]


def fit(spec, run_dir: Path, env: dict[str, str]) -> tuple[int, deque[str]]:
    """Run train_entry.main on `spec.ray_workers` Ray Train workers. Returns (exit code, last lines) as the
    accelerate launch does, so run_train's success check and error message are the same for both."""
    import ray
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    address = cluster_address()
    joined = not ray.is_initialized()
    tail: deque[str] = deque(maxlen=40)
    # Ray Train V2 patches print() on its workers into its logger; dill's dis.dis capture (datasets' fingerprints)
    # then floods the log with bytecode. The driver's value is handed to the controller and the workers.
    patch = os.environ.get("RAY_TRAIN_ENABLE_PRINT_PATCH")
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = patch or "0"
    try:
        if joined:
            ray.init(address=address, runtime_env=_runtime_env(address), log_to_driver=True)
        check_fits(spec)
        config = {"run_dir": str(run_dir), "cwd": str(ROOT),
                  "env": worker_env(env)}
        # the workers' nodes have the GPUs, not necessarily this driver: the spec decides, not torch.cuda here
        backend = "nccl" if spec.resources.gpus > 0 else "gloo"
        trainer = TorchTrainer(train_loop, train_loop_config=config, scaling_config=_scaling(spec),
                               torch_config=TorchConfig(backend=backend),
                               # Ray's own run records (no checkpoints: ours are in the run folder)
                               run_config=RunConfig(name="ray-train", storage_path=str(run_dir / "ray")))
        trainer.fit()
        return 0, tail
    except Exception as e:  # TrainingFailedError (a worker or the controller failed), or Ray refused the job
        tail.extend(_error_lines(e))
        print("\n".join(tail), flush=True)
        return 1, tail
    finally:
        if patch is None:
            os.environ.pop("RAY_TRAIN_ENABLE_PRINT_PATCH", None)
        if joined and ray.is_initialized():
            ray.shutdown()  # leave this process as it was: the runner's job process, or a test, goes on
