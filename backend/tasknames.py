"""A task's name as the Compare page shows it. A task read from a local file is stored under its whole path
("mc:/data/benchmarks/science/arc_challenge_sample.jsonl"): as a bar chart's title it was cut off before the file's
name, and as a column head it pushed the scores out of sight. Shown, it is named by its file's stem
("mc:arc_challenge_sample"); the stored rows, Export CSV and the CLI keep the whole path, and the page says which file
each short name is (`files_note`) and shows the path on hover.

    from backend.tasknames import task_labels
    task_labels(["qa", "mc:/data/v1/arc.jsonl", "mc:/data/v2/arc.jsonl"])
    # {"qa": "qa", "mc:/data/v1/arc.jsonl": "mc:v1/arc", "mc:/data/v2/arc.jsonl": "mc:v2/arc"}
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# evaltasks.FILE_TASKS, the kinds that read a source named after the colon (not imported: evaltasks loads the
# evaluation's readers, half a second on this machine)
FILE_KINDS = ("perplexity", "qa", "mc", "gsm8k")
# what a data file's name may end in (data.FILE_SUFFIXES' text and table formats, and compression), dropped from
# its stem: "arc.jsonl.gz" is "arc"
SUFFIXES = {".jsonl", ".json", ".ndjson", ".txt", ".csv", ".tsv", ".parquet", ".arrow", ".md", ".gz", ".bz2", ".xz",
            ".zst"}


def _file_parts(task: str) -> tuple[str, list[str]] | None:
    """(kind, the path's parts) of a task read from a local file; None for any other task: a built-in one (qa,
    synth-math), lm-eval:NAME, and sources that are no file (builtin:, dataset:, mix:, a Hub id owner/name)."""
    kind, colon, source = task.partition(":")
    if not colon or kind not in FILE_KINDS or not source or source.startswith(("builtin:", "dataset:", "mix:")):
        return None
    path = PurePosixPath(source)
    if not (source.startswith(("/", "~", "./", "../")) or source.count("/") > 1 or path.suffix.lower() in SUFFIXES):
        return None  # owner/name: a Hub data set, named as it is
    parts = [p for p in path.parts if p not in ("/", ".", "~")]
    return (kind, parts) if parts else None


def _stem(name: str) -> str:
    while (suffix := PurePosixPath(name).suffix.lower()) in SUFFIXES and name[:-len(suffix)]:
        name = name[:-len(suffix)]
    return name


def _candidates(task: str, kind: str, parts: list[str]) -> list[str]:
    """A file task's names, shortest first: the stem with none, one, … of its folders, then the file's whole name
    so (two files that differ only in their suffix: arc.json, arc.jsonl), then the task itself."""
    folders, name = parts[:-1], parts[-1]
    return [f"{kind}:" + "/".join([*folders[len(folders) - k:], last]) for last in (_stem(name), name)
            for k in range(len(folders) + 1)] + [task]


def task_labels(tasks) -> dict[str, str]:
    """Each of `tasks` as the page names it: a task read from a local file by its kind and file's stem
    ("mc:arc_challenge_sample"); where two would read alike, with as many of their folders as tell them apart
    ("mc:v1/arc", "mc:v2/arc"), or whole; any other task as it is. The one rule for every place a task is shown
    (column heads, chart titles, notes, the answer-length section's task list), so a task reads alike in all."""
    tasks = sorted(set(tasks))
    names = {t: _candidates(t, *parts) if (parts := _file_parts(t)) else [t] for t in tasks}
    level = dict.fromkeys(tasks, 0)  # which of its names each task is shown by
    while True:
        by_label: dict[str, list[str]] = {}
        for t in tasks:
            by_label.setdefault(names[t][level[t]], []).append(t)
        alike = [t for same in by_label.values() if len(same) > 1 for t in same if level[t] < len(names[t]) - 1]
        if not alike:  # tasks are distinct, so their last names (the tasks) always are
            return {t: names[t][level[t]] for t in tasks}
        for t in alike:
            level[t] += 1


def relabel(text: str, labels: dict[str, str]) -> str:
    """`text` (a column head, a note, a caption) with every task of `labels` written by its label. A task is
    replaced whole only ("mc:/d/arc.jsonl" not inside "mc:/d/arc.jsonl.gz"; a full stop after it ends a sentence);
    the longest first."""
    changed = {t: s for t, s in labels.items() if s != t}
    if not changed or not text:
        return text
    names = "|".join(re.escape(t) for t in sorted(changed, key=len, reverse=True))
    return re.sub(rf"(?<![\w./:~-])(?:{names})(?![\w/-]|\.\w)", lambda m: changed[m.group(0)], text)


def files_note(labels: dict[str, str]) -> str:
    """Which file each shortened task name is, for a caption under what shows them ("" when none is shortened)."""
    changed = {t: s for t, s in labels.items() if s != t}
    if not changed:
        return ""
    return "Tasks named by their file: " + "; ".join(f"{s} is {t}" for t, s in sorted(changed.items(),
                                                                                    key=lambda x: x[1])) + "."
