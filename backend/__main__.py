"""DUS Studio's command line: a thin shell over the same specs and functions the pages use.

    python -m backend upscale --base SmolLM2-135M-Instruct --m 8   # into $DUS_WORKSPACE/models/NAME (--out: elsewhere)
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
    python -m backend scores [MODEL ...] [--tasks TASK ...] [--format md|csv|tex | --json]   # the Compare page's table
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

# the command modules are light to import: each loads what its parser and its work need (the specs, the database,
# numpy) when that command is built or run, so `jobs list` does not pay for `compare`'s numpy nor --help for any
from backend.cli import data, evaluate, jobs, models, recipe, train
from backend.cli.common import WorkFailed, _format_help, _on_interrupt

# command -> the function that adds its parser (each sets its cmd_* function as `fn`), in the order --help lists them
COMMANDS = {
    "upscale": models.add_upscale,
    "train": train.add_train,
    "synth-math": data.add_synth,
    "merge": models.add_merge,
    "eval": evaluate.add_eval,
    "scores": evaluate.add_scores,
    "compare": evaluate.add_compare,
    "datasets": data.add_datasets,
    "run": train.add_run,
    "slurm": train.add_slurm,
    "recipe": recipe.add_recipe,
    "chat": evaluate.add_chat,
    "models": models.add_models,
    "auth": jobs.add_auth,
    "worker": jobs.add_worker,
    "cluster": jobs.add_cluster,
    "jobs": jobs.add_jobs,
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command line, only the command it names is built whole (its options' help reads
    the specs, the database's statuses, numpy's outcomes: 0.4 s a command paid for the others'), and every other
    command is its line in --help. Top-level --help and a misspelt command list them all, in the same words."""
    p = argparse.ArgumentParser(prog="python -m backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    # the top level has no options of its own but -h: the first word that is not an option is the command
    named = None if argv is None else next((w for w in argv if not w.startswith("-")), "")
    for name, add in COMMANDS.items():
        if named is None or name == named:
            add(sub)
        else:
            sub.add_parser(name, help=sys.modules[add.__module__].HELP[name])
    _format_help(p)
    return p


def main(argv: list[str] | None = None) -> int:
    _on_interrupt[0] = None
    args = None
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser(argv)
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
    except WorkFailed as exc:
        if str(exc):
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {_said(exc)}", file=sys.stderr)
        return 2
    return 0


def _said(exc: Exception) -> str:
    """A refusal's words: a spec's failed checks (pydantic's ValidationError, a ValueError) in the spec's words
    (specs.explain). Looked up, not imported: a command that never built a spec has no pydantic loaded."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        from backend.specs import explain

        return explain(exc)
    return str(exc)


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
