"""Jobs page: every job with its status, progress and log; cancel what is queued or running."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st
import yaml

from backend import runner
from backend.cluster import ray_jobs, ray_view
from backend.specs import SPECS
from pages.common import MISSING, job_said, job_status, live_log, worker_banner, via_app
from pages.figures import short_name
from storage.models import JOB_STATUSES

via_app(__file__)
st.title("Jobs")
worker_banner()
SHOWN = {100: "the 100 newest", 1000: "the 1,000 newest", 0: "all"}
c_shown, c_status, c_kind = st.columns([1, 1.5, 1.5])
c_shown.selectbox("Jobs shown", list(SHOWN), format_func=SHOWN.get, key="jobs_shown",
                  help="Queued and running jobs are always shown, however old.")
# `jobs list --status failed --kind sft` had no match here: the same filter (runner.list_jobs), empty = every one
c_status.multiselect("Status", JOB_STATUSES, key="jobs_status", placeholder="every status",
                     help="Only jobs of these statuses (`python -m backend jobs list --status …`).")
c_kind.multiselect("Kind", list(SPECS), key="jobs_kind", placeholder="every kind",
                   help="Only jobs of these kinds (`python -m backend jobs list --kind …`).")


def listed_jobs() -> list:
    """The jobs the table and the picker show: the newest `Jobs shown` of the statuses and kinds picked (queued and
    running ones however old), read by the page and by each refresh of the table alike."""
    return runner.list_jobs(st.session_state.get("jobs_shown", 100) or None,
                            kinds=st.session_state.get("jobs_kind") or None,
                            statuses=st.session_state.get("jobs_status") or None)


def filtered() -> bool:
    return bool(st.session_state.get("jobs_kind") or st.session_state.get("jobs_status"))


# a training job's message ends in its ETA (backend/train_entry.py: "step 120/1000 · loss 2.3456 · ETA 12:34"), the
# part the message column cut off; the table shows it first (the status box below shows the message as written)
ETA_LAST = re.compile(r"^(?P<rest>.+) · (?P<eta>ETA \d+:\d\d)$")


def eta_first(said: str) -> str:
    return f"{m['eta']} · {m['rest']}" if (m := ETA_LAST.match(said)) else said


@st.fragment(run_every=2.0)
def job_table(listed: list[int]) -> None:
    jobs = listed_jobs()
    # `listed`: the jobs the Job picker below offers, drawn when the whole page runs: a job queued since (another
    # tab, the CLI, a recipe's next stage) was in this table but not in the picker until something else reran it
    if [j.id for j in jobs] != listed:
        st.rerun(scope="app")
    if not jobs:
        st.info("No job of the statuses and kinds picked: empty the Status and Kind filters to see every job."
                if filtered() else "No jobs yet. Builds and imports started from the other pages appear here.")
        return
    # one read of the queue, the models, the heartbeats and the rows waited on for the whole table (runner's
    # one_pass): a pass read a model row per queued job and worked out the queue's order once per queued job (0.94 s
    # CPU and 453 SQL statements for 249 rows: a server thread 74 % busy with this 2 s refresh)
    with runner.one_pass(jobs) as (active, alive):
        said = {j.id: job_said(j, active, alive) for j in jobs}
        # a queued job whose model or data was deleted since it was queued (a delete --force, a file removed) said
        # "waiting for job 8" and failed only when its turn came: said here, beside the table, while it can be mended
        making = runner.made_by(active)  # once for the page: each queued job's check scanned every active job
        warnings = [w for j in jobs if (w := runner.will_fail(j, active, making))]  # `jobs list` prints the same
    col = st.column_config
    st.dataframe(pd.DataFrame([{
        # cut in the middle: names made from one base differ at the end (…-average-0.5-0.5, …-slerp0.5)
        "id": j.id, "kind": j.kind, "output": short_name(runner.job_output(j), 28),
        # a row "running" whose worker and process are gone: its status doubted where the eye looks first
        "status": "running?" if said[j.id].startswith("running?") else j.status, "progress": j.progress,
        # a failed job's error takes the place of its "failed" (runner.job_message): a separate column was squeezed
        # to a few characters by the long messages, so the reason could not be read
        "message": eta_first(said[j.id]) if j.status == "running" else said[j.id],
        "created": j.created.strftime("%m-%d %H:%M:%S"),  # with the day: jobs outlive it
        # a running job's so far (it was blank until the job ended, the one time a user looks for it)
        "seconds": None if (run := runner.seconds_all(j)) is None else round(run, 1),
    } for j in jobs]), hide_index=True, key="jobs_table", placeholder="",  # not yet run: blank, not "None"
        # fitted to a 1280 px window (820 px of table beside the sidebar; at 1400 px "seconds" fell off a 1280 one),
        # id pinned: long names and messages are cut in their cells (the job list and status box below the table
        # show them whole), so "created" and "seconds" stay in view
        # output: 28 characters of a name cut by short_name are up to ~200 px of text; at 200 px its last letter
        # fell off ("SmolLM2-135M-…uct-dus-m8-cp" for …-cpt: a name that does not exist), as "synth-math" did in
        # a 60 px kind ("synth-ma"); the message, cut anyway, gives them the room
        column_config={"id": col.NumberColumn(pinned=True, width=40), "kind": col.TextColumn(width=80),
                       "output": col.TextColumn(width=212, help="the model or data set the job makes (whole in "
                                                                "the job list below)"),
                       "status": col.TextColumn(width=80),
                       "progress": col.ProgressColumn(min_value=0.0, max_value=1.0, width=70),
                       "message": col.TextColumn(width=170, help="select the job below to read it whole"),
                       # the wall time (runner.seconds_run), not the "work took" of a finished job's message (the
                       # work's own seconds, from its result): "took 2 min 30 s" stood beside 159.9 unexplained
                       "created": col.TextColumn(width=98),
                       # every run: a resumed job's row keeps only its latest run's start and end (the claim
                       # rewrites `started`), and after resume then cancel 44.4 s of hours in all read as its time
                       "seconds": col.NumberColumn("run s", width=70, help="seconds of all the job's runs, from each "
                                                   "start to its end (so far, while it runs), start-up included; a "
                                                   "resumed job's earlier runs are counted (`python -m backend jobs "
                                                   "show ID` gives its latest run alone). A message's \"work took\" "
                                                   "is the work's own time, without start-up")})
    for warning in warnings:
        st.warning(warning)


jobs = listed_jobs()
job_table([j.id for j in jobs])
if jobs:
    # no status in the labels, as on the Monitor page: they are drawn when the whole page reruns, so "running"
    # stayed above the live status box's "failed" (the table above and the box below say it as it changes)
    # first shown: the newest running job, whose live log a visitor most likely came for (the newest job was often
    # one queued behind it: "No log yet")
    # a dict, not a search of `jobs` per option: with "all" shown, 2,000 jobs took 2,000,000 comparisons a rerun
    labels = {j.id: f"{j.id} · {j.kind} · {runner.job_output(j)}" for j in jobs}
    job_id = st.selectbox("Job", list(labels), key="job", format_func=labels.get,
                          index=next((i for i, j in enumerate(jobs) if j.status == "running"), 0))
    job_status(job_id)
    job = runner.get(job_id)
    with st.expander("Spec"):
        st.code(yaml.safe_dump(job.spec, sort_keys=False, allow_unicode=True), language="yaml")
    live_log(job_id, 60)

st.subheader("Cluster")
try:
    view = ray_view.status() if ray_jobs.address() else None
except ray_jobs.ClusterError as exc:  # does not answer, or DUS_RAY_ADDRESS is no dashboard URL
    st.error(str(exc))
else:
    if view is None:
        st.caption(ray_view.where_jobs_run())  # the worker's DUS_RAY_ADDRESS, as its jobs' rows say
    else:
        st.caption(f"Jobs run on the Ray cluster at {view.address}; each node's resources are free / total, as Ray "
                   "last reported them (a few seconds old).")
        st.dataframe(pd.DataFrame(view.node_rows()), hide_index=True, key="cluster_nodes", placeholder=MISSING)
        if view.jobs:
            st.dataframe(pd.DataFrame(view.job_rows()), hide_index=True, key="cluster_jobs", placeholder=MISSING)
        else:
            st.caption("No DUS job runs on the cluster now.")
