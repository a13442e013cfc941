"""Monitor page: live progress with ETA, curves of every logged metric (several jobs on one chart), the recovery
view for an up-scaled model in continued pretraining, logs, cancel and resume."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backend import runner
from backend.curves import Curves
from backend.specs import TRAIN_KINDS
from pages.common import job_status, live_log, worker_banner, via_app
from pages.figures import held_out_words, metric_figure, recovery_figure

PREFERRED = ["loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "rewards/chosen", "rewards/rejected",
             "rewards/margins", "rewards/accuracies", "mean_token_accuracy"]

via_app(__file__)
st.title("Monitor")
worker_banner()
jobs = runner.list_jobs(500, kinds=TRAIN_KINDS)  # the 500 newest training jobs (and any still running), not
# the training jobs among the 500 newest of every kind


@st.fragment(run_every=2.0)
def watch_jobs(listed: list[int]) -> None:
    """Rerun the page when a training job is queued (or removed) elsewhere: the Jobs choice below is drawn when the
    whole page runs, so a job launched from another tab, the CLI or a recipe was not offered until a click."""
    if [j.id for j in runner.list_jobs(500, kinds=TRAIN_KINDS)] != listed:
        st.rerun(scope="app")


watch_jobs([j.id for j in jobs])
if not jobs:
    st.info("No training jobs yet: launch one on the Train page.")
    st.stop()

# no status in the labels (they are drawn when the whole page reruns; the status box below is live)
# the model each job makes, as on the Jobs page: a job queued without a name (CLI, saved spec) showed the model it
# trains from, so "Recovery of 2 · cpt · M-dus-m8" named the up-scaled input, not the M-dus-m8-cpt it made
labels = {j.id: f"{j.id} · {j.kind} · {runner.planned_name(j) or j.spec.get('model')}" for j in jobs}
specs = {j.id: j.spec for j in jobs}
# first shown: the newest running job (the newest job was often one queued behind it, with no curve and no log)
first = next((j for j in jobs if j.status == "running"), jobs[0])
chosen = st.multiselect("Jobs", list(labels), default=[first.id], format_func=labels.get, key="monitor_jobs")
for job_id in chosen:
    job_status(job_id)


def charts(job_ids: list[int], runs: tuple) -> None:
    """`runs`: the chosen jobs' states as the page was drawn; a change (a resume, which may log again the steps
    after its checkpoint) reads every row again."""
    # the rows read once, then only those logged since (a long run's 200,000 rows took 3.4 s of CPU to read and 1.6 s
    # to draw on every 2-second tick); the figures made again only when rows were added
    held = st.session_state.get("monitor_curves")
    if held is None or held[0] != runs:
        held = st.session_state["monitor_curves"] = (runs, Curves(job_ids))
        st.session_state["monitor_figures"] = {}
    curves = held[1]
    curves.refresh()
    if not curves.mark[1]:
        st.caption("No metrics logged yet.")
        return
    order = [labels.get(j, str(j)) for j in job_ids]  # a job's colour in every chart: its place in the selection
    drawn = st.session_state["monitor_figures"]

    def figure(key: str, make):
        """The figure drawn for `key` at these rows and labels, or a new one."""
        stamp = (curves.mark, tuple(order))
        if key not in drawn or drawn[key][0] != stamp:
            drawn[key] = (stamp, make())
        return drawn[key][1]

    names = curves.names()
    # Recovery view: eval loss of the up-scaled model vs its base's (reference_eval_loss, logged at step 0)
    for job_id in job_ids:
        if ref := curves.series("reference_eval_loss").get(job_id):
            def recovery(job_id=job_id, reference=float(ref[1][-1])):
                steps, values = curves.series("eval_loss").get(job_id, (np.zeros(0), np.zeros(0)))
                # named by its job: with several jobs chosen, each has a recovery chart of its own
                fig = recovery_figure(list(zip(steps.tolist(), values.tolist())), reference, labels[job_id],
                                      "base model", order)
                fig.update_layout(title_subtitle_text=held_out_words(specs[job_id])[0])
                return fig
            st.plotly_chart(figure(f"recovery_{job_id}", recovery), key=f"recovery_{job_id}")
            st.caption(held_out_words(specs[job_id])[1])
    # every common metric that has values is drawn (new ones appear as the run logs them); others on request
    shown = [n for n in PREFERRED if n in names]
    others = sorted(n for n in names if n not in PREFERRED and n != "reference_eval_loss")
    shown += st.multiselect("More metrics", others, key="more_metrics")
    cols = st.columns(2)
    for i, name in enumerate(shown):
        def lines(name=name):
            return metric_figure({labels.get(j, str(j)): pts for j, pts in curves.series(name).items()}, name, order)
        cols[i % 2].plotly_chart(figure(f"metric_{name}", lines), key=f"metric_{name}")


if not chosen:
    st.caption("Choose one or more jobs above to see their curves and logs.")
else:
    # refreshed every 2 s while a chosen job may still log rows; a job that ends reruns the page (job_status)
    runs = tuple((j.id, j.status, j.started) for j in jobs if j.id in chosen)
    live = any(status in ("queued", "running") for _, status, _ in runs)
    st.fragment(charts, run_every=2.0 if live else None)(chosen, (tuple(chosen), runs))
    # with several jobs chosen, only the first one's log was offered: a failed job added second (the one whose log
    # says why) could not be read here without taking the others out of the selection
    log_of = st.selectbox("Log of", chosen, format_func=labels.get, key="monitor_log_of") if len(chosen) > 1 \
        else chosen[0]
    with st.expander(f"Log of job {log_of} (last 40 lines)"):
        live_log(log_of, 40)
