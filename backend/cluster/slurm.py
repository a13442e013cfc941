"""A Slurm batch script that trains one spec on several nodes with `accelerate launch` (no Ray): one task per node,
each running the same spec with its node's rank, all meeting at the first node of the allocation.

    python -m backend slurm SPEC.yaml --nodes 2 --gpus-per-node 8 --partition gpu --time 12:00:00 > train.sbatch
    sbatch train.sbatch

DUS Studio writes the script; it never submits it (the dashboard host is rarely a Slurm login node, and a
submission needs the user's account). What each node runs is `python -m backend run SPEC --num-machines N
--machine-rank $SLURM_NODEID --main-process-ip FIRST_HOST`, i.e. backend/training.py's multi-machine path:
accelerate's static torchrun rendezvous at FIRST_HOST:PORT, checkpoints and the model written by global rank 0
into the shared workspace, and the model registered by machine 0 only.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from backend.specs import TRAIN_KINDS, _Spec

ROOT = Path(__file__).resolve().parents[2]
TIME_RE = re.compile(r"(\d+-)?\d{1,3}:[0-5]\d:[0-5]\d")  # Slurm's [DAYS-]HH:MM:SS
PARTITION_RE = re.compile(r"[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*")
HEREDOC_END = "DUS_SPEC_END"


def check_options(nodes: int, gpus_per_node: int, partition: str | None, time: str) -> None:
    """ValueError naming the option, before any script is written."""
    if nodes < 1:
        raise ValueError(f"nodes {nodes}: a Slurm job needs at least 1 node (2 or more to train across machines).")
    if gpus_per_node < 0:
        raise ValueError(f"gpus_per_node {gpus_per_node}: use 0 for CPU nodes or the GPUs each node has.")
    if partition is not None and not PARTITION_RE.fullmatch(partition):
        raise ValueError(f"partition {partition!r}: a Slurm partition name (letters, digits, '.', '_', '-'; "
                         "several separated by commas).")
    if not TIME_RE.fullmatch(time):
        raise ValueError(f"time {time!r}: use HH:MM:SS or DAYS-HH:MM:SS, e.g. 04:00:00.")


def slurm_script(spec: _Spec, *, spec_path: str | Path | None = None, nodes: int | None = None,
                 gpus_per_node: int = 0, partition: str | None = None, time: str = "04:00:00",
                 repo: Path | str = ROOT, python: str | None = None, workspace: Path | str | None = None) -> str:
    """The batch script for `spec` (a cpt/sft/dpo spec). `spec_path`: a YAML file every node can read; without it
    the spec is written into the script and saved into the workspace at run time (the dashboard's case).
    `nodes` defaults to the spec's num_machines; processes per node are the GPUs per node (the spec's
    num_processes on CPU nodes). The repository, Python and workspace must sit at the same paths on every node."""
    from storage import db

    if spec.kind not in TRAIN_KINDS:
        raise ValueError(f"kind {spec.kind!r}: only training specs ({', '.join(TRAIN_KINDS)}) run on several "
                         "machines; run other work with `python -m backend run` or the worker.")
    nodes = spec.num_machines if nodes is None else nodes
    check_options(nodes, gpus_per_node, partition, time)
    per_node = gpus_per_node or spec.num_processes
    port = spec.main_process_port or 29500
    python = python or _python(Path(repo))
    workspace = Path(workspace or db.workspace()).expanduser().resolve()
    name = spec.name or spec.default_name()
    q = shlex.quote

    lines = ["#!/bin/bash",
             f"# DUS Studio: {spec.kind} of {_one_line(spec.model)} as {name} on {nodes} node(s) x {per_node} "
             "process(es),",
             "# accelerate launch on each node (no Ray). Submit it yourself: sbatch THIS_FILE",
             f"#SBATCH --job-name={_job_name(name)}",
             f"#SBATCH --nodes={nodes}",
             "#SBATCH --ntasks-per-node=1",  # one launcher per node; accelerate/torchrun starts the processes
             ]
    if gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [f"#SBATCH --time={time}",
              "#SBATCH --output=%x-%j.out",
              "set -euo pipefail",
              "",
              "# Every node must see the same workspace (models, runs, checkpoints) and database: a shared filesystem;",
              "# with PostgreSQL, export DATABASE_URL here as well.",
              f"export DUS_WORKSPACE={q(str(workspace))}",
              f"cd {q(str(Path(repo).resolve()))}"]
    if spec_path is not None:
        lines.append(f"export DUS_SPEC={q(str(Path(spec_path).expanduser().resolve()))}")
    else:
        lines += ['export DUS_SPEC="$DUS_WORKSPACE/runs/slurm-$SLURM_JOB_ID.yaml"',
                  'mkdir -p "$DUS_WORKSPACE/runs"',
                  f"cat > \"$DUS_SPEC\" <<'{HEREDOC_END}'",
                  spec.to_yaml().rstrip("\n"),
                  HEREDOC_END]
    # sed reads the whole list: `head -n 1` would close the pipe early, and under pipefail scontrol's SIGPIPE
    # (exit 141) would end the script whenever the list is longer than what one write carries
    lines += ["# Machine 0 is the first host of the allocation; the others meet it there (torchrun's rendezvous).",
              'MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
              f"export MAIN_IP MAIN_PORT={port} DUS_PYTHON={q(python)}",
              "# One task per node; $SLURM_NODEID (0..N-1) is expanded inside each task, so it is that node's rank.",
              'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \\',
              "  '\"$DUS_PYTHON\" -m backend run \"$DUS_SPEC\" --num-machines \"$SLURM_NNODES\" "
              "--machine-rank \"$SLURM_NODEID\" --main-process-ip \"$MAIN_IP\" --main-process-port \"$MAIN_PORT\" "
              f"--num-processes {per_node}'",
              ""]
    return "\n".join(lines)


def _python(repo: Path) -> str:
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _one_line(text: str) -> str:
    """`text` for a comment line: as it is when printable, else its repr. The model is any text a spec holds (a
    folder may be named anything), and a newline in it ended the comment: the rest ran as a command, before the
    #SBATCH lines, which sbatch then no longer read."""
    return text if text.isprintable() else repr(text)


def _job_name(name: str) -> str:
    return f"dus-{name}"[:64]
