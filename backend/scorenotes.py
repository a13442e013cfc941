"""The notes under the models × tasks table (tablenotes.table_notes), as the Compare page and `python -m backend
scores` show them once many models are scored: a note naming more than MANY models says how many, grouped by task
and why ("qa and synth-math (100% cut off) for 79 models"), and keeps its every name in the full text beside it
(the page's expander, `scores --verbose`). With 114 models the 0 ± 0 note ran to 5,568 characters and the blanked
hallucination note to 10,270, and the table began 2,100 px down the page."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend import scorevalues, tablenotes, tasknames

MANY = 10  # past this many models a note counts them; up to it, it names them as before
GROUPS = 5  # the groups a summary spells out; the rest are counted


@dataclass(frozen=True)
class Note:
    """One note under the table: `text` as shown; `full` the note with every model named, where `text` counts
    them ("" where `text` is the whole note)."""
    text: str
    full: str = ""


def who(models: list[str]) -> str:
    """Models as a note names them: each by name up to MANY, else their count."""
    return ", ".join(models) if len(models) <= MANY else f"{len(models)} models"


def _groups(parts: list[str], models_left: int) -> str:
    """The first GROUPS parts, the rest counted (their models are in the full note)."""
    shown = "; ".join(parts[:GROUPS])
    if len(parts) <= GROUPS:
        return shown
    more = f"{models_left} more models" if models_left else "the models above"
    rest = len(parts) - GROUPS
    return shown + f"; and {rest} other group{'s' if rest > 1 else ''} of {more} (the full note names them)"


def zero_error_summary(latest: dict, rows: list[dict], clean: bool = False) -> str:
    """tablenotes.zero_error_note with the models counted: cells of one share, item count and set of models make
    one group ("qa (accuracy) and synth-math (accuracy) for 79 models, 0 of 4 items: 95 % interval 0–0.75")."""
    groups: dict[tuple, list[str]] = {}
    for (head, v, n), models in tablenotes.zero_error_cells(latest, rows, clean).items():
        groups.setdefault((v, n, tuple(models)), []).append(head)
    ordered = sorted(groups.items(), key=lambda g: -len(g[0][2]))
    parts = [f"{' and '.join(heads)} for {who(list(models))}, {round(v * n)} of {n} items: 95 % interval "
             + "{:.2g}–{:.2g}".format(*scorevalues.interval95(v, 0.0, n)) for (v, n, models), heads in ordered]
    # a model may sit in several groups (a cell per task): those named in the groups shown are no "more models"
    left = len({m for (_, _, models), _ in ordered[GROUPS:] for m in models}
               - {m for (_, _, models), _ in ordered[:GROUPS] for m in models})
    return tablenotes.ZERO_ERROR_WHY + _groups(parts, left) + "."


def cut_off_summary(latest: dict, clean: bool = False) -> str:
    """tablenotes.cut_off_note with the models counted: the models whose blank cells are alike make one group, its
    tasks with the same share together ("qa and synth-math (100% cut off) for 79 models")."""
    cells = tablenotes.blanked_cells(latest, clean)
    by_model: dict[str, list[tuple[str, str]]] = {}
    for task, model, what, _ in cells:
        by_model.setdefault(model, []).append((task, what))
    alike: dict[tuple, list[str]] = {}
    for model, blank in by_model.items():
        alike.setdefault(tuple(blank), []).append(model)
    parts = []
    for blank, models in sorted(alike.items(), key=lambda g: -len(g[1])):
        tasks: dict[str, list[str]] = {}  # the share -> its tasks
        for task, what in blank:
            tasks.setdefault(what, []).append(task)
        parts.append(", ".join(f"{' and '.join(ts)} ({what})" for what, ts in tasks.items()) + f" for {who(models)}")
    left = sum(len(ms) for ms in sorted(alike.values(), key=len, reverse=True)[GROUPS:])
    return (f"Hallucination left blank for {len(by_model)} models: " + _groups(parts, left) + ". "
            + tablenotes.cut_off_why(any(e for *_, e in cells)))


def _name_pattern(models) -> str:
    """Any one of the model names, whole: longest first, and no name character after or before ("tiny-0" must not
    match the start of "tiny-0-dus")."""
    return "(?:" + "|".join(re.escape(m) for m in sorted(models, key=len, reverse=True)) + r")(?![\w.-])"


def count_names(text: str, models: list[str]) -> str:
    """Every run of more than MANY model names in `text` ("a, b, c, …") written as their count: the average's and
    the overlap note's lists of models."""
    if len(models) <= MANY:
        return text
    name = _name_pattern(models)
    return re.sub(rf"(?<![\w.-]){name}(?:, {name}){{{MANY},}}", lambda m: f"{m.group(0).count(', ') + 1} models",
                  text)


def table_notes(latest: dict, rows: list[dict], clean: bool = False,
                labels: dict[str, str] | None = None) -> list[Note]:
    """tablenotes.table_notes, each note that names more than MANY models with them counted (Note.text) and the
    whole note beside it (Note.full); a note of a few models as it was. `labels`: the tasks as the page names them
    (tasknames.task_labels; the CLI keeps whole paths), with a last note on which file each short name is."""
    notes = _counted_notes(latest, rows, clean)
    if not labels:
        return notes
    named = [Note(tasknames.relabel(n.text, labels), tasknames.relabel(n.full, labels)) for n in notes]
    return named + ([Note(files)] if (files := tasknames.files_note(labels)) else [])


def _counted_notes(latest: dict, rows: list[dict], clean: bool) -> list[Note]:
    full = tablenotes.table_notes(latest, rows, clean)
    named = sorted({row["model"] for row in rows} | {m for m, _, _ in latest})
    pattern = re.compile(r"(?<![\w.-])" + _name_pattern(named)) if named else None
    short = {tablenotes.zero_error_note(latest, rows, clean): lambda: zero_error_summary(latest, rows, clean),
             tablenotes.cut_off_note(latest, clean): lambda: cut_off_summary(latest, clean)}
    notes = []
    for note in full:
        if pattern is None or len(set(pattern.findall(note))) <= MANY:
            notes.append(Note(note))
            continue
        text = short[note]() if note in short and note else count_names(note, named)
        notes.append(Note(text, note) if text != note else Note(note))
    return notes


def shares_text(shares: dict[str, float]) -> str:
    """Models with a share each ("m1 100%, m2 40%"), as the Answer-length warnings list them; past MANY models, grouped
    by share ("100% for 79 models, 40% for m2")."""
    shown = {m: v for m, v in shares.items() if v}
    if len(shown) <= MANY:
        return ", ".join(f"{m} {v:.0%}" for m, v in shown.items())
    by_share: dict[str, list[str]] = {}
    for m, v in shown.items():
        by_share.setdefault(f"{v:.0%}", []).append(m)
    return ", ".join(f"{share} for {who(ms)}" for share, ms in sorted(by_share.items(), key=lambda g: -len(g[1])))
