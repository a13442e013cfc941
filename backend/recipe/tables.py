"""A recipe run read back: the SOLAR paper's tables (arXiv 2312.15166, Tables 3–7) filled from the stored
evaluation rows of this run's models, with the paper's published H6 averages beside them; Markdown / CSV / LaTeX
export; run comparison (config differences). The errors, overlap columns and notes beside the scores are
backend/recipe/table_scores.py's; merge surfaces backend/recipe/surface.py's, the lineage graph graph.py's.

Pure functions take plain rows, so tests change a stored row and see the table change; `run_*` read the database.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from backend.recipe.table_scores import (CLEAN, OVERLAP, column, cut_off_note, error_notes, overlap_cells,
                                         score_errors, unlike_note)
from storage import db
from storage.models import EvalScore, JobMetric

# The paper's H6 averages (ARC, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K), by row label.
PAPER_H6 = {"SFT v1": 69.15, "SFT v2": 69.21, "SFT v3": 70.03, "SFT v4": 70.88, "SFT v3+v4": 71.11,
            "DPO v1": 73.06, "DPO v2": 73.42, "DPO v1+v2": 73.21, "DPO v3": 73.58,
            "Cand. 1": 73.73, "Cand. 2": 73.28, "Average (0.5, 0.5)": 74.00, "Average (0.4, 0.6)": 73.93,
            "Average (0.6, 0.4)": 74.05, "SLERP": 73.96}
TITLES = {"sft": "Table 3 — SFT data ablation", "dpo": "Tables 4–5 — DPO data and SFT base",
          "merge": "Tables 6–7 — merge candidates and methods", "all": "Every model of the run"}
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "hallucination", "loss", "cut_off", "empty")  # no answer too


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # under the table (Markdown, LaTeX, the page): what a mark means
    settings: list[str] = field(default_factory=list)  # columns that describe the row's training, not scores
    pending: bool = False  # the run's evaluation is queued or running (run_tables): a blank may be a score to come


def source_label(src: str) -> str:
    if src.startswith("stage:"):
        return "Synth. Math-Instruct" if src.endswith("/instruct") else "Synth. Math-Alignment"
    return src.split(":", 1)[-1] if src.startswith(("builtin:", "dataset:", "mix:")) else src


def latest_rows(models: list[str]) -> dict[tuple[str, str, str], EvalScore]:
    """The rows of the newest run of each (model, task) of `models`, per (model, task, metric): the Compare page's
    own scoretable.latest_scores, so its functions read them alike."""
    from backend.scoretable import latest_scores  # scoretable imports this module's Table

    return latest_scores(models)


def latest_scores(models: list[str], latest: dict | None = None) -> dict[str, dict[str, float]]:
    """model -> {"task metric": value}, of the newest run of each (model, task) (latest_rows). A hallucination rate
    of a model that mostly never answered (cut off or empty) is None, as on the Compare page: its 0 read as the best."""
    from backend.qatable import mostly_unanswered
    from backend.scoretable import STDERR  # scoretable imports this module's Table

    out: dict[str, dict[str, float | None]] = {m: {} for m in models}
    latest = latest_rows(models) if latest is None else latest
    for (model, task, metric), r in latest.items():
        if metric.endswith(STDERR):  # lm-eval's TASK/METRIC_stderr: the ± beside its score (score_errors), not one
            continue
        out[model][column(task, metric)] = None if mostly_unanswered(latest, model, task, metric) else r.value
    return out


def _made_from(st: dict) -> str:
    """What a row's model was made from; a merge's weights always, default ones too: "average of sft-v3, sft-v4"
    left its equal weights unsaid beside "average(0.4, 0.6) of cand1, cand2"; it reads "average(0.5, 0.5) of …"."""
    merge = st.get("merge") or {}
    if not merge:
        return ", ".join(st.get("from", []))
    inputs = st.get("from", [])
    how = merge.get("method", "average")
    if how == "slerp":
        how += f" t={merge.get('t', 0.5)}"
    elif weights := applied_weights(merge, (st.get("spec") or {}), len(inputs)):
        how += "(" + ", ".join(f"{w:g}" for w in weights) + ")"
    return f"{how} of {', '.join(inputs)}"


def applied_weights(merge: dict, spec: dict, n: int) -> list[float]:
    """The weights a merge gave its n inputs, as mergekit's methods take them (MergeSpec), rounded to 4 places:
    1 each where none are given; an average's divided by their sum (its normalize, on unless the spec turns it
    off), so [1, 1] reads (0.5, 0.5). `merge`: the method, weights and normalize as recorded (a recipe stage's
    merge, a merged model's recipe); `spec`: the job's spec, read where `merge` lacks them. [] for a method
    without weights (SLERP), none known (n = 0), or weights that are not numbers yet (a sweep's "0..1 step 0.1").
    The paper tables' "Made from" and the Compare page's merge views write a merge's weights with it."""
    from backend.spec_models import MERGE_ALIASES, MERGE_DEFAULTS, MERGE_METHOD_FIELDS

    method = MERGE_ALIASES.get(merge.get("method", "average"), merge.get("method", "average"))
    if method not in MERGE_METHOD_FIELDS["weights"][0] or n == 0:  # SLERP's t is no weight: [1, 1] was said
        return []
    try:
        weights = [float(w) for w in (merge.get("weights") or spec.get("weights") or [1.0] * n)]
    except (TypeError, ValueError):  # not numbers (a sweep's "0..1 step 0.1" before it is expanded): not said
        return []
    normalize = merge.get("normalize", spec.get("normalize"))
    if method == "average" and (MERGE_DEFAULTS[method][0] if normalize is None else normalize) and sum(weights):
        weights = [w / sum(weights) for w in weights]
    return [round(w, 4) for w in weights]


UNMADE = ("failed", "cancelled", "interrupted")


def _unmade_note(rows: list[dict]) -> str:
    """The rows whose stage ended without making its model (stage_dicts' status), and how: their cells were blank
    beside the paper's number, with no word, and read as scores not yet in."""
    gone = [f"{st.get('label') or st['stage']} ({st['stage']}: {st['status']}"
            + (f", job {st['job_id']})" if st.get("job_id") else ")") for st in rows if st.get("status") in UNMADE]
    return f"No model, so no scores: {'; '.join(gone)}. Run the recipe again to make it." if gone else ""


def build_tables(stages: list[dict], scores: dict[str, dict[str, float]], latest: dict | None = None,
                 all_metrics: bool = False) -> list[Table]:
    """`stages`: dicts with stage, kind, output, label, tables, sources, from, merge (the plan's info) and spec (the
    job's, where one ran). One table per paper table that has rows, plus every model. Score columns: each task's
    headline metric, the one the Compare page's models × tasks table shows (scoretable.headline), and a preset's own
    tasks (lm-eval:h6's six, the paper's columns), in the paper's order (_score_columns); with `all_metrics` every
    stored metric (qa's 20 sub-metrics made 37 columns with its accuracy the 13th). With `latest` (the rows behind
    `scores`, latest_rows), each table says which scores were on items its model's lineage trained on, as the
    Compare page does (table_scores.overlap_cells): a score on training data is never shown without saying so."""
    from backend.scoretable import _rounded  # the Compare table's 4 decimals: 17 digits of 308.1261234567891

    outputs = [st["output"] for st in stages if st["output"]]
    present = {k for st in stages for k in scores.get(st["output"], {})}
    metrics = _score_columns(latest, outputs, present, all_metrics) if latest is not None else sorted(present)
    errors = score_errors(latest, outputs, scores) if latest is not None else {}
    by_stage = {st["stage"]: st for st in stages}
    tables = []
    for key in ("sft", "dpo", "merge", "all"):
        rows = [st for st in stages if (key in (st.get("tables") or [])) or
                (key == "all" and st["output"] and st["kind"] != "synth-math")]  # models only
        if not rows:
            continue
        data = {st["stage"]: _data_of(st, by_stage) for st in rows}
        sources = [] if key == "all" else list(dict.fromkeys(s for st in rows for s in data[st["stage"]]))
        settings = [] if key == "all" else _differing_settings(rows)
        mine = [st["output"] for st in rows]
        # a score's error in a column of its own right after it, as on the Compare page (the score stays a sortable
        # number, the CSV numeric; Markdown and LaTeX write "0.2500 ± 0.0993", export_table); a column no row fills
        # is left out, as is a score column no row of this table has (Table 3's "qa accuracy" where only the base,
        # not in the table, was scored on qa: a column of dashes); a blanked hallucination rate is had (None)
        own = [m for m in metrics if any(m in scores.get(o, {}) for o in mine)]
        with_errors = [c for m in own for c in (m, f"{m} ±") if c == m or any(c in errors.get(o, {}) for o in mine)]
        shown, cells, note = (overlap_cells(with_errors, mine, latest) if latest is not None
                              else (with_errors, {}, ""))
        cols = ["Model", "Stage", "Made from", *sources, *settings, *shown, "Paper H6"]
        unlike = unlike_note(rows, latest) if latest is not None else ""
        said = error_notes(latest, rows, scores, errors, set(shown)) if latest is not None else []
        capped = cut_off_note(latest, rows, scores, set(shown)) if latest is not None else ""
        notes = [_merged_data_note(rows, data) if sources else "", _unmade_note(rows), unlike, capped, *said, note]
        table = Table(key, TITLES[key], cols, notes=[_labelled(n, rows) for n in notes if n], settings=settings)
        for st in rows:
            spec = st.get("spec") or {}
            vals = {**scores.get(st["output"], {}), **errors.get(st["output"], {}), **cells.get(st["output"], {})}
            table.rows.append([st.get("label") or st["stage"], st["stage"], _made_from(st),
                               *["✓" if s in data[st["stage"]] else "" for s in sources],
                               *[spec.get(f) if st["kind"] != "merge" else None for f in settings],
                               *[_rounded(v) if isinstance(v, float) else v for v in (vals.get(m) for m in shown)],
                               PAPER_H6.get(st.get("label") or "")])
        tables.append(table)
    return tables


def _paper_place(name: str) -> int | None:
    """Where the paper's tables put a benchmark after H6 (ARC, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K:
    lmeval.H6's order), found in a task's or a preset metric's name (lm-eval:arc_challenge, dus_gsm8k_mini,
    truthfulqa_mc2/acc); None for a task the paper has no column for (perplexity, qa, synth-math)."""
    from backend.lmeval import H6

    for i, (task, _, _) in enumerate(H6):
        if re.search(rf"(^|[^a-z]){task.split('_')[0]}", name.lower()):
            return i
    return None


def _is_preset(task: str) -> bool:
    from backend.lmeval import PRESETS

    return task.startswith("lm-eval:") and task.split(":", 1)[1] in PRESETS


def _score_columns(latest: dict, outputs: list[str], present: set[str], all_metrics: bool) -> list[str]:
    """The score columns of the paper tables: per task the headline metric the Compare page's models × tasks table
    shows (scoretable.headline, its rule), a preset's own tasks too (lm-eval:h6: H6, then ARC … GSM8K, the columns
    of the paper's Tables 3–7); with `all_metrics` every stored one. Ordered as the paper: a preset first, then the
    paper's benchmarks in its order, then the other tasks by name; within a task the headline, then the preset's
    tasks in the paper's order, then the rest by name, each metric's kinds (accuracy[math]) after it."""
    from backend import scoretable

    heads: dict[str, set[str]] = {}
    for (model, task), r in scoretable.headline(latest).items():
        if model in outputs:
            heads.setdefault(task, set()).add(r.metric)
    pairs = {(task, metric) for model, task, metric in latest if model in outputs
             and not metric.endswith(scoretable.STDERR) and column(task, metric) in present}
    if not all_metrics:
        pairs = {(t, m) for t, m in pairs if m in heads.get(t, ()) or (_is_preset(t) and "/" in m and "[" not in m)}

    def order(pair: tuple[str, str]) -> tuple:
        task, metric = pair
        place, base = _paper_place(task), metric.partition("[")[0]
        own = _paper_place(metric.split("/")[0]) if "/" in metric else None
        return ((0, 0) if _is_preset(task) else (1, place) if place is not None else (2, 0), task,
                base not in heads.get(task, ()), 99 if own is None else own, base, metric)
    return [column(t, m) for t, m in sorted(pairs, key=order)]


def _data_of(st: dict, by_stage: dict[str, dict], seen: frozenset = frozenset()) -> list[str]:
    """The data a row's model was trained on, as its tick columns mark it: its own sources; a merge's, its inputs'
    (recursively), as the paper marks SFT v3+v4 and DPO v1+v2 (Tables 3–4): the merges' ticks were blank."""
    if st["kind"] != "merge":
        return [source_label(s) for s in st.get("sources") or []]
    out: list[str] = []
    for parent in st.get("from") or []:
        if parent in by_stage and parent not in seen:
            out += [s for s in _data_of(by_stage[parent], by_stage, seen | {st["stage"]}) if s not in out]
    return out


def _merged_data_note(rows: list[dict], data: dict[str, list[str]]) -> str:
    merged = [st.get("label") or st["stage"] for st in rows if st["kind"] == "merge" and data[st["stage"]]]
    return (f"A merge's ticks ({', '.join(merged)}) are the data of the models it merges, as the paper marks them."
            if merged else "")


# The training settings that make two trained rows of a table differ, beside their data (the ticks): the paper's
# merge candidates differ in the DPO data mix and "slightly different hyper-parameters" (Cand. 1: beta 0.2, seed 1;
# Cand. 2: seed 2), and both rows read "Made from sft-v3v4" and nothing else.
SETTINGS = ("learning_rate", "max_steps", "max_rows", "beta", "loss_type", "seed")


def _differing_settings(rows: list[dict]) -> list[str]:
    """The SETTINGS whose values differ between the table's trained rows (their jobs' specs, defaults included: a
    candidate without `beta` in its recipe trained at DPO's 0.1), only those; a merge's spec (its DARE seed) is
    not a training setting."""
    specs = [st["spec"] for st in rows if st["kind"] != "merge" and st.get("spec")]
    return [f for f in SETTINGS if len({repr(s[f]) for s in specs if f in s}) > 1]


def _labelled(note: str, rows: list[dict]) -> str:
    """The note with each of the table's models named by its row label ("SFT v1", as the Model column names it),
    its registered name kept in brackets only where two rows share a label: the Compare page's overlap note named
    solar-mini-sft-v1-f6111a2f under rows that read "SFT v1"."""
    labels = [st.get("label") or st["stage"] for st in rows]
    names = {st["output"]: lab if labels.count(lab) == 1 else f"{lab} ({st['output']})"
             for st, lab in zip(rows, labels) if st["output"] and st["output"] != lab}
    if not names:
        return note
    # a whole name only: not inside a longer one (tinybase-2), nor a path or a source (dataset:NAME-instruct)
    pattern = r"(?<![\w./:-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w/:-]|\.\w)"
    return re.sub(pattern, lambda m: names[m.group(1)], note)


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
    return Table(t.key, t.title, folded.columns, folded.rows, t.notes, t.settings)


PAPER = "Paper H6"
DECIMALS = "%.4f"  # the page's scores, as the CLI and the Compare table write them (scoretable._rounded)


def screen_table(t: Table) -> tuple[Table, list[str]]:
    """The table as the Recipe page shows it: each score and its ± in one cell, "292.8580 ± 0.7373", as the
    Markdown the CLI prints (_one_cell_errors), four decimals fixed: the page showed 292.858 beside the CLI's
    292.8580 and "0" for its "0.0000 ± 0.0000", and the separate ± columns hid synth-math at 1400 px. Returns (the
    table, its score columns left as numbers, drawn with DECIMALS); the CSV keeps its own columns and their order."""
    from backend.scoretable import number_text

    folded = [c for c in t.columns if f"{c} ±" in t.columns]

    def text(v: Any, se: Any) -> str | None:
        if v is None or isinstance(shown := number_text(v), str):  # "∞", "3.2e17"
            return None if v is None else shown
        return f"{v:.4f} ± {se:.4f}" if isinstance(se, (int, float)) else f"{v:.4f}"
    cols = [c for c in t.columns if not c.endswith(" ±") or c.removesuffix(" ±") not in folded]
    cells = [dict(zip(t.columns, row)) for row in t.rows]
    # scores before data ticks and settings (exports keep the paper's order): at 1400 px one read "synth-math accura…"
    after = [c for c in cols if c in t.settings or c not in ("Model", "Stage", "Made from", PAPER) and cells
             and all(r[c] in ("✓", "") for r in cells)]
    cols = [c for c in cols if c not in after and c != PAPER] + after + [PAPER] * (PAPER in cols)
    rows = [[text(r[c], r.get(f"{c} ±")) if c in folded else r[c] for c in cols] for r in cells]
    fixed = {"Model", "Stage", "Made from", PAPER, *t.settings, *folded}
    numeric = [c for i, c in enumerate(cols) if c not in fixed
               and any(isinstance(r[i], float) for r in rows)
               and all(r[i] is None or isinstance(r[i], (int, float)) for r in rows)]
    return Table(t.key, t.title, cols, rows, t.notes, t.settings), numeric


def paper_text(t: Table) -> Table:
    """The table with the paper's numbers written as the paper prints them, with two decimals: its 74.00 read
    "74" (a float printed by its shortest form)."""
    if PAPER not in t.columns:
        return t
    i = t.columns.index(PAPER)
    rows = [[f"{v:.2f}" if j == i and isinstance(v, (int, float)) else v for j, v in enumerate(row)] for row in t.rows]
    return Table(t.key, t.title, t.columns, rows, t.notes, t.settings)


def to_markdown(t: Table) -> str:
    t = _one_cell_errors(paper_text(t))
    lines = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in t.rows]
    lines += [line for note in t.notes for line in ("", note)]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    t = paper_text(t)
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
    t = _one_cell_errors(paper_text(t))
    number = re.compile(r"[-+]?(\d[\d,]*(\.\d*)?(e[-+]?\d+)?|∞|inf|nan)( ± \S+)?", re.I)  # 0.2500 ± 0.0993, ∞, 44
    cols = [[_cell(v) for v in col] for col in zip(*t.rows)] if t.rows else [[] for _ in t.columns]
    spec = "".join("r" if {*col} - {"", "—"} and all(c in ("", "—") or number.fullmatch(c) for c in col) else "l"
                   for col in cols)  # numbers right, text left ("lll" then "c" put the first scores to the left)
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
    # failed stage read as about to run; the job's spec, what the model was trained with (a reused stage's: the
    # earlier job's), for the settings in which a table's rows differ (_differing_settings)
    return [{"stage": r.stage, "kind": r.kind, "output": r.output, "hash": r.hash, "job_id": r.job_id, **r.info,
             "status": stage_state(r, job) or r.info.get("status", ""), "spec": (job.spec if job else None) or {}}
            for r, job in stages(run_id) if r.kind != "eval"]


def run_tables_from(stages: list[dict], all_metrics: bool = False) -> list[Table]:
    models = [s["output"] for s in stages if s["output"]]
    latest = latest_rows(models)
    return build_tables(stages, latest_scores(models, latest), latest, all_metrics)


PENDING = ("queued", "running", "not queued")  # evaluation states (state.evaluations) whose scores are still to come


def run_tables(run_id: int, all_metrics: bool = False) -> list[Table]:
    """The run's paper tables: each task's headline score, or with `all_metrics` every stored metric; while its
    evaluation is queued, running or ended unfinished, each table's first note says so (state.scores_note)."""
    from backend.recipe.state import evaluations, read_pass, scores_note, stages

    with read_pass():  # one read of the models and of each evaluation's scores for the whole pass
        evals, out = evaluations(stages(run_id)), run_tables_from(stage_dicts(run_id), all_metrics)
    why, pending = scores_note(evals), any(e["status"] in PENDING for e in evals)
    for t in out:
        t.notes[:0] = [why] if why else []
        t.pending = pending
    return out


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
        rows = s.exec(select(JobMetric.job_id, JobMetric.step, JobMetric.value)
                      .where(JobMetric.job_id.in_(job_ids), JobMetric.name == metric).order_by(JobMetric.step)).all()
    out: dict[int, list[tuple[int, float]]] = {j: [] for j in job_ids}
    for job_id, step, value in rows:
        out[job_id].append((step, value))
    return out


def recovery_points(job_id: int) -> tuple[list[tuple[int, float]], float | None]:
    """The recovery view's data (Monitor): held-out loss of the up-scaled model by step, and its base's loss."""
    pts = curves([job_id], "eval_loss")[job_id]
    ref = curves([job_id], "reference_eval_loss")[job_id]
    return pts, (ref[-1][1] if ref else None)


# ---------------------------------------------------------------- what a blank cell means

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
        if col in skip or col in t.settings or overlap or col.endswith(" ±") or all(r[i] in ("✓", "")
                                                                                 for r in t.rows):
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
    # "or has not run yet" only while the run's evaluation may still fill the cell (Table.pending): after it ended,
    # the cell stays blank whatever one waits for
    why = "the run's evaluation leaves it out" + (", or has not run yet" if t.pending else "")
    said = (f"A {mark} cell: " + "; ".join(parts) + f" — not evaluated on that task ({why}), not a score of "
            "zero.") if parts else ""
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
