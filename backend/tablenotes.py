"""The notes under the models × tasks table, on the Compare page, after `python -m backend scores` and in a pushed
model card (scoretable.table_notes gives them): the items behind the scores, where a 0 ± 0 says nothing, the
average's tasks, the blanked hallucination cells, the training-overlap columns and the huge scores. Every model is
named here; backend/scorenotes.py counts them past its MANY."""

from __future__ import annotations

from backend.cutoff import CAP
from backend.scorevalues import (AVERAGE, HUGE, MOSTLY_CUT_OFF, PER_BYTE, PLUS_MINUS, _unanswered, _unreadable,
                                 averaged_tasks, headline, headline_score, higher_is_better, interval95, items_behind,
                                 number_text, score_column, tokenizers, too_few_answers, unlike_tokenizers,
                                 zero_error)
from storage.models import EvalScore


def items_note(primary: dict, clean: bool = False) -> str:
    """How many items stand behind the scores: "n = 20 items per task" when every score agrees, else each task's
    counts (a model scored on fewer items, or the clean items of an overlapping set)."""
    counts: dict[str, set[int]] = {}
    for (_, task), r in sorted(primary.items()):
        if (n := items_behind(r, clean)) > 0:
            counts.setdefault(task, set()).add(n)
    if not counts:
        return ""
    every = set.union(*counts.values())
    if len(every) == 1:
        return f"n = {every.pop()} items per task."
    return "Items per task: " + "; ".join(
        f"{t} {'–'.join(map(str, sorted({min(ns), max(ns)})))}" + (" (by model)" if len(ns) > 1 else "")
        for t, ns in counts.items()) + "."


def average_note(primary: dict, clean: bool = False) -> str:
    """Which tasks the average covers, and which it leaves out for which models, or why it is blank."""
    shared, left_out = averaged_tasks(primary, clean)
    if not shared and not left_out:
        return ""
    missing = "; ".join(f"{t} (no {'clean ' if clean else ''}score for {', '.join(ms)})" for t, ms in left_out.items())
    if not shared:
        return f"{AVERAGE}: left out — no accuracy-like task has a score for every model: {missing}."
    # each model's own mean over the shared tasks (scoretable.table_rows); the models scored on none of them
    # (perplexity alone) are blank, and "every model" read as including them
    scored = {m for (m, _), r in primary.items() if higher_is_better(r.metric)}
    none = sorted({m for m, _ in primary} - scored)
    tasks = "the accuracy-like task" if len(shared) == 1 else "the accuracy-like tasks"
    who = "every model with an accuracy-like score has" if none else "every model has"
    text = f"{AVERAGE}: each model's mean of its own scores on {', '.join(shared)}, {tasks} {who}"
    text += f" (blank for {', '.join(none)}: no accuracy-like score)" if none else ""
    return text + (f"; left out: {missing}." if left_out else ".")


def blanked_cells(latest: dict, clean: bool = False) -> list[tuple[str, str, str, bool]]:
    """The hallucination cells scoretable._task_cells blanks: (task, model, "100% cut off" or "60% cut off, 20%
    empty", whether any reply was empty), by model and task."""
    shares = {(m, t): _unanswered(latest, m, t, clean) for m, t, metric in latest
              if metric in ("cut_off_rate", "empty_rate")}
    return [(task, model, ", ".join(f"{v:.0%} {what}" for v, what in ((cut, "cut off"), (empty, "empty")) if v),
             bool(empty)) for (model, task), (cut, empty) in sorted(shares.items()) if too_few_answers(cut, empty)]


def cut_off_why(any_empty: bool) -> str:
    """Why cut_off_note's cells are blank (replies cut off, or empty too) and what to do."""
    head = f"Over {MOSTLY_CUT_OFF:.0%} of the "
    if not any_empty:
        return head + ("replies were cut off by the token limit before an answer, and a cut-off reply counts as no "
                       "hallucination, so the rate would read low for a model that never finished; evaluate again with "
                       f"a higher {CAP}.")
    return head + ("replies were cut off by the token limit before an answer or empty (the model ended them at once, "
                   "as an up-scaled model does before continued pretraining); neither counts as a hallucination, so "
                   f"the rate would read low for a model that never answered; evaluate again with a higher {CAP} "
                   "(cut off), or after continued pretraining (empty).")


def cut_off_note(latest: dict, clean: bool = False) -> str:
    """The hallucination cells left blank, and why (as scoretable._task_cells blanks them); a model cut off on every
    reply at each cap tried (answerstats.never_ended, as the Compare page's warning reads it) is told that a higher
    cap will not help it (cutoff.cap_remedy), not only to evaluate again with one."""
    cells = blanked_cells(latest, clean)
    if not cells:
        return ""
    text = ("Hallucination left blank: " + ", ".join(f"{task} for {model} ({what})" for task, model, what, _ in cells)
            + ". " + cut_off_why(any(e for *_, e in cells)))
    if not (every := sorted({model for _, model, what, _ in cells if what == "100% cut off"})):
        return text
    from backend import answerstats
    from backend.cutoff import RAISE_CAP, cap_remedy, never_ends

    caps = answerstats.never_ended(every)
    remedy = cap_remedy([m for m, c in caps.items() if never_ends(c)], caps)
    return text if remedy == RAISE_CAP else f"{text} But {remedy}."


def _lineage_sources_of(r: EvalScore) -> list[str]:
    """The training sources the row's overlap check read, a saved mix's members too (a deleted mix: as named)."""
    from backend import data

    out = []
    for src in ((r.details or {}).get("overlap") or {}).get("against") or []:
        try:
            out += [s for s, _ in data.expand([(src, 1.0)])]
        except data.DataError:
            out.append(src)
    return out


def taught(r: EvalScore) -> str | None:
    """What a built-in training set in the row's lineage taught of the set it was scored on, in other words
    (heldout.TEACHES), or None: the n-gram check cannot see it, so a ✓ alone said "held out"."""
    from backend.heldout import TEACHES

    teacher = TEACHES.get((r.details or {}).get("source"))
    return f"{teacher[0]} ({teacher[1]})" if teacher and teacher[0] in _lineage_sources_of(r) else None


def overlap_note(primary: dict) -> str:
    """What the training-overlap columns show, and what a task without one means: the column is only there for a
    task where some model's items overlap or could not be checked, so a promised ✓ never showed on a clean task."""
    by_task: dict[str, list[EvalScore]] = {}
    for (_, task), r in sorted(primary.items()):
        by_task.setdefault(task, []).append(r)
    shown = [t for t, rs in by_task.items() if any(r.overlap_share > 0 or _unreadable(r) for r in rs)]
    unchecked = [t for t, rs in by_task.items() if t not in shown and not all((r.details or {}).get("overlap")
                                                                               for r in rs)]
    # a lineage with no training data recorded (base models: their pretraining data is not known) was checked
    # against nothing, and its "no overlap" promised a ✓ it never earned
    nothing = [t for t in by_task if t not in shown and t not in unchecked
               and not any(((r.details or {}).get("overlap") or {}).get("against") for r in by_task[t])]
    clean = [t for t in by_task if t not in shown and t not in unchecked and t not in nothing]
    taught_by = {t: sorted({m for (m, task), r in primary.items() if task == t and taught(r)}) for t in by_task}
    teachers = {t: next(taught(r) for (_, task), r in primary.items() if task == t and taught(r))
                for t, models in taught_by.items() if models}
    parts = [f"training-overlap column for {', '.join(shown)}: ⚠ share of items over the threshold, ✓ none, ? unknown "
             "(a training set of the lineage could not be read, such as a deleted data set), — not checked"
             ] if shown else []
    parts += clean_parts(primary, [t for t in clean if t not in teachers])
    parts += [f"{t}: " + ("no 8-gram in common with the training data, but " if t in clean else "besides its column, ")
              + f"{teachers[t]} teaches it in other words, and {', '.join(taught_by[t])} trained on it: their score "
              "there is of what they were taught, not held out" for t in teachers]
    parts += [f"{', '.join(nothing)}: nothing to check against, as no model's lineage has training data recorded "
              "here (a base model's pretraining data is not known)"] if nothing else []
    parts += [f"{', '.join(unchecked)}: not checked for some model (lm-eval tasks, or scores from before the check)"
              ] if unchecked else []
    return ("Training overlap (8-gram; an item under 8 words counts when it appears whole) — " + "; ".join(parts)
            + ".") if parts else ""


def clean_parts(primary: dict, tasks: list[str]) -> list[str]:
    """The overlap note's words for `tasks`, clean for every model checked: which models were checked, and which
    could not be (a lineage with no training data recorded: a base model's pretraining data is not known). "no item
    overlaps any model's training data" followed by "base not checked" claimed what was never checked; tasks scored
    by the same models in the same way share one part."""
    groups: dict[tuple, list[str]] = {}
    for t in tasks:
        rows = sorted((m, bool(((r.details or {}).get("overlap") or {}).get("against")))
                      for (m, task), r in primary.items() if task == t)
        groups.setdefault((tuple(m for m, c in rows if c), tuple(m for m, c in rows if not c)), []).append(t)
    out = []
    for (checked, blind), ts in groups.items():
        text = f"{', '.join(ts)}: no item overlaps the recorded training data of {', '.join(checked)} (✓, so no column)"
        if blind:
            text += (f"; {', '.join(blind)} could not be checked: no training data of "
                     f"{'its' if len(blind) == 1 else 'their'} lineage is recorded here (a base model's pretraining "
                     "data is not known)")
        out.append(text)
    return out


def zero_error_cells(latest: dict, rows: list[dict], clean: bool = False) -> dict[tuple, list[str]]:
    """The cells that read 0 ± 0 (or 1 ± 0): (cell, share, items) -> the models, as zero_error_note names them."""
    shown = {row["model"]: row for row in rows}
    found: dict[tuple, list[str]] = {}  # (cell, share, items) -> models: five models at 0 of 20 make one entry
    for (model, task), r in sorted(headline(latest).items()):
        for head, score in ((score_column(task, r.metric), r),
                            (f"{task} (hallucination)", latest.get((model, task, "hallucination_rate")))):
            if score is None or shown.get(model, {}).get(head) is None:  # no cell, or one the table blanked
                continue
            # the unrounded numbers: 29999 of 30000 reads 1.0 ± 0.0 at 4 decimals, and is no 0-error share
            h = headline_score(latest, score, clean)
            v, n = h["value"], h["n"]
            if zero_error(v, h["stderr"], n, score.metric):
                found.setdefault((head, v, n), []).append(model)
    return found


ZERO_ERROR_WHY = ("0 ± 0 or 1 ± 0 is no certainty: lm-eval's standard error √(p(1−p)/(n−1)) is 0 at a share of 0 or 1 "
                  "however few the items; by the rule of three 0 of n items still allows a true rate up to about 3/n "
                  "(n of n one down to 1 − 3/n), the interval the bars' whiskers draw: ")


def zero_error_note(latest: dict, rows: list[dict], clean: bool = False) -> str:
    """The cells that read 0 ± 0 (or 1 ± 0), each with the rule of three's bound (interval95): lm-eval's error is
    kept, as the exports must equal lm-eval's, and this says why its 0 is no certainty."""
    found = zero_error_cells(latest, rows, clean)
    if not found:
        return ""
    return ZERO_ERROR_WHY + "; ".join(
        f"{head} for {', '.join(models)}, {round(v * n)} of {n} items: 95 % interval "
        + "{:.2g}–{:.2g}".format(*interval95(v, 0.0, n)) for (head, v, n), models in found.items()) + "."


def table_notes(latest: dict, rows: list[dict], clean: bool = False) -> list[str]:
    """What stands under the models × tasks table, on the Compare page and after `python -m backend scores`: the
    item counts, what ± is and where its 0 says nothing, the average's tasks, the blanked hallucination cells and
    the overlap columns."""
    primary = headline(latest)
    has_errors = any(v is not None for r in rows for c, v in r.items() if c.endswith(" ±"))
    notes = [items_note(primary, clean), PLUS_MINUS if has_errors else "",
             zero_error_note(latest, rows, clean), average_note(primary, clean), cut_off_note(latest, clean),
             overlap_note(primary), huge_note(rows), tokenizer_note(latest, primary)]
    return [n for n in notes if n]


def tokenizer_note(latest: dict, primary: dict, column=score_column) -> str:
    """Where a perplexity task's models tokenize its texts differently (scorevalues.tokenizers): that its column is
    the byte perplexity, or, where a model's score predates it, that the perplexities per token are not like for
    like and which models to evaluate again. Tasks whose models split alike (and, for the second, lack the same byte
    perplexities) share one sentence: five perplexity files of the same models said the same thing five times.
    `column`: how the table heads a task's score (the recipe tables: table_scores.column)."""
    unlike = unlike_tokenizers(primary)
    groups: dict[tuple, list[str]] = {}  # (tokenizer groups, old models or None) -> tasks
    for task, by in tokenizers(primary).items():
        old = tuple(sorted(m for m, t in primary if t == task and (m, t, PER_BYTE) not in latest)) if (
            task in unlike) else None
        groups.setdefault((tuple(map(tuple, by)), old), []).append(task)
    parts = []
    for (by, old), tasks in groups.items():
        ways = f"in {len(by)} ways ({' | '.join(', '.join(ms) for ms in by)})"
        if old is None:
            parts.append(f"{', '.join(column(t, PER_BYTE) for t in tasks)}: the models tokenize the texts "
                         f"{ways}, and a perplexity per token of one tokenizer does not compare with another's; per "
                         "UTF-8 byte of the texts it does (lm-eval's byte_perplexity: e ^ (summed loss / bytes)). "
                         "Each model's perplexity per token is stored beside it (`scores --json`)")
        else:
            parts.append(f"{', '.join(tasks)}: perplexity per token, of models that tokenize the texts {ways}: not "
                         f"like for like. {', '.join(old)} {'was' if len(old) == 1 else 'were'} scored before byte "
                         "perplexity was stored: evaluate again for a byte perplexity, which compares across "
                         "tokenizers")
    return ". ".join(parts) + "." if parts else ""


def huge_note(rows: list[dict]) -> str:
    """What "3.2e17" and "∞" in the table mean, when a cell holds one."""
    shown = sorted({number_text(v) for r in rows for v in r.values() if isinstance(v, float) and abs(v) >= HUGE})
    powers = [x for x in shown if "e" in x]
    said = [f"{powers[0]} is {powers[0].replace('e', ' × 10^')}: scores of a million or more are written so"] if (
        powers) else []
    said += ["∞: an infinite score (a perplexity whose mean loss overflowed: the model gives the text's tokens no "
             "probability that counts, as an untrained or broken one does)"] if len(powers) < len(shown) else []
    return "; ".join(said) + ". Export CSV and `scores --format csv` hold the exact values." if said else ""
