"""Compare page: merge candidates, evaluate models on the same tasks, and compare them — a models × tasks table
like the paper's, charts, a merge-candidate view, and answer length against hallucination (is a lower rate only
shorter answers?)."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import streamlit as st
from pydantic import ValidationError
from sqlmodel import select

from backend import analysis, registry, runner
from backend.specs import EvalSpec, MergeSpec, explain
from pages.common import job_status, model_names, via_app, worker_banner
from pages.figures import bar_figure, by_bin_figure, length_box_figure, radar_figure
from storage import db
from storage.models import EvalScore, Generation

HIGHER_IS_BETTER = {"accuracy", "acc", "acc_norm", "acc,none", "exact_match"}

via_app(__file__)
st.title("Merge & compare")
worker_banner()
names = model_names()
if len(names) < 1:
    st.info("No models yet: import or build one first.")
    st.stop()

with st.expander("Merge candidates"):
    st.caption("SOLAR's final step: two candidates merged by Average(a, b) or SLERP. Task arithmetic, TIES and DARE "
               "need the base the candidates were trained from. Models must share architecture and shapes.")
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox("Method", ["average", "slerp", "task_arithmetic", "ties", "dare"], key="merge_method")
    cands = c2.multiselect("Candidates", names, default=names[-2:] if len(names) >= 2 else names,
                           max_selections=2 if method == "slerp" else None, key="merge_models")
    fields: dict = {}
    if method == "slerp":
        fields["t"] = c3.slider("t (0 = first, 1 = second)", 0.0, 1.0, 0.5, 0.05, key="merge_t")
    else:
        ws = c3.text_input("Weights (one per candidate)", ", ".join(["0.5"] * max(len(cands), 1)), key="merge_w")
        try:
            fields["weights"] = [float(x) for x in ws.split(",") if x.strip()]
        except ValueError:
            st.error("Weights: numbers separated by commas.")
    if method in ("task_arithmetic", "ties", "dare"):
        fields["base"] = c1.selectbox("Base", names, key="merge_base")
        fields["density"] = c2.slider("Density", 0.05, 1.0, 0.5, 0.05, key="merge_density")
    try:
        mspec = MergeSpec(models=cands, method=method, **fields)
        mname = st.text_input("Name", mspec.default_name(), key=f"merge_name_{method}_{'_'.join(cands)}")
        mspec = mspec.model_copy(update={"name": mname})
        if st.button("Merge", type="primary", key="merge", disabled=registry.get(mname) is not None):
            st.session_state["merge_job"] = runner.submit(mspec).id
    except ValidationError as exc:
        st.error(explain(exc))
    if "merge_job" in st.session_state:
        job_status(st.session_state["merge_job"])

with st.expander("Evaluate", expanded=False):
    e1, e2 = st.columns(2)
    emodels = e1.multiselect("Models", names, default=names, key="eval_models")
    tasks = e2.multiselect("Tasks", ["perplexity", "synth-math"], default=["perplexity", "synth-math"],
                           key="eval_tasks")
    files = st.text_input("More tasks (space-separated): mc:FILE.jsonl gsm8k:FILE.jsonl lm-eval:TASK",
                          key="eval_more")
    e3, e4, e5 = st.columns(3)
    limit = e3.number_input("Items per task", 1, 10_000, 20, key="eval_limit")
    max_new = e4.number_input("Max new tokens", 8, 1024, 96, key="eval_max_new")
    samples = e5.number_input("Samples for consistency (k)", 1, 10, 1, key="eval_samples")
    try:
        espec = EvalSpec(models=emodels, tasks=tasks + files.split(), limit=limit, max_new_tokens=max_new,
                         samples=samples)
        if st.button("Evaluate", type="primary", key="evaluate"):
            st.session_state["eval_job"] = runner.submit(espec).id
    except ValidationError as exc:
        st.error(explain(exc))
    if "eval_job" in st.session_state:
        job_status(st.session_state["eval_job"])

with db.session() as s:
    scores = list(s.exec(select(EvalScore).order_by(EvalScore.id)))
if not scores:
    st.info("No scores yet: run an evaluation above (the built-in model and one up-scaled from it make a start).")
    st.stop()

# latest score per (model, task, metric)
latest: dict[tuple[str, str, str], EvalScore] = {}
for r in scores:
    latest[(r.model, r.task, r.metric)] = r
PREFERRED_METRIC = ["accuracy", "acc", "perplexity", "exact_match", "acc_norm"]


def _rank(metric: str) -> int:
    return PREFERRED_METRIC.index(metric) if metric in PREFERRED_METRIC else len(PREFERRED_METRIC)


primary: dict[tuple[str, str], EvalScore] = {}  # the headline metric of each (model, task)
for (model, task, metric), r in latest.items():
    if (model, task) not in primary or _rank(metric) < _rank(primary[(model, task)].metric):
        primary[(model, task)] = r
records = {r.name: r for r in registry.list_models()}
table_rows = []
for model in sorted({m for m, _ in primary}):
    rec = records.get(model)
    row = {"model": model, "kind": rec.kind if rec else "?", "layers": rec.num_layers if rec else None,
           "made from": " + ".join(p.split("/")[-1] for p in (rec.parents if rec else [])) or "—"}
    accs = []
    for (m, task), r in primary.items():
        if m == model:
            row[f"{task} ({r.metric})"] = round(r.value, 4)
            if r.metric in HIGHER_IS_BETTER:
                accs.append(r.value)
            if (model, task, "hallucination_rate") in latest:
                row[f"{task} (hallucination)"] = round(latest[(model, task, "hallucination_rate")].value, 4)
    row["average (accuracy tasks)"] = round(sum(accs) / len(accs), 4) if accs else None
    table_rows.append(row)
table = pd.DataFrame(table_rows)
st.subheader("Models × tasks")
st.caption("perplexity without a file scores the last 20% of builtin:facts-corpus: a model trained on that corpus "
           "has seen it, so give perplexity:FILE with text none of the models was trained on for a fair number.")
st.dataframe(table, hide_index=True, key="scores_table")
st.download_button("Export CSV", table.to_csv(index=False), "scores.csv", key="export_scores")

merged = [r for r in records.values() if r.kind == "merged" and r.name in table["model"].values]
if merged:
    st.subheader("Merge candidates")
    st.caption("Each merge beside the candidates it was made from, as in the paper's merge table.")
    for mrec in merged:
        view = table[table["model"].isin(mrec.parents + [mrec.name])]
        st.write(f"**{mrec.name}** — {mrec.recipe.get('method')}"
                 + (f" t={mrec.recipe.get('t')}" if mrec.recipe.get("method") == "slerp" else
                    f" weights={mrec.recipe.get('weights') or 'equal'}"))
        st.dataframe(view, hide_index=True, key=f"merge_view_{mrec.name}")

by_task: dict[str, list[dict]] = defaultdict(list)
for (model, task), r in primary.items():
    by_task[f"{task} ({r.metric})"].append({"model": model, "value": r.value})
cols = st.columns(2)
for i, (task, rows) in enumerate(sorted(by_task.items())):
    cols[i % 2].plotly_chart(bar_figure(rows, task), key=f"bar_{task}")
radar = defaultdict(dict)
for (model, task), r in primary.items():
    if r.metric in HIGHER_IS_BETTER:
        radar[model][task] = r.value
if radar and len({t for v in radar.values() for t in v}) >= 3:
    st.plotly_chart(radar_figure(dict(radar)), key="radar")

st.subheader("Answer length and hallucination")
st.caption("A hallucination is a confident wrong final answer. If one model hallucinates less only because it "
           "answers shorter, the gap shrinks to about zero once answers of the same length are compared.")
with db.session() as s:
    gens = list(s.exec(select(Generation)))
gen_tasks = sorted({g.task for g in gens})
if not gen_tasks:
    st.info("No generations yet: evaluate on synth-math or a gsm8k file.")
    st.stop()
gtask = st.selectbox("Task", gen_tasks, key="gen_task")
latest_gen: dict[tuple[str, str], Generation] = {}
for g in gens:
    if g.task == gtask:
        latest_gen[(g.model, g.prompt_id)] = g
recs = [analysis.Record(g.model, g.words, g.correct, g.hallucination) for g in latest_gen.values()]
words = defaultdict(list)
for r in recs:
    words[r.model].append(r.words)
c1, c2 = st.columns(2)
c1.plotly_chart(length_box_figure(dict(words)), key="len_box")
bins = analysis.by_length_bin(recs, st.slider("Length bins", 2, 6, 3, key="n_bins"))
c2.plotly_chart(by_bin_figure(bins, "hallucination_rate"), key="bin_hall")
st.plotly_chart(by_bin_figure(bins, "accuracy"), key="bin_acc")
gen_models = sorted(words)
if len(gen_models) >= 2:
    a1, a2 = st.columns(2)
    ma = a1.selectbox("Model A", gen_models, index=0, key="lc_a")
    mb = a2.selectbox("Model B", gen_models, index=1, key="lc_b")
    if ma != mb:
        res = analysis.length_controlled(recs, ma, mb, n_bins=st.session_state.get("n_bins", 3))
        fmt = lambda ci: f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci[0] is not None else "(too few answers)"  # noqa
        st.markdown(
            f"Mean answer length: **{ma}** {res['mean_words_a']:.1f} words, **{mb}** {res['mean_words_b']:.1f}.  \n"
            f"Hallucination rate A − B: raw **{res['raw_diff']:+.3f}** {fmt(res['raw_ci'])}; "
            f"length-controlled (within {res['bins']} length bins) **"
            + (f"{res['length_controlled_diff']:+.3f}" if res["length_controlled_diff"] is not None else "n/a")
            + f"** {fmt(res['length_controlled_ci'])} (95% bootstrap intervals, n = {res['n_a']} / {res['n_b']}).")
