"""Build page: pick a base model and m, watch the layer map follow, build the up-scaled model as a job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from backend import registry, runner
from backend.names import human_bytes
from backend.specs import ImportSpec, SliceRange, UpscaleSpec, explain
from backend.upscale import dus, plan_upscale
from pages.common import (human, job_making, job_status, making_said, model_names, submit, via_app,
                          worker_banner)
from pages.figures import layer_map_figure


def suggested_m(n: int) -> int:  # n // 4 where no m is valid: the page says the model is too shallow
    m = dus.suggested_m(n)
    return n // 4 if m is None else m


via_app(__file__)
st.title("Depth up-scale")
st.caption("SOLAR's recipe (arXiv 2312.15166): copy A keeps layers [0, n−m), copy B keeps [m, n); stacked they "
           "make s = 2·(n−m) layers. SOLAR: n = 32, m = 8 → 48 layers, 10.7B parameters.")
worker_banner()

names = model_names()
if not names:
    st.info("No model is registered yet. Import the built-in SmolLM2-135M-Instruct (about 40 s, offline) or "
            "another model on the Models page.")
    if st.button("Import the built-in SmolLM2-135M-Instruct", key="import_builtin"):
        submit(ImportSpec(target="builtin"), "build_import_job")
    if "build_import_job" in st.session_state:
        job_status(st.session_state["build_import_job"])
        if st.button("Refresh the model list", key="refresh_models"):
            st.rerun()
    st.stop()

left, right = st.columns([1, 2])
with left:
    default = names.index(registry.BUILTIN_NAME) if registry.BUILTIN_NAME in names else 0
    base = st.selectbox("Base model", names, index=default, key="base")
    method = st.radio("Method", ["dus", "slices", "llama-pro"], horizontal=True, key="method",
                      captions=["SOLAR", "any stack", "LLaMA Pro"])
    rec = registry.get(base)
    n = rec.num_layers
    fields: dict = {}
    if method == "dus":
        valid = list(dus.valid_m(n))
        if not valid:
            st.error(f"{base} has only {n} layers: DUS needs at least 3.")
            st.stop()
        fields["m"] = st.select_slider("m — layers removed from each copy", options=valid, value=suggested_m(n),
                                       key="m", help=f"Only valid values are offered: 1 ≤ m < n/2 = {n / 2:g}.")
    elif method == "slices":
        st.caption("Ranges are **half-open**: [start, end) keeps start … end−1. Source 1 is the optional second "
                   "model (same architecture).")
        others = ["(none)"] + [x for x in names if x != base]
        second = st.selectbox("Second model (source 1)", others, key="second")
        fields["second"] = None if second == "(none)" else second
        m = suggested_m(n)  # the DUS stack the dus method starts from, as two editable slices
        default_rows = pd.DataFrame([{"source": 0, "start": 0, "end": n - m}, {"source": 0, "start": m, "end": n}])
        table = st.data_editor(default_rows, num_rows="dynamic", key="slices", column_config={
            "source": st.column_config.NumberColumn(min_value=0, max_value=1, step=1),
            "start": st.column_config.NumberColumn(min_value=0, step=1),
            "end": st.column_config.NumberColumn(min_value=1, step=1, help="exclusive")})
        # a half-filled row was dropped without a word, and the map quietly showed the stack without it
        partial = [str(i + 1) for i, incomplete in enumerate(table.isna().any(axis=1)) if incomplete]
        if partial:
            st.warning(f"Row {', '.join(partial)} is left out until its source, start and end are filled in.")
        rows = table.dropna().astype(int).to_dict("records")
        fields["slices"] = [SliceRange(**r) for r in rows if r["end"] > 0]
    else:
        divisors = [g for g in range(1, n + 1) if n % g == 0]
        fields["groups"] = st.selectbox("Groups (one identity block is added after each)", divisors,
                                        index=min(len(divisors) - 1, max(0, len(divisors) // 2 - 1)), key="groups")

try:
    draft = UpscaleSpec(base=base, method=method, **fields)
    plan = plan_upscale(draft)
except ValidationError as exc:
    right.error(explain(exc))
    st.stop()
except ValueError as exc:
    right.error(str(exc))
    st.stop()

with right:
    c1, c2, c3, c4 = st.columns(4)
    # signed: Streamlit draws the arrow from the sign (slices may stack fewer layers than the base: "+-3" read as
    # growth, and "×0.92" had an up arrow)
    c1.metric("Layers n → s", f"{plan.n} → {plan.s}", f"{plan.s - plan.n:+d}")
    c2.metric("Parameters before", human(plan.params_before))
    grown = plan.params_after - plan.params_before
    c3.metric("Parameters after", human(plan.params_after),
              f"{'-' if grown < 0 else '+'}{human(abs(grown))} (×{plan.params_after / plan.params_before:.2f})")
    c4.metric("Size on disk", human_bytes(plan.nbytes), help=f"{plan.nbytes:,} bytes")
    st.plotly_chart(layer_map_figure(plan), key="layer_map", config={"displayModeBar": False})

with left:
    # The suggested name follows m and the method until the user types their own.
    suggested_name = draft.default_name()
    # an emptied box counts as untouched: it takes the suggestion again rather than stay an error for good
    if (st.session_state.get("name") or "").strip() in ("", st.session_state.get("_suggested_name")):
        st.session_state["name"] = suggested_name
    st.session_state["_suggested_name"] = suggested_name
    name = st.text_input("Name of the new model", key="name")
    shard = st.text_input("Largest shard", value="2GB", key="shard_size")
    try:
        spec = UpscaleSpec(base=base, method=method, name=name, shard_size=shard, **fields)
    except ValidationError as exc:
        st.error(explain(exc))
        st.stop()
    taken = registry.get(spec.name) is not None
    if taken:
        st.info(f"A model named {spec.name!r} is registered already: change m or the name to build another.")
    building = job_making(spec.name, ("upscale",))
    if building and not taken:
        st.info(making_said(building, "build", "building", repr(spec.name), "its progress is shown below",
                            "change m or the name to build another"))
    b1, b2 = st.columns([1, 2])  # halves cut the second label to "Save spec (YA…" in a 1280 px window
    if b1.button("Build", type="primary", key="build", disabled=taken or building is not None) and not building:
        if submit(spec, "build_job") is not None:
            st.rerun()  # drawn before the job was queued, the button stayed enabled beside its running job
    b2.download_button("Save spec (YAML)", spec.to_yaml(), file_name=f"{spec.name}.yaml", key="save_spec",
                       help="Rerun it with: python -m backend run SPEC.yaml")

if "build_job" in st.session_state:
    st.divider()
    job_id = st.session_state["build_job"]
    job_status(job_id)
    job = runner.get(job_id)
    if job and job.status == "succeeded":
        built = registry.get(job.result["model"])
        if built:
            st.subheader(f"{built.name}")
            st.caption(f"Lineage: {' + '.join(built.parents)} → **{built.name}** ({built.kind}, "
                       f"{built.num_layers} layers, {human(built.num_parameters)} parameters). "
                       "Try it on the *Models & chat* page.")
            card = Path(built.path, "README.md")
            if card.exists():
                with st.expander("Model card", expanded=True):
                    st.markdown(card.read_text().split("---", 2)[-1])
