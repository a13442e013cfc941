"""A recipe run read back: the SOLAR paper's tables (arXiv 2312.15166, Tables 3–7) filled from the stored
evaluation rows of this run's models, with the paper's published H6 averages beside them; Markdown / CSV / LaTeX
export; merge surfaces of swept merges; run comparison (config differences); the lineage graph.

Pure functions take plain rows, so tests change a stored row and see the table change; `run_*` read the database.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from storage import db
from storage.models import EvalScore, JobMetric

# The paper's H6 averages (ARC, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K), by row label.
PAPER_H6 = {"SFT v1": 69.15, "SFT v2": 69.21, "SFT v3": 70.03, "SFT v4": 70.88, "SFT v3+v4": 71.11,
            "DPO v1": 73.06, "DPO v2": 73.42, "DPO v1+v2": 73.21, "DPO v3": 73.58,
            "Cand. 1": 73.73, "Cand. 2": 73.28, "Average (0.5, 0.5)": 74.00, "Average (0.4, 0.6)": 73.93,
            "Average (0.6, 0.4)": 74.05, "SLERP": 73.96}
TITLES = {"sft": "Table 3 — SFT data ablation", "dpo": "Tables 4–5 — DPO data and SFT base",
          "merge": "Tables 6–7 — merge candidates and methods", "all": "Every model of the run"}
LOWER_IS_BETTER = ("perplexity", "hallucination", "loss", "cut_off", "empty")  # rates of no answer too


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # under the table (Markdown, LaTeX, the page): what a mark means


def source_label(src: str) -> str:
    if src.startswith("stage:"):
        return "Synth. Math-Instruct" if src.endswith("/instruct") else "Synth. Math-Alignment"
    return src.split(":", 1)[-1] if src.startswith(("builtin:", "dataset:", "mix:")) else src


def latest_rows(models: list[str]) -> dict[tuple[str, str, str], EvalScore]:
    """The rows of the newest run of each (model, task) of `models`, per (model, task, metric): the Compare page's
    own scoretable.latest_scores, so its functions read them alike."""
    from backend.scoretable import latest_scores  # scoretable imports this module's Table

    return latest_scores(models)


def _column(task: str, metric: str) -> str:
    return task if metric == task else f"{task} {metric}"  # not "perplexity perplexity"


def latest_scores(models: list[str], latest: dict | None = None) -> dict[str, dict[str, float]]:
    """model -> {"task metric": value}, of the newest run of each (model, task) (latest_rows). A hallucination rate
    of a model that mostly never answered (cut off or empty) is None, as on the Compare page: its 0 read as the best."""
    from backend.qatable import mostly_unanswered
    from backend.scoretable import STDERR  # scoretable imports this module's Table

    out: dict[str, dict[str, float | None]] = {m: {} for m in models}
    latest = latest_rows(models) if latest is None else latest
    for (model, task, metric), r in latest.items():
        if metric.endswith(STDERR):  # lm-eval's TASK/METRIC_stderr: the ± beside its score (_errors), not a score
            continue
        out[model][_column(task, metric)] = None if mostly_unanswered(latest, model, task, metric) else r.value
    return out


PLUS_MINUS = "± : standard error (95 % interval ≈ score ± 1.96 ×)."  # the Compare page's words (table_notes)


def _errors(latest: dict, outputs: list[str], scores: dict[str, dict]) -> dict[str, dict[str, float]]:
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
        if r is None or model not in outputs or scores.get(model, {}).get(_column(task, metric)) is None:
            continue
        if (se := scoretable.stderr(latest, r)) is not None:
            out.setdefault(model, {})[f"{_column(task, metric)} ±"] = scoretable._rounded(se)
    return out


def _error_notes(latest: dict, rows: list[dict], scores: dict[str, dict], errors: dict) -> list[str]:
    """The Compare page's notes on the numbers (scoretable.table_notes): the items behind each score
    (items_note: "n = 10 items per task"), what ± is, and where its 0 says nothing (_zero_error_note)."""
    from backend import scoretable

    outputs = [st["output"] for st in rows]
    primary = {k: r for k, r in scoretable.headline(latest).items() if k[0] in outputs}
    shown = any(errors.get(o) for o in outputs)
    notes = [scoretable.items_note(primary), PLUS_MINUS if shown else "",
             _zero_error_note(latest, rows, scores, errors) if shown else ""]
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
            col = _column(task, metric)
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


def _made_from(st: dict) -> str:
    merge = st.get("merge") or {}
    if merge:
        how = merge.get("method", "average")
        if how == "slerp":
            how += f" t={merge.get('t', 0.5)}"
        elif merge.get("weights"):
            how += "(" + ", ".join(f"{w:g}" for w in merge["weights"]) + ")"
        return f"{how} of {', '.join(st.get('from', []))}"
    return ", ".join(st.get("from", []))


OVERLAP = "{task} (training overlap)"  # scoretable._task_cells' column, read alike on both pages
CLEAN = "{column} (non-overlapping items)"


def _overlap_cells(metrics: list[str], outputs: list[str], latest: dict) -> tuple[list[str], dict, str]:
    """The training-overlap record of a table's models, as the Compare page reads it (backend/scoretable.py): for
    each task where some model's items overlap its lineage's training data, or part of that data could not be read
    (table_rows' rule), a badge column (scoretable.badge) and the headline score on the non-overlapping items only
    (scoretable.headline_score, clean), each after the task's score columns; and the Compare page's note on what
    they mean and which tasks were clean or not checked (scoretable.overlap_note). Returns (the columns in order,
    model -> {column: cell}, the note)."""
    from backend import scoretable

    primary = {k: r for k, r in scoretable.headline(latest).items() if k[0] in outputs}
    overlapping = {t for (_, t), r in primary.items() if r.overlap_share > 0 or scoretable._unreadable(r)}
    heads = {t: {_column(t, r.metric) for (_, task), r in primary.items() if task == t} for t in overlapping}
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


UNMADE = ("failed", "cancelled", "interrupted")


def _unmade_note(rows: list[dict]) -> str:
    """The rows whose stage ended without making its model (stage_dicts' status), and how: their cells were blank
    beside the paper's number, with no word, and read as scores not yet in."""
    gone = [f"{st.get('label') or st['stage']} ({st['stage']}: {st['status']}"
            + (f", job {st['job_id']})" if st.get("job_id") else ")") for st in rows if st.get("status") in UNMADE]
    return f"No model, so no scores: {'; '.join(gone)}. Run the recipe again to make it." if gone else ""


def _unlike_note(rows: list[dict], latest: dict) -> str:
    """Where a task's scores in one table were measured differently (items behind them, or the evaluation's settings
    but its limit: max_new_tokens, samples, prompt, lm-eval's few-shot counts and version), which rows differ and
    how; "" when every row was measured alike. A model evaluated again outside the recipe (Compare, `evaluate`) has
    its newest run in the table: a 40-item score stood beside 12-item ones in one column, with no word."""
    import json

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


def build_tables(stages: list[dict], scores: dict[str, dict[str, float]], latest: dict | None = None) -> list[Table]:
    """`stages`: dicts with stage, kind, output, label, tables, sources, from, merge (the plan's info). One table per
    paper table that has rows, plus every model; metric columns are the evaluation rows found. With `latest` (the
    rows behind `scores`, latest_rows), each table says which scores were on items its model's lineage trained on,
    as the Compare page does (_overlap_cells): a score on training data is never shown without saying so."""
    from backend.scoretable import _rounded  # the Compare table's 4 decimals: 17 digits of 308.1261234567891

    metrics = sorted({k for st in stages for k in scores.get(st["output"], {})})
    outputs = [st["output"] for st in stages if st["output"]]
    errors = _errors(latest, outputs, scores) if latest is not None else {}
    tables = []
    for key in ("sft", "dpo", "merge", "all"):
        rows = [st for st in stages if (key in (st.get("tables") or [])) or
                (key == "all" and st["output"] and st["kind"] != "synth-math")]  # models only
        if not rows:
            continue
        sources = [] if key in ("merge", "all") else \
            list(dict.fromkeys(source_label(s) for st in rows for s in st.get("sources") or []))
        mine = [st["output"] for st in rows]
        # a score's error in a column of its own right after it, as on the Compare page (the score stays a sortable
        # number, the CSV numeric; Markdown and LaTeX write "0.2500 ± 0.0993", export_table); a column no row fills
        # is left out
        with_errors = [c for m in metrics for c in (m, f"{m} ±") if c == m or any(
            c in errors.get(o, {}) for o in mine)]
        shown, cells, note = (_overlap_cells(with_errors, mine, latest) if latest is not None
                              else (with_errors, {}, ""))
        cols = ["Model", "Stage", "Made from", *sources, *shown, "Paper H6"]
        unlike = _unlike_note(rows, latest) if latest is not None else ""
        said = _error_notes(latest, rows, scores, errors) if latest is not None else []
        table = Table(key, TITLES[key], cols, notes=[n for n in (_unmade_note(rows), unlike, *said, note) if n])
        for st in rows:
            used = {source_label(s) for s in st.get("sources") or []}
            vals = {**scores.get(st["output"], {}), **errors.get(st["output"], {}), **cells.get(st["output"], {})}
            table.rows.append([st.get("label") or st["stage"], st["stage"], _made_from(st),
                               *["✓" if s in used else "" for s in sources],
                               *[_rounded(v) if isinstance(v, float) else v for v in (vals.get(m) for m in shown)],
                               PAPER_H6.get(st.get("label") or "")])
        tables.append(table)
    return tables


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if not isinstance(v, float):
        return str(v)
    from backend.scoretable import number_text  # scoretable imports this module's Table

    shown = number_text(v)  # "3.2e17", "∞": as the models × tasks table writes them
    return shown if isinstance(shown, str) else f"{v:.6g}"  # 4 digits made 309.7419 and 309.7168 both "309.7"


def _one_cell_errors(t: Table) -> Table:
    """The table with each "X ±" column folded into X's cells as "0.2500 ± 0.0993", by the Compare page's own
    export (scoretable.export_table), for Markdown and LaTeX; the CSV keeps the numbers apart."""
    if not t.rows or not any(c.endswith(" ±") for c in t.columns):
        return t
    from backend.scoretable import export_table

    folded = export_table([dict(zip(t.columns, row)) for row in t.rows])
    return Table(t.key, t.title, folded.columns, folded.rows, t.notes)


def to_markdown(t: Table) -> str:
    t = _one_cell_errors(t)
    lines = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in t.rows]
    lines += [line for note in t.notes for line in ("", note)]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.columns)
    w.writerows([["" if v is None else v for v in row] for row in t.rows])
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "✓": r"\checkmark", "—": "---",
        "–": "--", "±": r"$\pm$", "×": r"$\times$", "⚠": r"\textbf{!}",
        "∞": r"$\infty$"}  # ± and × in plain pdflatex too (a score's "0.25 ± 0.10"), the overlap badge's ⚠
# (scoretable.badge) and an infinite perplexity's ∞ (scoretable.number_text)


def _tex(v: Any) -> str:
    return "".join(_TEX.get(c, c) for c in _cell(v))


def to_latex(t: Table) -> str:
    t = _one_cell_errors(t)
    spec = "l" * 3 + "c" * (len(t.columns) - 3)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(t.title)}}}", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule", " & ".join(_tex(c) for c in t.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in t.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip{{\footnotesize {_tex(note)}}}" for note in t.notes]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


EXPORTS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


def stage_dicts(run_id: int) -> list[dict]:
    from backend.recipe.state import stage_state, stages

    # the stage's state as the page shows it: the plan's status in its info ("run") came after the job's, and a
    # failed stage read as about to run
    return [{"stage": r.stage, "kind": r.kind, "output": r.output, "hash": r.hash, "job_id": r.job_id, **r.info,
             "status": stage_state(r, job) or r.info.get("status", "")}
            for r, job in stages(run_id) if r.kind != "eval"]


def run_tables_from(stages: list[dict]) -> list[Table]:
    models = [s["output"] for s in stages if s["output"]]
    latest = latest_rows(models)
    return build_tables(stages, latest_scores(models, latest), latest)


def run_tables(run_id: int) -> list[Table]:
    return run_tables_from(stage_dicts(run_id))


# ---------------------------------------------------------------- comparing runs

def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def config_diff(configs: dict[str, dict]) -> list[tuple[str, dict[str, Any]]]:
    """Only the fields whose values differ between the configs (a field one lacks counts as None), as H2O LLM
    Studio's experiment comparison shows them."""
    flat = {label: flatten(c) for label, c in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    return [(k, {label: f.get(k) for label, f in flat.items()}) for k in keys
            if len({repr(f.get(k)) for f in flat.values()}) > 1]


def curves(job_ids: list[int], metric: str) -> dict[int, list[tuple[int, float]]]:
    with db.session() as s:
        rows = s.exec(select(JobMetric).where(JobMetric.job_id.in_(job_ids), JobMetric.name == metric)
                      .order_by(JobMetric.step)).all()
    out: dict[int, list[tuple[int, float]]] = {j: [] for j in job_ids}
    for r in rows:
        out[r.job_id].append((r.step, r.value))
    return out


def recovery_points(job_id: int) -> tuple[list[tuple[int, float]], float | None]:
    """The recovery view's data (Monitor): held-out loss of the up-scaled model by step, and its base's loss."""
    pts = curves([job_id], "eval_loss")[job_id]
    ref = curves([job_id], "reference_eval_loss")[job_id]
    return pts, (ref[-1][1] if ref else None)


# ---------------------------------------------------------------- the graph

def unscored_note(t: Table, mark: str) -> str:
    """What the missing cells of a paper table (shown as `mark`, the Recipe page's "—") mean, per task: after a run,
    the five synth-math columns of Table 3 read None in every row (the base alone had been evaluated on synth-math,
    from the Compare page), with nothing saying that no score is there, not a score of None. A hallucination rate
    left blank (qatable.mostly_unanswered) beside the model's other scores of that task is evaluated, not missing.
    Said per column, the models named only where some of the table's rows are blank: one entry per model and
    column made ~90 entries under "Every model of the run" for five columns blank in all 18 rows."""
    skip = {"Model", "Stage", "Made from", "Paper H6"}
    missing: dict[str, list[str]] = {}  # task -> models without its scores
    blanked: dict[str, list[str]] = {}  # column -> models whose hallucination rate is left blank: evaluated
    for i, col in enumerate(t.columns):
        # a data source's tick column; the overlap columns' blanks (every item overlaps, or the data could not be
        # read) have their own note: read as "not evaluated", an evaluated model was said to have no score; an
        # error column is blank with its score
        overlap = col.endswith((OVERLAP.format(task=""), CLEAN.format(column="")))
        if col in skip or overlap or col.endswith(" ±") or all(r[i] in ("✓", "") for r in t.rows):
            continue
        task = col.split(" ")[0]
        scored = [j for j, c in enumerate(t.columns) if c.split(" ")[0] == task and j != i and not c.endswith(" ±")]
        for r in t.rows:
            if r[i] is None and "hallucination_rate" in col and any(r[j] is not None for j in scored):
                blanked.setdefault(col, []).append(r[0])
            elif r[i] is None and r[0] not in missing.setdefault(task, []):
                missing[task].append(r[0])
    parts = [f"{', '.join(ms)} {'has' if len(ms) == 1 else 'have'} no {task} score" for task, ms in missing.items()
             if ms]
    said = (f"A {mark} cell: " + "; ".join(parts) + " — not evaluated on that task (the run's evaluation leaves "
            "it out, or has not run yet), not a score of zero.") if parts else ""
    if blanked:
        said += (" " if said else "") + (f"Left blank ({mark}): {_blank_columns(blanked, len(t.rows))}: over half "
                                         "of those replies were cut off by the token limit or empty, so no "
                                         "hallucination rate is given (its 0 would read as the best).")
    return said


def _blank_columns(blanked: dict[str, list[str]], rows: int) -> str:
    """Columns blank for the same models said together: "qa hallucination_rate, synth-math hallucination_rate (all
    18 models)", or "SFT v1, SFT v2 (qa hallucination_rate)" where only some rows are blank."""
    by_models: dict[tuple[str, ...], list[str]] = {}
    for col, models in blanked.items():
        by_models.setdefault(tuple(models), []).append(col)
    return "; ".join(f"{', '.join(cols)} (all {rows} models)" if len(models) == rows > 1
                     else f"{', '.join(models)} ({', '.join(cols)})" for models, cols in by_models.items())
