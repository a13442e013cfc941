"""What every command shares: local paths made absolute, run-or-queue (every job command ends in _run_or_queue),
progress, JSON listings, the exit codes and the help format. The commands live beside this module, a module per
family; backend/__main__.py is their table.

    python -m backend --help      # the exit codes (EXIT_CODES) close every command's help
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time


EXIT_CODES = """exit codes:
  0  done (or queued)
  1  the work ran and failed, or produced nothing: a foreground job that failed, a recipe run with a failed
     stage, synth-math with no verified pair, compare refused for too few shared items, jobs cancel of a
     finished job, recipe cancel of a run with no job waiting or running, jobs wait or jobs log --follow on a
     job that did not succeed, a chat reply whose generation failed, a datasets or models push the Hub
     refused or could not be reached
  2  refused: a usage error, a bad spec or input, a missing model or file (also an input found bad while
     running, such as a damaged weights file)
  124  jobs wait --timeout: the job had not finished in time
  130  interrupted (Ctrl-C): one line says what stopped and what goes on
  141  the reader of the output went away (jobs list | head -1): the command ends quietly, as Unix tools do"""


_printed = [-1.0]  # when _progress last printed (time.monotonic)
# what a Ctrl-C stops, said in main's one line: set by a command as it starts waiting or working (None: the command)
_on_interrupt: list = [None]


class WorkFailed(Exception):
    """The work ran and failed, or produced nothing: exit code 1, apart from 2 for a refusal before anything ran
    (a script could not tell "bad arguments" from "the training ran and failed"). An empty message: what to say was
    already printed."""


def _abs(path: str) -> str:
    """A path typed on the command line, absolute against the directory the command runs in: jobs and the trainer
    run in the repository's root (backend/runner/loop.py, backend/training.py), where a relative path named another file,
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


# every --json help says it: Python's json writes NaN and Infinity, which are not JSON (jq and JavaScript's JSON.parse
# refuse the whole output), for a diverged loss, an infinite perplexity or a score of no item
JSON_NULL = "a number that is not finite (NaN, infinity) is null"


def finite(value):
    """`value` with every float that is not finite (NaN, ±infinity) as None, in dicts, lists and tuples at any depth:
    strict JSON, as JavaScript's JSON.stringify writes them (storage/server.py stores them so too). A numpy scalar is
    its Python number first (np.float32 is no float)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        return finite(value.item())
    return value


def json_text(value) -> str:
    """What every --json prints (_print_json): strict JSON (finite), whole values, times as ISO 8601, anything else
    JSON cannot hold as its text."""
    import json

    def other(v):
        if hasattr(v, "isoformat"):
            return v.isoformat()
        if hasattr(v, "tolist"):  # a numpy scalar or array (ndim 0 ones are numbers already: finite)
            return finite(v.tolist())
        return str(v)

    return json.dumps(finite(value), indent=1, ensure_ascii=False, allow_nan=False, default=other)


def _print_json(rows) -> None:
    """A listing or a result for scripts (`--json`): one JSON array or object, whole values (no column cut), times as
    ISO 8601, a number that is not finite as null (json_text)."""
    print(json_text(rows))


def _progress(frac: float, message: str) -> None:
    """A job's progress on stderr, at most twice a second, and its end: a 0.7 s build printed 80 lines."""
    now = time.monotonic()
    if frac < 1.0 and now - _printed[0] < 0.5 and not message.startswith("warning:"):  # a warning is always said
        return
    _printed[0] = now
    print(f"[{frac:6.1%}] {message}", file=sys.stderr, flush=True)


def _job_options(p: argparse.ArgumentParser, save_spec: bool = True, json_holds: str | None = None,
                 queued_holds: str = "the name it will register (model)") -> None:
    """The options every job command shares; _run_or_queue acts on them. `json_holds`: what the command's --json
    result holds (a command without it has no --json); `queued_holds`: what its queued job's JSON names beside the
    job's id, kind and status (queued_json)."""
    if json_holds:  # a script had to pick the new model's name out of the `model: NAME` line
        p.add_argument("--json", action="store_true", help=f"print the result as one JSON object, for scripts: "
                       f"{json_holds}; with --queue or --after: the queued job's id (job), kind, status and "
                       f"{queued_holds}; {JSON_NULL}. Progress stays on stderr; stdout holds the JSON alone")
    if save_spec:
        p.add_argument("--save-spec", metavar="FILE", help="also write the spec as YAML here (rerun with `run`); "
                       "written once the spec passes the checks a queued job gets, so a refused spec is not saved; "
                       "a run that fails later (out of memory, say) leaves it written, to rerun")
    p.add_argument("--queue", action="store_true", help="hand the job to the worker instead of running it here")
    p.add_argument("--after", type=int, help="queue it to run after this job succeeds")


def _run_or_queue(spec, a: argparse.Namespace, more=None) -> None:
    """Every command ends here: run the spec in the foreground or hand it to the worker, saving it (if asked) once
    it passed the checks. The result is printed as lines (print_result), or with --json as one JSON object, with
    `more(result)`'s fields added (eval's scores)."""
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
        if getattr(a, "json", False):
            return _print_json(queued_json([job]))
        print(f"queued job {job.id} ({spec.kind}{made}); a running worker picks it up (python -m backend worker)")
        return
    _on_interrupt[0] = lambda: (f"the {spec.kind} stopped before it finished; it ran here, not as a job, so there "
                                "is nothing to resume: run the command again (with --queue the worker runs it, and "
                                "closing the terminal does not stop it)")
    # the name it registers (an unnamed import's derived as the import will: its refusals too), refused while a queued
    # job will register it, as --queue refuses it: registered here first, that job failed when it ended, its work lost
    if name := runner.output_name(spec, derive_import=True):
        runner.check_not_making(name)
    _check_model_folders(spec)
    from backend.hubpush import PushFailed

    as_json = getattr(a, "json", False)  # the work's own prints go to stderr then: stdout is the JSON alone
    try:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result = runner.work_function(spec.kind)(spec, None, _progress)
    except KeyboardInterrupt as exc:  # the work's own words, when it has them (a training names its run folder and
        if exc.args and isinstance(exc.args[0], str):  # the --run-name that continues it): main prints them
            said = exc.args[0]
            _on_interrupt[0] = lambda: said
        raise
    except (RuntimeError, OSError, PushFailed) as exc:  # the work ran and failed (the trainer's exit, out of memory,
        # a full disk, a push the Hub refused or did not answer): 1; a ValueError is an input refused (by the checks,
        # or by reading a damaged weights file): 2, as before, and so is a path that is taken, missing or of the
        # wrong kind (an --out that holds files)
        if isinstance(exc, (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            raise
        raise WorkFailed(str(exc)) from exc
    if as_json:
        _print_json({**result, **(more(result) if more else {})})
    else:
        print_result(result)
    if spec.kind == "synth-math" and not result.get("rows"):
        raise WorkFailed(f"synth-math produced no training data ({result.get('verified', 0)} verified, "
                         f"{result.get('failed', 0)} failed): the reasons are in {result.get('pairs')}'s pairs "
                         f"(its pairs.jsonl); `datasets delete {result.get('pairs')}` before running it again "
                         "under this name.")


def queued_json(jobs: list) -> dict | list[dict]:
    """--json of a queued job (a list for several: eval --fan-out): what a script needs to wait for it (jobs wait
    ID) and find what it makes (the name it will register, or null)."""
    from backend import runner

    said = [{"job": j.id, "kind": j.kind, "status": j.status, "after": j.after, "model": runner.planned_name(j)}
            if j.kind != "synth-math" else  # data sets of the spec's name (a prefix), no model
            {"job": j.id, "kind": j.kind, "status": j.status, "after": j.after, "model": None,
             "datasets": [f"{j.spec.get('name')}-{what}" for what in ("pairs", "instruct", "alignment")]}
            for j in jobs]
    return said[0] if len(said) == 1 else said


def result_lines(result: dict, indent: str = "") -> list[str]:
    """A foreground job's result as a person reads it: `key: value` lines, a nested block's fields indented under
    its key and a list's items one a line, where Python's repr printed `perf: {'compile': 'off', …}` and
    `device: {'sft3': 'CPU: float32, batch 8'}`; nothing for what is empty (`resumed_from: None`, `notes: []`,
    `skipped: []`); and the counts the runner's "done:" message says in words (runner.IN_WORDS) said so, and left
    out at 0 (`kept: 0` read as jargon)."""
    from backend import runner

    lines = []
    for k, v in result.items():
        if v is None or (isinstance(v, (list, tuple, dict, str)) and not v):
            continue
        if not indent and k in runner.IN_WORDS:
            if v:
                lines.append(runner.IN_WORDS[k].format(v))
        elif isinstance(v, dict):
            lines += [f"{indent}{k}:", *result_lines(v, indent + "  ")]
        elif isinstance(v, (list, tuple)):
            lines += [f"{indent}{k}:", *(f"{indent}  - {_one_line(x)}" for x in v)]
        else:
            lines.append(f"{indent}{k}: {_one_line(v)}")
    return lines


def _one_line(v) -> str:
    """A value on its line: a block in a list as `k: v, …`, a message of several lines on one."""
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_one_line(x)}" for k, x in v.items() if x is not None)
    return " ".join(str(v).split()) if isinstance(v, str) and "\n" in v else str(v)


def print_result(result: dict) -> None:
    """A foreground job's result on stdout (result_lines)."""
    for line in result_lines(result):
        print(line)


def _check_model_folders(spec) -> None:
    """The models a foreground run reads, given as folders that are not registered, refused as a queued job's are
    (runner's check_before_queueing) and as an import refuses them: a tokenizer missing, unreadable or larger than the
    model's vocabulary (`upscale --base FOLDER` registered a model nothing could use); a link out of the folder when
    the job copies its files into the model it makes (outputs.copied_refs: a build's tokenizer source)."""
    from backend import outputs, registry

    copied = outputs.copied_refs(spec)

    for key in ("base", "second", "model", "reference_model", "models"):
        value = getattr(spec, key, None) if key in type(spec).model_fields else None
        for ref in value if isinstance(value, list) else [value] if value else []:
            registry.check_folder_ref(ref, copies=ref in copied)


def _save_spec(spec, a: argparse.Namespace) -> None:
    """--save-spec, after the spec passed runner.check_before_queueing (submit runs it): a spec written before a
    check refused it (a model that is not there, a name taken, m past the base's depth) was a broken file the user
    would rerun with `run`."""
    if getattr(a, "save_spec", None):
        try:
            with open(a.save_spec, "w") as f:
                f.write(spec.to_yaml())
        except IsADirectoryError:
            raise ValueError(f"--save-spec {a.save_spec}: is a folder; give a file path in it, e.g. "
                             f"{a.save_spec.rstrip('/')}/{spec.kind}.yaml.") from None
        except FileNotFoundError:
            raise ValueError(f"--save-spec {a.save_spec}: its folder {_parent(a.save_spec)} is not there (No such "
                             f"file or directory): create it first (mkdir -p {_parent(a.save_spec)}), or give a path "
                             "in a folder that is there.") from None
        except OSError as exc:  # not allowed, a full disk: the reason, without its [Errno N]
            raise ValueError(f"--save-spec {a.save_spec}: cannot be written ({exc.strerror or exc}).") from None


def _parent(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(os.path.expanduser(path)))


def _source(text: str):
    """--data SOURCE[@WEIGHT] as a DataSource (argparse's type=: the specs load when a command's arguments are
    parsed, not as the parser is built)."""
    from backend.specs import DataSource

    source, _, weight = text.rpartition("@") if "@" in text else (text, "", "1")
    try:
        return DataSource(source=source, weight=float(weight))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--data {text!r}: use SOURCE or SOURCE@WEIGHT with a positive weight, "
                                         "e.g. data.jsonl@0.5")


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
