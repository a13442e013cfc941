"""DUS Studio's command line: a thin shell over the same specs and functions the pages use.

    python -m backend upscale --base SmolLM2-135M-Instruct --m 8 --out workspace/models/smol-dus-m8
    python -m backend upscale --base A --method slices --slice 0:0:20 --slice 0:10:30 --out PATH
    python -m backend upscale --base A --method llama-pro --groups 5 --out PATH
    python -m backend models list [--json] | import builtin|FOLDER|FILE.gguf|owner/name [--queue] | delete NAME
    python -m backend models push NAME --repo OWNER/NAME [--private]  # with a model card; needs HF_TOKEN
    python -m backend train cpt|sft|dpo --model NAME_OR_PATH --data SOURCE[@WEIGHT] ... --out PATH [--max-steps N]
    python -m backend synth-math --seeds N --rephraser rules|model:NAME|openai:URL --out PATH [--level 1 …]
    python -m backend datasets list | export PAIRS_NAME | mix NAME --for sft|dpo SOURCE[@WEIGHT] … | delete NAME
    python -m backend datasets pairs PAIRS_NAME [--status failed] | reject PAIRS_NAME PAIR_ID [--undo]
    python -m backend datasets push PAIRS_NAME --repo OWNER/NAME      # needs HF_TOKEN with write access
    python -m backend merge --method average|slerp|task_arithmetic|ties|dare_linear|dare_ties --models A B
                            [--weights 0.5 0.5] [--t 0.5 | --t 0 0.5 1] [--base BASE --density 0.5] --out PATH
    python -m backend eval MODEL [MODEL ...] --tasks perplexity synth-math qa[:FILE] mc:FILE gsm8k:FILE [--limit N]
    python -m backend scores [MODEL ...] [--format md|csv|tex | --json]   # the Compare page's table
    python -m backend compare A B --task synth-math [--outcome hallucination]   # or just shorter answers?
    python -m backend run SPEC.yaml [--queue] [--name NAME] [--num-machines N --machine-rank R
                            --main-process-ip HOST0]
    python -m backend slurm SPEC.yaml [--nodes N --gpus-per-node G --partition P --time HH:MM:SS] > train.sbatch
    python -m backend recipe new smoke|solar-mini|solar-10.7b [--base B] [--m M] > R.yaml
    python -m backend recipe plan R.yaml | run R.yaml [--queue] | tables [RUN] [--format md|csv|tex] | cancel RUN
    python -m backend recipe runs [--limit N] [--json]      # the runs and their stages' statuses (the Recipe page)
    python -m backend chat MODEL --prompt TEXT [--system TEXT] [--max-new-tokens N]   # one reply, printed
    python -m backend worker
    python -m backend cluster status | check          # with DUS_RAY_ADDRESS=http://HEAD:8265 (a Ray cluster)
    python -m backend jobs list | show ID | cancel ID | resume ID | wait ID [--timeout S]
    python -m backend jobs log ID [--lines N] [--follow]    # --follow: like tail -f, until the job ends
    python -m backend auth hash | check [--address 0.0.0.0]

Commands do their work in the foreground and exit when it is done; `--queue` hands it to the worker instead.
Ctrl-C stops a command with one line saying what was stopped and what goes on (exit code 130).
Local paths (files, folders, --out) are taken from the directory you run the command in, and the spec holds
them absolute, so a queued job and a saved spec find them from anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time

from pydantic import ValidationError

from backend.specs import (TRAIN_KINDS, CptSpec, DataSource, DpoSpec, EvalSpec, LoraSpec, MergeSpec, SftSpec,
                           SliceRange, SynthMathSpec, UpscaleSpec, explain, load_spec)


EXIT_CODES = """exit codes:
  0  done (or queued)
  1  the work ran and failed, or produced nothing: a foreground job that failed, a recipe run with a failed
     stage, synth-math with no verified pair, compare refused for too few shared items, jobs cancel of a
     finished job, jobs wait or jobs log --follow on a job that did not succeed, a chat reply whose generation
     failed, a datasets or models push the Hub refused or could not be reached
  2  refused: a usage error, a bad spec or input, a missing model or file (also an input found bad while
     running, such as a damaged weights file)
  124  jobs wait --timeout: the job had not finished in time
  130  interrupted (Ctrl-C): one line says what stopped and what goes on"""

_printed = [-1.0]  # when _progress last printed (time.monotonic)
# what a Ctrl-C stops, said in main's one line: set by a command as it starts waiting or working (None: the command)
_on_interrupt: list = [None]


class WorkFailed(Exception):
    """The work ran and failed, or produced nothing: exit code 1, apart from 2 for a refusal before anything ran
    (a script could not tell "bad arguments" from "the training ran and failed"). An empty message: what to say was
    already printed."""


def _abs(path: str) -> str:
    """A path typed on the command line, absolute against the directory the command runs in: jobs and the trainer
    run in the repository's root (backend/runner.py, backend/training.py), where a relative path named another file,
    or none (`--data specs/al.jsonl` passed the checks here and failed the job: "does not exist")."""
    import os

    return os.path.abspath(os.path.expanduser(path))


def _local_model(ref: str | None) -> str | None:
    """A model given as a folder, absolute; a registered name, `builtin` or a Hub id as given (a registered name
    wins over a folder of that name here, as registry.resolve decides)."""
    from pathlib import Path

    from backend import registry

    if not ref or registry.get(ref) is not None or not Path(ref).expanduser().exists():
        return ref
    return _abs(ref)


def _local_source(source: str) -> str:
    """A data source: a local file (there, or looking like one: backend/data.looks_local) absolute; builtin:,
    dataset:, mix: and Hub ids as given."""
    from pathlib import Path

    from backend.data import looks_local

    if source.startswith(("builtin:", "dataset:", "mix:")):
        return source
    return _abs(source) if looks_local(source) or Path(source).expanduser().exists() else source


def _local_task(task: str) -> str:
    """perplexity:FILE, qa:FILE, mc:FILE, gsm8k:FILE with FILE absolute, as a data source is (_local_source:
    perplexity's builtin:, dataset:, mix: and Hub ids stay as given); lm-eval:NAME and the built-in tasks as
    given."""
    kind, sep, arg = task.partition(":")
    return f"{kind}:{_local_source(arg)}" if sep and arg and kind in ("perplexity", "qa", "mc", "gsm8k") else task


def absolute_paths(spec):
    """The spec with every local path in it absolute (data files, task files, out, accelerate config, seed and
    benchmark files, model folders): the one place the CLI does this, for every command and for `run SPEC.yaml`."""
    up: dict = {}
    fields = type(spec).model_fields
    for key in ("out", "accelerate_config", "benchmark"):
        if key in fields and getattr(spec, key):
            up[key] = _abs(getattr(spec, key))
    for key in ("base", "second", "model", "reference_model"):
        if key in fields and getattr(spec, key):
            up[key] = _local_model(getattr(spec, key))
    if "models" in fields:
        up["models"] = [_local_model(m) for m in spec.models]
    if spec.kind == "import":
        up["target"] = _local_model(spec.target)
    if spec.kind == "synth-math":
        if spec.seeds != "generator":
            up["seeds"] = _abs(spec.seeds)
        if spec.rephraser.startswith("model:"):
            up["rephraser"] = "model:" + _local_model(spec.rephraser.removeprefix("model:"))
    if "data" in fields:
        up["data"] = [d.model_copy(update={"source": _local_source(d.source)}) for d in spec.data]
    if "eval_data" in fields and spec.eval_data:
        up["eval_data"] = spec.eval_data.model_copy(update={"source": _local_source(spec.eval_data.source)})
    if spec.kind == "eval":
        up["tasks"] = [_local_task(t) for t in spec.tasks]
    return spec.model_copy(update=up)  # the paths passed the spec's checks here already, from this directory


def _print_json(rows: list[dict]) -> None:
    """A listing for scripts (`--json`): one JSON array, whole values (no column cut), times as ISO 8601."""
    import json

    print(json.dumps(rows, indent=1, ensure_ascii=False, default=lambda v: v.isoformat() if hasattr(v, "isoformat")
                     else str(v)))


def _progress(frac: float, message: str) -> None:
    """A job's progress on stderr, at most twice a second, and its end: a 0.7 s build printed 80 lines."""
    now = time.monotonic()
    if frac < 1.0 and now - _printed[0] < 0.5 and not message.startswith("warning:"):  # a warning is always said
        return
    _printed[0] = now
    print(f"[{frac:6.1%}] {message}", file=sys.stderr, flush=True)


def _job_options(p: argparse.ArgumentParser, save_spec: bool = True) -> None:
    """The options every job command shares; _run_or_queue acts on them."""
    if save_spec:
        p.add_argument("--save-spec", metavar="FILE", help="also write the spec as YAML here (rerun with `run`); "
                       "written once the spec passes the checks a queued job gets, so a refused spec is not saved; "
                       "a run that fails later (out of memory, say) leaves it written, to rerun")
    p.add_argument("--queue", action="store_true", help="hand the job to the worker instead of running it here")
    p.add_argument("--after", type=int, help="queue it to run after this job succeeds")


def _run_or_queue(spec, a: argparse.Namespace) -> None:
    """Every command ends here: run the spec in the foreground or hand it to the worker, saving it (if asked) once
    it passed the checks."""
    from backend import runner

    spec = absolute_paths(spec)
    if getattr(a, "save_spec", None):  # before queueing: a path that cannot be written queues nothing
        runner.check_before_queueing(spec)
        _save_spec(spec, a)
    if a.queue or a.after:
        job = runner.submit(spec, after=a.after)
        # what it will register: a merge --out FOLDER is registered under its spec's name, not the folder's
        made = f" -> {name}" if (name := runner.planned_name(job)) else ""
        if spec.kind == "synth-math":  # data sets of the run's name, never one named so
            made = f" -> {spec.name}-pairs, {spec.name}-instruct, {spec.name}-alignment"
        print(f"queued job {job.id} ({spec.kind}{made}); a running worker picks it up (python -m backend worker)")
        return
    _on_interrupt[0] = lambda: (f"the {spec.kind} stopped before it finished; it ran here, not as a job, so there "
                                "is nothing to resume: run the command again (with --queue the worker runs it, and "
                                "closing the terminal does not stop it)")
    from backend.hubpush import PushFailed

    try:
        result = runner.work_function(spec.kind)(spec, None, _progress)
    except (RuntimeError, OSError, PushFailed) as exc:  # the work ran and failed (the trainer's exit, out of memory,
        # a full disk, a push the Hub refused or did not answer): 1; a ValueError is an input refused (by the checks,
        # or by reading a damaged weights file): 2, as before, and so is a path that is taken, missing or of the
        # wrong kind (an --out that holds files)
        if isinstance(exc, (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            raise
        raise WorkFailed(str(exc)) from exc
    for k, v in result.items():
        print(f"{k}: {v}")
    if spec.kind == "synth-math" and not result.get("rows"):
        raise WorkFailed(f"synth-math produced no training data ({result.get('verified', 0)} verified, "
                         f"{result.get('failed', 0)} failed): the reasons are in {result.get('pairs')}'s pairs "
                         f"(its pairs.jsonl); `datasets delete {result.get('pairs')}` before running it again "
                         "under this name.")


def _save_spec(spec, a: argparse.Namespace) -> None:
    """--save-spec, after the spec passed runner.check_before_queueing (submit runs it): a spec written before a
    check refused it (a model that is not there, a name taken, m past the base's depth) was a broken file the user
    would rerun with `run`."""
    if getattr(a, "save_spec", None):
        with open(a.save_spec, "w") as f:
            f.write(spec.to_yaml())


def _slice(text: str) -> SliceRange:
    try:
        src, start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slice {text!r}: use SOURCE:START:END, e.g. 0:0:24 (END exclusive)")
    return SliceRange(source=src, start=start, end=end)


def cmd_upscale(a) -> None:
    spec = UpscaleSpec(base=a.base, method=a.method, m=a.m, slices=a.slice or [], second=a.second,
                       groups=a.groups, name=a.name, out=a.out, shard_size=a.shard_size)
    _run_or_queue(spec, a)


def _source(text: str) -> DataSource:
    source, _, weight = text.rpartition("@") if "@" in text else (text, "", "1")
    try:
        return DataSource(source=source, weight=float(weight))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--data {text!r}: use SOURCE or SOURCE@WEIGHT with a positive weight, "
                                         "e.g. data.jsonl@0.5")


def cmd_train(a) -> None:
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


def cmd_synth(a) -> None:
    spec = SynthMathSpec(seeds=a.seed_file or "generator", num_seeds=a.seeds, rephraser=a.rephraser,
                         api_model=a.api_model, levels=a.level or [], categories=a.category or [],
                         benchmark=a.benchmark, name=a.name, out=a.out, seed=a.seed, batch_size=a.batch_size,
                         include_flagged=a.include_flagged, temperature=a.temperature, api_key_env=a.api_key_env)
    _run_or_queue(spec, a)


def print_preview(a) -> None:
    """`datasets preview`: what the Train page shows of a source before launch (data.preview: its layout for the
    job kind, columns, row count, the first rows as trl will read them), so a source is checked from a shell too."""
    import json

    from backend import data

    pv = data.preview(_local_source(a.source), a.purpose, n=a.rows, sample_by=a.sample_by)
    if a.json:
        return _print_json(pv)
    per = data.rows_said(a.sample_by, pv, choice=f"--sample-by {a.sample_by}")
    print(f"{a.source}: {pv['layout']} layout for {a.purpose}, {pv['rows']} rows{per}; columns "
          f"{', '.join(pv['columns'])}")
    for i, row in enumerate(pv["examples"], 1):
        print(f"--- row {i} as {a.purpose} reads it\n{json.dumps(row, ensure_ascii=False, indent=1)}")


def cmd_datasets(a) -> None:
    from backend.synth import pipeline

    if a.action == "list":
        if a.json:
            return _print_json([{"name": d.name, "kind": d.kind, "rows": d.rows, "path": d.path,
                                 "provenance": d.provenance, "created": d.created} for d in pipeline.list_datasets()])
        print(f"{'name':36} {'kind':12} {'rows':>7}  path / sources")
        for d in pipeline.list_datasets():
            where = d.path or ", ".join(f"{x['source']}×{x['weight']:g}" + (f" by {x['sample_by']}" if
                                                                            x.get("sample_by") else "")
                                        for x in d.provenance.get("sources", []))
            print(f"{d.name:36} {d.kind:12} {d.rows:7d}  {where}")
    elif a.action == "export":
        for k, v in pipeline.export(a.name, include_flagged=a.include_flagged).items():
            print(f"{k}: {v}")
    elif a.action == "mix":
        purpose = a.purpose or "sft"
        rows = [a.sample_by] if a.sample_by else []  # kept with the mix's .txt members (data.expand_rows)
        rec = pipeline.save_mix(a.name, [(_local_source(d.source), d.weight, *rows) for d in a.sources], purpose)
        took = "" if a.purpose else " (the default: --for dpo or --for cpt saves preference or pretraining data)"
        print(f"saved mix {rec.name} for {purpose}{took}: use --data mix:{rec.name}")
    elif a.action == "preview":
        print_preview(a)
    elif a.action == "paper-mixes":
        saved = pipeline.save_paper_mixes(a.name)
        print(f"saved {', '.join(r.name for r in saved)} (Synth. Math from {a.name}): use --data mix:NAME")
    elif a.action == "delete":
        print(pipeline.delete_dataset(a.name, force=a.force))
    elif a.action == "pairs":
        print_pairs(a)
    elif a.action == "reject":
        print(reject_pair(a.name, a.pair_id, a.undo))
    elif a.action == "push":
        try:
            print(pipeline.push_to_hub(a.name, a.repo))
        except pipeline.PushFailed as exc:  # the push was tried and the Hub refused it or did not answer: 1; a
            # refusal before any upload (no token, no export, an export older than a hand rejection) stays 2
            raise WorkFailed(str(exc)) from exc


def _pairs_set(name: str):
    """The synthetic pairs data set `name`, or a refusal naming where the names are."""
    from backend.synth import pipeline

    rec = pipeline.get_dataset(name)
    if rec is None or rec.kind != "synth-pairs":
        raise pipeline.DatasetError(f"No synthetic pairs named {name!r}: `python -m backend datasets list` shows "
                                    "them (kind synth-pairs; their names end in -pairs).")
    return rec


def print_pairs(a) -> None:
    """`datasets pairs NAME`: the Synthetic math page's inspector as lines (pipeline.query_pairs, its filters), with
    each pair's id for `datasets reject`."""
    from backend.synth import pipeline

    if a.limit < 1 or a.page < 1:
        raise ValueError(f"--limit {a.limit} --page {a.page}: give 1 or more for both.")
    rec = _pairs_set(a.name)
    total, rows = pipeline.query_pairs(rec.id, categories=a.category, levels=a.level, states=a.status,
                                       search=a.search or "", page=a.page - 1, page_size=a.limit)
    if a.json:
        return _print_json([{"id": p.id, "status": p.status, "rejected_by_hand": p.rejected_by_hand,
                             "reason": p.reason, "category": p.category, "level": p.level, "question": p.question,
                             "solution": p.solution, "answer": p.answer, "new_question": p.new_question,
                             "new_solution": p.new_solution, "new_answer": p.new_answer} for p in rows])
    for p in rows:
        state = p.status + (", rejected by hand" if p.rejected_by_hand else "")
        reason = f" ({p.reason})" if p.reason and p.reason != pipeline.HAND_REJECTED else ""
        question = " ".join((p.new_question or p.question).split())
        print(f"{p.id:7d}  {state:27} {p.category} L{p.level}  answer {p.answer}{reason}  "
              f"{question if len(question) <= 70 else question[:69] + '…'}")
    pages = max(1, -(-total // a.limit))
    print(f"{len(rows)} of {total} matching pairs (page {a.page} of {pages}; --page N for another); the whole pair: "
          "--json", file=sys.stderr)


def reject_pair(name: str, pair_id: int, undo: bool) -> str:
    """`datasets reject NAME ID [--undo]`: the inspector's Reject this pair / Undo rejection (pipeline.reject_by_hand),
    for a pair of that data set only (an id of another run's pairs is refused, not rejected there)."""
    from backend.synth import pipeline
    from storage import db
    from storage.models import SynthPair

    rec = _pairs_set(name)
    with db.session() as s:
        pair = s.get(SynthPair, pair_id)
    if pair is None or pair.dataset_id != rec.id:
        raise pipeline.DatasetError(f"No pair {pair_id} in {name}: `python -m backend datasets pairs {name}` lists "
                                    "its pairs with their ids.")
    if pair.rejected_by_hand != undo:
        return f"pair {pair_id} of {name}: {'not rejected by hand' if undo else 'rejected by hand'} already"
    pipeline.reject_by_hand(pair_id, undo=undo)
    said = f"pair {pair_id} of {name}: {'rejection undone' if undo else 'rejected by hand'}"
    prefix = name.removesuffix("-pairs")
    if pair.status == "failed":
        return said + " (a failed pair is never exported)"
    export = pipeline.get_dataset(f"{prefix}-instruct")
    if export is None:
        return said
    if pair.status == "flagged" and not export.provenance.get("include_flagged"):
        return said + (f" (its export leaves flagged pairs out; `datasets export {name} --include-flagged` takes "
                       "them)")
    return said + (f"; {prefix}-instruct and {prefix}-alignment are as exported before: `python -m backend datasets "
                   f"export {name}` writes them {'with' if undo else 'without'} it (a push is refused until then)")


def cmd_merge(a) -> None:
    given = {"t": a.t[0] if a.t and len(a.t) == 1 else a.t, "density": a.density, "seed": a.seed, "lambda": a.lam}
    # only the options given: MergeSpec refuses one its method does not use (`--method slerp --weights 0.2 0.8`
    # merged a plain SLERP), and a default passed for every method looked given
    spec = MergeSpec(models=a.models, method=a.method, weights=a.weights, normalize=a.normalize,
                     rescale=a.rescale, base=a.base, dtype=a.dtype, tokenizer_source=a.tokenizer_source,
                     chat_template=_template_arg(a.chat_template), name=a.name, out=a.out, shard_size=a.shard_size,
                     **{k: v for k, v in given.items() if v is not None})
    _run_or_queue(spec, a)


def _template_arg(value: str | None) -> str | None:
    """--chat-template: 'auto', a Jinja template, or @FILE holding one."""
    from pathlib import Path

    if value and value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            raise ValueError(f"--chat-template {value}: no such file.")
        return path.read_text()
    return value


def cmd_eval(a) -> None:
    spec = EvalSpec(models=a.models, tasks=a.tasks, limit=a.limit, max_new_tokens=a.max_new_tokens,
                    samples=a.samples, device=a.device, batch_size=a.batch_size,
                    overlap_threshold=a.overlap_threshold, ngram=a.ngram, judge_url=a.judge_url, judge_model=a.judge_model)
    spec = absolute_paths(spec)
    queued = bool(a.queue or a.after)
    if a.fan_out and len(a.models) > 1 and not queued:
        raise ValueError("eval --fan-out: one job per model runs through the worker; add --queue.")
    if queued and len(a.models) > 1 and a.fan_out is not False:  # the Eval page's default: one job per model
        from backend import runner

        runner.check_before_queueing(spec)  # every model, before the first job is queued
        _save_spec(spec, a)
        jobs = [runner.submit(one, after=a.after) for one in spec.per_model()]
        print(f"queued jobs {', '.join(str(j.id) for j in jobs)} (eval, one per model); they run side by side on "
              "the worker's free slots (python -m backend worker --slots N) or a Ray cluster; --no-fan-out queues "
              "one job")
        return
    if a.queue or a.after:
        return _run_or_queue(spec, a)
    before = _last_score_id()
    _run_or_queue(spec, a)
    notes: dict[str, None] = {}
    from backend.evaluate import stored_name

    rows = _scores_since(before, [stored_name(m) for m in a.models])  # a folder's scores are stored under its name
    width = max([40, *(len(r.model) for r in rows)])  # a longer name pushed its row's columns out of line
    for r in rows:
        over = f"  overlap {r.overlap_share:.0%}" if r.overlap_share else ""
        print(f"{r.model:{width}} {r.task:28} {r.metric:28} {r.value:10.4f}  (n={r.n}){over}")
        overlap = (r.details or {}).get("overlap") or {}
        # a note names the model of the lineage it is about ("tiny: base model, …"): once, for the model itself
        notes.update(dict.fromkeys(n if n.startswith(f"{r.model}: ") else f"{r.model}: {n}"
                                   for n in overlap.get("notes", [])))
        notes.update(dict.fromkeys(f"{r.model}: overlap unknown: its training data {src} could not be read ({why})"
                                   for src, why in (overlap.get("unchecked") or {}).items()))
    for note in notes:  # what the overlap check could not read (a deleted ancestor's training data): the pages say it
        print(f"note: {note}")


def _last_score_id() -> int:
    """The newest score row before an evaluation in the foreground: the rows after it are the ones it wrote (earlier
    runs of the same models and tasks stay in the table, and are not this run's scores)."""
    from sqlmodel import func, select

    from storage import db
    from storage.models import EvalScore

    with db.session() as s:
        return s.exec(select(func.max(EvalScore.id))).one() or 0


def _scores_since(after_id: int, models: list[str]) -> list:
    """The rows this foreground evaluation stored: newer than `after_id`, of its models, and written without a job
    (backend/evaluate.py stores DUS_JOB_ID's, unset here), so a worker's job storing scores meanwhile is not shown."""
    import os

    from sqlmodel import select

    from storage import db
    from storage.models import EvalScore

    job = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    mine = EvalScore.job_id.is_(None) if job is None else EvalScore.job_id == job
    with db.session() as s:
        rows = s.exec(select(EvalScore).where(EvalScore.id > after_id, EvalScore.model.in_(models), mine)).all()
    return sorted(rows, key=lambda r: (r.model, r.task, r.metric))


def cmd_scores(a) -> None:
    """The Compare page's models × tasks table: headline score per task with its standard error (lm-eval's
    "value ± stderr"), the average over the tasks every model has, hallucination and cut-off shares, the overlap
    badges and the lineage, then the notes the page shows under it."""
    from backend import registry, scoretable
    from backend.recipe import tables

    latest = scoretable.latest_scores()
    if a.models:
        unknown = sorted(set(a.models) - {m for m, _, _ in latest})
        if unknown:
            raise ValueError(f"no scores for {', '.join(unknown)}: evaluate first (`python -m backend eval MODEL`).")
        latest = {k: r for k, r in latest.items() if k[0] in a.models}
    if a.json and a.format:  # one or the other: --format was dropped without a word
        raise ValueError(f"scores --json prints JSON; --format {a.format} is for the table: give one of them.")
    a.format = a.format or "md"
    if not latest and not a.json:  # --json: [], as every other list for scripts (jobs, models, data sets)
        raise ValueError("no scores yet: evaluate first (`python -m backend eval MODEL`).")
    if a.json:  # for scripts: every stored score of the table's runs by its own keys (the CSV's columns are the
        # page's labels, "synth-math (accuracy) ±"), with the standard error and items the table shows beside it
        _print_json([{**scoretable.headline_score(latest, r, a.clean), "clean": a.clean, "overlap_share":
                      r.overlap_share, "job": r.job_id, "run": r.run, "created": r.created, "details": r.details}
                     for _, r in sorted(latest.items()) if not r.metric.endswith(scoretable.STDERR)])
        return
    rows = scoretable.table_rows(latest, {r.name: r for r in registry.list_models()}, clean=a.clean)
    if a.format == "csv":  # every score numeric, its error in its own ± column (as the page's Export CSV)
        print(tables.to_csv(tables.Table("scores", "Models × tasks", list(rows[0]), [list(r.values()) for r in rows])),
              end="")
        return
    print({"md": tables.to_markdown, "tex": tables.to_latex}[a.format](scoretable.export_table(rows)), end="")
    for note in scoretable.table_notes(latest, rows, a.clean):  # as LaTeX comments in a .tex: its % and _ broke it
        print(f"{'% ' if a.format == 'tex' else ''}note: {note}")


def cmd_compare(a) -> None:
    """The Compare page's answer to "fewer hallucinations, or just shorter answers?" for two models on one task:
    the sentence, the raw gap (paired bootstrap), McNemar on accuracy, and the gap within length bins."""
    from backend import analysis

    if not 2 <= a.bins <= 6:
        raise ValueError(f"--bins {a.bins}: give 2 to 6 answer-length bins (as the Compare page's slider).")
    a.task = _local_task(a.task)  # as `eval` stored it: a task file under its absolute path
    if a.task.partition(":")[0] == "perplexity":  # scores only: "evaluate with --tasks perplexity" would not help
        raise ValueError("perplexity stores a score per model, no answers to compare: compare needs a task with "
                         "answers (synth-math, qa[:FILE], mc:FILE, gsm8k:FILE); `scores` shows perplexity.")
    pair = analysis.pair_records(a.task, a.model_a, a.model_b)  # the two models' answers only (every model's: 0.7 s
    # at 150 models)
    res = analysis.compare(pair, a.model_a, a.model_b, outcome=a.outcome)
    print(res["sentence"])
    if not res["ok"]:  # the comparison could not be made (too few shared items): said above, and not a success
        raise WorkFailed("")
    raw, mc = res["raw"], res["mcnemar"]
    rate = analysis.RATE_LABEL[a.outcome]
    print(f"{rate} {a.model_a} {res['rate_a']:.3f}, {a.model_b} {res['rate_b']:.3f}; A − B {raw['diff']:+.3f} "
          f"[{raw['low']:+.3f}, {raw['high']:+.3f}] (paired bootstrap over {raw['n']} items)")
    print(f"accuracy, McNemar: only {a.model_a} right on {mc['only_a_correct']}, only {a.model_b} on "
          f"{mc['only_b_correct']}, p = {mc['pvalue']:.3g}")
    strat = analysis.length_controlled(pair, a.model_a, a.model_b, n_bins=a.bins, boots=500, outcome=a.outcome)
    lo, hi = strat["length_controlled_ci"]
    gap = strat["length_controlled_diff"]
    print(f"within {strat['bins']} length bins: {rate} gap "
          + (f"{gap:+.3f} [{lo:+.3f}, {hi:+.3f}]" if gap is not None and lo is not None else "n/a (too few answers)")
          + f"; mean length {res['mean_tokens_a']:.0f} vs {res['mean_tokens_b']:.0f} tokens")


def cmd_run(a) -> None:
    if _is_recipe(a.spec):  # a recipe is many jobs: the recipe command plans and submits them
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
    _run_or_queue(spec, a)


def cmd_slurm(a) -> None:
    from backend.cluster.slurm import slurm_script

    print(slurm_script(load_spec(a.spec), spec_path=a.spec, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                       partition=a.partition, time=a.time), end="")


def _is_recipe(path: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):  # load_spec then says what is wrong with the file
        return False
    return isinstance(data, dict) and data.get("kind") == "recipe"


def cmd_recipe(a) -> None:
    """`new PRESET` prints a recipe; `plan FILE` shows what would run and what is reused; `run FILE` submits the
    stages as dependent jobs and (without --queue) runs them here; `tables RUN` prints the paper's tables."""
    from backend import recipe

    if a.action == "new":
        print(recipe.preset(a.target, getattr(a, "base", None), getattr(a, "m", None)), end="")
        return
    if a.action == "tables":
        from backend.recipe import tables
        from backend.recipe.plan import get_run

        latest = recipe.runs(1)
        if a.target is None and not latest:
            raise ValueError("no recipe has run yet: `recipe run FILE` first.")
        run_id = get_run(a.target).id if a.target is not None else latest[0].id
        for t in tables.run_tables(run_id):
            print({"md": tables.to_markdown, "csv": tables.to_csv, "tex": tables.to_latex}[a.format](t))
        return
    if a.action == "cancel":
        print(f"cancelled jobs: {recipe.cancel_run(a.target) or 'none were still waiting or running'}")
        return
    if a.action == "runs":
        return print_runs(a.limit, a.json)
    with open(a.target) as f:
        text = f.read()
    plans = recipe.plan_text(text)
    for p in plans:
        print("\n".join(p.lines()))
    if a.action == "run":
        if not a.queue:  # Ctrl-C while its stages run here: which runs were submitted, and what goes on
            before = max([r.id for r in recipe.runs(1)], default=0)
            _on_interrupt[0] = lambda: _recipe_interrupted(before)
        ids = recipe.run_recipe(text, queue=a.queue, plans=plans)  # without --queue: its own jobs, run here
        print(f"recipe run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} "
              f"{'submitted' if a.queue else 'submitted and run here'}")
        if not a.queue:
            from backend import runner

            _wait_for_other_workers(ids)
            bad = []
            for run_id in ids:
                for row, job in recipe.stages(run_id):
                    state = recipe.stage_state(row, job) or "-"
                    said = runner.job_message(job) if job else ""  # the reason, as `jobs list` says it
                    print(f"  {row.stage:28} {state:10} {row.output} {said[:100]}")
                    if not row.reused and job and job.status != "succeeded":
                        bad.append(f"{row.stage} ({job.status})")
            if bad:
                raise WorkFailed(f"recipe run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: "
                                 f"{len(bad)} stage{'s' if len(bad) > 1 else ''} did not succeed: {', '.join(bad)}.")


def _taken_elsewhere(run_ids: list[int]) -> list[int]:
    """The runs' stage jobs still to end once the foreground worker found nothing more to run: running, or queued
    behind a job that still runs (not those that will not run, behind a failed one). A worker started elsewhere
    (run.sh's, another machine's) claimed one of them first, and the rest wait on it."""
    from backend import recipe, runner

    alive, active = runner.worker_alive(), runner.active_jobs()
    return sorted({job.id for run_id in run_ids for row, job in recipe.stages(run_id)
                   if job is not None and not row.reused and (job.status == "running" or (
                       job.status == "queued" and not runner.job_message(job, active, alive).startswith("will not")))})


def _wait_for_other_workers(run_ids: list[int]) -> None:
    """A foreground `recipe run` ends when its runs end: with another worker alive that took a stage (its jobs are
    queued for any worker), wait for it, rather than report its running and queued stages as failed (exit 1 while
    the run went on)."""
    from backend import runner

    waiting = _taken_elsewhere(run_ids)
    if not waiting or not runner.worker_alive():
        return
    runs = ", ".join(map(str, run_ids))
    print(f"another worker took stage jobs of recipe run {runs}: waiting for jobs {', '.join(map(str, waiting))} to "
          "end (Ctrl-C stops waiting, not them)", file=sys.stderr, flush=True)
    _on_interrupt[0] = lambda: (f"stopped waiting; recipe run {runs} goes on in the other worker (python -m backend "
                                "recipe runs shows it)")
    while _taken_elsewhere(run_ids) and runner.worker_alive():
        time.sleep(2.0)


def print_runs(limit: int, as_json: bool) -> None:
    """`recipe runs`: the recipe runs, newest first, each with its stages' statuses, jobs, models and messages (the
    Recipe page's run picker and stage table)."""
    from backend import recipe, runner

    if limit < 0:
        raise ValueError(f"--limit {limit}: give the number of runs, or 0 for all.")
    alive, active = runner.worker_alive(), runner.active_jobs()  # once, for every stage's message
    runs = []
    for run in recipe.runs(limit or None):
        stages = [{"stage": row.stage, "kind": row.kind, "status": recipe.stage_state(row, job), "job": row.job_id,
                   "output": row.output, "message": runner.job_message(job, active, alive) if job else ""}
                  for row, job in recipe.stages(run.id)]
        runs.append({"id": run.id, "name": run.name, "created": run.created, "stages": stages})
    if as_json:
        return _print_json(runs)
    if not runs:
        print("no recipe has run yet: `python -m backend recipe run FILE` first.", file=sys.stderr)
    for run in runs:
        tally: dict[str, int] = {}
        for st in run["stages"]:
            tally[st["status"] or "-"] = tally.get(st["status"] or "-", 0) + 1
        n = len(run["stages"])
        print(f"run {run['id']} · {run['name']} · {run['created']:%Y-%m-%d %H:%M} · {n} stage{'' if n == 1 else 's'}"
              + (": " + ", ".join(f"{k} {state}" for state, k in tally.items()) if tally else ""))
        width = max([len("stage"), *(len(st["stage"]) for st in run["stages"])])
        for st in run["stages"]:
            said = st["message"] if len(st["message"]) <= 60 else st["message"][:59] + "…"
            print(f"  {st['stage']:{width}} {st['kind']:10} {st['status'] or '-':11} {st['job'] or '-':>5} "
                  f"{st['output'] or '-'}  {said}".rstrip())


def _recipe_interrupted(before: int) -> str:
    """What a Ctrl-C during a foreground `recipe run` leaves: the runs it submitted (newer than `before`), their
    stage jobs it stopped (the worker loop marks them interrupted as it ends: runner._interrupt_running; a row still
    running is one it was ending) and those still queued."""
    from backend import recipe

    mine = [r.id for r in recipe.runs(20) if r.id > before]
    if not mine:
        return "the recipe run stopped before its stages were submitted; nothing was queued"
    jobs = {job.id: job.status for run_id in mine for row, job in recipe.stages(run_id)
            if job is not None and not row.reused and (row.info or {}).get("status") != "in-flight"}
    stopped = [str(i) for i, status in sorted(jobs.items()) if status in ("running", "interrupted")]
    queued = [str(i) for i, status in sorted(jobs.items()) if status == "queued"]
    said = f"recipe run{'s' if len(mine) > 1 else ''} {', '.join(map(str, mine))} stopped here"
    if stopped:
        many = len(stopped) > 1
        said += (f"; job{'s' if many else ''} {', '.join(stopped)} {'were' if many else 'was'} interrupted (python -m "
                 f"backend jobs resume {stopped[0] if not many else 'ID'} goes on, and the stages waiting for "
                 f"{'them' if many else 'it'} with {'them' if many else 'it'})")
    if queued:
        many = len(queued) > 1
        said += (f"; queued job{'s' if many else ''} {', '.join(queued)} wait{'' if many else 's'} for a worker "
                 f"(python -m backend worker), or python -m backend recipe cancel "
                 f"{mine[0] if len(mine) == 1 else 'RUN'} drops {'them' if many else 'it'}")
    return said + f"; python -m backend recipe runs shows {'them' if len(mine) > 1 else 'it'}"


def cmd_chat(a) -> None:
    """`chat MODEL --prompt TEXT`: one reply, streamed to standard output as it is generated, through the Models
    page's Quick chat functions (backend/chat.py load and stream_reply: greedy by default, float32 on the CPU,
    bfloat16 on a GPU); its tokens and speed on standard error."""
    from backend import chat, registry

    if a.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {a.max_new_tokens}: give 1 or more.")
    if a.temperature < 0:
        raise ValueError(f"--temperature {a.temperature}: give 0 (greedy) or more.")
    prompt = sys.stdin.read() if a.prompt == "-" else a.prompt
    if not prompt.strip():
        raise ValueError("--prompt is empty: give the message to answer (or - to read it from standard input).")
    folder, name = registry.resolve(_local_model(a.model))
    messages = [*([{"role": "system", "content": a.system}] if a.system else []), {"role": "user", "content": prompt}]
    _on_interrupt[0] = lambda: f"the reply of {name or folder.name} stopped"
    lm = chat.load(folder, name or folder.name)
    stats, text = chat.GenerationStats(), []
    try:
        for piece in chat.stream_reply(lm, messages, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                                       stats=stats):
            text.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except chat.TemplateRefused as exc:  # Gemma's refuses a system message ("System role not supported")
        raise ValueError(f"{lm.name}: {exc}"
                         + (" (leave out --system)" if a.system and not isinstance(exc, chat.ContextTooLong)
                            else "")) from None
    except RuntimeError as exc:  # stream_reply: "generation failed: …"
        raise WorkFailed(str(exc)) from exc
    print()
    if not "".join(text).strip():
        print("(the reply is only whitespace or special tokens)", file=sys.stderr)
    print(f"{stats.new_tokens} tokens · first token {stats.first_token_s or 0:.2f} s · "
          f"{stats.tokens_per_s:.1f} tokens/s", file=sys.stderr)


MODELS_OPTIONS = {"list": ("json",), "import": ("name", "allow_pickle", "queue", "after"), "delete": ("force",),
                  "push": ("repo", "private", "license_name", "license_link", "queue",
                           "after")}  # what each `models` action reads


def cmd_models(a) -> None:
    from backend import registry

    # the options are the `models` parser's, shared by its actions: one another action reads was dropped without a
    # word (`models list --name tiny --json` gave every model; `models import X --queue` ran here), refused instead
    unused = [f"--{k.replace('_', '-')}" for k in ("name", "allow_pickle", "force", "json", "repo", "private",
                                                    "license_name", "license_link", "queue", "after")
              if getattr(a, k) is not None
              and getattr(a, k) is not False and k not in MODELS_OPTIONS[a.action]]  # --after 0 is given too
    if a.action == "list" and a.target:
        unused.insert(0, f"TARGET {a.target!r}")
    if unused:
        reads = ", ".join("--" + k.replace("_", "-") for k in MODELS_OPTIONS[a.action])
        what = {"list": "", "import": " and a TARGET"}.get(a.action, " and a NAME")
        raise ValueError(f"models {a.action} takes no {', '.join(unused)} (it reads {reads}{what}).")
    if a.action == "list":
        rows = registry.list_models()
        if a.json:
            names = {r.name for r in rows}
            return _print_json([{"name": r.name, "kind": r.kind, "layers": r.num_layers, "parameters":
                                 r.num_parameters, "dtype": r.dtype, "path": r.path, "parents": r.parents or [],
                                 "parents_registered": [registry.parent_present(p, names) for p in r.parents or []],
                                 "source": r.source, "created": r.created} for r in rows])
        # as wide as the longest name (F8_E4M3: dtype): a name is what the other commands take, so it is shown
        # whole, not cut
        width = max([len("name"), *(len(r.name) for r in rows)])
        dtype = max([len("dtype"), *(len(r.dtype) for r in rows)])
        print(f"{'name':{width}} {'kind':9} {'layers':>6} {'params':>14} {'dtype':{dtype}}  parents")
        names = {r.name for r in rows}
        for r in rows:
            print(f"{r.name:{width}} {r.kind:9} {r.num_layers:6d} {r.num_parameters:14,d} {r.dtype:{dtype}}  "
                  f"{', '.join(registry.parents_shown(r, names)) or '-'}")
    elif a.action == "import":
        if not a.target:
            raise ValueError("models import needs a TARGET: builtin, a folder, a .gguf file or a Hub id.")
        if a.queue or a.after:  # a job, as the pages' imports are (ImportSpec): a Hub download of many GiB
            from backend.specs import ImportSpec

            return _run_or_queue(ImportSpec(target=_local_model(a.target), name=a.name,
                                            allow_pickle=a.allow_pickle), a)
        rec = registry.import_any(_local_model(a.target), a.name, allow_pickle=a.allow_pickle, progress=_progress)
        print(f"registered {rec.name}: {rec.num_layers} layers, {rec.num_parameters:,} parameters at {rec.path}")
    elif a.action == "delete":
        if not a.target:
            raise ValueError("models delete needs a NAME.")
        registry.delete(a.target, force=a.force)
        print(f"deleted {a.target}")
    elif a.action == "push":
        from backend.specs import PushSpec

        if not a.target or not a.repo:
            raise ValueError("models push needs a NAME and --repo OWNER/NAME.")
        # as every job command: here, or with --queue / --after the worker's (a model of many GiB)
        _run_or_queue(PushSpec(model=a.target, repo=a.repo, private=a.private, license_name=a.license_name,
                               license_link=a.license_link), a)


def cmd_auth(a) -> None:
    """`hash`: DUS_PASSWORD_HASH from DUS_PASSWORD, standard input, or a prompt; `check`: run.sh's start check."""
    import getpass
    import os

    from backend import auth

    if a.action == "check":
        why = auth.problem(a.address, dict(os.environ), oidc=auth.oidc_in_files())
        if why:
            raise ValueError(why)
        print(f"ok: {a.address} is loopback" if not auth.login_required(a.address) else "ok: login configured")
        return
    password = os.environ.get(auth.PASSWORD_ENV)
    if password is None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ.")
    print(auth.hash_password(password))


def cmd_worker(a) -> None:
    from backend import runner
    from storage.models import utcnow

    start = utcnow()
    _on_interrupt[0] = lambda: _worker_interrupted(start)
    runner.worker(poll=a.poll, once=a.once, slots=a.slots)


def _worker_interrupted(start) -> str:
    """A Ctrl-C's line for `worker`: the jobs it was running, which it marked interrupted as it ended
    (runner._interrupt_running; those started since it started and interrupted now), and the queue that waits."""
    from datetime import timezone

    from backend import runner

    def utc(at):
        return at if at.tzinfo else at.replace(tzinfo=timezone.utc)  # SQLite hands times back without their zone

    ended = sorted(j.id for j in runner.list_jobs(None, statuses=["interrupted"]) if j.started and
                   utc(j.started) >= start)
    many = len(ended) > 1
    return ("the worker stopped; " + (f"job{'s' if many else ''} {', '.join(map(str, ended))} it was running "
                                      f"{'were' if many else 'was'} interrupted (python -m backend jobs resume "
                                      f"{ended[0] if not many else 'ID'} goes on); " if ended else "")
            + "queued jobs wait for the next worker")


def cmd_cluster(a) -> None:
    from backend.cluster import ray_view

    if a.action == "check":
        print(ray_view.check(a.address))
        return
    view = ray_view.status(a.address)
    print(f"Ray cluster at {view.address}\n\nnodes (free / total):\n{ray_view.table(view.node_rows())}"
          f"\n\nDUS jobs on it:\n{ray_view.table(view.job_rows())}")


def cmd_jobs(a) -> None:
    from backend import runner

    if a.action == "list":
        alive, active = runner.worker_alive(), runner.active_jobs()  # the pages' message: which job keeps it waiting
        jobs = runner.list_jobs(a.limit or None, kinds=a.kind, statuses=a.status)
        if a.json:
            return _print_json([{"id": j.id, "kind": j.kind, "status": j.status, "progress": j.progress,
                                 "message": runner.job_message(j, active, alive), "error": j.error,
                                 "name": j.spec.get("name"), "output": runner.job_output(j),
                                 "result": j.result, "after": j.after, "needs": j.needs or [],
                                 "waits": j.waits or [], "created": j.created, "started": j.started,
                                 "finished": j.finished} for j in jobs])
        cut = False
        for j in jobs:  # what each job makes, as the pages' "→ output": 14 queued sft jobs read alike without it
            said, output = runner.job_message(j, active, alive), runner.job_output(j) or "-"
            cut |= len(said) > 60 or len(output) > 24
            print(f"{j.id:5d} {j.kind:10} {j.status:12} {j.progress:6.1%} "
                  f"{output if len(output) <= 24 else output[:23] + '…':24} "
                  f"{said if len(said) <= 60 else said[:59] + '…'}")
        if cut:
            print("a name or message cut with … is whole in: python -m backend jobs show ID", file=sys.stderr)
    elif a.action == "show":
        print(job_details(a.id))
    elif a.action == "cancel":
        before = runner.get(a.id)
        if before is not None and before.status in runner.FINISHED:  # `job 1: succeeded` read as a cancel done
            raise WorkFailed(f"job {a.id} is {before.status} already: nothing to cancel.")
        print(f"job {a.id}: {runner.cancel(a.id).status}")
    elif a.action == "resume":
        job = runner.resume(a.id)
        print(f"job {a.id}: {job.status} ({resume_says(job)})")
    elif a.action == "wait":
        sys.exit(wait_for(a.id, a.timeout, a.poll))
    elif a.action == "log":
        sys.exit(show_log(a.id, a.lines, a.follow, a.poll))
    elif a.action == "exec":
        sys.exit(runner.execute(a.id))


def resume_says(job) -> str:
    """What a resume will do, by the Jobs page's rule (runner.resume_point): `jobs resume` promised a checkpoint to a
    run cancelled at step 12 with none saved, and to evaluations."""
    from backend import runner

    if job.kind not in TRAIN_KINDS:
        return f"a running worker runs the {job.kind} again from the start"
    if (point := runner.resume_point(job)) is not None:
        return f"a running worker resumes it from its last checkpoint, {point.name}"
    return "no checkpoint was saved: a running worker starts the training over from step 0"


def wait_for(job_id: int, timeout: float | None, poll: float) -> int:
    """`jobs wait ID`: poll until the job has finished; exit 0 if it succeeded, 1 if not (failed, cancelled,
    interrupted), 124 when --timeout ran out first (as timeout(1)); a job that is not there is refused (2)."""
    from backend import runner

    start = time.monotonic()
    _on_interrupt[0] = lambda: _job_goes_on(job_id, "stopped waiting", f"jobs wait {job_id} waits again")
    while True:
        job = runner.get(job_id)
        if job is None:
            raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
        if job.status in runner.FINISHED:
            print(f"job {job_id}: {job.status}: {runner.job_message(job)}")
            return 0 if job.status == "succeeded" else 1
        if timeout is not None and time.monotonic() - start >= timeout:
            print(f"job {job_id}: still {job.status} after {timeout:g} s: {runner.job_message(job)}", file=sys.stderr)
            return 124
        time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - (time.monotonic() - start))))


def _job_goes_on(job_id: int, what: str, again: str) -> str:
    """A Ctrl-C's line for a command that watched a job: the job is the worker's and goes on without it."""
    from backend import runner

    job = runner.get(job_id)
    if job is None or job.status in runner.FINISHED:
        return f"{what}; job {job_id} is {job.status if job else 'gone'} (python -m backend jobs show {job_id})"
    return (f"{what}; job {job_id} is still {job.status} and goes on without this command (python -m backend "
            f"{again}; jobs show {job_id} shows it, jobs cancel {job_id} stops it)")


def show_log(job_id: int, lines: int, follow: bool, poll: float) -> int:
    """`jobs log ID`: the last `lines` lines of the job's log (runner.log_tail, as the Jobs page shows it); with
    `follow`, then each line as it is written until the job ends, as `tail -f` (a queued job's log appears when a
    worker starts it): exit 0 if it succeeded, 1 if not, as `jobs wait`; the end goes to standard error, so standard
    output holds the log alone."""
    from pathlib import Path

    from backend import runner

    if lines < 0 or poll <= 0:
        raise ValueError(f"--lines {lines} --poll {poll:g}: give 0 or more lines, and a poll above 0 s.")
    job = runner.get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
    log = Path(job.log_path) if job.log_path else None
    if not follow:
        if log is None or not log.exists():
            if job.status in ("queued", "running"):  # as the Jobs page: not there yet, not an error
                print(f"job {job_id} is {job.status}: no log yet (a worker writes one when it starts the job; "
                      f"--follow waits for it)", file=sys.stderr)
                return 0
            raise ValueError(f"job {job_id} ({job.status}) has no log on this machine"
                             + (f" ({log} is not there)" if log else "") + ".")
        for line in runner.log_tail(log, lines):
            print(line)
        return 0
    _on_interrupt[0] = lambda: _job_goes_on(job_id, "stopped following its log", f"jobs log {job_id} --follow "
                                                                                 "follows it again")
    offset, rest, said = None, b"", False
    while True:
        job = runner.get(job_id)  # its status before the file: what it wrote before it ended is read below
        if job is None:
            raise ValueError(f"job {job_id} was deleted while its log was followed.")
        ended = job.status in runner.FINISHED
        if log is not None and log.exists():
            if offset is None:  # the last lines first, then what comes after them
                for line in runner.log_tail(log, lines):
                    print(line, flush=True)
                offset = log.stat().st_size
            else:
                if log.stat().st_size < offset:  # written over from the start: read it from there
                    offset, rest = 0, b""
                with open(log, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                rest = _print_lines(rest + data, final=ended)
        elif not said and not ended:
            print(f"job {job_id} is {job.status}: no log yet; following it once a worker starts the job",
                  file=sys.stderr, flush=True)
            said = True
        if ended:
            print(f"job {job_id}: {job.status}: {runner.job_message(job)}", file=sys.stderr)
            return 0 if job.status == "succeeded" else 1
        time.sleep(poll)


def _print_lines(data: bytes, final: bool) -> bytes:
    """Print the whole lines of `data` (a tqdm bar's \r ends one, as runner.log_tail splits them) and hand back the
    unfinished last one, to be printed with what follows it (all of it when `final`)."""
    parts = data.splitlines(keepends=True)
    keep = b""
    # a line not ended yet, or a \r that may be the first half of \r\n
    if parts and not final and (not parts[-1].endswith((b"\n", b"\r")) or parts[-1].endswith(b"\r")):
        keep = parts.pop()
    for part in parts:
        print(part.decode("utf-8", errors="replace").rstrip("\r\n"), flush=True)
    return keep


def job_details(job_id: int) -> str:
    """`jobs show ID`: what `jobs list` has no room for: the whole message (a failure's fix is at its end), the
    log, the timings and the spec, as YAML that `python -m backend run` takes back."""
    import yaml

    from backend import runner

    job = runner.get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
    ran = f" ({(job.finished - job.started).total_seconds():.0f} s)" if job.started and job.finished else ""
    waits = [*([job.after] if job.after else []), *job.needs, *(job.waits or [])]
    lines = [f"job {job.id} ({job.kind}): {job.status}, {job.progress:.0%}",
             f"message: {runner.job_message(job)}",
             f"log: {job.log_path or '-'}",
             f"created: {job.created:%Y-%m-%d %H:%M:%S}  started: {_when(job.started)}  finished: "
             f"{_when(job.finished)}{ran}"]
    lines += [f"waits for jobs: {', '.join(map(str, waits))}"] if waits else []
    lines += [f"host: {job.host}"] if job.host else []
    lines += ["result:", yaml.safe_dump(job.result, sort_keys=False, allow_unicode=True).rstrip()] if job.result else []
    spec = {"kind": job.spec.get("kind", job.kind), **job.spec}
    return "\n".join(lines + ["spec:", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).rstrip()])


def _when(at) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else "-"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("upscale", help="build a deeper model from a registered model or folder")
    u.add_argument("--base", required=True, help="registered name, 'builtin', or a model folder")
    u.add_argument("--method", default="dus", choices=["dus", "slices", "llama-pro"],
                   help="dus: SOLAR's depth up-scaling; slices: stack layer ranges; llama-pro: block expansion")
    u.add_argument("--m", type=int, help="dus: layers removed from each copy (1 <= m < n/2)")
    u.add_argument("--slice", type=_slice, action="append", help="slices: SOURCE:START:END, half-open, repeatable")
    u.add_argument("--second", help="slices: second source model (SOURCE 1)")
    u.add_argument("--groups", type=int, help="llama-pro: identity blocks to insert")
    u.add_argument("--name", help="registered name (default: derived)")
    u.add_argument("--out", help="folder to write the model to (default workspace/models/NAME)")
    u.add_argument("--shard-size", default="2GB", help="largest safetensors shard")
    _job_options(u)
    u.set_defaults(fn=cmd_upscale)

    t = sub.add_parser("train", help="continued pretraining, SFT or DPO with trl, through accelerate launch")
    from typing import get_args

    t.add_argument("kind", choices=["cpt", "sft", "dpo"], help="continued pretraining, SFT or DPO")
    t.add_argument("--model", required=True, help="registered name or model folder")
    t.add_argument("--data", type=_source, action="append", required=True,
                   help="builtin:NAME, dataset:NAME (registered), mix:NAME (a saved mix), a local file (.jsonl, "
                        ".json, .csv, .parquet, .txt) or a Hub id, optionally @WEIGHT; repeat for a mix")
    from backend.specs import _TrainSpec

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
    t.add_argument("--completion-only-loss", action="store_true", default=None,
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
    t.add_argument("--out", help="folder to write the model to (default workspace/models/NAME)")
    _job_options(t)
    t.set_defaults(fn=cmd_train)

    sm = sub.add_parser("synth-math", help="SOLAR's Synth. Math-Instruct / Math-Alignment data")
    sm.add_argument("--seeds", type=int, default=200, help="problems to generate (or take from --seed-file)")
    sm.add_argument("--seed-file", help="MATH- or GSM8K-format .jsonl/.json instead of the generator")
    sm.add_argument("--rephraser", default="rules", help="rules | model:NAME | openai:BASE_URL")
    sm.add_argument("--api-model", help="openai: the model name the server serves")
    # the Synth page sets both (its Temperature slider, its "Key from environment variable" field): a page's run was
    # not one the CLI could make, and only `run SPEC.yaml` reached them
    sm.add_argument("--api-key-env", default=SynthMathSpec.model_fields["api_key_env"].default,
                    help="openai: the environment variable that holds the server's key")
    sm.add_argument("--temperature", type=float, default=SynthMathSpec.model_fields["temperature"].default,
                    help="model: / openai: sampling temperature of the rephrasings (0: greedy, 0 to 2)")
    sm.add_argument("--level", type=int, action="append", choices=[1, 2, 3],
                    help="generator: difficulty, repeatable (default: all)")
    sm.add_argument("--category", action="append", help="generator: a category, repeatable (default: all): "
                    + ", ".join(_categories()))
    sm.add_argument("--benchmark", help="contamination check against this file (e.g. a GSM8K test split)")
    sm.add_argument("--include-flagged", action="store_true", help="also export the pairs the contamination check "
                                                                   "flagged")
    sm.add_argument("--batch-size", type=int, default=8, help="rephrasings per request (model: and openai:)")
    sm.add_argument("--seed", type=int, default=0, help="seeds the generator and the sampling")
    sm.add_argument("--name", default="synth-math", help="prefix of the registered data sets")
    sm.add_argument("--out", help="folder for the files (default workspace/datasets/NAME)")
    _job_options(sm)
    sm.set_defaults(fn=cmd_synth)

    mg = sub.add_parser("merge", help="merge candidates (mergekit 0.1.5's average/linear, SLERP, task arithmetic, "
                                      "TIES, DARE)")
    mg.add_argument("--models", nargs="+", required=True, help="the candidates: registered names or model folders")
    mg.add_argument("--method", default="average", help="average (= linear), slerp, task_arithmetic, ties, "
                    "dare_linear (alias dare), dare_ties")
    mg.add_argument("--weights", nargs="+", type=float, help="one per model (default 1 each)")
    mg.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="divide by the sum of the weights (default: mergekit's for the method: on for average and "
                         "ties, off for task_arithmetic and dare)")
    mg.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=None,
                    help="ties / dare: multiply what is kept by |delta|_1 / |kept|_1 (default: on for dare)")
    # None: not given (MergeSpec refuses an option its method does not use, and its own default applies)
    mg.add_argument("--lambda", dest="lam", type=float, help="task_arithmetic / ties / dare: scales the merged task "
                    "vector (default: 1)")
    mg.add_argument("--t", nargs="+", type=float, help="slerp: t, or a schedule along the depth (default: 0.5)")
    mg.add_argument("--base", help="task_arithmetic / ties / dare: the common base")
    mg.add_argument("--density", type=float, help="ties / dare: share of each task vector kept (default: 0.5)")
    mg.add_argument("--seed", type=int, help="dare: seed of the drop mask (default: 0)")
    mg.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help=MergeSpec.model_fields["dtype"].description)
    mg.add_argument("--tokenizer-source", help=MergeSpec.model_fields["tokenizer_source"].description)
    mg.add_argument("--chat-template", help="'auto' (the template most of the models share, mergekit's auto), a "
                    "Jinja template, or @FILE holding one (default: the tokenizer source's own)")
    mg.add_argument("--name", help="registered name (default: derived from the candidates and the method)")
    mg.add_argument("--out", help="folder to write the model to (default workspace/models/NAME)")
    mg.add_argument("--shard-size", default="2GB", help="largest safetensors shard")
    _job_options(mg)
    mg.set_defaults(fn=cmd_merge)

    ev = sub.add_parser("eval", help="evaluate models on the same tasks (scores stored per model and task)")
    ev.add_argument("models", nargs="+", help="registered names or model folders")
    ev.add_argument("--tasks", nargs="+", default=["perplexity", "synth-math"],
                    help="perplexity[:FILE] (held-out text), synth-math (held-out math), qa[:FILE] (closed-book QA "
                         "with unanswerable questions), mc:FILE (multiple choice), gsm8k:FILE (generation), "
                         "lm-eval:TASK (lm-evaluation-harness: dus_truthfulqa_mini, dus_gsm8k_mini, h6, or any "
                         "task name, which downloads its data)")
    ev.add_argument("--limit", type=int, default=40, help="items per task")
    ev.add_argument("--max-new-tokens", type=int, default=96, help="token cap of a generated answer")
    ev.add_argument("--samples", type=int, default=1, help="k sampled answers for a consistency score")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help=EvalSpec.model_fields["device"].description)
    ev.add_argument("--batch-size", type=int, help="generation batch (default: fitted to free GPU memory, 8 on CPU)")
    ev.add_argument("--overlap-threshold", type=float, default=EvalSpec.model_fields["overlap_threshold"].default,
                    help=EvalSpec.model_fields["overlap_threshold"].description)
    ev.add_argument("--ngram", type=int, default=EvalSpec.model_fields["ngram"].default,
                    help=EvalSpec.model_fields["ngram"].description)
    ev.add_argument("--judge-url", help="qa: grade replies with an OpenAI-compatible server (http://host:port/v1)")
    ev.add_argument("--judge-model", help="qa: the model name the judge server serves")
    ev.add_argument("--fan-out", action=argparse.BooleanOptionalAction, default=None,
                    help="with --queue: one job per model, run in parallel on free slots or cluster nodes (the "
                         "scores are the same as one job's); the default with --queue and several models, as on "
                         "the Eval page; --no-fan-out queues one job for all")
    _job_options(ev)
    ev.set_defaults(fn=cmd_eval)

    sc = sub.add_parser("scores", help="the models × tasks table of the Compare page, with standard errors")
    sc.add_argument("models", nargs="*", help="only these models (default: every model with scores)")
    sc.add_argument("--clean", action="store_true", help="score only the items that do not overlap the training "
                                                         "data of the model's lineage")
    sc.add_argument("--format", choices=["md", "csv", "tex"], help="Markdown (the default), CSV or LaTeX")
    sc.add_argument("--json", action="store_true", help="a JSON array for scripts: one object per model, task and "
                    "metric (value, stderr, n, the stored details), not the table (--format is then unused)")
    sc.set_defaults(fn=cmd_scores)

    from backend import analysis  # numpy only: statsmodels loads when a fit runs

    cp = sub.add_parser("compare", help="fewer hallucinations, or just shorter answers? two models on one task's "
                                        "stored answers, with answer length held fixed")
    cp.add_argument("model_a", metavar="A", help="a model with stored answers on the task")
    cp.add_argument("model_b", metavar="B", help="the model to compare it with")
    cp.add_argument("--task", required=True, help="a task with stored answers (synth-math, qa, gsm8k:FILE, …)")
    cp.add_argument("--outcome", choices=list(analysis.OUTCOMES), default="hallucination",
                    help="correct: compare the rate of answers that are not correct (wrong, abstained or cut off)")
    cp.add_argument("--bins", type=int, default=3, help="answer-length bins of the model-free check (2–6)")
    cp.set_defaults(fn=cmd_compare)

    d = sub.add_parser("datasets", help="list data sets, re-export synthetic pairs, save a weighted mix, delete; "
                                       "list, reject and push synthetic pairs")
    da = d.add_subparsers(dest="action", required=True)
    da.add_parser("list", help="the registered data sets").add_argument(
        "--json", action="store_true", help="a JSON array, for scripts")
    ex = da.add_parser("export", help="write Synth. Math-Instruct / Math-Alignment from synthetic pairs, register both")
    ex.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    ex.add_argument("--include-flagged", action="store_true", help="also the pairs the contamination check flagged")
    mx = da.add_parser("mix", help="save a weighted mix of data sets, used as --data mix:NAME")
    mx.add_argument("name", help="the mix's name (then --data mix:NAME)")
    # nargs="+" (not "*"): argparse then leaves the sources for after --for, as in `mix NAME --for sft A@0.5 B@0.5`
    mx.add_argument("sources", nargs="+", type=_source, metavar="SOURCE[@WEIGHT]",
                    help="builtin:NAME, dataset:NAME, mix:NAME, a file or a Hub id")
    mx.add_argument("--for", dest="purpose", choices=["sft", "dpo", "cpt"],
                    help="what the mix trains (default sft); the sources must fit its layout")
    mx.add_argument("--sample-by", choices=get_args(DataSource.model_fields["sample_by"].annotation),
                    help="what a row of the sources' .txt files is, kept with the mix (default: as each use of the "
                         "mix says, train --sample-by or the Train page's rows of a .txt)")
    pv = da.add_parser("preview", help="a source as a training job of a kind reads it (the Train page's preview): "
                                       "layout, columns, rows, the first rows converted; refused as the job would be")
    pv.add_argument("source", help="builtin:NAME, dataset:NAME, mix:NAME, a file or a Hub id")
    pv.add_argument("--for", dest="purpose", choices=["cpt", "sft", "dpo"], default="sft",
                    help="the job kind whose layouts it must fit (default sft)")
    pv.add_argument("--sample-by", choices=get_args(DataSource.model_fields["sample_by"].annotation), default="line",
                    help="what a row of a .txt file is (as train --sample-by)")
    pv.add_argument("-n", "--rows", type=int, default=3, help="how many rows to show (default 3)")
    pv.add_argument("--json", action="store_true", help="the preview as JSON, for scripts")
    pm = da.add_parser("paper-mixes", help="save the paper's SFT v1-v4 and DPO v1-v2 mixes (the Synthetic math "
                                           "page's button), Synth. Math from PAIRS_NAME's export")
    pm.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs), exported")
    dd = da.add_parser("delete", help="delete a registered data set and the files only it uses under "
                                      "workspace/datasets (files registered from elsewhere are kept)")
    dd.add_argument("name", help="the data set's name (datasets list)")
    dd.add_argument("--force", action="store_true", help="also when registered models were trained on it")
    dp = da.add_parser("pairs", help="list synthetic pairs with their ids, verdicts and questions (the Synthetic math "
                                     "page's inspector)")
    dp.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    dp.add_argument("--status", nargs="+", choices=["verified", "failed", "flagged", "rejected"],
                    help="only these (rejected: by hand; the others: not rejected by hand)")
    dp.add_argument("--category", nargs="+", help="only these categories")
    dp.add_argument("--level", nargs="+", type=int, help="only these levels")
    dp.add_argument("--search", help="only pairs whose question (seed or rephrased) holds this text")
    dp.add_argument("--limit", type=int, default=50, help="pairs per page")
    dp.add_argument("--page", type=int, default=1, help="which page of --limit pairs")
    dp.add_argument("--json", action="store_true", help="a JSON array with every pair whole, for scripts")
    dr = da.add_parser("reject", help="reject a pair by hand, or undo that (the inspector's buttons); export again "
                                      "for the Instruct and Alignment files to follow")
    dr.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    dr.add_argument("pair_id", metavar="PAIR_ID", type=int, help="the pair's id (datasets pairs PAIRS_NAME)")
    dr.add_argument("--undo", action="store_true", help="take a pair rejected by hand back")
    dh = da.add_parser("push", help="upload PAIRS_NAME's exported Instruct and Alignment files to a Hugging Face Hub "
                                    "data set repo in one commit (needs HF_TOKEN with write access); exit code 1 "
                                    "when the Hub refused the push or could not be reached")
    dh.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs), exported")
    dh.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub data set repo (made if missing)")
    d.set_defaults(fn=cmd_datasets)

    r = sub.add_parser("run", help="run a spec saved as YAML (from the UI or --save-spec)")
    r.add_argument("spec", help="a spec or recipe YAML file (recipe: --after and the machine options are refused)")
    _machine_options(r)
    r.add_argument("--num-processes", type=int, help="training: processes on this machine (overrides the spec)")
    r.add_argument("--name", help="the name to register what the spec makes under (overrides the spec's: a model; "
                                  "synth-math: the data sets' prefix); its folder follows the name unless the spec "
                                  "sets out")
    _job_options(r, save_spec=False)
    r.set_defaults(fn=cmd_run)

    sl = sub.add_parser("slurm", help="print a Slurm batch script that trains SPEC.yaml on several nodes with "
                                      "accelerate launch (submit it with sbatch; nothing is submitted here)")
    sl.add_argument("spec", help="a cpt/sft/dpo spec (YAML) at a path every node can read")
    sl.add_argument("--nodes", type=int, help="nodes (default: the spec's num_machines)")
    sl.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one process each (0: CPU nodes, "
                    "the spec's num_processes each)")
    sl.add_argument("--partition", help="Slurm partition")
    sl.add_argument("--time", default="04:00:00", help="time limit, HH:MM:SS or DAYS-HH:MM:SS")
    sl.set_defaults(fn=cmd_slurm)

    rc = sub.add_parser("recipe", help="the SOLAR experiment as one YAML file: new, plan, run, runs, tables, cancel")
    ra = rc.add_subparsers(dest="action", required=True)
    rn = ra.add_parser("new", help="print a preset recipe (YAML)")
    rn.add_argument("target", metavar="PRESET", help="smoke, solar-mini or solar-10.7b")
    rn.add_argument("--base", help="the base model (smoke needs one)")
    rn.add_argument("--m", type=int, help="layers removed from each copy")
    ra.add_parser("plan", help="what would run and what is reused").add_argument("target", metavar="FILE",
                                                                                 help="a recipe YAML file")
    rr = ra.add_parser("run", help="submit the stages as dependent jobs and run them here")
    rr.add_argument("target", metavar="FILE", help="a recipe YAML file")
    rr.add_argument("--queue", action="store_true", help="leave the jobs to the worker")
    rt = ra.add_parser("tables", help="the paper's tables from a run")
    rt.add_argument("target", metavar="RUN", type=int, nargs="?", help="a recipe run's id (default: the latest)")
    rt.add_argument("--format", default="md", choices=["md", "csv", "tex"], help="output format")
    ra.add_parser("cancel", help="cancel the run's waiting and running jobs").add_argument(
        "target", metavar="RUN", type=int, help="a recipe run's id")
    rs = ra.add_parser("runs", help="the recipe runs, newest first, each with its stages' statuses, jobs and models "
                                    "(the Recipe page)")
    rs.add_argument("--limit", type=int, default=20, help="the newest N runs, 0 for all")
    rs.add_argument("--json", action="store_true", help="a JSON array with every field whole, for scripts")
    rc.set_defaults(fn=cmd_recipe)

    ch = sub.add_parser("chat", help="one reply from a model to a prompt, printed as it is generated (the Models "
                                     "page's Quick chat)")
    ch.add_argument("model", metavar="MODEL", help="registered name or model folder")
    ch.add_argument("--prompt", required=True, help="the user's message; - reads it from standard input")
    ch.add_argument("--system", help="a system message before it (a model whose chat template takes none refuses it)")
    ch.add_argument("--max-new-tokens", type=int, default=96, help="token cap of the reply")
    ch.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the same reply each time)")
    ch.set_defaults(fn=cmd_chat)

    m = sub.add_parser("models", help="list, import, delete or push registered models")
    m.add_argument("action", choices=["list", "import", "delete", "push"], help="what to do")
    m.add_argument("target", nargs="?",
                   help="import: builtin | FOLDER | FILE.gguf | owner/name; delete, push: NAME")
    m.add_argument("--name", help="import: the name to register (default: derived from the target)")
    m.add_argument("--allow-pickle", action="store_true", help="convert .bin checkpoints (weights_only=True)")
    m.add_argument("--force", action="store_true",
                   help="delete: also when other models were made from it or active jobs read it")
    m.add_argument("--json", action="store_true", help="list: a JSON array, for scripts")
    m.add_argument("--repo", metavar="OWNER/NAME",
                   help="push: the Hub model repo (made if missing) that gets the model's weights, config, tokenizer "
                        "and a model card with its lineage and scores, in one commit (needs HF_TOKEN with write "
                        "access; exit code 1 when the Hub refused the push or could not be reached)")
    m.add_argument("--private", action="store_true", help="push: make the repo private if it is made")
    m.add_argument("--license-name", metavar="ID", help="push: for a licence `other` whose base models name none, "
                                                        "the card's license_name (e.g. my-license-1.0)")
    m.add_argument("--license-link", metavar="FILE|URL", help="push: for a licence `other`, the card's license_link "
                                                              "(a file uploaded with the model, or a URL)")
    m.add_argument("--queue", action="store_true", help="import, push: hand the download or upload to the worker "
                                                        "instead of running it here")
    m.add_argument("--after", type=int, help="import, push: queue it to run after this job succeeds (push: the "
                                             "training that makes the model)")
    m.set_defaults(fn=cmd_models)

    au = sub.add_parser("auth", help="hash a dashboard password, or check the start address (README: 'Exposing "
                                     "the dashboard')")
    au.add_argument("action", choices=["hash", "check"], help="hash a password, or check the start address")
    au.add_argument("--address", default="127.0.0.1", help="check: the address the dashboard will listen on")
    au.set_defaults(fn=cmd_auth)

    w = sub.add_parser("worker", help="run queued jobs")
    w.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue")
    w.add_argument("--once", action="store_true", help="run what is queued, then exit")
    w.add_argument("--slots", type=int, help="jobs at a time (default $DUS_JOB_SLOTS or 1)")
    w.set_defaults(fn=cmd_worker)

    cl = sub.add_parser("cluster", help="a Ray cluster (DUS_RAY_ADDRESS): status (nodes, resources, which job runs "
                        "where) or check (the address answers, every node sees the workspace)")
    cl.add_argument("action", choices=["status", "check"], help="status or check")
    cl.add_argument("--address", help="the head's dashboard URL (default $DUS_RAY_ADDRESS)")
    cl.set_defaults(fn=cmd_cluster)

    j = sub.add_parser("jobs", help="list jobs, show one in full, cancel or resume one; also its log "
                                     "(jobs log ID --follow) and wait for it")
    ja = j.add_subparsers(dest="action", required=True)
    jl = ja.add_parser("list", help="one line per job, newest first (messages cut at 60 characters)")
    jl.add_argument("--limit", type=int, default=100, help="the newest N jobs, 0 for all (queued and running ones "
                                                          "are always listed)")
    jl.add_argument("--kind", nargs="+", help="only these kinds (upscale, cpt, sft, dpo, merge, eval, ...)")
    from storage.models import JOB_STATUSES

    jl.add_argument("--status", nargs="+", choices=JOB_STATUSES, help="only these statuses")
    jl.add_argument("--json", action="store_true", help="a JSON array with every field whole, for scripts")
    for action, what in (("show", "the job's whole message, log path, timings and spec"),
                         ("cancel", "stop a waiting or running job"),
                         ("resume", "queue an interrupted, failed or cancelled job again (training: from its last "
                                    "checkpoint)"),
                         ("exec", "run the job in this process (what the worker starts)"),
                         ("wait", "wait until the job has finished; exit 0 if it succeeded, 1 if not")):
        jp = ja.add_parser(action, help=what)
        jp.add_argument("id", metavar="ID", type=int, help="the job's id (jobs list)")
    jp.add_argument("--timeout", type=float, help="give up after this many seconds (exit code 124)")
    jp.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the job")
    jg = ja.add_parser("log", help="the job's log, its last lines (the Jobs page's); --follow: then each new line "
                                   "until the job ends, exit 0 if it succeeded, 1 if not")
    jg.add_argument("id", metavar="ID", type=int, help="the job's id (jobs list)")
    jg.add_argument("--lines", "-n", type=int, default=60, help="how many of the last lines")
    jg.add_argument("--follow", "-f", action="store_true",
                    help="print new lines as they are written, until the job ends (as tail -f; Ctrl-C stops "
                         "following, not the job)")
    jg.add_argument("--poll", type=float, default=1.0, help="--follow: seconds between looks at the log")
    j.set_defaults(fn=cmd_jobs)
    _format_help(p)
    return p


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, as ArgumentDefaultsHelpFormatter adds it, but not where there is none
    (None, a flag's False) or the help says it already; the descriptions keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        # by identity: `0 in (None, False)` is true (0 == False), and `synth-math --seed` hid its default 0
        if ("(default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
        return f"{text} (default: {shown})"


def _format_help(p: argparse.ArgumentParser) -> None:
    """Every parser and sub-parser shows defaults (_HelpFormatter) and the exit codes."""
    p.formatter_class = _HelpFormatter
    p.epilog = EXIT_CODES
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.set_defaults(_parser=sp)  # the deepest one parsed: main's error for an option it does not know
                _format_help(sp)


def _categories() -> list[str]:
    try:
        from backend.synth.seeds import CATEGORIES
    except ImportError:
        return []
    return list(CATEGORIES)


def main(argv: list[str] | None = None) -> int:
    _on_interrupt[0] = None
    args = None
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the (sub)command that was given them, with its usage: parse_args had the top level's
            # ("python -m backend: error: unrecognized arguments: --limit 1" under the list of commands)
            getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        args.fn(args)
        sys.stdout.flush()  # a reader that closed the pipe shows here, not at exit after main
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, the shell's code for SIGINT (128 + 2)
        # on a terminal the line starts below the ^C the terminal echoed (and any half-printed line)
        print(f"{chr(10) if sys.stderr.isatty() else ''}interrupted: {_interrupted_says(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except ValidationError as exc:
        print(f"error: {explain(exc)}", file=sys.stderr)
        return 2
    except WorkFailed as exc:
        if str(exc):
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _interrupted_says(args) -> str:
    """What a Ctrl-C stopped and what goes on: the command's own words (_on_interrupt, set as it starts waiting or
    working), else its name."""
    command = " ".join(str(w) for w in (getattr(args, "command", None), getattr(args, "action", None)) if w)
    try:
        said = _on_interrupt[0]() if _on_interrupt[0] else None
    except Exception:  # noqa: BLE001 - a second failure (the database gone) must not print a traceback instead
        said = None
    return said or (f"python -m backend {command} stopped before it finished" if command
                    else "stopped before the command began")


def _reader_gone() -> int:
    """`jobs list | head`: the reader took what it wanted and closed the pipe. End quietly as other command-line
    tools do, with the shell's code for a closed pipe (128 + SIGPIPE); what is still buffered goes to devnull instead
    of failing again as Python exits (Python's signal module docs, "Note on SIGPIPE")."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
