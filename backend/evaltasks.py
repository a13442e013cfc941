"""An evaluation's task sets: each task's items read and validated before any model loads (backend/evaluate.py
lists the tasks), and the errors an evaluation raises.

    from backend.evaltasks import task_set
    task_set("mc:arc.jsonl", limit=40).items
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from backend import heldout, qa
from backend.data_reading import not_a_regular_file
from backend.synth.answers import to_number


class EvalError(ValueError):
    pass


class EvalFailed(EvalError, RuntimeError):
    """The scoring ran and failed (out of memory, a CUDA error): a RuntimeError too, so the CLI exits 1 for it, not 2
    as for an input refused."""


# raised through backend/evaluate.py, which their callers import them from: a traceback in a job's log names them as
# it did before this module was split off
EvalError.__module__ = EvalFailed.__module__ = "backend.evaluate"


def _mc_problem(row: dict) -> str | None:
    """An answer that is no index into choices (a letter, as ARC's answerKey) would never match: 0 % unsaid. An empty
    choice was scored on the space before it and divided by 1 for acc_norm, where lm-eval divides by its length, 0:
    a few nats over one character, it often won acc_norm. A question that is no text was scored as "None" or "3"."""
    choices, answer = row["choices"], row["answer"]
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "question must be non-empty text."
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        return "choices must be a list of at least two strings."
    if not all(choices):
        return (f"choice {choices.index('')} is empty: every choice must have text (acc_norm divides a choice's "
                "log-likelihood by its length).")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        return (f"answer must be the index of the right choice, 0 to {len(choices) - 1}; got {answer!r} "
                "(convert letters A, B, C… to 0, 1, 2…).")
    return None


def _gsm8k_problem(row: dict) -> str | None:
    """A question that is no text, or an answer that is neither text nor a number, failed at scoring with a
    traceback (an AttributeError on the answer's "####"), after the models loaded. An answer whose final answer
    (after its last "####", or the whole answer without one) is no number — empty, "… ####", a solution ending
    "The answer is 4." — became a reference no reply can equal: every reply scored "wrong", a hallucination."""
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "question must be non-empty text."
    if isinstance(row["answer"], bool) or not isinstance(row["answer"], (str, int, float)):
        return f"answer must be text ending in '#### n' (or the number); got {type(row['answer']).__name__}."
    if to_number(_gsm8k_reference(row["answer"])) is None:
        return f"answer must end in '#### n' with n a number (or be the number); got {str(row['answer'])[-60:]!r}."
    return None


def _gsm8k_reference(answer) -> str:
    """The final answer of a GSM8K answer: after its last "####", or the whole answer (a bare number)."""
    return str(answer).rsplit("####", 1)[-1].strip()


def read_jsonl(path: str, fields: tuple[str, ...], check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Rows with `fields`; `check(row)` returns what is wrong with a row, if anything. Read as the local lm-eval
    tasks' files are (loaders.read_json_lines), in this module's words."""
    from backend.lm_eval_tasks.loaders import read_json_lines

    p = Path(path)
    if not p.exists():
        raise EvalError(f"{p} does not exist.")
    if problem := not_a_regular_file(p, "a JSON Lines file"):  # a named pipe hung the reader
        raise EvalError(problem)

    def problem(row) -> str | None:
        if not isinstance(row, dict):  # a list or a number: `in` below failed with a TypeError, not this line
            return f"expected an object {{{', '.join(fields)}}}; got {type(row).__name__}."
        if missing := [f for f in fields if f not in row]:
            return f"missing {', '.join(missing)} (the layout is {{{', '.join(fields)}}})."
        return check(row) if check else None

    def fault(n: int | None, said: str | None) -> EvalError:
        return EvalError(f"{p.name} has no rows." if n is None else f"{p.name}, line {n}: {said or 'not valid JSON.'}")

    return read_json_lines(p, problem, fault)


def _stratified(items: list[dict], limit: int) -> list[dict]:
    """The first `limit` items taken in turn from each item kind, so a small limit still covers every kind."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it["kind"], []).append(it)
    out, queues = [], [list(g) for g in groups.values()]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def _perplexity_texts(ds, source: str) -> list[str]:
    """The text of each row as continued pretraining reads it (backend/data.py, convert_row for cpt): a `text`
    column as it is, a conversation layout's turns joined. The first column taken instead scored the Python repr
    of a `messages` list, or an Alpaca set's instructions without their answers, and said nothing."""
    from backend import data

    try:
        layout = "text" if "text" in ds.column_names else data.detect_layout(ds.column_names, "cpt")
        data.check_rows(ds, source, layout, "cpt", n=len(ds))
    except data.DataError as exc:
        raise EvalError(f"perplexity:{source}: {exc} Perplexity scores the text of each row: give a .txt file or "
                        "rows with a text column.") from None
    return [data.convert_row(row, layout, "cpt")["text"] for row in ds]


@dataclass
class TaskSet:
    task: str
    kind: str
    source: str
    items: list  # what is scored (texts, rows or dicts)
    texts: list[str] = field(default_factory=list)  # per item: the text compared with training data
    arg: str = ""


def task_set(task: str, limit: int) -> TaskSet:
    kind, _, arg = task.partition(":")
    if kind == "perplexity":
        if arg:
            from backend import data

            try:
                ds = data.load_source(arg)
            except data.DataError as exc:
                raise EvalError(f"perplexity:{arg}: {exc}") from None
            # a blank text is no item: it has no token to score, yet counted in the row's n and overlap share; a
            # file of blank texts failed only after the models loaded ("the texts are empty")
            texts = [t for t in _perplexity_texts(ds.select(range(min(limit, len(ds)))), arg) if t.strip()]
            if not texts:
                first = "row has" if min(limit, len(ds)) == 1 else f"{min(limit, len(ds)):,} rows have"
                raise EvalError(f"perplexity:{arg}: the first {first} no text to score.")
        else:
            texts = heldout.eval_path("heldout-text").read_text().splitlines()[:limit]
        return TaskSet(task, kind, arg or "builtin-eval:heldout-text", texts, texts)
    if kind == "synth-math":
        rows = [json.loads(x) for x in heldout.eval_path("eval-math").read_text().splitlines() if x.strip()][:limit]
        items = [(r["id"], r["question"], r["answer"]) for r in rows]
        return TaskSet(task, kind, "builtin-eval:eval-math", items, [q for _, q, _ in items])
    if kind == "qa":
        items = _stratified(qa.load_items(arg or heldout.eval_path("qa-closed-book")), limit)
        return TaskSet(task, kind, arg or "builtin-eval:qa-closed-book", items, [it["question"] for it in items])
    if kind == "mc":
        rows = read_jsonl(arg, ("question", "choices", "answer"), _mc_problem)[:limit]
        return TaskSet(task, kind, arg, rows, [r["question"] for r in rows])
    if kind == "gsm8k":
        rows = read_jsonl(arg, ("question", "answer"), _gsm8k_problem)[:limit]
        items = [(f"gsm8k-{j}", r["question"], _gsm8k_reference(r["answer"])) for j, r in enumerate(rows)]
        return TaskSet(task, kind, arg, items, [q for _, q, _ in items])
    if kind == "lm-eval":
        from backend import lmeval
        from backend.lm_eval_tasks.loaders import test_rows

        rows = []  # a local task's rows, which lm-eval takes the first `limit` of; a Hub task's are not known here
        for name, _, _ in lmeval.expand(arg):  # an unknown name or a malformed local file fails here, before any
            lmeval.resolve(name)  # model is loaded
            rows += (test_rows(name) or [])[:limit]
        # no texts: an overlap check of these items is not made (dus_truthfulqa_mini's short questions would read
        # "✓ 0%" though its facts are the built-in training corpus, make_data.py); the badge says "not measured"
        return TaskSet(task, kind, f"lm-eval:{arg}", rows, [], arg)
    raise EvalError(f"unknown task {task!r}")


FILE_TASKS = ("perplexity", "qa", "mc", "gsm8k")  # the task kinds that read a source named after the colon


@lru_cache(maxsize=1)
def lm_eval_index() -> frozenset[str]:
    """Every name lm-eval's TaskManager knows (tasks, groups and tags of its installed YAMLs), for checking a name
    before a job is queued. Building the index reads ~15k YAML files (about 10 s on 2 cores), so the names are kept in
    this machine's cache folder ($XDG_CACHE_HOME or ~/.cache, dus-studio/), keyed by lm-eval's version and its task
    folder (_tasks_key): built once per installed lm-eval, not per check (an installation is per machine, so not the
    shared workspace). Scanning the YAMLs for `task:` lines instead missed 2,472 of 14,683 names (those made by
    `include`)."""
    try:
        import lm_eval
        from importlib.metadata import version
    except ImportError:
        raise EvalError("lm-evaluation-harness is not installed: .venv/bin/pip install lm-eval==0.4.13 "
                        "(requirements.txt pins it).") from None
    key = _tasks_key(Path(lm_eval.__file__).resolve().parent / "tasks", version("lm_eval"))
    cache = (Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dus-studio"
             / f"lm-eval-{key['version']}-tasks.json")
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return frozenset(stored["names"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # none yet, another version's, or half-written by a crash: built again below
    from backend.lmeval import _hub_manager

    names = frozenset(_hub_manager().all_tasks)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "names": sorted(names)}), encoding="utf-8")
        os.replace(tmp, cache)  # a reader sees the old file or the new one, never half of one
    except OSError:  # a read-only home: the check still works, only slower next time
        tmp.unlink(missing_ok=True)
    return names


def _tasks_key(tasks_dir: Path, version: str) -> dict:
    """What lm_eval_index's cached names are valid for: lm-eval's version and its task folder, and for a development
    install (an editable `pip install -e` of a checkout: tasks added, the version unchanged) a digest of the
    modification times of every folder under it, which a YAML added, removed or renamed anywhere changes (the task
    folder's own time changed only for a file directly in it, and most tasks sit in folders of their own: a task
    added to tasks/arc/ stayed unknown). About 1,400 folders: tens of ms, once per process; an installed wheel
    changes only with its version (a reinstall writes a new folder), so it is not walked."""
    import hashlib
    import site
    import sysconfig

    key = {"version": version, "tasks": str(tasks_dir), "mtime_ns": tasks_dir.stat().st_mtime_ns}
    installed = {*site.getsitepackages(), site.getusersitepackages(), *map(sysconfig.get_paths().get,
                                                                           ("purelib", "platlib"))}
    if any(tasks_dir.is_relative_to(Path(folder).resolve()) for folder in installed if folder):
        return key
    digest, folders = hashlib.blake2b(digest_size=16), [str(tasks_dir)]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    digest.update(f"{entry.path}\0{entry.stat(follow_symlinks=False).st_mtime_ns}\0".encode())
    return key | {"folders": digest.hexdigest()}


def check_lm_eval_name(name: str) -> None:
    """Refuse an lm-eval task, group or tag name that neither this project's local tasks, its presets nor lm-eval's
    index know, with the closest known names: `lm-eval:nosuchtask` was queued and failed only when its turn came.
    The local tasks and presets are looked up first, so they never wait for lm-eval's index."""
    import difflib

    from backend import lmeval

    try:  # lm-eval missing or broken: said as lm_eval_index says it, not a raw ModuleNotFoundError at queueing
        local = [*lmeval.local_tasks(), *lmeval.PRESETS]
        if name in local:
            return
        hub = lm_eval_index()
    except ImportError as exc:
        raise EvalError(f"lm-evaluation-harness cannot be imported ({exc}): .venv/bin/pip install lm-eval==0.4.13 "
                        "(requirements.txt pins it).") from None
    if name in hub:
        return
    close = difflib.get_close_matches(name, [*local, *hub], n=3, cutoff=0.75)
    guess = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
    raise EvalError(f"lm-eval task {name!r} is unknown{guess} Local tasks (offline): "
                    f"{', '.join(lmeval.local_tasks())}; "
                    f"presets: {', '.join(lmeval.PRESETS)}; or any of the {len(hub):,} tasks, groups and tags lm-eval "
                    "registers (arc_easy, gsm8k, mmlu, …), whose data comes from the Hugging Face Hub.")


def check_task(task: str, limit: int) -> None:
    """Read and check a task's items as the job will (task_set) when they come from this machine: a file, or for
    perplexity a built-in or registered set. Run when the job is queued (runner.check_before_queueing) and when a
    recipe is planned: a malformed file otherwise failed the job when its turn came, behind a busy queue. The
    built-in task sets need no check. An lm-eval task's name is looked up in lm-eval's index (check_lm_eval_name);
    its data, and Hub data sets, are left to the job (they need the network)."""
    from backend.data import names_data_file  # a path so named is read as a file, missing or not (x.jsonl.gz too)

    kind, _, arg = task.partition(":")
    if kind == "lm-eval" and arg:  # the name only: its data is the job's to fetch (it may need the network)
        from backend.lmeval import expand

        for name, _, _ in expand(arg):
            check_lm_eval_name(name)
        return
    path = Path(arg).expanduser()
    if kind not in FILE_TASKS or not arg or not (arg.startswith(("builtin:", "dataset:")) or path.exists()
                                                 or names_data_file(path)):
        return
    try:
        task_set(task, limit)
    except UnicodeDecodeError as exc:  # a binary file: Python's message named neither the file nor the fix
        if path.suffix.lower() == ".gz":  # perplexity reads x.jsonl.gz (data.load_source); qa, mc, gsm8k do not
            raise EvalError(f"{task}: {path.name} is gzip-compressed, and {kind} tasks read plain JSON Lines "
                            f"files: decompress it (gunzip {path.name}) and give the .jsonl.") from None
        raise EvalError(f"{task}: {path.name} is not UTF-8 text (byte {exc.start}); give a JSON Lines file, one "
                        "object a line.") from None
