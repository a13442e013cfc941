"""The models × tasks table the compare page and a CLI user share: which metric heads a task, its standard error
and item count, how the average is taken, the cut-off share beside the hallucination rate, the training-overlap
badge, and the score on non-overlapping items only."""

from __future__ import annotations

import math

from sqlmodel import select

from backend.recipe.tables import Table
# One score's rules (scorevalues: its value, error, interval, column) and the notes under the table (tablenotes) live
# beside this module; every name the rest of the studio uses is imported from here.
from backend.scorevalues import (AVERAGE, HIGHER_IS_BETTER, HUGE, MOSTLY_CUT_OFF, PLUS_MINUS,  # noqa: F401
                                 PREFERRED_METRIC, QA_METRICS, RULE_OF_THREE, SHARES, STDERR, Z95, _unanswered,
                                 _unreadable, averaged_tasks, headline, headline_score, higher_is_better, interval95,
                                 item_count, items_behind, number_text, of_models, score_column, stderr,
                                 too_few_answers, unlike_tokenizers, UNLIKE_TOKENIZERS, value, zero_error)
from backend.tablenotes import (ZERO_ERROR_WHY, average_note, blanked_cells, cut_off_note, cut_off_why,  # noqa: F401
                                huge_note, items_note, overlap_note, table_notes, taught, zero_error_cells,
                                zero_error_note)
from storage import db
from storage.models import EvalScore


def latest_scores(models: list[str] | None = None) -> dict[tuple[str, str, str], EvalScore]:
    """The rows of the newest run of each (model, task) (newest_run), per (model, task, metric). Only those rows are
    loaded whole: newest_run decides on the few columns it reads, then the kept rows are read by id (every
    superseded run's rows, which a rerun leaves behind, were built and their details parsed on every call).
    `models`: only theirs."""
    keys = select(EvalScore.id, EvalScore.model, EvalScore.task, EvalScore.run, EvalScore.job_id)
    if models is not None:
        keys = keys.where(EvalScore.model.in_(list(models)))
    with db.session() as s:
        keep = [r.id for r in newest_run(s.exec(keys.order_by(EvalScore.id)).all(), lambda r: (r.model, r.task))]
        rows = [r for i in range(0, len(keep), ID_BATCH)  # SQLite allows 32,766 bound values; fewer per query
                for r in s.exec(select(EvalScore).where(EvalScore.id.in_(keep[i:i + ID_BATCH]))).all()]
    return {(r.model, r.task, r.metric): r for r in sorted(rows, key=lambda r: r.id)}


ID_BATCH = 5000


def newest_run(rows: list, key) -> list:
    """Of `rows` (EvalScore or Generation, in id order), those of the newest evaluation run of each `key`: a rerun
    with samples=1 after one with samples=2 left the older consistency beside the newer accuracy, and a rerun on 2
    items after one on 4 mixed 2 old answers into the length analysis, made under another token cap. Rows from
    before runs were recorded (run "") count as one run per job."""
    run = lambda r: r.run or f"job {r.job_id}"  # noqa: E731  older rows: a job's rows are one run (rows of
    newest = {key(r): run(r) for r in rows}  # a worker not yet upgraded must not bring back every earlier row)
    return [r for r in rows if run(r) == newest[key(r)]]


def chart_rows(latest: dict, clean: bool = False) -> dict[str, list[dict]]:
    """Per task column (score_column, as the table heads it) a bar per model: headline_score. A score unknown on
    the clean items (every item overlapped, or the training data unreadable) gets no bar, as the table leaves its
    cell blank: a bar at 0 would read as a score of 0."""
    out: dict[str, list[dict]] = {}
    for (_, task), r in sorted(headline(latest).items()):
        if (score := headline_score(latest, r, clean))["value"] is not None:
            out.setdefault(score_column(task, r.metric), []).append(score)
    return out


def radar_scores(charts: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per model, its accuracy-like tasks' scores for the radar, from the bars' rows (chart_rows), so the radar
    follows the clean toggle as they do and leaves out a task without a clean score rather than draw it at 0."""
    out: dict[str, dict[str, float]] = {}
    for rows in charts.values():
        for score in rows:
            if higher_is_better(score["metric"]):
                out.setdefault(score["model"], {})[score["task"]] = score["value"]
    return out


def chart_note(latest: dict, charts: dict[str, list[dict]], clean: bool = False, radar: bool = True,
               labels: dict[str, str] | None = None) -> str:
    """The caption under the bars and radar: which scores they show (with `clean`, which have no bar and why) and
    what the whiskers are, the rule of three's included (interval95). `radar`: whether a radar is drawn beside the
    bars (it needs three accuracy-like tasks); without one the caption speaks of the bars alone. `labels`: the
    tasks as the page names them (tasknames.task_labels)."""
    drawn = {(score["model"], score["task"]) for rows in charts.values() for score in rows}
    missing = [f"{(labels or {}).get(task, task)} for {model}" for model, task in sorted(headline(latest))
               if (model, task) not in drawn]
    head = "Bars and radar:" if radar else "Bars:"
    text = (f"{head} the table's scores on the non-overlapping items only (the toggle above)"
            + (f"; no bar for {', '.join(missing)}: no clean score (every item overlaps, or the training data could "
               "not be read)" if missing else "") + ". ") if clean else f"{head} the table's scores. "
    if any(score["stderr"] is not None for rows in charts.values() for score in rows):
        text += ("Whiskers: 95 % interval, score ± 1.96 standard errors; where that error is 0 at a score of 0 or 1, "
                 "0 to 3/n or 1 − 3/n to 1 instead (rule of three, n items).")
    return text.strip()


def _percent(share: float) -> str:
    """A share of overlapping items as the badge writes it: whole percents, except that some but not all never
    reads 0% or 100% (1 of 300 items read "⚠ 0%", beside the "✓ 0%" of a clean set; 299 of 300 read "⚠ 100%" with
    a clean score beside it)."""
    text = f"{share:.0%}"
    if 0 < share and text == "0%":
        return f"{100 * share:.1g}%"
    if share < 1 and text == "100%":
        return f"{math.floor(1000 * share) / 10:g}%"
    return text


def badge(r: EvalScore) -> str:
    """The overlap cell. Items checked against only part of the training data are not known to be clean: an
    unreadable source makes a 0% read 'unknown', not ✓."""
    ov = (r.details or {}).get("overlap")
    if not ov:
        return "—"  # not measured (lm-eval) or a score written before the check existed
    if not ov.get("against"):
        return "? no known training data"
    if missing := _unreadable(r):
        shown = f"{len(missing)} of {len(ov['against'])} training sets unreadable: {', '.join(missing)}"
        return f"⚠ {_percent(ov['share_over'])} + unknown ({shown})" if ov["items_over"] else f"? unknown ({shown})"
    return f"⚠ {_percent(ov['share_over'])}" if ov["items_over"] else "✓ 0%"


LINEAGE_COLUMNS = ("kind", "layers", "made from")


def _rounded(v: float | None) -> float | None:
    return round(v, 4) if v is not None else None


def _task_cells(latest: dict, task: str, r: EvalScore, clean: bool, overlapping: bool) -> dict:
    """One task's cells of a model's row: the headline score and its standard error ("±", a column of its own so
    the score stays a sortable number and the CSV numeric), the hallucination rate and its error, left blank when
    most replies were cut off by the token limit or empty (neither counts as a hallucination: a model that never
    finished an answer, or ended every reply at once, read 0), the cut-off and empty shares beside it, and the
    overlap badge."""
    head, score = score_column(task, r.metric), headline_score(latest, r, clean)
    cells = {head: _rounded(score["value"]), f"{head} ±": _rounded(score["stderr"])}
    hall = latest.get((r.model, task, "hallucination_rate"))
    if hall is not None:
        share, empty = _unanswered(latest, r.model, task, clean)
        mostly_cut = too_few_answers(share, empty)
        cells[f"{task} (hallucination)"] = None if mostly_cut else _rounded(value(hall, clean=clean))
        cells[f"{task} (hallucination) ±"] = None if mostly_cut else _rounded(stderr(latest, hall, clean))
        if (r.model, task, "cut_off_rate") in latest:
            cells[f"{task} (cut off)"] = _rounded(share)
        if (r.model, task, "empty_rate") in latest:  # rows from before "empty" have none
            cells[f"{task} (empty)"] = _rounded(empty)
    if overlapping:
        cells[f"{task} (training overlap)"] = badge(r)
    return cells


# a task's cells after its headline
TASK_CELLS = ("(hallucination)", "(hallucination) ±", "(cut off)", "(empty)", "(training overlap)")


def _column_order(column: str) -> tuple[str, int, str]:
    """Tasks in name order, each one's cells in _task_cells' order: headline, its ±, then TASK_CELLS."""
    task, paren, rest = column.partition(" (")
    if not paren:  # a headline named by its task alone (score_column): "perplexity", "perplexity ±"
        return column.removesuffix(" ±"), int(column.endswith(" ±")), ""
    rest = "(" + rest
    return task, (TASK_CELLS.index(rest) + 2 if rest in TASK_CELLS else int(rest.endswith(" ±"))), rest


def table_rows(latest: dict, records: dict, clean: bool = False) -> list[dict]:
    """One row per model: the average over the accuracy-like tasks every model has (averaged_tasks; no column where
    no model has one), headline
    metric per task with its standard error, its hallucination rate, cut-off and empty shares (_task_cells), an
    overlap badge where any model's items overlap its training data or part of it was unreadable, then the model's
    lineage (kind, layers, parents). Scores come right after the name, as in the paper's table: with long model names a
    page-wide table showed only the name and the lineage, its scores scrolled out of sight."""
    primary = headline(latest)
    overlapping = {t for (_, t), r in primary.items() if r.overlap_share > 0 or _unreadable(r)}
    shared, _ = averaged_tasks(primary, clean)
    by_model: dict[str, list[tuple[str, EvalScore]]] = {}
    for (m, task), r in sorted(primary.items()):
        by_model.setdefault(m, []).append((task, r))
    rows = []
    for model, tasks in by_model.items():
        rec = records.get(model)
        row = {"model": model, AVERAGE: None}
        for task, r in tasks:
            row.update(_task_cells(latest, task, r, clean, task in overlapping))
        # the scores, not the cells rounded to 4 decimals: a mean of rounded cells read 0.2144 for 0.2145
        accs = [value(r, clean=clean) for task, r in tasks if task in shared]
        row[AVERAGE] = round(sum(accs) / len(accs), 4) if shared and len(accs) == len(shared) else None
        lineage = (rec.kind, rec.num_layers, " + ".join(p.split("/")[-1] for p in rec.parents) or "—") if rec else (
            "?", None, "—")
        rows.append({**row, **dict(zip(LINEAGE_COLUMNS, lineage))})
    # every row has every column, in one order (a task's cells together, as _task_cells lists them): a table takes
    # its columns from the rows in turn, so a task the first model lacked came after the lineage
    fixed = {"model", AVERAGE, *LINEAGE_COLUMNS}
    # an error column no row fills (an average's, an old perplexity's) is left out: a column of blanks only widened
    # the table
    scores = sorted({c for r in rows for c, v in r.items() if v is not None or not c.endswith(" ±")} - fixed,
                    key=_column_order)
    # the average only where some row has one: with perplexity tasks alone it was a column of "—" in every row
    average = [AVERAGE] if any(r[AVERAGE] is not None for r in rows) else []
    return [{c: r.get(c) for c in ["model", *average, *scores, *LINEAGE_COLUMNS]} for r in rows]


def export_table(rows: list[dict]) -> Table:
    """The models × tasks table for the Markdown and LaTeX downloads, each score with its error in one cell as
    lm-eval prints them ("0.2500 ± 0.0993"); the CSV keeps them in separate numeric columns."""
    cols = [c for c in (rows[0] if rows else {}) if not c.endswith(" ±")]

    def cell(row: dict, c: str):
        se = row.get(f"{c} ±")
        return f"{row[c]:.4f} ± {se:.4f}" if se is not None and row[c] is not None else number_text(row[c])
    return Table("scores", "Models × tasks", cols, [[cell(r, c) for c in cols] for r in rows])
