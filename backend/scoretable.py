"""The models × tasks table the compare page and a CLI user share: which metric heads a task, how the average is
taken, the training-overlap badge, and the score on non-overlapping items only."""

from __future__ import annotations

from sqlmodel import select

from storage import db
from storage.models import EvalScore

HIGHER_IS_BETTER = {"accuracy", "acc", "acc_norm", "acc,none", "exact_match", "exact_match_flexible_extract",
                    "h6_average"}


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics (those an average over tasks may include); lm-eval preset rows are named
    TASK/METRIC (arc_challenge/acc_norm), judged by their metric."""
    return metric in HIGHER_IS_BETTER or metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER
PREFERRED_METRIC = ["accuracy", "acc", "perplexity", "exact_match", "acc_norm"]
QA_METRICS = ("accuracy", "abstention_rate", "hallucination_rate", "cut_off_rate", "precision")


def _rank(metric: str) -> int:
    return PREFERRED_METRIC.index(metric) if metric in PREFERRED_METRIC else len(PREFERRED_METRIC)


def latest_scores() -> dict[tuple[str, str, str], EvalScore]:
    """The newest row per (model, task, metric), read in one query."""
    with db.session() as s:
        rows = s.exec(select(EvalScore).order_by(EvalScore.id)).all()
    return {(r.model, r.task, r.metric): r for r in rows}


def headline(latest: dict) -> dict[tuple[str, str], EvalScore]:
    primary: dict[tuple[str, str], EvalScore] = {}
    for (model, task, metric), r in latest.items():
        if "[" in metric:  # per-kind QA metrics live in their own table
            continue
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


def _unreadable(r: EvalScore) -> dict:
    """The lineage's training sources the overlap check could not read (a data set deleted since, a file gone, an
    offline Hub id; backend/heldout.py training_index), with why."""
    return ((r.details or {}).get("overlap") or {}).get("unchecked") or {}


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
        return f"⚠ {ov['share_over']:.0%} + unknown ({shown})" if ov["items_over"] else f"? unknown ({shown})"
    return f"⚠ {ov['share_over']:.0%}" if ov["items_over"] else "✓ 0%"


LINEAGE_COLUMNS = ("kind", "layers", "made from")


def table_rows(latest: dict, records: dict, clean: bool = False) -> list[dict]:
    """One row per model: the average of the accuracy-like tasks, headline metric per task, its hallucination rate,
    an overlap badge where any model's items overlap its training data or part of it was unreadable, then the
    model's lineage (kind, layers, parents). Scores come right after the name, as in the paper's table: with long
    model names a page-wide table showed only the name and the lineage, its scores scrolled out of sight."""
    primary = headline(latest)
    overlapping = {t for (_, t), r in primary.items() if r.overlap_share > 0 or _unreadable(r)}
    by_model: dict[str, list[tuple[str, EvalScore]]] = {}
    for (m, task), r in sorted(primary.items()):
        by_model.setdefault(m, []).append((task, r))
    rows = []
    for model, tasks in by_model.items():
        rec = records.get(model)
        row = {"model": model, "average (accuracy tasks)": None}
        accs = []
        for task, r in tasks:
            v = value(r, clean=clean)
            row[f"{task} ({r.metric})"] = round(v, 4) if v is not None else None
            if higher_is_better(r.metric) and v is not None:
                accs.append(v)
            hall = latest.get((model, task, "hallucination_rate"))
            if hall is not None:
                hv = value(hall, "hallucination_rate", clean)
                row[f"{task} (hallucination)"] = round(hv, 4) if hv is not None else None
            if task in overlapping:
                row[f"{task} (training overlap)"] = badge(r)
        row["average (accuracy tasks)"] = round(sum(accs) / len(accs), 4) if accs else None
        lineage = (rec.kind, rec.num_layers, " + ".join(p.split("/")[-1] for p in rec.parents) or "—") if rec else (
            "?", None, "—")
        rows.append({**row, **dict(zip(LINEAGE_COLUMNS, lineage))})
    # every row has every column, in one order: a table takes its columns from the rows in turn, so a task the
    # first model lacked came after the lineage
    scores = sorted({c for r in rows for c in r} - {"model", "average (accuracy tasks)", *LINEAGE_COLUMNS})
    return [{c: r.get(c) for c in ["model", "average (accuracy tasks)", *scores, *LINEAGE_COLUMNS]} for r in rows]


def qa_rows(latest: dict, clean: bool = False) -> list[dict]:
    """Per model, QA task and item kind: accuracy, abstention, hallucination (wrong ÷ all), precision."""
    out: dict[tuple[str, str, str], dict] = {}
    for (model, task, metric), r in latest.items():
        if not task.startswith("qa"):
            continue
        base, _, kind = metric.partition("[")
        kind = kind.rstrip("]") or "all"
        if base in QA_METRICS:
            v = value(r, metric, clean)
            out.setdefault((model, task, kind), {"model": model, "task": task, "item kind": kind})[base] = (
                round(v, 4) if v is not None else None)
    order = {"all": 0, "answerable": 1, "unanswerable": 2, "math": 3}
    return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1], order.get(k[2], 9)))]
