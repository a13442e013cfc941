"""The Compare page with many models: the notes under the table with their models counted (backend/scorenotes.py)
and every name in an expander, and the picker of the models its charts draw. With 114 models scored the "accuracy
by answer length" legend filled three quarters of its column and left the plot a 140 px strip, the bar charts grew
2,000 px tall, and 114 lines shared 24 colours, so colour no longer named a model."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from backend import registry, runner, scorenotes
from backend.recipe import tables
from pages.common import LAUNCHED, job_making, making_said

CHART_MODELS = 8  # the models the charts draw by default once there are more than scorenotes.MANY


def chart_defaults(order: list[str], made_from: dict[str, set[str]], newest: str | None) -> list[str]:
    """The models the charts draw unless the user picks others: every one up to scorenotes.MANY; past that the
    lineage of the newest model (its scored ancestors and itself, the nearest CHART_MODELS), as the paper's tables
    follow one model from base to merge; a newest model without scored ancestors: the first CHART_MODELS in
    lineage order. `order`: the scored models in lineage order; `made_from`: each model's ancestors."""
    if len(order) <= scorenotes.MANY:
        return list(order)
    if newest in order:
        line = [m for m in order if m in made_from.get(newest, set()) or m == newest]
        if len(line) >= 2:
            return line[-CHART_MODELS:]
    return order[:CHART_MODELS]


def pick_models(order: list[str], made_from: dict[str, set[str]], newest: str | None) -> list[str]:
    """The picker above the charts (only past scorenotes.MANY models: a few are all drawn); returns the models the
    charts and the answer-length section draw, in the table's order."""
    if len(order) <= scorenotes.MANY:
        return list(order)
    st.subheader("Charts")
    c1, c2 = st.columns([5, 1])
    every = c2.toggle(f"All {len(order)}", key="chart_all", help="Every scored model in the charts: with many, "
                      "the bars grow long and colours repeat (24 of them).")
    picked = c1.multiselect("Models in the charts", order, default=chart_defaults(order, made_from, newest),
                            key="chart_models", disabled=every,
                            help="The table above keeps every model. Default: the newest model's lineage "
                                 f"(up to {CHART_MODELS}), or the first {CHART_MODELS} in lineage order.")
    if every:
        return list(order)
    if not picked:
        st.info("Choose the models to chart (or All).")
    return [m for m in order if m in picked]


NAMED = 3  # a chart's "no bar for" names this many models at most, then counts them: a chart is half a page wide


def no_bar_note(rows: list[dict], charted: list[str], scored: set[str] = frozenset()) -> str:
    """The caption under one bar chart: the charted models with no score for its task, whose bars were missing
    without a word (the default pick, the newest model's lineage, holds ancestors scored on other tasks). `rows`:
    the chart's bars; `scored`: the models with a score for the task that has no bar here all the same (no clean
    score, which the note under the charts says, or a score under another metric, drawn in that metric's chart)."""
    drawn = {r["model"] for r in rows}
    none = [m for m in charted if m not in drawn and m not in scored]
    if not none:
        return ""
    who = ", ".join(none) if len(none) <= NAMED else f"{len(none)} of the charted models"
    return f"No bar for {who}: not scored on this task."


def _named(items: list[str], what: str) -> str:
    """`items` by name up to NAMED, else counted ("4 of the charted models"), as no_bar_note names them."""
    return ", ".join(items) if len(items) <= NAMED else f"{len(items)} of the {what}"


def no_chart_note(every: dict[str, list[dict]], charts: dict[str, list[dict]]) -> str:
    """The caption under the bar charts for the tasks that have no chart: scored, but by none of the picked models
    (a bar chart had vanished without a word when the pick, by default the newest model's lineage, held no model
    scored on its task). `every`: the chart rows of every scored model (scoretable.chart_rows); `charts`: the
    picked models' ones."""
    # by task, not column: a task the picked models head otherwise ("perplexity" where every model's heads it
    # "perplexity (byte_perplexity)": scorevalues.headline decides over the models given) is charted all the same
    task = lambda col, rows: rows[0].get("task", col) if rows else col  # noqa: E731
    drawn = {task(col, rows) for col, rows in charts.items()}
    gone = [col for col, rows in every.items() if task(col, rows) not in drawn]
    if not gone:
        return ""
    scorers = sorted({r["model"] for task in gone for r in every[task]})
    return (f"No chart for {_named(gone, 'tasks')}: none of the charted models is scored on "
            f"{'it' if len(gone) == 1 else 'them'} ({_named(scorers, 'other models')} "
            f"{'is' if len(scorers) == 1 else 'are'}: add {'it' if len(scorers) == 1 else 'one'} to Models in the "
            "charts).")


def no_radar_note(radar: dict[str, dict[str, float]], charted: list[str], scored: set[str] = frozenset()) -> str:
    """The caption under the radar: the charted models with no line on it, left out without a word (a model scored
    only on perplexity, or on tasks the radar does not draw). `radar`: scoretable.radar_scores; `scored`: the models
    scored on a radar task all the same (no clean score: the note under the charts says so)."""
    none = [m for m in charted if m not in radar and m not in scored]
    if not none:
        return ""
    return f"No line on the radar for {_named(none, 'charted models')}: not scored on any of its tasks."


def answer_pair(order: list[str], made_from: dict[str, set[str]], newest: str | None) -> tuple[str, str]:
    """Model A and Model B of the answer-length comparison by default: the root of the newest model's lineage (its
    first ancestor with answers in lineage order: the base, when it has some) and the newest model, which asks the
    section's question of the recipe's outcome: does the final model hallucinate less only because it answers
    shorter than its base? Else (no ancestor with answers) the first two. `order`: the models with answers on the task, in lineage order
    (at least two); `made_from`: each model's ancestors; `newest`: the newest registered model with answers."""
    line = [m for m in order if m in made_from.get(newest, set())] if newest in order else []
    return (line[0], newest) if line else (order[0], order[1])


def show_notes(notes: list[scorenotes.Note], extra: list[str]) -> None:
    """The notes under the table, one a line, and the ones that count their models whole in an expander."""
    st.caption("\n".join(f"- {n.text}" for n in notes) + "".join(f"\n- {e}" for e in extra))
    if full := [n.full for n in notes if n.full]:
        with st.expander(f"The notes with every model named ({len(full)})"):
            st.caption("\n".join(f"- {f}" for f in full))


def warn(text: str, models: list[str], counted: str | None = None) -> None:
    """A warning of the answer-length section, its runs of more than scorenotes.MANY model names counted (`counted`:
    the text with its per-model shares already grouped, scorenotes.shares_text) and the whole text in an expander
    under it."""
    short = scorenotes.count_names(counted or text, models)
    st.warning(short)
    if short != text:
        with st.expander("Every model named"):
            st.caption(text)


def merge_weights(recipe: dict, n: int) -> str:
    """A merge's weights in one form, as the recipe tables write them (tables.applied_weights: 1 each where none
    were given, an average's divided by their sum): " weights=[0.5, 0.5]" whether given or not; it read
    "weights=equal" under one merge and "[0.5, 0.5]" under another of the same weights."""
    weights = tables.applied_weights(recipe, {}, n)
    return f" weights={[float(f'{w:g}') for w in weights]}" if weights else ""


def ancestry(recs: list) -> dict[str, set[str]]:
    """Every model's ancestors (parents, their parents, …) among the records."""
    parents = {r.name: list(r.parents or []) for r in recs}
    out: dict[str, set[str]] = {}
    for name in parents:
        seen, todo = set(), list(parents[name])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(parents.get(p, []))
        out[name] = seen
    return out


def same_shape(a, b) -> bool:
    """Two registry rows of one depth, width and model type, the fields merge.plan.check_registered compares (0 or
    "": not read at registration, so not compared, as there)."""
    return all(x == y or not x or not y for x, y in ((a.num_layers, b.num_layers), (a.hidden_size, b.hidden_size),
                                                     (a.model_type, b.model_type)))


def merge_defaults(recs: list) -> list[str]:
    """The merge form's preselection, older first: the newest two models of one shape neither made from the other,
    else the newest two of one shape (the form warns that one is the other's ancestor), else none; never two names
    of one folder, a merge of a model with itself, which the merge refuses. The two newest
    whatever their depth were the fallback (a 30-layer base and its 32-layer up-scaled model), which the merge
    refused only at the click; before that, a merge and one of its own candidates. `recs`: oldest first."""
    newest = recs[::-1]
    made_from = ancestry(recs)
    folder = {r.name: str(Path(r.path).expanduser().resolve()) for r in recs}  # two names of one folder: one model
    pairs = [(b, a) for i, a in enumerate(newest) for b in newest[i + 1:]
             if same_shape(a, b) and folder[a.name] != folder[b.name]]
    # any ancestor, not only a parent: after cpt → sft → merge, the cpt model and the merge were offered
    apart = [(b, a) for b, a in pairs if a.name not in made_from[b.name] and b.name not in made_from[a.name]]
    return [r.name for r in (apart or pairs or [()])[0]]


def merge_name_refused(name: str) -> str:
    """Why Merge is off for the name in the Name box, said before the click ("" when the name is free): a model holds
    it (registry.check_name_free: in another case too, or a deleted model others were made from), or a queued or
    running job will register it (runner.check_not_making's rule, any kind: an import or a training of that name
    too). The button stayed on beside the merge just queued, and only a second click was refused, after it ("Job 3
    (merge, queued) will register a model named …: choose another name")."""
    try:
        registry.check_name_free(name)
    except ValueError as exc:
        return str(exc)
    if (job := job_making(name, (*runner.MAKES_MODELS, "import"))) is None:
        return ""
    if job.kind != "merge":
        return (f"Job {job.id} ({job.kind}, {job.status}) will register a model named {name!r}: wait for it (Jobs "
                "page), or choose another name for the merge.")
    mine = job.id in st.session_state.get(LAUNCHED, ())  # its progress is shown under the button
    return making_said(job, "merge", "merging", repr(name), "its progress is shown below",
                       "choose another name to start another merge" if mine else
                       "follow it on the Jobs page, or choose another name to start another merge")
