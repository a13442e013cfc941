"""The score cells of the SOLAR paper tables (backend/recipe/tables.py) beyond the scores themselves, and the notes
on them, as the Compare page's models × tasks table gives them (backend/scoretable.py): each score's standard error,
the training-overlap columns, and the notes on items, errors, cut-off replies and scores measured unlike.

Pure functions of the stored rows (`latest`: scoretable.latest_scores) and the table's rows (stage dicts), but
for cut_off_note's look-up of the models cut off throughout (answerstats.never_ended, one query).
"""

from __future__ import annotations

import json
from typing import Any

from backend.cutoff import cap_remedy


def column(task: str, metric: str) -> str:
    """A score's column in the paper tables, "qa accuracy", and in latest_scores' rows; the task alone where its
    metric is named alike. Its error's column adds " ±" (score_errors)."""
    return task if metric == task else f"{task} {metric}"  # not "perplexity perplexity"


def score_errors(latest: dict, outputs: list[str], scores: dict[str, dict]) -> dict[str, dict[str, float]]:
    """model -> {"task metric ±": standard error}, as the Compare page gives them (scoretable.stderr): beside each
    task's headline score and its hallucination rate, and beside any score whose own error is stored (lm-eval's
    TASK/METRIC_stderr, a perplexity's). None where the cell is blank (a mute hallucination rate) or no error is
    defined. 310.13 / 309.42 / 308.12 over 10 texts stood with nothing saying whether they differ."""
    from backend import scoretable

    rows = {(m, t, metric.removesuffix(scoretable.STDERR)) for m, t, metric in latest
            if metric.endswith(scoretable.STDERR)}
    rows |= {(m, t, r.metric) for (m, t), r in scoretable.headline(latest).items()}
    rows |= {(m, t, "hallucination_rate") for m, t, _ in latest}
    out: dict[str, dict[str, float]] = {}
    for model, task, metric in sorted(rows):
        r = latest.get((model, task, metric))
        if r is None or model not in outputs or scores.get(model, {}).get(column(task, metric)) is None:
            continue
        if (se := scoretable.stderr(latest, r)) is not None:
            out.setdefault(model, {})[f"{column(task, metric)} ±"] = scoretable._rounded(se)
    return out


def error_notes(latest: dict, rows: list[dict], scores: dict[str, dict], errors: dict,
                columns: set[str] | None = None) -> list[str]:
    """The Compare page's notes on the numbers (scoretable.table_notes): the items behind each score
    (items_note: "n = 10 items per task"), what ± is, where its 0 says nothing (_zero_error_note), of the
    table's `columns` (None: all), and why a perplexity column is the byte perplexity, or not like for like, where
    the rows' tokenizers differ (tablenotes.tokenizer_note): the tables switched to it without a word."""
    from backend import scoretable
    from backend.tablenotes import tokenizer_note

    outputs = [st["output"] for st in rows]
    primary = {k: r for k, r in scoretable.headline(latest).items() if k[0] in outputs}
    if columns is not None:  # a ± the table leaves out (a sub-metric's) is not said under it
        errors = {o: {c: v for c, v in e.items() if c in columns} for o, e in errors.items()}
    shown = any(errors.get(o) for o in outputs)
    notes = [scoretable.items_note(primary), scoretable.PLUS_MINUS if shown else "",
             _zero_error_note(latest, rows, scores, errors) if shown else "", tokenizer_note(latest, primary, column)]
    return [n for n in notes if n]


def _zero_error_note(latest: dict, rows: list[dict], scores: dict[str, dict], errors: dict) -> str:
    """The cells that read 0 ± 0 or 1 ± 0, with the rule of three's interval, as the Compare page says them
    (scoretable.zero_error, interval95); said per column and count, the models named only where some rows are not
    (its own note named all 18 models' registry names, twice, under "Every model of the run")."""
    from backend import scoretable

    found: dict[tuple, list[str]] = {}  # (share, items, models) -> columns
    by_cell: dict[tuple, list[str]] = {}  # (column, share, items) -> models
    for st in rows:
        for (model, task, metric), r in latest.items():
            col = column(task, metric)
            if model != st["output"] or errors.get(model, {}).get(f"{col} ±") != 0.0:
                continue
            v, n = scores[model][col], scoretable.items_behind(r)
            if scoretable.zero_error(v, 0.0, n, metric):
                by_cell.setdefault((col, v, n), []).append(st.get("label") or st["stage"])
    for (col, v, n), models in sorted(by_cell.items()):
        found.setdefault((v, n, tuple(models)), []).append(col)
    if not found:
        return ""
    return ("0 ± 0 or 1 ± 0 is no certainty: lm-eval's standard error √(p(1−p)/(n−1)) is 0 at a share of 0 or 1 "
            "however few the items; by the rule of three 0 of n items still allows a true rate up to about 3/n "
            "(n of n one down to 1 − 3/n): " + "; ".join(
                f"{', '.join(cols)} {round(v * n)} of {n} items ("
                + (f"all {len(rows)} models" if len(models) == len(rows) > 1 else ", ".join(models))
                + "): 95 % interval " + "{:.2g}–{:.2g}".format(*scoretable.interval95(v, 0.0, n))
                for (v, n, models), cols in found.items()) + ".")


def cut_off_note(latest: dict, rows: list[dict], scores: dict[str, dict], columns: set[str]) -> str:
    """The headline scores of the table (its `columns`) whose replies were every one, or mostly (over
    MOSTLY_CUT_OFF with the empty ones, too_few_answers' rule), cut off by the token limit, with the limit
    (settings' max_new_tokens): qa and synth-math accuracy read "0 ± 0" for every model, the cut_off_rate of 1
    behind them shown only with --all-metrics, and the rule of three's note read as if the model had been measured.
    Said per column and cut-off share, the rows named by their labels (all N models where every row is)."""
    from backend import scoretable

    labels = {st["output"]: st.get("label") or st["stage"] for st in rows if st["output"]}
    found: dict[tuple, list[str]] = {}  # (column, cut share, empty share, tokens, score) -> row labels
    cut_models: dict[str, float] = {}  # model -> its largest cut-off share among the columns said
    for (model, task), r in sorted(scoretable.headline(latest).items()):
        col = column(task, r.metric)
        cut = latest.get((model, task, "cut_off_rate"))
        if model not in labels or col not in columns or cut is None:
            continue
        empty = latest.get((model, task, "empty_rate"))
        share, blank = cut.value, (empty.value if empty is not None else None)
        if not share or not scoretable.too_few_answers(share, blank):
            continue
        tokens = ((cut.details or {}).get("settings") or {}).get("max_new_tokens")
        cut_models[model] = max(share, cut_models.get(model, 0.0))
        value = scores.get(model, {}).get(col)
        found.setdefault((col, round(share, 4), round(blank or 0.0, 4), tokens,
                          None if value is None else scoretable._rounded(value)), []).append(labels[model])
    together: dict[tuple, list[str]] = {}  # columns cut off alike in the same rows said together
    for (col, *how), models in found.items():
        together.setdefault((*how, tuple(models)), []).append(col)
    parts = []
    for (share, blank, tokens, value, models), cols in together.items():
        who = f"all {len(rows)} models" if len(models) == len(rows) > 1 else ", ".join(models)
        at = f" at {tokens} tokens" if tokens else " by the token limit"
        metrics = {c.split(" ", 1)[-1] for c in cols}
        metric = metrics.pop() if len(metrics) == 1 else "the score"
        shown = "" if value is None else f" {value:g}"
        if share >= 1.0:
            parts.append(f"{', '.join(cols)} ({who}): every reply was cut off{at}: {metric}{shown} measures the "
                         "token cap, not the model")
        else:
            also = f", {blank:.0%} empty" if blank else ""
            parts.append(f"{', '.join(cols)} ({who}): {share:.0%} of the replies were cut off{at}{also}: "
                         f"{metric}{shown} measures the token cap more than the model")
    if not parts:
        return ""
    return "Cut off — " + "; ".join(parts) + ". " + _cap_remedy(cut_models, labels)


RAISE_FIELD = "raise `eval.max_new_tokens` in the recipe and run it again"  # the recipe's own field, not the form's


def _cap_remedy(cut_models: dict[str, float], labels: dict[str, str]) -> str:
    """What cut_off_note's models need: the recipe's token cap raised, but not for a model cut off on every reply at
    each cap tried (answerstats.never_ended, as the Compare page's warning reads it): a higher cap will not help it.
    `cut_models`: model -> cut-off share (only those cut off throughout are looked up)."""
    from backend import answerstats

    every = [m for m, share in cut_models.items() if share >= 1.0]
    caps = answerstats.never_ended(every) if every else {}
    remedy = cap_remedy([labels[m] for m in cut_models], {labels[m]: c for m, c in caps.items()}, RAISE_FIELD,
                        "`eval.max_new_tokens`")
    return (f"{remedy[:1].upper()}{remedy[1:]}" + (" before reading these scores." if remedy == RAISE_FIELD else "."))


OVERLAP = "{task} (training overlap)"  # scoretable._task_cells' column, read alike on both pages
CLEAN = "{column} (non-overlapping items)"


def overlap_cells(metrics: list[str], outputs: list[str], latest: dict) -> tuple[list[str], dict, str]:
    """The training-overlap record of a table's models, as the Compare page reads it (backend/scoretable.py): for
    each task where some model's items overlap its lineage's training data, or part of that data could not be read
    (table_rows' rule), a badge column (scoretable.badge) and the headline score on the non-overlapping items only
    (scoretable.headline_score, clean), each after the task's score columns; and the Compare page's note on what
    they mean and which tasks were clean or not checked (scoretable.overlap_note). Returns (the columns in order,
    model -> {column: cell}, the note)."""
    from backend import scoretable

    primary = {k: r for k, r in scoretable.headline(latest).items() if k[0] in outputs}
    overlapping = {t for (_, t), r in primary.items() if r.overlap_share > 0 or scoretable._unreadable(r)}
    heads = {t: {column(t, r.metric) for (_, task), r in primary.items() if task == t} for t in overlapping}
    extra: dict[str, list[str]] = {}
    cells: dict[str, dict[str, Any]] = {}
    for task in sorted(overlapping):
        (head,) = heads[task] if len(heads[task]) == 1 else (task,)  # one headline metric: named; else the task's
        extra[task] = [OVERLAP.format(task=task), CLEAN.format(column=head)]
        for (model, t), r in primary.items():
            if t == task:
                cells.setdefault(model, {}).update({extra[task][0]: scoretable.badge(r), extra[task][1]:
                                                    scoretable.headline_score(latest, r, clean=True)["value"]})
    cols: list[str] = []
    for i, m in enumerate(metrics):  # a task's overlap columns after its last score column
        cols.append(m)
        for task in extra:
            mine = m == task or m.startswith(task + " ")
            if mine and not any(n == task or n.startswith(task + " ") for n in metrics[i + 1:]):
                cols += extra[task]
    return cols, cells, scoretable.overlap_note(primary)


def unlike_note(rows: list[dict], latest: dict) -> str:
    """Where a task's scores in one table were measured differently (items behind them, or the evaluation's settings
    but its limit: max_new_tokens, samples, prompt, lm-eval's few-shot counts and version), which rows differ and
    how; "" when every row was measured alike. A model evaluated again outside the recipe (Compare, `evaluate`) has
    its newest run in the table: a 40-item score stood beside 12-item ones in one column, with no word."""
    from backend import scoretable

    label = {st["output"]: st.get("label") or st["stage"] for st in rows}
    primary = {k: r for k, r in scoretable.headline(latest).items() if k[0] in label}
    measured: dict[str, dict[str, dict[str, str]]] = {}  # task -> row -> what -> value
    for (model, task), r in sorted(primary.items()):
        settings = {k: json.dumps(v, sort_keys=True, default=str)
                    for k, v in ((r.details or {}).get("settings") or {}).items() if k != "limit"}
        measured.setdefault(task, {})[label[model]] = {"items": str(scoretable.items_behind(r) or None), **settings}
    found: dict[str, dict[str, dict[str, list[str]]]] = {}  # task -> what -> value -> rows
    for task, by_row in measured.items():
        for what in sorted({w for m in by_row.values() for w in m}):  # a setting one row lacks is a difference too
            for row, m in by_row.items():
                found.setdefault(task, {}).setdefault(what, {}).setdefault(m.get(what, "None"), []).append(row)
    parts = [f"{task}: " + "; ".join(f"{what} " + ", ".join(f"{v} ({', '.join(ms)})" for v, ms in sorted(vals.items()))
                                     for what, vals in sorted(by.items()) if len(vals) > 1)
             for task, by in sorted(found.items()) if any(len(vals) > 1 for vals in by.values())]
    if not parts:
        return ""
    return ("Not measured alike — " + " | ".join(parts) + ". These scores are not like for like; evaluate the models "
            "with the same settings (the recipe's own evaluation does) before comparing them.")
