"""Recipe page: the SOLAR experiment as one YAML file — load a preset or a file, edit, plan, run, cancel; the stage
graph coloured by job status (live); the paper's tables from this run's evaluations; merge surfaces; the recovery
curve; runs compared. Planning, running and the tables are backend/recipe; this page lays them out."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend import recipe, runner
from backend.recipe import graph, state, surface, tables
from backend.recipe.graph import with_outside_models
from backend.specs import TRAIN_KINDS
from pages.common import MISSING, job_said, via_app, worker_banner
from pages.figures import PALETTE, held_out_words, metric_figure, recovery_figure


def data_text(n) -> str:
    """A stage's data sources as the recipe names them (stage:math/instruct, not the data set's hashed name), each
    weight other than 1 as ×W: sft-v1 and sft-v2 differ only here, which the table did not show."""
    weights = [d.weight for d in getattr(n.spec, "data", None) or []]
    return " + ".join(src + (f" ×{w:g}" if w != 1 else "") for src, w in zip(n.info.get("sources", []), weights))


def size(n) -> tuple[int | None, str]:
    """(steps, rows) a stage will use after the budget: a training stage's max_steps and rows per source ('all': no
    cap), an evaluation's items per task, a synth-math stage's seeds. A budget changed only the hashes on screen."""
    if n.kind in TRAIN_KINDS:
        return n.spec.max_steps, str(n.spec.max_rows or "all")
    if n.kind == "eval":
        return None, f"{n.spec.limit} per task"
    if n.kind == "synth-math" and n.spec.num_seeds:
        return None, f"{n.spec.num_seeds} seed{'s' if n.spec.num_seeds != 1 else ''}"
    return None, ""


def plan_rows(p) -> pd.DataFrame:
    """The plan table: each stage's label, data and size beside its status, so an ablation (the same stage on
    other data) and the budget's effect can be checked without reading the graph or the source."""
    rows = []
    for n in p.nodes:
        steps, read = size(n)
        rows.append({"stage": n.stage, "label": n.info.get("label", ""), "kind": n.kind, "status": n.status,
                     "data": data_text(n), "steps": steps, "rows": read, "hash": n.hash[:8], "model": n.output,
                     "needs": ", ".join(n.deps), "layers": n.depth})
    return pd.DataFrame(rows).astype({"steps": "Int64", "layers": "Int64"})


def diff_rows(diff) -> list[dict]:
    """tables.config_diff's fields as rows, a field one side lacks (or sets to null) as MISSING: str(None) is the
    text "None", which placeholder= does not reach."""
    return [{"field": k, **{n: MISSING if v is None else str(v) for n, v in vals.items()}} for k, vals in diff]


via_app(__file__)
st.title("Recipe")
st.caption("The whole SOLAR experiment (arXiv 2312.15166) as one YAML file: the base, the up-scaling, every "
           "training and merge stage by name, one evaluation applied to every model, a budget. Unchanged stages "
           "are reused; a changed stage reruns with everything downstream.")
st.caption("`budget: {steps_scale, max_steps, max_rows, eval_limit}` scales or caps every stage at once (a quick "
           "try: `{max_steps: 2, max_rows: 20, eval_limit: 10}`); the plan table shows each stage's steps and rows "
           "after it.")
worker_banner()

# ---------------------------------------------------------------- the recipe text
runs = recipe.runs()
by_id = {r.id: r for r in runs}


def show_in_editor(text: str, said: str, run_id: int | None = None) -> None:
    """Put `text` in the editor and remember what it is (said under the editor, until it is edited)."""
    st.session_state["recipe_yaml"] = text
    st.session_state["_recipe_source"] = (said, text, run_id)


def show_run(run_id: int) -> None:
    run = by_id[run_id]
    show_in_editor(run.text, f"run {run.id}'s recipe ({run.name}, as it was run)", run.id)
    # the Preset picker names the run's preset (a preset's recipe carries its name), else none: it read solar-mini
    # beside a smoke run's recipe, and Load preset swapped that run for the heavy preset
    st.session_state["recipe_preset"] = run.name if run.name in recipe.PRESETS else None


# The Run picker below shows the newest run: the editor opened on the solar-mini preset beside it, so a user
# reading run 3's stages and tables saw another recipe above them (and a Run of it queued that one). It opens on
# the picked run's recipe, follows the picker while it is unedited, and says what it shows.
picked = st.session_state.get("recipe_run_pick", st.session_state.get("recipe_run_id", runs[0].id if runs else None))
source = st.session_state.get("_recipe_source")
if "recipe_yaml" not in st.session_state:
    if picked in by_id:
        show_run(picked)
    else:
        show_in_editor(recipe.preset("solar-mini"), "the solar-mini preset")
elif source and source[2] is not None and picked in by_id and picked != source[2] \
        and st.session_state["recipe_yaml"] == source[1]:
    show_run(picked)  # unedited: it follows the run picked
c1, c2, c_m, c3 = st.columns([2, 2, 1, 1])
preset_name = c1.selectbox("Preset", recipe.PRESETS, index=None if "recipe_preset" in st.session_state else 1,
                           key="recipe_preset", placeholder="Choose a preset to load")
base = c2.text_input("Base (smoke needs a small model folder or name)", key="recipe_base")
# the CLI's `recipe new … --m M`: a base of 6 layers was refused "m=8 is out of range" with no field to change it
m_layers = c_m.number_input("m", min_value=1, value=None, step=1, key="recipe_m", placeholder="from Base",
                            help="Layers removed from each copy when the preset up-scales its base (empty: from the "
                                 "base's depth where it is known, the valid m nearest n/4 as SOLAR's 8 of 32; "
                                 "else the preset's own, 8, or 2 for smoke).")
if c3.button("Load preset", key="recipe_load", disabled=preset_name is None,
             help="Choose a preset first." if preset_name is None else None):
    if preset_name == "smoke" and not base.strip():  # the backend's message names the CLI flag (--base)
        st.error("The smoke preset needs a base: type a small model folder or a registered model's name in "
                 "Base, then load it again.")
    else:
        try:
            show_in_editor(recipe.preset(preset_name, base.strip() or None, int(m_layers) if m_layers else None),
                           f"the {preset_name} preset")
        except recipe.RecipeError as exc:
            st.error(str(exc))
# JSON is YAML (a recipe saved by a script as .json reads the same): refused with only a red chip, no word why
upload = st.file_uploader("Or open a recipe file", type=["yaml", "yml", "json"], key="recipe_upload",
                          help="A YAML recipe, such as one saved with 'Save as YAML', or the same as JSON.")
if upload is not None and st.session_state.get("_recipe_uploaded") != upload.file_id:
    st.session_state["_recipe_uploaded"] = upload.file_id
    try:
        show_in_editor(upload.getvalue().decode("utf-8"), f"the file {upload.name}")
    except UnicodeDecodeError as exc:  # a binary or non-UTF-8 file: say so, keep the text that was there
        st.error(f"{upload.name} is not a UTF-8 text file (byte {exc.start}): open a YAML recipe, such as one "
                 "saved with 'Save as YAML'.")
text = st.text_area("Recipe (YAML)", key="recipe_yaml", height=300)
said, loaded, shown_run = st.session_state.get("_recipe_source") or ("the recipe typed here", text, None)
st.caption(f"The editor shows {said}" + (", edited since." if text != loaded else "."))
st.download_button("Save as YAML", text, file_name="recipe.yaml", key="recipe_save")

b1, b2, b3 = st.columns(3)
plans = None
if b1.button("Plan", key="recipe_plan", type="secondary"):
    try:
        plans = recipe.plan_text(text)
    except (recipe.RecipeError, ValueError) as exc:
        st.error(f"Not planned: {exc}")
if b2.button("Run", key="recipe_run", type="primary"):
    try:
        # planned here and handed on, so the message says what the run queued: a second Run of an unchanged
        # recipe read "Submitted recipe run 2; the worker runs the stages" though it queued nothing new
        run_plans = recipe.plan_text(text)
        ids = recipe.run_recipe(text, queue=True, plans=run_plans)
        st.session_state["recipe_run_id"] = ids[-1]
        st.session_state["recipe_run_pick"] = ids[-1]  # show the new run: the picker otherwise keeps the old one
        # what the editor holds is what that run ran (as typed: its saved recipe has presets and sweeps expanded)
        st.session_state["_recipe_source"] = (f"the recipe submitted as run {ids[-1]}", text, ids[-1])
        fresh = sum(n.status == "run" for p in run_plans for n in p.nodes)
        st.success(f"Submitted recipe run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: "
                   + "; ".join(p.lines()[0].removeprefix("recipe ") for p in run_plans) + ". "
                   + ("The worker runs the new stages in dependency order." if fresh else
                      "Nothing new to train: every stage is reused or already queued by an earlier run."))
    except (recipe.RecipeError, ValueError) as exc:
        st.error(f"Not run: {exc}")
if plans:
    for p in plans:
        st.subheader(f"Plan: {p.recipe.name}")
        st.caption(p.lines()[0])
        for note in p.notes():  # what the run will lack (a training stage with too few rows to hold any out)
            st.warning(note)
        st.dataframe(plan_rows(p), hide_index=True, key=f"plan_{p.recipe.name}", placeholder=MISSING,
                     column_config={"label": st.column_config.TextColumn(width="medium"),
                                    "data": st.column_config.TextColumn(width="large")})
        st.graphviz_chart(graph.graph_dot(with_outside_models([  # a registered model merged in: a box too
            {"stage": n.stage, "kind": n.kind, "status": n.status, "deps": n.deps, "from": n.info.get("from", []),
             "label": n.info.get("label", ""), "data": n.info.get("data", {})} for n in p.nodes if n.kind != "eval"])))

# ---------------------------------------------------------------- a run: live graph and status
runs = recipe.runs()  # again: a Run above added one
by_id = {r.id: r for r in runs}
if not runs:
    st.info("No recipe has run yet: plan and run one above (or `python -m backend recipe run FILE`).")
    st.stop()
labels = {r.id: f"run {r.id} · {r.name} · {r.created:%Y-%m-%d %H:%M}" for r in runs}
default = st.session_state.get("recipe_run_id", runs[0].id)
run_id = st.selectbox("Run", list(labels), index=list(labels).index(default) if default in labels else 0,
                      format_func=labels.get, key="recipe_run_pick")
_, loaded, shown_run = st.session_state.get("_recipe_source") or (None, text, None)  # a Run above changes it
if shown_run != run_id or text != loaded:  # the editor holds another recipe (a preset, a file, edited)
    st.button(f"Open run {run_id}'s recipe in the editor", key="recipe_edit_run", on_click=show_run, args=(run_id,),
              help="Replaces the text in the editor above with the recipe this run ran.")
# offered while a job this run started is waiting or running (the rule cancel_run follows): on a finished run, or
# one whose live stages wait on an earlier run's jobs, it only said "none were still waiting or running"
going = bool(recipe.cancellable(run_id))
if b3.button("Cancel run", key="recipe_cancel", disabled=not going,
             help=None if going else "No job this run started is waiting or running (a stage reused, or waiting on "
                                     "an earlier run's job, belongs to that run: cancel that one)."):
    # said after the rerun that draws the button off (drawn before the click, it stayed on)
    st.session_state["_recipe_cancelled"] = (run_id, recipe.cancel_run(run_id))
    st.rerun()
if (said := st.session_state.pop("_recipe_cancelled", None)) and said[0] == run_id:
    st.warning(f"Cancelled jobs: {', '.join(map(str, said[1])) or 'none were still waiting or running'}")


@st.fragment(run_every=2.0)
def live(run_id: int) -> None:
    rows = recipe.stages(run_id)
    # the queue, the heartbeats, the models and the evaluation's scores read once for every stage (one_pass,
    # read_pass): read per stage, a tick made ~1,200 SQL statements with 18 eval stages running
    with runner.one_pass([j for _, j in rows if j]) as (active, alive), state.read_pass():
        dot = graph.run_graph(run_id)
        table = pd.DataFrame([{"stage": r.stage, "kind": r.kind, "status": recipe.stage_state(r, j), "job": r.job_id,
                               "model": r.output, "message": job_said(j, active, alive)[:80] if j else ""}
                              for r, j in rows], columns=["stage", "kind", "status", "job", "model", "message"])
    st.graphviz_chart(dot)
    # job 6, not 6.0, beside the base's none (shown MISSING)
    st.dataframe(table.astype({"job": "Int64"}), hide_index=True, key="recipe_stages", placeholder=MISSING)


live(run_id)

# ---------------------------------------------------------------- read-backs
t_tables, t_surface, t_recovery, t_compare = st.tabs(["Paper tables", "Merge surface", "Recovery", "Compare runs"])
with t_tables:
    st.caption("Filled from the stored evaluation rows of this run's models; 'Paper H6' is the paper's published "
               "average (ARC, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K) for the row it mirrors — a "
               "reference, not this run's number. A task whose items overlap a model's training data (its whole "
               "lineage's) gets a training-overlap column and the score on the non-overlapping items, as on the "
               "Compare page; the note under each table says what they mean. Each task shows its headline "
               "score, the metric the Compare page's models × tasks table shows (lm-eval:h6 its six tasks too).")
    every = st.toggle("All metrics", key="tables_all_metrics",
                      help="every stored metric of each task (qa's abstention, cut-off, empty and hallucination "
                           "rates, per kind of item) after its headline score; the downloads follow")
    for t in tables.run_tables(run_id, all_metrics=every):
        st.markdown(f"**{t.title}**")
        # pinned: with a task's metrics between them (six columns for synth-math), the paper's number sat off-screen
        # at 1280 px, so "beside the published numbers" took a sideways scroll per table
        # each score and its ± in one cell, four decimals, as the CLI prints them (the CSV keeps them apart)
        shown, numeric = tables.screen_table(t)
        st.dataframe(pd.DataFrame(shown.rows, columns=shown.columns), hide_index=True, key=f"table_{t.key}",
                     placeholder=MISSING, column_config={
                         **{c: st.column_config.NumberColumn(format=tables.DECIMALS) for c in numeric},
                         "Model": st.column_config.TextColumn(pinned=True),
                         # the paper's two decimals: its 74.00 read "74"
                         "Paper H6": st.column_config.NumberColumn(pinned=True, format="%.2f")})
        for note in t.notes:  # which scores were on items the model's lineage trained on, as the Compare page says
            st.caption(note)
        if unscored := tables.unscored_note(t, MISSING):
            st.caption(unscored)
        cols = st.columns(3)
        for col, (ext, fn) in zip(cols, tables.EXPORTS.items()):
            col.download_button(f"{t.key}.{ext}", fn(t), file_name=f"run{run_id}-{t.key}.{ext}",
                                key=f"dl_{t.key}_{ext}")


def error_bars(errs: list) -> dict | None:
    """Plotly's error bars from the scores' stored standard errors (None: none stored, no bars)."""
    return dict(type="data", array=[e or 0 for e in errs], visible=True) if any(e is not None for e in errs) else None


with t_surface:
    scores = tables.latest_scores([s["output"] for s in tables.stage_dicts(run_id) if s["output"]])
    metrics = sorted({k for v in scores.values() for k in v})
    if not metrics:
        st.caption(" ".join(["No evaluation rows yet.", state.run_scores_note(run_id)]).strip())  # why: queued, running
    else:
        metric = st.selectbox("Metric", metrics, key="surface_metric")
        surfaces = surface.run_surfaces(run_id, metric)
        if not surfaces:
            st.caption("No swept merge in this run: give a merge stage `weights: '0.0..1.0 step 0.1'` or "
                       "`sweep: {t: [0, 0.25, 0.5, 0.75, 1]}`.")
        for s in surfaces:
            if s.get("skipped"):  # swept over several fields at once: no single x to draw the points on
                st.caption(f"No surface: {s['skipped']}")
                continue
            if s.get("empty"):  # a figure with no point drew axes from -1 to 5 and no word why
                st.caption(f"No surface for {s['group']}: {s['empty']}")
                continue
            fig = go.Figure(go.Scatter(x=s["x"], y=s["y"], mode="lines+markers", name=s["group"],
                                       line_color=PALETTE[1], error_y=error_bars(s["err"])))
            if s["ends"]:  # each candidate named on the chart, not only on hover
                names = [s["candidate_labels"][i] for i in s["ends_which"]]
                fig.add_trace(go.Scatter(x=[x for x, _ in s["ends"]], y=[y for _, y in s["ends"]],
                                         mode="markers+text", text=names, textposition="top center",
                                         marker=dict(size=12, symbol="diamond", color=PALETTE[0]),
                                         name="candidates", error_y=error_bars(s["ends_err"])))
            elif s["field"] not in ("weight", "t"):  # a density (…) sweep: the candidates sit at no x, their
                for name, y in zip(s["candidate_labels"], s.get("candidate_scores") or []):  # scores are levels
                    if y is not None:  # to beat
                        fig.add_hline(y=y, line_dash="dot", line_color=PALETTE[0], annotation_text=name)
            against = {"t": "t", "weight": "the first candidate weight"}.get(s["field"], s["field"])
            fig.update_layout(title=f"{s['group']}: {metric} against {against}",
                              xaxis_title=s["field"], yaxis_title=metric, height=360)
            st.plotly_chart(fig, key=f"surface_{s['group']}")
            if s.get("within_noise"):
                st.caption(surface.NOISE_NOTE)
            elif any(e is not None for e in s["err"] + s["ends_err"]):
                st.caption("Bars: ± one standard error of each score, as the paper tables give it.")

with t_recovery:
    cpt = [(r, j) for r, j in recipe.stages(run_id) if r.kind == "cpt" and r.job_id]
    for r, j in cpt:
        pts, ref = tables.recovery_points(r.job_id)
        if pts and ref is not None:
            fig = recovery_figure(pts, ref, r.stage, "base model")
            subtitle, note = held_out_words(j.spec)  # which set the held-out loss is on, as the Monitor says
            fig.update_layout(title_subtitle_text=subtitle)
            st.plotly_chart(fig, key=f"recovery_{r.job_id}")
            st.caption(note)
        else:
            st.caption(state.recovery_note(r.stage, j, r.job_id, bool(pts)))  # an ended job: why there is none
    if not cpt:
        st.caption("No continued-pretraining stage in this run.")

def data_mix(spec: dict) -> str:
    """A training job's data mix as its spec reads it: each source, with its weight where it is not 1."""
    return " + ".join(str(d.get("source")) + (f" ×{d['weight']:g}" if d.get("weight", 1) != 1 else "")
                      for d in spec.get("data") or [])


with t_compare:
    jobs = runner.list_jobs(300, kinds=TRAIN_KINDS)
    # a dict, not a search of `jobs` per option; what each job makes (runner.job_output), not its spec's name: a job
    # queued without one (the CLI's, a saved spec's) read "12 · sft · None"
    made = {j.id: runner.job_output(j) for j in jobs}
    job_labels = {j.id: f"{j.id} · {j.kind} · {made[j.id]}" for j in jobs}
    picked = st.multiselect("Jobs", list(job_labels), format_func=job_labels.get, key="compare_jobs")
    picked_runs = st.multiselect("Or recipe runs", list(labels), format_func=labels.get, key="compare_runs")
    if picked:
        names = {j.id: f"{j.id} · {made[j.id]}" for j in jobs}
        logged = runner.metric_names(picked)
        metric = st.selectbox("Metric", logged, index=logged.index("loss") if "loss" in logged else 0,
                              key="compare_metric") if logged else None
        if metric:
            st.plotly_chart(metric_figure({names[i]: pts for i, pts in tables.curves(picked, metric).items()},
                                          metric), key="compare_curves")
        specs = {j.id: j.spec for j in jobs}
        # in the order picked, as the legend: the columns read newest first (7, 6, 5, 4) under a legend of 4 -> 7
        diff = tables.config_diff({names[i]: specs[i] for i in picked if i in specs})
        st.dataframe(pd.DataFrame(diff_rows(diff)), hide_index=True, key="compare_diff")
        if len(mixes := {names[i]: data_mix(specs[i]) for i in picked if i in specs}) > 1 \
                and len(set(mixes.values())) > 1:
            st.caption("These jobs trained on different data mixes (" + "; ".join(f"{n}: {m or 'none'}" for n, m in
                       mixes.items()) + "): each loss is on its own data, so the curves are not comparable as "
                       "quality. Compare the models' evaluation scores (Paper tables, the Compare page) instead.")
    if not picked and not picked_runs:  # two empty pickers said nothing about what they would show
        st.caption("Pick training jobs to draw their logged metrics together with the settings they differ in, or "
                   "two or more recipe runs to list the fields their recipes differ in.")
    elif len(picked_runs) == 1:  # one run showed nothing, as if the pick had been lost
        st.caption("Pick a second recipe run: the table lists the fields in which their recipes differ.")
    if len(picked_runs) > 1:
        import yaml

        by_run = {r.id: r for r in runs}
        texts = {labels[i]: yaml.safe_load(by_run[i].text) for i in picked_runs if i in by_run}  # in pick order
        diff = tables.config_diff(texts)
        # its own heading: under the data-mix caption above it, the table read as part of the jobs' comparison
        st.markdown(f"**{' vs '.join(texts)}: fields that differ**")
        st.dataframe(pd.DataFrame(diff_rows(diff)), hide_index=True, key="compare_run_diff")
