"""The job runner: pages write a queued row; a worker process runs each job in a child process of its own.

    python -m backend worker          # the dashboard's run command starts one for you

A job never runs in the Streamlit script thread (a rerun would start it twice or kill it). The child process runs
`run_<kind>(spec, out_dir, progress)`, the same function the CLI calls in the foreground, and writes progress and
the final status into its row. The worker only launches children, notices ones that died, and marks jobs whose
worker vanished as interrupted when it starts again.

Everyone imports the package (`from backend import runner`) and calls `runner.submit`, `runner.worker`, … The work
lives in its modules, each importing only those above it:

    rows.py      statuses; read a job's row, write fields, conditional transitions
    registered.py  the model name a job registers; what a stopped job's run registered
    resume_step.py  what a resume of a job does: the Jobs page's button, `jobs resume`, the step an ended row names
    hosts.py     heartbeats, machines alive, whether a job's process still runs, recover_orphans
    queue.py     submit and its refusals (check_before_queueing); reads of the queue
    states.py    dependencies (after, needs, waits), resume, cancel
    messages.py  a job's message as the pages say it, log_tail
    child.py     execute: one job in its own process
    loop.py      the worker loop: claim, start, watch

A test that replaces a function the runner calls itself patches the module that calls it (`runner.loop.start_child`,
`runner.child.work_function`): a patch on the package reaches only the callers that go through the package.
"""

from backend.runner.rows import FINISHED, STOPPED, UNSUCCESSFUL, _transition, _update, count_jobs, get, record_run_dir
from backend.runner.hosts import (ALIVE_WITHIN, BEAT_EVERY, BEAT_STALE, _beat_ages, _clear_stopped, _cmdline,
                                  _local_run_alive, _runs_job, beat, check_host_id, check_shared_workspace, claim_host,
                                  dead_hosts, heartbeat_path, host_id, live_hosts, recover_orphans, worker_alive)
from backend.runner.registered import MAKES_MODELS, output_name
from backend.runner.queue import (WAITING, active_jobs, check_before_queueing, check_not_making, inputs_gone,
                                  job_output, makers, made_by, jobs_using, list_jobs, metric_names, metrics,
                                  planned_name, submit)
from backend.runner.states import (_ended_dependency, _left_out, _waits_on_a_job, cancel, never_runs,
                                   requeue_cancelled, resume, resume_blocked, scores_nothing, with_dependencies)
from backend.runner.resume_step import _what_resume_does, resume_point, what_resume_does
from backend.runner.messages import ago, job_message, log_tail, one_pass, seconds_all, seconds_run, will_fail
from backend.runner.child import IN_WORDS, execute, shown_fields, work_function
from backend.runner.loop import _busy, _claim_next, _interrupt_running, job_niceness, start_child, worker
from storage.models import utcnow  # the clock job rows are written by (tests read runner.utcnow)
