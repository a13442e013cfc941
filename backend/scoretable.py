"""The models × tasks table the compare page and a CLI user share: which metric heads a task, its standard error
and item count, how the average is taken, the cut-off share beside the hallucination rate, the training-overlap
badge, and the score on non-overlapping items only."""

from __future__ import annotations

import math

from sqlmodel import select

from backend.recipe.tables import Table
from storage import db
from storage.models import EvalScore

HIGHER_IS_BETTER = {"accuracy", "acc", "acc_norm", "acc,none", "exact_match", "exact_match_flexible_extract",
                    "h6_average"}


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics (those an average over tasks may include); lm-eval preset rows are named
    TASK/METRIC (arc_challenge/acc_norm), judged by their metric."""
    return metric in HIGHER_IS_BETTER or metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER
PREFERRED_METRIC = ["accuracy", "acc", "perplexity", "exact_match", "acc_norm"]
QA_METRICS = ("accuracy", "abstention_rate", "hallucination_rate", "cut_off_rate", "empty_rate", "precision")
# shares of items with a 0/1 outcome, whose spread over n items gives a standard error; precision (correct over
# answered) is not one of them: its denominator is not n
SHARES = {"accuracy", "acc", "acc_norm", "exact_match", "hallucination_rate", "abstention_rate", "cut_off_rate",
          "empty_rate"}
STDERR = "_stderr"  # lm-eval's standard error of TASK/METRIC is the row TASK/METRIC_stderr (backend/lmeval.py)
MOSTLY_CUT_OFF = 0.5  # over this share of replies cut off by the token limit or empty, a hallucination rate is mute
AVERAGE = "average (accuracy tasks)"
PLUS_MINUS = "± : standard error (95 % interval ≈ score ± 1.96 ×)."  # under this table and the recipe's tables


def _rank(metric: str) -> int:
    """Which of a task's metrics heads it (lower first). A preset's own average (lm-eval:h6's h6_average, what the
    paper calls H6) comes first: its tasks' TASK/METRIC rows all ranked alike, so the first stored, ARC's
    acc_norm, headed "lm-eval:h6" and stood for H6 in the average over tasks."""
    if metric.endswith("_average") and "/" not in metric:
        return -1
    return PREFERRED_METRIC.index(metric) if metric in PREFERRED_METRIC else len(PREFERRED_METRIC)


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


def headline(latest: dict) -> dict[tuple[str, str], EvalScore]:
    primary: dict[tuple[str, str], EvalScore] = {}
    for (model, task, metric), r in latest.items():
        if "[" in metric or metric.endswith(STDERR):  # per-kind QA metrics live in their own table; a standard
            continue  # error stands beside its score, never as one (it ranked with any unlisted lm-eval metric)
        if (model, task) not in primary or _rank(metric) < _rank(primary[(model, task)].metric):
            primary[(model, task)] = r
    return primary


def value(r: EvalScore, metric: str | None = None, clean: bool = False) -> float | None:
    """The stored score, or with `clean` the score on the items that do not overlap the lineage's training data."""
    metric = metric or r.metric
    if not clean:
        return r.value
    c = (r.details or {}).get("clean")
    if _unreadable(r):  # the items that overlap an unreadable training set are not known: no clean score
        return None
    if c is None:
        return None if (r.details or {}).get("overlap") else r.value  # not measurable (lm-eval): as stored
    return c.get(metric)


def item_count(r: EvalScore, clean: bool = False) -> int:
    """How many items stand behind the score: the row's n, or with `clean` the non-overlapping items' (0: not
    recorded, as in rows written before n was)."""
    c = (r.details or {}).get("clean") if clean else None
    return int(c.get("n", r.n)) if c else r.n


def stderr(latest: dict, r: EvalScore, clean: bool = False) -> float | None:
    """The score's standard error, as lm-eval prints it beside each value ("Value ± Stderr"): lm-eval's own
    TASK/METRIC_stderr row where one is stored; else, for a share of 0/1 outcomes p over n items, lm-eval's
    mean_stderr (lm_eval/api/metrics.py: sample standard deviation / √n = √(p(1−p)/(n−1))); a perplexity's is its
    own row, a bootstrap over texts (evalscore.perplexity_stderr). None where it is not defined: averages, a
    perplexity stored before its bootstrap, an lm-eval row without its own (a preset's n
    counts every task of the preset), fewer than 2 items, no score."""
    v = value(r, clean=clean)
    if v is None:
        return None
    if (own := latest.get((r.model, r.task, r.metric + STDERR))) is not None:
        return value(own, clean=clean)  # with `clean`, the clean items' own (a perplexity's), not the whole set's
    n = item_count(r, clean)
    if r.task.startswith("lm-eval:") or r.metric.rsplit("/", 1)[-1] not in SHARES or n < 2:
        return None
    return math.sqrt(v * (1 - v) / (n - 1))


Z95 = 1.96  # a 95 % normal interval: value ± 1.96 standard errors
RULE_OF_THREE = 3.0  # 0 events in n: the 95 % upper bound on their rate is about 3/n (Hanley & Lippman-Hand 1983)


def _share(metric: str | None) -> bool:
    """Whether the metric is a share of items (SHARES), so in [0, 1]; no metric given counts as one."""
    return metric is None or metric.rsplit("/", 1)[-1] in SHARES


def zero_error(v: float | None, se: float | None, n: int, metric: str | None = None) -> bool:
    """Whether a standard error of 0 says nothing: lm-eval's √(p(1−p)/(n−1)) is 0 at a share p of 0 or 1 however few
    the items, and "0 ± 0" from 5 items read as certainty. Only for a share (SHARES) when the metric is given: the
    rule of three bounds a rate of events, not a BLEU or F1 of 0."""
    return _share(metric) and se == 0 and v in (0.0, 1.0) and n > 0


def interval95(v: float | None, se: float | None, n: int,
               metric: str | None = None) -> tuple[float, float] | None:
    """The 95 % interval a bar's whisker draws: score ± 1.96 standard errors, cut at 0 and, for a share, at 1 (19 of
    20 correct reached 1.048); where that error is 0 at a share of 0 or 1 (zero_error), the rule of three's (J. A.
    Hanley, A. Lippman-Hand, "If nothing goes wrong, is everything all right?", JAMA 249(13), 1983): 0 of n items
    still allows a true rate up to about 3/n, n of n one down to 1 − 3/n. The stored error stays lm-eval's (the
    exported numbers are its); only the whisker is wider. None without an error (an average, a perplexity stored
    before its bootstrap)."""
    if v is None or se is None:
        return None
    if zero_error(v, se, n, metric):
        reach = min(RULE_OF_THREE / n, 1.0)
        return (0.0, reach) if v == 0 else (1.0 - reach, 1.0)
    high = v + Z95 * se
    return max(v - Z95 * se, 0.0), min(high, 1.0) if _share(metric) else high


def items_behind(r: EvalScore, clean: bool = False) -> int:
    """The items behind this one score: item_count, but a preset's TASK/METRIC row (lm-eval:h6) counts its own
    task's items (lm-eval's per-task n in the row's details), not the whole preset's, whose 3/n was far too small."""
    task, slash, _ = r.metric.rpartition("/")
    own = (((r.details or {}).get("lm_eval") or {}).get("tasks") or {}).get(task) or {}
    return int(own["n"]) if slash and own.get("n") else item_count(r, clean)


def headline_score(latest: dict, r: EvalScore, clean: bool = False) -> dict:
    """One (model, task)'s headline as both the table (_task_cells) and its bar and radar charts (chart_rows) show
    it: the score, its standard error and the items behind them, all over the non-overlapping items with `clean`.
    The charts had read the stored score beside a table of clean ones."""
    return {"model": r.model, "task": r.task, "metric": r.metric, "value": value(r, clean=clean),
            "stderr": stderr(latest, r, clean), "n": items_behind(r, clean)}


def score_column(task: str, metric: str) -> str:
    """The models × tasks table's column of a task's headline score: "qa (accuracy)", or the task alone where its
    metric is named alike ("perplexity", not "perplexity (perplexity)"). Its error's column adds " ±"; the bar
    charts (chart_rows) and the notes under the table name it so too."""
    return task if metric == task else f"{task} ({metric})"


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


def chart_note(latest: dict, charts: dict[str, list[dict]], clean: bool = False, radar: bool = True) -> str:
    """The caption under the bars and radar: which scores they show (with `clean`, which have no bar and why) and
    what the whiskers are, the rule of three's included (interval95). `radar`: whether a radar is drawn beside the
    bars (it needs three accuracy-like tasks); without one the caption speaks of the bars alone."""
    drawn = {(score["model"], score["task"]) for rows in charts.values() for score in rows}
    missing = [f"{task} for {model}" for model, task in sorted(headline(latest)) if (model, task) not in drawn]
    head = "Bars and radar:" if radar else "Bars:"
    text = (f"{head} the table's scores on the non-overlapping items only (the toggle above)"
            + (f"; no bar for {', '.join(missing)}: no clean score (every item overlaps, or the training data could "
               "not be read)" if missing else "") + ". ") if clean else f"{head} the table's scores. "
    if any(score["stderr"] is not None for rows in charts.values() for score in rows):
        text += ("Whiskers: 95 % interval, score ± 1.96 standard errors; where that error is 0 at a score of 0 or 1, "
                 "0 to 3/n or 1 − 3/n to 1 instead (rule of three, n items).")
    return text.strip()


def _unreadable(r: EvalScore) -> dict:
    """The lineage's training sources the overlap check could not read (a data set deleted since, a file gone, an
    offline Hub id; backend/heldout.py training_index), with why."""
    return ((r.details or {}).get("overlap") or {}).get("unchecked") or {}


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


def too_few_answers(cut: float | None, empty: float | None) -> bool:
    """Whether replies cut off by the token limit and empty ones (their shares; None: not stored) leave too few
    answers for a hallucination rate: over MOSTLY_CUT_OFF, its 0 would read as the best. One rule for every table."""
    return (cut or 0.0) + (empty or 0.0) > MOSTLY_CUT_OFF


def _unanswered(latest: dict, model: str, task: str, clean: bool) -> tuple[float | None, float | None]:
    """The stored cut-off and empty shares of a model on a task (None where not stored)."""
    rows = (latest.get((model, task, m)) for m in ("cut_off_rate", "empty_rate"))
    return tuple(value(x, clean=clean) if x is not None else None for x in rows)


def _column_order(column: str) -> tuple[str, int, str]:
    """Tasks in name order, each one's cells in _task_cells' order: headline, its ±, then TASK_CELLS."""
    task, paren, rest = column.partition(" (")
    if not paren:  # a headline named by its task alone (score_column): "perplexity", "perplexity ±"
        return column.removesuffix(" ±"), int(column.endswith(" ±")), ""
    rest = "(" + rest
    return task, (TASK_CELLS.index(rest) + 2 if rest in TASK_CELLS else int(rest.endswith(" ±"))), rest


def averaged_tasks(primary: dict, clean: bool = False) -> tuple[list[str], dict[str, list[str]]]:
    """The accuracy-like tasks every model with any has a score on (the average's tasks), and each other one with
    the models that lack it. An average over whatever tasks a model had put a model's 0.125 over qa and
    synth-math beside another's 0 over synth-math alone. With `clean`, a score unknown on the non-overlapping
    items counts as missing."""
    have: dict[str, set[str]] = {}
    for (model, task), r in primary.items():
        if higher_is_better(r.metric):
            tasks = have.setdefault(model, set())
            if value(r, clean=clean) is not None:
                tasks.add(task)
    every = set.union(set(), *have.values())
    shared = set.intersection(*have.values()) if have else set()
    return sorted(shared), {t: sorted(m for m, ts in have.items() if t not in ts) for t in sorted(every - shared)}


def table_rows(latest: dict, records: dict, clean: bool = False) -> list[dict]:
    """One row per model: the average over the accuracy-like tasks every model has (averaged_tasks), headline
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
    return [{c: r.get(c) for c in ["model", AVERAGE, *scores, *LINEAGE_COLUMNS]} for r in rows]


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
        return f"{AVERAGE}: blank — no accuracy-like task has a score for every model: {missing}."
    text = f"{AVERAGE}: mean of {', '.join(shared)}, the accuracy-like tasks every model has"
    # the models scored on none of them (perplexity alone): "every model" read as including them
    scored = {m for (m, _), r in primary.items() if higher_is_better(r.metric)}
    if none := sorted({m for m, _ in primary} - scored):
        text = (f"{AVERAGE}: mean of {', '.join(shared)}, the accuracy-like tasks every model scored on one has "
                f"(blank for {', '.join(none)}: no accuracy-like score)")
    return text + (f"; left out: {missing}." if left_out else ".")


def blanked_cells(latest: dict, clean: bool = False) -> list[tuple[str, str, str, bool]]:
    """The hallucination cells _task_cells blanks: (task, model, "100% cut off" or "60% cut off, 20% empty", whether
    any reply was empty), by model and task."""
    shares = {(m, t): _unanswered(latest, m, t, clean) for m, t, metric in latest
              if metric in ("cut_off_rate", "empty_rate")}
    return [(task, model, ", ".join(f"{v:.0%} {what}" for v, what in ((cut, "cut off"), (empty, "empty")) if v),
             bool(empty)) for (model, task), (cut, empty) in sorted(shares.items()) if too_few_answers(cut, empty)]


def cut_off_why(any_empty: bool) -> str:
    """Why cut_off_note's cells are blank (replies cut off, or empty too) and what to do."""
    head = f"Over {MOSTLY_CUT_OFF:.0%} of the "
    if not any_empty:
        return head + ("replies were cut off by the token limit before an answer, and a cut-off reply counts as no "
                       "hallucination, so the rate would read low for a model that never finished; evaluate with a "
                       "larger max_new_tokens.")
    return head + ("replies were cut off by the token limit before an answer or empty (the model ended them at once, "
                   "as an up-scaled model does before continued pretraining); neither counts as a hallucination, so "
                   "the rate would read low for a model that never answered; evaluate with a larger max_new_tokens "
                   "(cut off), or after continued pretraining (empty).")


def cut_off_note(latest: dict, clean: bool = False) -> str:
    """The hallucination cells left blank, and why (as _task_cells blanks them)."""
    cells = blanked_cells(latest, clean)
    if not cells:
        return ""
    return ("Hallucination left blank: " + ", ".join(f"{task} for {model} ({what})" for task, model, what, _ in cells)
            + ". " + cut_off_why(any(e for *_, e in cells)))


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
    clean_words = [t for t in clean if t not in teachers]
    parts += [f"{', '.join(clean_words)}: no item overlaps any model's recorded training data (✓, so no column)"
              ] if clean_words else []
    # beside a checked model, a base model (its pretraining data not known) was said clean with the rest
    blind = {t: sorted(m for (m, task), r in primary.items() if task == t
                       and not ((r.details or {}).get("overlap") or {}).get("against")) for t in clean_words}
    parts += [f"{t}: {', '.join(ms)} not checked, as no training data of {'its' if len(ms) == 1 else 'their'} "
              "lineage is recorded here (a base model's pretraining data is not known)"
              for t, ms in blind.items() if ms]
    parts += [f"{t}: " + ("no 8-gram in common with the training data, but " if t in clean else "besides its column, ")
              + f"{teachers[t]} teaches it in other words, and {', '.join(taught_by[t])} trained on it: their score "
              "there is of what they were taught, not held out" for t in teachers]
    parts += [f"{', '.join(nothing)}: nothing to check against, as no model's lineage has training data recorded "
              "here (a base model's pretraining data is not known)"] if nothing else []
    parts += [f"{', '.join(unchecked)}: not checked for some model (lm-eval tasks, or scores from before the check)"
              ] if unchecked else []
    return ("Training overlap (8-gram; an item under 8 words counts when it appears whole) — " + "; ".join(parts)
            + ".") if parts else ""


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
             overlap_note(primary), huge_note(rows)]
    return [n for n in notes if n]


HUGE = 1e6  # a score from here up is written as "3.2e17": a perplexity of an up-scaled or random model before training


def number_text(v: float) -> str | float:
    """A score as every printed table writes it: "3.2e17" for one of HUGE or more (the digits that mean anything;
    "3.2e+17" or "320000000000000000" read as noise in a column of 12.3456), "∞" for an infinite one (the loss
    overflowed exp: no token got a probability that counts); others as they were (the float). The stored value is
    exact: Export CSV and `scores --json` keep it."""
    if not isinstance(v, float) or math.isnan(v) or abs(v) < HUGE:
        return v
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    mantissa, _, power = f"{v:.1e}".partition("e")
    return f"{mantissa.removesuffix('.0')}e{int(power)}"


def huge_note(rows: list[dict]) -> str:
    """What "3.2e17" and "∞" in the table mean, when a cell holds one."""
    shown = sorted({number_text(v) for r in rows for v in r.values() if isinstance(v, float) and abs(v) >= HUGE})
    powers = [x for x in shown if "e" in x]
    said = [f"{powers[0]} is {powers[0].replace('e', ' × 10^')}: scores of a million or more are written so"] if (
        powers) else []
    said += ["∞: an infinite score (a perplexity whose mean loss overflowed: the model gives the text's tokens no "
             "probability that counts, as an untrained or broken one does)"] if len(powers) < len(shown) else []
    return "; ".join(said) + ". Export CSV and `scores --format csv` hold the exact values." if said else ""


def export_table(rows: list[dict]) -> Table:
    """The models × tasks table for the Markdown and LaTeX downloads, each score with its error in one cell as
    lm-eval prints them ("0.2500 ± 0.0993"); the CSV keeps them in separate numeric columns."""
    cols = [c for c in (rows[0] if rows else {}) if not c.endswith(" ±")]

    def cell(row: dict, c: str):
        se = row.get(f"{c} ±")
        return f"{row[c]:.4f} ± {se:.4f}" if se is not None and row[c] is not None else number_text(row[c])
    return Table("scores", "Models × tasks", cols, [[cell(r, c) for c in cols] for r in rows])
