"""Train page: continued pretraining, SFT or DPO on a registered model, launched as a job (trl + accelerate)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from backend import data, registry, runner, uploads
from backend.specs import CptSpec, DataSource, DpoSpec, LoraSpec, SftSpec, explain
from pages.common import job_status, model_names, worker_banner, via_app

KINDS = {"cpt": (CptSpec, "Continued pretraining", "builtin:facts-corpus"),
         "sft": (SftSpec, "SFT", "builtin:alpaca-mini"),
         "dpo": (DpoSpec, "DPO", "builtin:prefs-mini")}

via_app(__file__)
st.title("Train")
st.caption("SOLAR's pipeline: continued pretraining recovers the up-scaled model, SFT teaches instructions "
           "(the paper's v1–v4 data ablations are weighted mixes), DPO aligns it. trl does the training; every run "
           "goes through `accelerate launch`.")
worker_banner()

names = model_names()
if not names:
    st.info("No model is registered yet: import or build one first.")
    st.stop()

kind = st.radio("Kind", list(KINDS), horizontal=True, key="kind", format_func=lambda k: KINDS[k][1])
spec_cls, label, default_source = KINDS[kind]
upscaled = [r.name for r in registry.list_models() if r.kind == "upscaled"]
default_model = upscaled[-1] if kind == "cpt" and upscaled else names[-1]
model = st.selectbox("Model", names, index=names.index(default_model), key="train_model")

st.subheader("Data")
st.caption("Sources: `builtin:NAME` (" + ", ".join(f"`{k}`" for k in data.BUILTIN) + "), a local .jsonl / .json / "
           ".csv / .parquet / .txt file, or a Hub id (online). Weight 1 = the whole set once, 0.5 = a random half, "
           "2 = twice.")
upload = st.file_uploader("Or upload a file", type=[s[1:] for s in uploads.DATA_SUFFIXES], key="upload")
if upload is not None:
    try:  # saved under a generated name: the name the browser sends never chooses the path
        path = uploads.save_upload(upload.getvalue(), upload.name, uploads.DATA_SUFFIXES)
        st.caption(f"Saved as `{path}`: add it to the table below.")
    except ValueError as exc:
        st.error(str(exc))
table_key = f"sources_{kind}"
sources = st.data_editor(pd.DataFrame([{"source": default_source, "weight": 1.0}]), num_rows="dynamic",
                         key=table_key, column_config={
                             "source": st.column_config.TextColumn(width="large"),
                             "weight": st.column_config.NumberColumn(min_value=0.01, step=0.1)})
rows = [r for r in sources.dropna().to_dict("records") if str(r["source"]).strip()]
previews_ok = True
for r in rows:
    try:
        pv = data.preview(str(r["source"]).strip(), kind, n=3)
        with st.expander(f"{r['source']} — {pv['layout']} layout, {pv['rows']} rows"):
            st.json(pv["examples"], expanded=False)
    except ValueError as exc:
        previews_ok = False
        st.error(f"{r['source']}: {exc}")

st.subheader("Settings")
c1, c2, c3, c4 = st.columns(4)
fields = dict(
    max_steps=c1.number_input("Steps", 1, 100_000, 30, key="max_steps"),
    learning_rate=c2.number_input("Learning rate", 1e-7, 1e-1, spec_cls.model_fields["learning_rate"].default,
                                  format="%.1e", key="lr"),
    batch_size=c3.number_input("Batch size (per device)", 1, 512, 2, key="batch_size"),
    max_length=c4.number_input("Max length (tokens)", 16, 32_768, 256, key="max_length"),
    save_steps=c1.number_input("Checkpoint every", 1, 100_000, 10, key="save_steps"),
    eval_steps=c2.number_input("Evaluate every", 1, 100_000, 10, key="eval_steps"),
    eval_fraction=c3.number_input("Held-out share", 0.0, 0.5, 0.1, 0.05, key="eval_fraction"),
    num_processes=c4.number_input("Processes", 1, 64, 1, key="num_processes",
                                  help="accelerate launch --num_processes (CPU: gloo data parallel)"),
)
if kind == "dpo":
    d1, d2 = st.columns(2)
    fields["beta"] = d1.number_input("beta", 0.001, 10.0, 0.1, key="beta")
    fields["loss_type"] = d2.selectbox("loss type", ["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down",
                                                     "sigmoid_norm"], key="loss_type")
l1, l2, l3 = st.columns([1, 1, 2])
if l1.checkbox("LoRA (peft) instead of full fine-tuning", key="use_lora"):
    fields["lora"] = LoraSpec(r=l2.number_input("LoRA rank", 1, 256, 16, key="lora_r"))
accel = l3.text_input("accelerate config file (optional: DDP, FSDP, DeepSpeed)", key="accel_config")
if accel.strip():
    fields["accelerate_config"] = accel.strip()

open_jobs = [j for j in runner.list_jobs() if j.status in ("queued", "running")]
after = st.selectbox("Start after job (optional)", [None] + [j.id for j in open_jobs], key="after",
                     format_func=lambda i: "start now" if i is None else
                     next(f"job {j.id} · {j.kind} · {j.status}" for j in open_jobs if j.id == i))
name = st.text_input("Name of the trained model", value=f"{model}-{kind}", key=f"train_name_{kind}_{model}")

try:
    spec = spec_cls(model=model, data=[DataSource(source=str(r["source"]).strip(), weight=float(r["weight"]))
                                       for r in rows], name=name, **fields)
except ValidationError as exc:
    st.error(explain(exc))
    st.stop()
b1, b2 = st.columns(2)
taken = registry.get(spec.name) is not None
if taken:
    st.info(f"A model named {spec.name!r} is registered already: choose another name.")
if b1.button(f"Launch {label}", type="primary", key="launch", disabled=taken or not previews_ok or not rows):
    st.session_state["train_job"] = runner.submit(spec, after=after).id
b2.download_button("Save spec (YAML)", spec.to_yaml(), file_name=f"{spec.name}.yaml", key="train_save_spec",
                   help="Rerun it with: python -m backend run SPEC.yaml")
if "train_job" in st.session_state:
    job_status(st.session_state["train_job"])
    st.page_link("pages/monitor.py", label="Watch it on the Monitor page", icon=":material/monitoring:")
