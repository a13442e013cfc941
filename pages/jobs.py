"""Jobs page: every job with its status, progress and log; cancel what is queued or running."""

from __future__ import annotations


import pandas as pd
import streamlit as st
import yaml

from backend import runner
from backend.cluster import ray_jobs, ray_view
from pages.common import job_status, live_log, worker_banner, via_app

via_app(__file__)
st.title("Jobs")
worker_banner()


@st.fragment(run_every=2.0)
def job_table() -> None:
    jobs = runner.list_jobs()
    if not jobs:
        st.info("No jobs yet. Builds and imports started from the other pages appear here.")
        return
    st.dataframe(pd.DataFrame([{
        # a failed job's message is just "failed": its error takes the place (a separate column was squeezed to a
        # few characters by the long messages, so the reason could not be read)
        "id": j.id, "kind": j.kind, "status": j.status, "progress": j.progress,
        "message": f"failed: {j.error}" if j.status == "failed" and j.error else j.message,
        "created": j.created.strftime("%m-%d %H:%M:%S"),  # with the day: jobs outlive it
        "seconds": round((j.finished - j.started).total_seconds(), 1) if j.finished and j.started else None,
    } for j in jobs]), hide_index=True, key="jobs_table",
        column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0)})


job_table()
jobs = runner.list_jobs()
if jobs:
    job_id = st.selectbox("Job", [j.id for j in jobs], key="job",
                          format_func=lambda i: next(f"{j.id} · {j.kind} · {j.status}" for j in jobs if j.id == i))
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
        st.caption(ray_view.HOW)
    else:
        st.caption(f"Jobs run on the Ray cluster at {view.address}; each node's resources are free / total, as Ray "
                   "last reported them (a few seconds old).")
        st.dataframe(pd.DataFrame(view.node_rows()), hide_index=True, key="cluster_nodes")
        if view.jobs:
            st.dataframe(pd.DataFrame(view.job_rows()), hide_index=True, key="cluster_jobs")
        else:
            st.caption("No DUS job runs on the cluster now.")
