"""Training from the command line: train (and its --plan), run SPEC.yaml, and slurm SPEC.yaml.

    python -m backend train cpt|sft|dpo --model NAME_OR_PATH --data SOURCE[@WEIGHT] ... --out PATH [--max-steps N]
    python -m backend run SPEC.yaml [--queue] [--name NAME] [--num-machines N --machine-rank R --main-process-ip HOST0]
    python -m backend slurm SPEC.yaml [--nodes N --gpus-per-node G --partition P --time HH:MM:SS] > train.sbatch
"""

from __future__ import annotations

import argparse

from backend.cli.common import _job_options, _run_or_queue, _source, absolute_paths
from backend.cli.recipe import cmd_recipe


def cmd_train(a) -> None:
    from backend.specs import CptSpec, DpoSpec, LoraSpec, SftSpec

    spec_cls = {"cpt": CptSpec, "sft": SftSpec, "dpo": DpoSpec}[a.kind]
    rows = {"sample_by": a.sample_by} if a.sample_by else {}  # every source's .txt files
    fields = dict(model=a.model, data=[d.model_copy(update=rows) for d in a.data], name=a.name, out=a.out,
                  num_processes=a.num_processes,
                  accelerate_config=a.accelerate_config, lora=LoraSpec(r=a.lora) if a.lora else None,
                  **_machine_fields(a))
    for key in ("max_steps", "learning_rate", "batch_size", "max_length", "save_steps", "eval_steps", "max_rows",
                "beta", "loss_type", "eval_fraction", "seed", "report_to", "keep_checkpoints", "grad_accum",
                "lr_scheduler", "warmup_ratio", "weight_decay", "completion_only_loss"):
        if getattr(a, key, None) is not None:
            fields[key] = getattr(a, key)
    if a.eval_data:
        fields["eval_data"] = a.eval_data.model_copy(update=rows)
    if a.report_to is None:  # the workspace default (DUS_REPORT_TO); --report-to none chooses none
        from backend.training import default_report_to

        fields["report_to"] = default_report_to()
    elif a.report_to == ["none"]:
        fields["report_to"] = []
    fields.update(_perf_fields(a))
    spec = spec_cls(**fields)
    if a.plan:
        if a.json:  # the plan is a table for a person; --json is a run's result
            raise ValueError("train --plan prints the memory plan as a table, and runs nothing for --json to print: "
                             "leave out --json, or --plan to run the training.")
        print_plan(spec, a.plan_device, a.plan_memory_gb, a.plan_gpus)
        return
    _set_run_name(a)
    _run_or_queue(spec, a)


PERF_FLAGS = ("compile", "liger", "optimizer", "attention", "packing_strategy")


def _perf_fields(a) -> dict:
    """The perf block, checkpointing, DPO's precompute, the memory check and where a Ray job runs."""
    from backend.specs import PerfOptions, Resources

    fields = {"perf": PerfOptions(**{k: getattr(a, k) for k in PERF_FLAGS if getattr(a, k) is not None})}
    if a.gradient_checkpointing:
        fields["gradient_checkpointing"] = True
    if a.precompute_ref is not None:
        if a.kind != "dpo":
            raise ValueError("--precompute-ref / --no-precompute-ref: only dpo scores a reference model.")
        fields["precompute_ref_log_probs"] = a.precompute_ref
    if a.no_memory_check:
        fields["memory_check"] = False
    if a.ray_workers is not None:
        fields["ray_workers"] = a.ray_workers
    res = {k: getattr(a, k) for k in ("cpus", "gpus", "memory_gb") if getattr(a, k) is not None}
    if res:
        fields["resources"] = Resources(**res)
    return fields


def print_plan(spec, device: str | None, memory_gb: float | None, gpus: int | None) -> None:
    """--plan: every strategy's memory for this model, batch and length against this machine (or the memory given),
    without running or queuing anything."""
    from backend import memplan, registry

    folder, _ = registry.resolve(spec.model)
    avail = what = None
    if memory_gb is not None:
        avail, what = [int(memory_gb * memplan.GiB)] * (gpus or 1), f"{memory_gb:g} GiB device"
    r = memplan.report_for_spec(spec, folder, device, avail, what)
    shape, device = r.shape, r.setup.device
    rows = r.rows()
    print(f"{shape.params / 1e9:.2f}B parameters ({shape.layers} layers, hidden {shape.hidden}, vocab {shape.vocab}); "
          f"{spec.kind}, batch {spec.batch_size} × {spec.max_length} tokens, {device} "
          f"({'bfloat16' if device == 'cuda' else 'float32'}); GiB per {'GPU' if device == 'cuda' else 'RAM'}")
    cols = ["strategy", *memplan.COLUMNS, "overhead", "total", "cpu_ram", "fits"]
    width = max(len(row["strategy"]) for row in rows)
    print(f"{'strategy':<{width}} " + " ".join(f"{c:>11}" for c in cols[1:-1]) + "  fits")
    for row in rows:
        print(f"{row['strategy']:<{width}} " + " ".join(f"{row[c]:>11.2f}" for c in cols[1:-1]) + f"  {row['fits']}")
    print("total = weights + optimizer + reference + the larger of activations and gradients (the backward frees "
          "each layer's activations as it writes its gradients) + overhead (CUDA context and allocator; CPU: the "
          "process)")
    print(r.sentence())


MACHINE_FIELDS = ("num_machines", "machine_rank", "main_process_ip", "main_process_port")


def _machine_fields(a) -> dict:
    return {k: getattr(a, k) for k in MACHINE_FIELDS if getattr(a, k, None) is not None}


def _machine_options(p: argparse.ArgumentParser) -> None:
    """Training on several machines: every machine runs the same command with its own --machine-rank."""
    p.add_argument("--num-machines", type=int, help="machines taking part (accelerate launch --num_machines)")
    p.add_argument("--machine-rank", type=int, help="this machine's rank, 0 to N-1 (0: the main machine)")
    p.add_argument("--main-process-ip", help="host name or IP of machine 0, reachable from the others")
    p.add_argument("--main-process-port", type=int, help="rendezvous port on machine 0 (default 29500)")
    p.add_argument("--run-name", help="run folder under workspace/runs (default with several machines: derived "
                                      "from the spec, the same on every machine); e.g. to continue a finished run")


def _set_run_name(a) -> None:
    """--run-name reaches run_dir_for through the environment (it is not part of what is trained)."""
    import os

    from backend.names import check_name

    if getattr(a, "run_name", None):
        if a.queue or a.after:
            raise ValueError("--run-name applies to a run in the foreground; leave out --queue / --after.")
        os.environ["DUS_RUN_NAME"] = check_name(a.run_name, "--run-name")


def cmd_run(a) -> None:
    from backend.specs import TRAIN_KINDS, load_spec

    if _is_recipe(a.spec):  # a recipe is many jobs: the recipe command plans and submits them
        if a.json:  # its stages' lines are no one JSON result: refused, not dropped
            raise ValueError(f"--json: {a.spec} is a recipe, whose run prints its plan and its stages' lines; run it "
                             "without --json, then `python -m backend recipe runs --json` gives its stages' statuses, "
                             "jobs and models as JSON.")
        # recipe.submit has no `after` (its first stages wait for nothing) and runs no stage on several machines:
        # refused, not dropped (`run R.yaml --after 20` ran at once)
        dropped = [f"--{k.replace('_', '-')}" for k in ("after", *MACHINE_FIELDS, "num_processes", "run_name",
                                                         "name") if getattr(a, k, None) is not None]
        if dropped:
            raise ValueError(f"{' '.join(dropped)}: a recipe cannot take {'it' if len(dropped) == 1 else 'them'} "
                             f"({a.spec} is a recipe; its stages wait only for each other, and each stage's spec "
                             "says where it runs). Run it once that job is done, or `run` a single spec.")
        return cmd_recipe(argparse.Namespace(action="run", target=a.spec, queue=a.queue))
    spec = load_spec(a.spec)
    if a.name is not None:  # the spec's own checks judge the name, as when the page's name field is typed
        if "name" not in type(spec).model_fields:
            raise ValueError(f"--name: a {spec.kind} spec makes nothing to name (--name names the model an upscale, "
                             "merge, import or training makes, or synth-math's data sets).")
        spec = type(spec).model_validate({**spec.model_dump(), "name": a.name})
    over = {**_machine_fields(a), **({"num_processes": a.num_processes} if a.num_processes else {})}
    if over or a.run_name:  # a Slurm task (backend/cluster/slurm.py) places its node this way
        if spec.kind not in TRAIN_KINDS:
            raise ValueError(f"--num-machines, --machine-rank, --num-processes, --run-name: only training specs "
                             f"({', '.join(TRAIN_KINDS)}) run on several machines, not {spec.kind}.")
        spec = type(spec).model_validate({**spec.model_dump(), **over})
        _set_run_name(a)
    more = None
    if spec.kind == "eval" and a.json and not (a.queue or a.after):  # the rows it stored, as `eval --json` adds them
        from backend.cli.evaluate import rows_json, stored_rows

        mine = stored_rows(absolute_paths(spec).models)
        more = lambda result: rows_json(mine())  # noqa: E731
    _run_or_queue(spec, a, more=more)


def cmd_slurm(a) -> None:
    from backend.cluster.slurm import slurm_script
    from backend.specs import load_spec

    print(slurm_script(load_spec(a.spec), spec_path=a.spec, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                       partition=a.partition, time=a.time), end="")


def _is_recipe(path: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):  # load_spec then says what is wrong with the file
        return False
    return isinstance(data, dict) and data.get("kind") == "recipe"


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "train": "continued pretraining, SFT or DPO with trl, through accelerate launch",
    "run": "run a spec saved as YAML (from the UI or --save-spec)",
    "slurm": ("print a Slurm batch script that trains SPEC.yaml on several nodes with accelerate launch (submit it with"
              " sbatch; nothing is submitted here)"),
}


def add_train(sub) -> None:
    """The `train` command's parser: its options follow the spec's fields and defaults."""
    t = sub.add_parser("train", help=HELP["train"])
    from typing import get_args

    t.add_argument("kind", choices=["cpt", "sft", "dpo"], help="continued pretraining, SFT or DPO")
    t.add_argument("--model", required=True, help="registered name or model folder")
    t.add_argument("--data", type=_source, action="append", required=True,
                   help="builtin:NAME, dataset:NAME (registered), mix:NAME (a saved mix), a local file (.jsonl, "
                        ".json, .csv, .parquet, .txt) or a Hub id, optionally @WEIGHT; repeat for a mix")
    from backend.specs import CptSpec, DataSource, DpoSpec, SftSpec, _TrainSpec

    def spec_help(field: str, what: str | None = None) -> str:
        info = _TrainSpec.model_fields[field]
        return f"{what or info.description} (default: {info.default})"

    t.add_argument("--eval-data", type=_source, help="held-out set, as --data (default: --eval-fraction of the data)")
    t.add_argument("--eval-fraction", type=float, help=spec_help("eval_fraction"))
    t.add_argument("--sample-by", choices=get_args(DataSource.model_fields["sample_by"].annotation),
                   help=DataSource.model_fields["sample_by"].description + " (default: line)")
    t.add_argument("--max-steps", type=int, help=spec_help("max_steps", "optimizer steps"))
    t.add_argument("--learning-rate", "--lr", type=float,
                   help="peak learning rate (default: " + ", ".join(
                       f"{k} {c.model_fields['learning_rate'].default:g}"
                       for k, c in (("cpt", CptSpec), ("sft", SftSpec), ("dpo", DpoSpec))) + ")")
    t.add_argument("--batch-size", type=int, help=spec_help("batch_size", "rows per device and micro-batch"))
    t.add_argument("--max-length", type=int, help=spec_help("max_length"))
    t.add_argument("--save-steps", type=int, help=spec_help("save_steps"))
    t.add_argument("--eval-steps", type=int, help=spec_help("eval_steps", "steps between held-out evaluations"))

    for flag, kind in (("grad_accum", int), ("lr_scheduler", None), ("warmup_ratio", float), ("weight_decay", float),
                       ("max_rows", int), ("seed", int)):  # the spec's words, as the Train page's Advanced shows
        info = _TrainSpec.model_fields[flag]
        shown = "all" if info.default is None else info.default  # max_rows: None is every row ("all" on the page),
        # and --help said "(default: None)"
        t.add_argument("--" + flag.replace("_", "-"), type=kind, help=f"{info.description} (default: {shown})",
                       **({"choices": get_args(info.annotation)} if kind is None else {}))
    t.add_argument("--report-to", nargs="+", choices=["tensorboard", "trackio", "mlflow", "wandb", "none"],
                   help="also log to these trackers (trl's report_to); default: DUS_REPORT_TO, else none")
    t.add_argument("--beta", type=float, help=f"dpo: strength of the pull to the reference (default: "
                                              f"{DpoSpec.model_fields['beta'].default})")
    t.add_argument("--loss-type", choices=get_args(DpoSpec.model_fields["loss_type"].annotation),
                   help=f"dpo: trl's loss (default: {DpoSpec.model_fields['loss_type'].default})")
    t.add_argument("--completion-only-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="sft: " + SftSpec.model_fields["completion_only_loss"].description)
    t.add_argument("--lora", type=int, metavar="R", help="train LoRA adapters of rank R (merged at the end)")
    t.add_argument("--num-processes", type=int, default=1, help="processes on this machine")
    t.add_argument("--keep-checkpoints", action="store_true", default=None,
                   help="keep the run's checkpoints after the model is registered (to continue it later)")
    t.add_argument("--accelerate-config", help="your accelerate config file")
    from backend.specs import PerfOptions

    for flag in ("compile", "optimizer", "attention", "packing_strategy"):
        info = PerfOptions.model_fields[flag]
        t.add_argument("--" + flag.replace("_", "-"), choices=get_args(info.annotation), help=info.description)
    t.add_argument("--liger", action=argparse.BooleanOptionalAction, default=None,
                   help=PerfOptions.model_fields["liger"].description)
    t.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in the backward pass: less memory, about a third more compute")
    t.add_argument("--precompute-ref", action=argparse.BooleanOptionalAction, default=None,
                   help="dpo: score the frozen reference once before training (default: auto)")
    t.add_argument("--no-memory-check", action="store_true", help="launch even when the memory plan does not fit")
    t.add_argument("--ray-workers", type=int, help="on a Ray cluster: Ray Train workers (DDP), each with the resources")
    t.add_argument("--cpus", type=float, help="resources: CPU cores the job (each Ray worker) asks for")
    t.add_argument("--gpus", type=float, help="resources: GPUs the job (each Ray worker) asks for")
    t.add_argument("--memory-gb", type=float, help="resources: memory to reserve, GiB")
    t.add_argument("--plan", action="store_true", help="print the memory plan of every strategy and exit (nothing "
                                                       "runs or is queued)")
    t.add_argument("--plan-device", choices=["cuda", "cpu"], help="--plan for this device (default: this machine)")
    t.add_argument("--plan-memory-gb", type=float, help="--plan against devices of this much memory, GiB (default: "
                                                        "the free memory of this machine's GPUs, or its RAM)")
    t.add_argument("--plan-gpus", type=int, help="--plan-memory-gb: how many such devices")
    _machine_options(t)
    t.add_argument("--name", help="registered name (default: MODEL-KIND)")
    t.add_argument("--out", help="folder to write the model to (default $DUS_WORKSPACE/models/NAME; a relative path is from the current folder)")
    _job_options(t, json_holds="the registered model's name (model) and folder (path), the run folder (run_dir), "
                 "steps, losses and the run's choices")
    t.set_defaults(fn=cmd_train)


def add_run(sub) -> None:
    """The `run` command's parser."""
    r = sub.add_parser("run", help=HELP["run"])
    r.add_argument("spec", help="a spec or recipe YAML file (recipe: --after, --json and the machine options are "
                                  "refused)")
    _machine_options(r)
    r.add_argument("--num-processes", type=int, help="training: processes on this machine (overrides the spec)")
    r.add_argument("--name", help="the name to register what the spec makes under (overrides the spec's: a model; "
                                  "synth-math: the data sets' prefix); its folder follows the name unless the spec "
                                  "sets out")
    _job_options(r, save_spec=False, json_holds="the result the spec's own command prints with --json (upscale, "
                 "merge, train, import: the registered model's name (model) and folder (path); eval: the count of "
                 "scores stored (scores) and the rows it stored (rows), as eval --json; synth-math: its data sets "
                 "and counts)", queued_holds="the name it will register (model; synth-math: the data sets, datasets)")
    r.set_defaults(fn=cmd_run)


def add_slurm(sub) -> None:
    """The `slurm` command's parser."""
    sl = sub.add_parser("slurm", help=HELP["slurm"])
    sl.add_argument("spec", help="a cpt/sft/dpo spec (YAML) at a path every node can read")
    sl.add_argument("--nodes", type=int, help="nodes (default: the spec's num_machines)")
    sl.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one process each (0: CPU nodes, "
                    "the spec's num_processes each)")
    sl.add_argument("--partition", help="Slurm partition")
    sl.add_argument("--time", default="04:00:00", help="time limit, HH:MM:SS or DAYS-HH:MM:SS")
    sl.set_defaults(fn=cmd_slurm)
