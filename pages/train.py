"""Train page: continued pretraining, SFT or DPO on a registered model, launched as a job (trl + accelerate)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from backend import data, memplan, registry, runner, uploads
from backend.cluster.slurm import slurm_script
from backend.synth import pipeline
from backend.training import TRACKER_PACKAGES, TrainingError, default_report_to
from backend.words import plural
from backend.specs import (CptSpec, DataSource, DpoSpec, LoraSpec, PerfOptions, Resources, SftSpec, _TrainSpec,
                           explain)
from pages.common import job_making, job_status, making_said, model_names, submit, worker_banner, via_app

# What "auto" becomes on each device (backend/perf.py decides; measured on an H200, issue 13).
AUTO = {"compile": "CUDA: regional; CPU: off", "liger": "CUDA: on when installed; CPU: off",
        "optimizer": "CUDA: fused AdamW; CPU: transformers' default",
        "attention": "CUDA: flash-attn when installed, else sdpa; CPU: transformers' default",
        "packing_strategy": "CUDA: bfd with flash attention, else wrapped; CPU: wrapped"}
KINDS = {"cpt": (CptSpec, "Continued pretraining", "builtin:facts-corpus"),
         "sft": (SftSpec, "SFT", "builtin:alpaca-mini"),
         "dpo": (DpoSpec, "DPO", "builtin:prefs-mini")}
# Fields of the "Several machines" section: an invalid spec's problems that start with one are shown there too (the
# spec's own checks, backend/spec_train.py _TrainSpec._machines, name the field first).
MACHINE_FIELDS = ("num_machines", "machine_rank", "main_process_ip", "main_process_port", "ray_workers", "resources")


_PLAN_LABELS = {"cpu_ram": "CPU RAM"}  # the memory plan's headers that are not its column names


def show_memory_plan(spec, model: str) -> tuple[bool, str]:
    """The memory plan table (every strategy for this model, batch, length and kind) and whether the spec fits."""
    st.markdown("**Memory plan** · GiB per device")
    try:
        r = memplan.report_for_spec(spec, registry.resolve(model)[0])
    except Exception as exc:  # noqa: BLE001 - an architecture the plan cannot model still trains
        st.caption(f"No memory plan for this model: {exc}")
        return True, ""
    # the verdict first: at 1280 px the last column, "fits", showed "n/a: needs C" and the total sat mid-table
    table = pd.DataFrame(r.rows())
    table = table[["strategy", "total", "fits"] + [c for c in table.columns if c not in ("strategy", "total", "fits")]]
    # a run that holds no reference model (not DPO, or DPO with precomputed reference log-probs), on any strategy
    no_ref = "reference" in table and not any(p.components.get("reference") for p, _ in [(r.plan, r.ok), *r.others])
    if no_ref:  # a column of zeros: left out, so the rest fits a 1280 px window too
        table = table.drop(columns="reference")
    gib = {c: f"{c} (GiB)" for c in table.columns if c not in ("strategy", "fits")}
    # ten columns sized by their headers ("activations (GiB)") ran past a 1400 px window: reference, overhead and
    # cpu_ram were cut off. Short labels, the unit once above the table (and in each header's help), fixed widths.
    st.dataframe(table.rename(columns=gib), hide_index=True, key="memory_plan", column_config={
        "strategy": st.column_config.TextColumn(pinned=True, width=190),
        "fits": st.column_config.TextColumn(width=150),
        **{label: st.column_config.NumberColumn(
            _PLAN_LABELS.get(c, c), width=max(50, 6 * len(_PLAN_LABELS.get(c, c)) + 20),  # ~6 px a letter, padding
            help="GiB of host RAM (CPU offload)" if c == "cpu_ram" else f"{c}: GiB per device")
           for c, label in gib.items()}})
    where = (f"{len(r.avail)} × {r.what}, " + ", ".join(f"{a / memplan.GiB:.0f}" for a in r.avail) + " GiB free"
             if r.setup.device == "cuda" else f"CPU: {r.avail[0] / memplan.GiB:.0f} GiB of RAM")
    sentence = r.sentence()
    st.caption(f"GiB per device ({where}). Gradients and activations do not peak together: total = weights + "
               "optimizer + reference + the larger of the two (with gradient accumulation the gradients count with "
               "the activations), + the CUDA context (CPU: the process) as overhead. "
               + ("No reference model is held in memory for this run (0 GiB, not shown). " if no_ref else "")
               + memplan.precision_note(r.setup))
    ok = r.ok
    (st.success if ok else st.warning)(sentence)
    if ok or not spec.memory_check:
        return True, ""
    return False, "The memory plan does not fit: " + sentence


def show_slurm(spec, machines: int, problems: str = "") -> None:
    """The Slurm part of "Several machines": the script for a valid spec; for an invalid one (`spec` None, the
    page's `problems`) the inputs stay and the section says what is wrong — the page used to stop before drawing
    it, so a second machine without an address lost the section and the message sat at the page's foot."""
    st.markdown("**On Slurm** — one task per node; machine 0 is the allocation's first host.")
    s1, s2, s3, s4 = st.columns(4)
    options = dict(nodes=s1.number_input("Nodes", 1, 1024, max(machines, 2), key="slurm_nodes"),
                   gpus_per_node=s2.number_input("GPUs per node", 0, 64, 1, key="slurm_gpus"),
                   partition=s3.text_input("Partition", key="slurm_partition").strip() or None,
                   time=s4.text_input("Time limit", "04:00:00", key="slurm_time").strip())
    if spec is None:
        mine = [line for line in problems.splitlines() if line.startswith(MACHINE_FIELDS)]
        if mine:
            st.error("\n\n".join(mine))
        st.caption("No Slurm script until " + ("this is fixed." if mine else
                                               "the settings are valid: see the message at the foot of the page."))
        return
    try:
        script = slurm_script(spec, **options)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.code(script, language="bash")
    st.download_button("Download the Slurm script", script, file_name=f"{spec.name}.sbatch", key="slurm_download")
    st.caption("The dashboard does not submit it: copy it to a login node of the cluster and run "
               "`sbatch FILE`. The repository, its .venv and this workspace must be at the same paths there.")


@st.cache_data(ttl=120, max_entries=64, show_spinner="Reading the data source…")
def _cached_preview(source: str, kind: str, stamp: tuple | None, sample_by: str = "line") -> tuple[dict | None, str]:
    """data.preview, remembered for two minutes: every change of any setting reruns the page, and a Hub id that
    cannot be reached took ~24 s to fail each time (offline), freezing the page after each click. Its example
    texts are cut (data.preview), so a row of a 1 GB line is not kept here nor sent to the browser."""
    try:
        return data.preview(source, kind, n=3, sample_by=sample_by), ""
    except ValueError as exc:  # kept too (st.cache_data does not keep exceptions): the same wait otherwise
        return None, str(exc)


def cached_preview(source: str, kind: str, stamp: tuple | None, sample_by: str = "line"
                   ) -> tuple[dict | None, str, bool]:
    """(preview or None, problem, whether the file itself is refused). A read that failed for a reason that is not
    the file's (data.ReaderFailed: a library another session was still importing, memory, disk) or that could not
    open it (OSError) is said, never remembered and never a refusal: an upload is removed only when refused."""
    try:
        pv, problem = _cached_preview(source, kind, stamp, sample_by)
    except data.ReaderFailed as exc:
        return None, str(exc), False
    except OSError as exc:  # a file that cannot be read (a folder is refused by data.load_source itself): was a
        return None, f"cannot be read: {exc.strerror or exc}.", False  # traceback
    return pv, problem, pv is None


def upload_limit_said() -> str:
    """The upload limit in words beside the uploader, with the ways round it: Streamlit said it only in a tooltip
    ("File must be 200.0MB or smaller") over a chip that did nothing else."""
    limit = st.get_option("server.maxUploadSize")
    return (f"Uploads: up to {limit:,} MB a file (the server holds each one in memory). A larger file: type its "
            "path on this machine into the *source* column of the table below (read where it is, nothing copied), "
            "or gzip it (" + ", ".join(data.GZ_SUFFIXES) + " are read as they are).")


def file_stamp(source: str) -> tuple | None:
    """A local file's modification time and size, so that cached_preview re-reads a file that changed."""
    path = Path(source).expanduser()
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None


def advanced_settings(spec_fields: dict) -> dict:
    """The spec's less common training fields, each starting at the spec's default: they were YAML or CLI only,
    so a page user could not run what a saved spec or `python -m backend train` runs."""
    a1, a2, a3, a4 = st.columns(4)
    schedules = list(get_args(spec_fields["lr_scheduler"].annotation))
    return dict(
        grad_accum=a1.number_input("Gradient accumulation", 1, 4096, spec_fields["grad_accum"].default,
                                   key="grad_accum", help=spec_fields["grad_accum"].description),
        lr_scheduler=a2.selectbox("LR schedule", schedules, schedules.index(spec_fields["lr_scheduler"].default),
                                  key="lr_scheduler", help=spec_fields["lr_scheduler"].description),
        warmup_ratio=a3.number_input("Warmup share", 0.0, 0.99, spec_fields["warmup_ratio"].default, 0.05,
                                     key="warmup_ratio", help=spec_fields["warmup_ratio"].description),
        weight_decay=a4.number_input("Weight decay", 0.0, 10.0, spec_fields["weight_decay"].default, 0.01,
                                     key="weight_decay", help=spec_fields["weight_decay"].description),
        max_rows=a1.number_input("Max rows per source", 1, None, spec_fields["max_rows"].default, key="max_rows",
                                 placeholder="all", help=spec_fields["max_rows"].description),
        seed=a2.number_input("Seed", 0, 2**32 - 1, spec_fields["seed"].default, key="train_seed",
                             help=spec_fields["seed"].description),
        keep_checkpoints=a3.checkbox("Keep checkpoints", spec_fields["keep_checkpoints"].default,
                                     key="keep_checkpoints", help=spec_fields["keep_checkpoints"].description),
    )


def data_caption(kind: str) -> str:
    """The forms a source takes, and the data sets and saved mixes a job of this kind can read: the page called the
    paper's v1–v4 ablations weighted mixes but never said that a saved mix is typed `mix:NAME`."""
    sets = [f"`dataset:{d.name}`" for d in pipeline.list_datasets(kind)]
    mixes = [f"`mix:{m.name}`" for m in pipeline.list_datasets("mix") if m.provenance.get("for") == kind]
    saved = "; ".join(f"{what}: {', '.join(names)}" for what, names in (("mixes", mixes), ("data sets", sets))
                      if names)
    return ("Sources: `builtin:NAME` (" + ", ".join(f"`{k}`" for k in data.BUILTIN) + "), `dataset:NAME` (a "
            "registered data set), `mix:NAME` (a saved weighted mix, such as the paper's sft-v1 … sft-v4 or "
            "dpo-v1, dpo-v2 from Synthetic math → Mixes), a local .jsonl / .json / .csv / .parquet / .txt file "
            "(or gzipped: .jsonl.gz …; a .txt gives a row per line, per paragraph or the whole file, as its *rows "
            "of a .txt* column says; each row ends with the end-of-text token: prose read a line a row learns to "
            "stop after every line), or a Hub id (online). Weight 1 = the whole set once, 0.5 = a random half, "
            "2 = twice. "
            + (f"Saved for {kind}: {saved}." if saved else f"Saved for {kind}: none yet (" + (
                # the Synthetic math page makes SFT/DPO sets and mixes only: it sent a CPT user where none is made
                "`python -m backend datasets mix NAME --for cpt SOURCE@WEIGHT …` saves a mix)." if kind == "cpt"
                else "Synthetic math page).")))


def held_out_help(spec_fields: dict, kind: str) -> str:
    """The spec's words for eval_data, and the registered data sets a job of this kind can be scored on."""
    mine = ", ".join(f"`dataset:{d.name}`" for d in pipeline.list_datasets(kind))
    return (f"{spec_fields['eval_data'].description}. Scored every \"Evaluate every\" steps instead of a share "
            "split off the sources; written like a source (no weight)." + (f" Registered {kind} data sets: {mine}."
                                                                           if mine else ""))


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
st.caption(data_caption(kind))
# "gz" too: a browser's file dialog may filter by the last suffix alone; uploads.upload_name refuses a .gz that is
# none of data.GZ_SUFFIXES in words
upload = st.file_uploader("Or upload a file", type=[s[1:] for s in uploads.DATA_SUFFIXES] + ["gz"], key="upload")
st.caption(upload_limit_said())
upload_path, upload_refused = None, True
if upload is not None:
    try:  # saved under a generated name: the name the browser sends never chooses the path
        path, written = uploads.store_upload(upload.getvalue(), upload.name, uploads.DATA_SUFFIXES)
    except ValueError as exc:
        st.error(f"{upload.name}: {exc}")
    else:
        # read now: a malformed file is named here, not only once its long path is typed into the table; the
        # name holds a hash of the content, so the path alone keys the cached read
        pv, problem, upload_refused = cached_preview(str(path), kind, None)
        if pv is None:  # the data reader names the file as it was sent (uploads.shown_name): only once
            named = upload.name in problem or uploads.shown_name(path) in problem
            st.error(problem if named else f"{upload.name}: {problem}")
            if upload_refused:  # the file's own fault only: a failed read of a good file kept it (walk23b)
                uploads.discard_refused(path, written)  # not kept in workspace/uploads for good
        else:
            upload_path = str(path)
            # read a line a row here whatever the table says: "5 rows" stood beside the table's "3 rows (a row per
            # paragraph)" for the same file, so a .txt says how it was counted
            per = (" read a line a row (its *rows of a .txt* cell in the table can make a row a paragraph or the "
                   "whole file)" if data.loader_suffix(path) == ".txt" else "")  # x.txt.gz too
            st.caption(f"{upload.name} saved as `{path}` — {pv['layout']} layout, {plural(pv['rows'], 'row')}{per}.")
# The table restarts from `base` (with a new key) when an upload is added to it, so the rows typed so far stay.
version = st.session_state.get(f"sources_{kind}_version", 0)
table_key = f"sources_{kind}" + (f"_v{version}" if version else "")
base = st.session_state.get(f"sources_{kind}_base", [{"source": default_source, "weight": 1.0, "sample_by": "line"}])
SAMPLE_BY = list(get_args(DataSource.model_fields["sample_by"].annotation))
sources = st.data_editor(pd.DataFrame(base), num_rows="dynamic",
                         key=table_key, column_config={
                             "source": st.column_config.TextColumn(width="large"),
                             "weight": st.column_config.NumberColumn(min_value=0.01, step=0.1),
                             "sample_by": st.column_config.SelectboxColumn(
                                 "rows of a .txt", options=SAMPLE_BY, default="line", required=True,
                                 help=DataSource.model_fields["sample_by"].description)})
# a row without a source or a weight is left out, as before; one whose .txt rows were never chosen reads lines
rows = [{**r, "sample_by": r.get("sample_by") if r.get("sample_by") in SAMPLE_BY else "line"}
        for r in sources.dropna(subset=["source", "weight"]).to_dict("records") if str(r["source"]).strip()]
# An upload left out of the table held nothing back: Launch trained on the default set alone (walk12). It is not
# added on upload, which would change the table behind the user's back (and an upload may be meant to replace the
# default row): Launch and Save spec wait until it is added or removed.
upload_pending = upload is not None and upload_path not in [str(r["source"]).strip() for r in rows]
if upload_path and upload_pending:
    if st.button(f"Add {upload.name} to the sources", key="add_upload"):
        st.session_state[f"sources_{kind}_base"] = [
            {"source": str(r["source"]).strip(), "weight": r["weight"], "sample_by": r["sample_by"]} for r in rows
        ] + [{"source": upload_path, "weight": 1.0, "sample_by": "line"}]
        st.session_state[f"sources_{kind}_version"] = version + 1
        st.rerun()
    st.warning(f"{upload.name} is uploaded but not a source yet: add it with the button above, or remove the "
               "upload (× beside it), to launch or save the spec.")
elif upload_pending and not upload_refused:  # its read failed, not the file (data.ReaderFailed): kept
    st.warning(f"{upload.name} could not be read just now: press R to read it again, or remove the upload (× beside "
               "it), to launch or save the spec.")
elif upload_pending:
    st.warning(f"{upload.name} cannot be used as it is: fix the file and upload it again, or remove the upload "
               "(× beside it), to launch or save the spec.")
previews_ok = True
for r in rows:
    source = str(r["source"]).strip()
    pv, problem, _ = cached_preview(source, kind, file_stamp(source), r["sample_by"])
    if pv is None:
        previews_ok = False
        st.error(f"{r['source']}: {problem}")
    else:
        per = data.rows_said(r["sample_by"], pv)
        with st.expander(f"{r['source']} — {pv['layout']} layout, {plural(pv['rows'], 'row')}{per}"):
            st.json(pv["examples"], expanded=False)
            if said := data.cut_said(pv):
                st.caption(said)

st.subheader("Settings")
c1, c2, c3, c4 = st.columns(4)
spec_fields = spec_cls.model_fields  # every widget starts at the spec's default: the page, the CLI and YAML agree
fields = dict(
    max_steps=c1.number_input("Steps", 1, 100_000, spec_fields["max_steps"].default, key="max_steps"),
    # step: the default's power of ten (1e-5 for 5e-5); Streamlit's 0.01 made "+" jump 5e-5 to 1e-2. One key per
    # kind: a keyed number_input keeps its value when its default changes, so DPO ran at CPT's 5e-5, not 5e-6
    learning_rate=c2.number_input("Learning rate", 1e-7, 1e-1, spec_fields["learning_rate"].default,
                                  10.0 ** math.floor(math.log10(spec_fields["learning_rate"].default)),
                                  format="%.1e", key=f"lr_{kind}"),
    batch_size=c3.number_input("Batch size (per device)", 1, 512, spec_fields["batch_size"].default,
                               key="batch_size"),
    max_length=c4.number_input("Max length (tokens)", 16, 32_768, spec_fields["max_length"].default,
                               key="max_length"),
    save_steps=c1.number_input("Checkpoint every", 1, 100_000, spec_fields["save_steps"].default, key="save_steps"),
    eval_steps=c2.number_input("Evaluate every", 1, 100_000, spec_fields["eval_steps"].default, key="eval_steps"),
    # a held-out set (Advanced) replaces the share: the job then splits nothing off (backend/train_entry.py)
    eval_fraction=c3.number_input("Held-out share", 0.0, 0.5, spec_fields["eval_fraction"].default, 0.05,
                                  key="eval_fraction", disabled=bool(st.session_state.get("eval_data", "").strip()),
                                  help=spec_fields["eval_fraction"].description),
    num_processes=c4.number_input("Processes", 1, 64, 1, key="num_processes",
                                  help="accelerate launch --num_processes (CPU: gloo data parallel)"),
)
if kind == "sft":
    # three ways, as the spec has them: auto (None, trl's default: a prompt/completion file learns its completions,
    # a conversation every token) was a checkbox's False, which learned every prompt of a prompt/completion file
    LOSS_ON = {None: "Auto (trl's default for the data)", True: "The last assistant reply only",
               False: "Every token"}
    fields["completion_only_loss"] = st.selectbox(
        "Loss on", list(LOSS_ON), format_func=LOSS_ON.get, key="completion_only_loss",
        help=SftSpec.model_fields["completion_only_loss"].description)
if kind == "dpo":
    d1, d2 = st.columns(2)
    fields["beta"] = d1.number_input("beta", 0.001, 10.0, 0.1, key="beta")
    fields["loss_type"] = d2.selectbox("loss type", ["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down",
                                                     "sigmoid_norm"], key="loss_type")
l1, l2, l3 = st.columns([1, 1, 2])
if l1.checkbox("LoRA (peft)", key="use_lora", help="Train LoRA adapters (peft) instead of every weight."):
    fields["lora"] = LoraSpec(r=l2.number_input("LoRA rank", 1, 256, 16, key="lora_r"))
accel = l3.text_input("accelerate config file (optional: DDP, FSDP, DeepSpeed)", key="accel_config")
if accel.strip():
    fields["accelerate_config"] = accel.strip()
with st.expander("Advanced: held-out set, schedule, checkpoints, seed"):
    fields.update(advanced_settings(spec_fields))
    held_out = st.text_input("Held-out set (optional)", key="eval_data",
                             placeholder="dataset:NAME, builtin:NAME or a file; empty: the held-out share",
                             help=held_out_help(spec_fields, kind)).strip()
    # offered wherever the set is read from a .txt (a built-in, a registered set or a mix's members too), as the
    # source table's preview says it (data.reads_text_file): by the typed name's suffix, builtin:facts-corpus had
    # no choice and was read a line a row
    held_by = st.selectbox("Rows of the held-out .txt", SAMPLE_BY, key="eval_sample_by",
                           help=DataSource.model_fields["sample_by"].description) \
        if data.reads_text_file(held_out) else "line"
    if held_out:  # in the spec even when unreadable, as a source row is: the preview only holds the launch back
        fields["eval_data"] = DataSource(source=held_out, sample_by=held_by)
        pv, problem, _ = cached_preview(held_out, kind, file_stamp(held_out), held_by)
        if pv is None:
            previews_ok = False
            st.error(f"Held-out set {held_out}: {problem}")
        else:
            st.caption(f"Held-out set: {pv['layout']} layout, {plural(pv['rows'], 'row')}"
                       f"{data.rows_said(held_by, pv)}; the held-out share is not used.")
with st.expander("Speed and memory"):
    p1, p2, p3 = st.columns(3)
    perf = {}
    for col, (key, option_label) in zip([p1, p2, p3, p1, p2], [("compile", "torch.compile"),
                                                               ("liger", "Liger kernels"), ("optimizer", "Optimizer"),
                                                               ("attention", "Attention"),
                                                               ("packing_strategy", "Packing (sft/cpt)")]):
        info = PerfOptions.model_fields[key]
        options = [None, True, False] if key == "liger" else list(get_args(info.annotation))
        perf[key] = col.selectbox(option_label, options, key=f"perf_{key}", help=info.description,
                                  format_func=lambda v, k=key: f"auto ({AUTO[k]})" if v in (None, "auto") else
                                  ("on" if v is True else "off" if v is False else v))
    fields["perf"] = PerfOptions(**perf)
    fields["gradient_checkpointing"] = p3.checkbox("Gradient checkpointing", key="grad_ckpt",
                                                   help=_TrainSpec.model_fields["gradient_checkpointing"].description)
    if kind == "dpo":
        fields["precompute_ref_log_probs"] = p3.selectbox(
            "Precompute the reference", [None, True, False], key="precompute_ref",
            help=DpoSpec.model_fields["precompute_ref_log_probs"].description,
            format_func=lambda v: "auto (on when every row is seen)" if v is None else ("on" if v else "off"))
    fields["memory_check"] = st.checkbox("Refuse a job whose memory plan does not fit", True, key="memory_check",
                                         help=_TrainSpec.model_fields["memory_check"].description)
try:
    default_trackers = default_report_to()
except TrainingError as exc:  # a bad DUS_REPORT_TO: say so, start with none
    st.warning(str(exc))
    default_trackers = []
fields["report_to"] = st.multiselect(
    "Experiment tracking (also log to)", list(TRACKER_PACKAGES), default_trackers, key="report_to",
    help="trl's report_to; off unless chosen. The workspace default comes from DUS_REPORT_TO (e.g. "
         "\"tensorboard\"). TensorBoard and MLflow write into the run folder unless configured elsewhere.")
plan_slot = st.container()
machines_box = st.expander("Several machines (accelerate launch on each, or a Slurm script)")
with machines_box:
    st.caption("Every machine runs the same spec with its own rank against this workspace (a shared filesystem: "
               "same path and database on each). The job launched here is machine 0; the others join it.")
    m1, m2, m3 = st.columns(3)
    machines = m1.number_input("Machines", 1, 1024, 1, key="num_machines",
                               help="accelerate launch --num_machines; Processes above are per machine")
    main_ip = m2.text_input("Machine 0's host name or IP", key="main_process_ip",
                            help="reachable from the other machines")
    main_port = m3.number_input("Port on machine 0", 1, 65535, 29500, key="main_process_port")
    if machines > 1:
        fields.update(num_machines=machines, main_process_ip=main_ip.strip() or None, main_process_port=main_port)
    r1, r2, r3, r4 = st.columns(4)
    fields["ray_workers"] = r1.number_input("Ray Train workers", 1, 1024, 1, key="ray_workers",
                                            help=_TrainSpec.model_fields["ray_workers"].description)
    fields["resources"] = Resources(
        cpus=r2.number_input("CPUs (each)", 0.0, 1024.0, 1.0, key="res_cpus"),
        gpus=r3.number_input("GPUs (each)", 0.0, 64.0, 0.0, key="res_gpus"),
        memory_gb=r4.number_input("Memory GiB (0: none)", 0.0, 100_000.0, 0.0, key="res_memory_gb") or None)

open_jobs = runner.active_jobs()[::-1]  # every queued or running job, newest first, however many finished since
# The job chosen below drops out of the choices when it ends, and Streamlit then silently reads "start now": a run
# meant to wait for a job that failed would start at once. Remembered until the choice is made again, and said.
chosen_after = st.session_state.get("after")
if chosen_after is not None and chosen_after not in [j.id for j in open_jobs]:
    st.session_state["_train_after_ended"] = chosen_after
# what each job makes, so two queued SFT jobs can be told apart (an evaluation makes no model: its models); a dict,
# not a search of the jobs per option
after_labels = {None: "start now", **{j.id: f"job {j.id} · {j.kind} · {j.status}" + (
    f" → {made}" if (made := runner.planned_name(j)) else "") for j in open_jobs}}
after = st.selectbox("Start after job (optional)", list(after_labels), key="after", format_func=after_labels.get,
                     on_change=lambda: st.session_state.pop("_train_after_ended", None))
if after is None and (ended_id := st.session_state.get("_train_after_ended")) is not None:
    ended = runner.get(ended_id)
    st.warning(f"Job {ended_id}, which this run was to start after, has ended"
               + (f" ({ended.status}" + ("" if ended.status == "succeeded" else ": a run waiting for it would not "
                                         "have started") + ")" if ended else " (deleted)")
               + ". *Start after job* now reads *start now*: Launch starts the run at once. Choose again above.")
name = st.text_input("Name of the trained model", value=f"{model}-{kind}", key=f"train_name_{kind}_{model}")

try:
    spec = spec_cls(model=model, data=[DataSource(source=str(r["source"]).strip(), weight=float(r["weight"]),
                                                  sample_by=r["sample_by"]) for r in rows], name=name, **fields)
except ValidationError as exc:
    problems = explain(exc)
    st.error(problems)
    with machines_box:
        show_slurm(None, machines, problems)
    st.stop()
with plan_slot:
    plan_ok, plan_reason = show_memory_plan(spec, model)
b1, b2 = st.columns(2)
taken = registry.get(spec.name) is not None
if taken:
    st.info(f"A model named {spec.name!r} is registered already: choose another name.")
training = job_making(spec.name, KINDS)
if training and not taken:
    st.info(making_said(training, "train", "training", repr(spec.name), "follow it on the Monitor page",
                        "choose another name to start another run"))
if b1.button(f"Launch {label}", type="primary", key="launch", help=plan_reason or None,
             disabled=taken or training is not None or not previews_ok or not rows or not plan_ok or upload_pending) \
        and not training:
    if submit(spec, "train_job", after=after) is not None:
        st.session_state.pop("_train_after_ended", None)  # said once the run is launched: not on the next rerun
        st.rerun()  # drawn before the job was queued, Launch stayed enabled beside the run training its name
b2.download_button("Save spec (YAML)", spec.to_yaml(), file_name=f"{spec.name}.yaml", key="train_save_spec",
                   disabled=upload_pending, help="Rerun it with: python -m backend run SPEC.yaml")
with machines_box:
    if spec.num_machines > 1:
        st.markdown("On each other machine, with the spec saved by **Save spec (YAML)** above:")
        st.code("\n".join(f"python -m backend run {spec.name}.yaml --machine-rank {r}"
                          for r in range(1, spec.num_machines)), language="bash")
    show_slurm(spec, machines)
if "train_job" in st.session_state:
    job_status(st.session_state["train_job"])
    st.page_link("pages/monitor.py", label="Watch it on the Monitor page", icon=":material/monitoring:")
