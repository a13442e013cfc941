"""Small helpers the pages share: the worker banner, job progress, model choices, cached chat models."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import streamlit as st

from backend import evaldevice, registry, runner
from backend.chat import load
from backend.names import human_bytes
from backend.words import plural
from storage import db

ROOT = Path(__file__).resolve().parent.parent


def via_app(page_file: str) -> None:
    """Call first on every page: run through app.py's navigation even when the first visit is a page URL."""
    if not st.session_state.get("_via_app"):
        st.session_state["_intended_page"] = Path(page_file).name
        st.switch_page("app.py")


def human(n: float) -> str:
    """12.3K, 1.0M: the unit is chosen after rounding (999,999 read "1,000.0K")."""
    for unit in ("", "K", "M", "B", "T"):
        if abs(round(n, 1 if unit else 0)) < 1000:
            return f"{n:,.1f}{unit}" if unit else f"{n:,.0f}"
        n /= 1000
    return f"{n:.1f}P"


def span(seconds: float) -> str:
    """A duration as people say it: 3.2 s, 48 s, 3 min 20 s, 2 h 5 min (a job's "seconds 200.37" read as a
    measurement, not as a time)."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if not minutes:
        return f"{s} s"
    if minutes < 60:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# A finished job's result as its "done:" message says it (backend/runner child.py), in the units the pages use
# elsewhere: the message is stored once, for `jobs list` as well, with the raw numbers ("parameters 102432, seconds
# 200.37"); the pages say them again from the result (102.4K parameters, work took 3 min 20 s). The CLI's JSON stays
# raw.
# "seconds" is the work's own time (the job's function, from its result): the Jobs table's "run s" is the wall time
# from start to end, start-up included. A training job's peak memory is CUDA memory on a GPU but the process's peak
# RAM on a CPU (backend/train_job/metrics.py peak_memory_gib), and its result does not say which: "peak GPU memory
# 589 MiB" was said of a CPU job. A result that names its device ("device": "cpu"/"cuda") is said precisely.
RESULT_WORDS = {"seconds": "work took {}", "train_seconds": "training took {}", "parameters": "{} parameters",
                "tokens_seen": "{} tokens seen", "tokens": "{} tokens",
                "peak_memory_gib": "peak memory {} (GPU or CPU RAM)"}
PEAK_ON = {"cpu": "peak RAM {}", "cuda": "peak GPU memory {}"}
COUNTED = {"global_step": "step", "files": "file"}  # said as a count of them (words.plural), before RESULT_WORDS


def _value(key: str, v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):  # a name, or a size said already (hubpush's "size")
        return str(v)
    if key.endswith("seconds"):
        return span(v)
    if key.endswith("_gib"):
        return human_bytes(v * 2 ** 30)
    if key.endswith("bytes"):
        return human_bytes(v)
    if key in ("parameters", "tokens_seen", "tokens"):
        return human(v)
    return f"{v:,}" if isinstance(v, int) else str(v)


def result_words(result: dict) -> str:
    """The summary of a job's result as the runner writes it (runner.shown_fields), each number in words."""
    device = result.get("device")  # a training job's "cpu"/"cuda"; an evaluation's is a dict of model → device
    peak = PEAK_ON.get(device) if isinstance(device, str) else None
    words = {**RESULT_WORDS, **({"peak_memory_gib": peak} if peak else {})}
    return ", ".join(
        runner.IN_WORDS[k].format(v) if k in runner.IN_WORDS
        else plural(v, COUNTED[k]) if k in COUNTED  # "1 steps" was said of a 1-step run
        else words.get(k, k.replace("_", " ") + " {}").format(_value(k, v))
        for k, v in runner.shown_fields(result) if not (k == "device" and peak))


def job_said(job, active: list | None = None, alive: bool | None = None) -> str:
    """runner.job_message, with a finished job's result said in words (result_words) where its message lists it."""
    said = runner.job_message(job, active, alive)
    if not job.result or not isinstance(job.result, dict):
        return said
    if job.status == "succeeded" and said.startswith("done: "):
        return "done: " + result_words(job.result)
    head, sep, _ = said.partition("; the work had finished anyway: ")  # cancelled while it finished
    return head + sep + result_words(job.result) if sep else said


def job_making(name: str, kinds) -> object | None:
    """A queued or running job of one of `kinds` that will register a model called `name`: a second click while it
    runs queued a second job for the same name, which then failed. A job whose spec gives no name counts under the
    name it derives (`train cpt --model M --queue` makes M-cpt: the page offered to launch a second M-cpt)."""
    return next((j for j in runner.active_jobs() if j.kind in kinds and runner.planned_name(j) == name), None)


# The ids of the jobs this browser session queued (submit): a page tells the job it just launched from one started
# elsewhere (another tab, the command line)
LAUNCHED = "_launched_jobs"


def submit(spec, key: str, **kw) -> int | None:
    """Queue a spec and remember its job under `key`; a refusal (a Ray cluster that cannot run it, that does not
    answer, a node that cannot see the model) is shown on the page, and nothing is queued."""
    try:
        job_id = runner.submit(spec, **kw).id
    except ValueError as exc:
        st.error(f"Not queued: {exc}")
        return None
    st.session_state[key] = job_id
    st.session_state.setdefault(LAUNCHED, []).append(job_id)  # every job this session queued, for making_said
    return job_id


def making_said(job, verb: str, ing: str, what: str, watch: str, instead: str) -> str:
    """Why the page holds back a second launch beside `job`, a queued or running job making `what`. Right after the
    user's own click the page said "Job 1 is building 'x' already", read as a second click, and "is training" of a
    job still queued: the job launched from this session is said as launched ("Job 4 queued to train 'x': `watch`");
    "already" is kept for a job started elsewhere. `verb`/`ing`: "train"/"training"; `instead`: how to start
    another ("choose another name to start another run")."""
    queued = job.status == "queued"
    if job.id in st.session_state.get(LAUNCHED, ()):
        return (f"Job {job.id} queued to {verb} {what}: " if queued else
                f"Job {job.id} started {ing} {what}: ") + f"{watch}; {instead}."
    return (f"Job {job.id} is queued already to {verb} {what}: " if queued else
            f"Job {job.id} is {ing} {what} already: ") + f"{instead}."


# What a table shows for a missing value (a score not evaluated, a stage with no job): st.dataframe's own is the word
# "None", read as a value (placeholder=MISSING on each table that can hold one)
MISSING = "—"

# Workers started from the app's "Start worker" button: one server process serves every session, so each sees them.
# Each carries its start time (time.monotonic()) as `started_at`, which the banner reads (a dict beside the list
# kept one entry per worker ever started)
_started: list[subprocess.Popen] = []
_starting = threading.Lock()
# A healthy worker beats within seconds of its start (imports, database, orphan recovery, then every
# runner.BEAT_EVERY); one alive this long without a beat (ALIVE_WITHIN) is stuck — in an import, on a database it
# cannot reach — and the banner says so, with its log and a restart, instead of "starting" for as long as it hangs.
UP_WITHIN = 60.0


def _start_worker(log_path: Path) -> None:
    with open(log_path, "ab") as log:  # the child has its own copy of the file
        proc = subprocess.Popen([sys.executable, "-m", "backend", "worker"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.started_at = time.monotonic()
    _started.append(proc)


def _stop_worker(proc: subprocess.Popen) -> None:
    """The worker alone, asked first (SIGTERM: it stops between jobs), then killed: a worker hung in an import or
    a database call never reads its stop flag. Its job processes end with it (runner's _watch_parent)."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _last_beat(pid: int) -> float | None:
    """When worker `pid` last wrote its heartbeat file (runner.worker, every poll), or None if it never did."""
    try:
        info = json.loads(runner.heartbeat_path().read_text())
    except (OSError, ValueError):
        return None
    return info.get("time") if isinstance(info, dict) and info.get("pid") == pid else None


def _log_tail(col, log_path: Path, said: str) -> None:
    tail = "\n".join(runner.log_tail(log_path, 8)) if log_path.exists() else ""
    col.caption(f"{said} Its log `{log_path}` {'ends:' if tail else 'is empty.'}".lstrip())
    if tail:
        col.code(tail, language="text")


def worker_banner() -> None:
    """Jobs run in the worker process; say so plainly when none is running, and offer to start one. A worker
    started here beats only once it is up (imports, database, orphan recovery: seconds): until then the banner says
    it is starting instead of offering the button again, which started a second worker (two jobs at once on one
    GPU); one that ended without beating is said with its exit code and the end of its log; one alive past
    UP_WITHIN without beating is said stuck, with its log and a button that stops it and starts another (it said
    "starting" for as long as it hung)."""
    if runner.worker_alive():
        return
    log_path = db.workspace() / "logs" / "worker.log"
    last = _started[-1] if _started else None
    if last is not None and last.poll() is None:
        waited = time.monotonic() - last.started_at
        if waited < UP_WITHIN:
            st.info(f"The job worker is starting (process {last.pid}); queued jobs start once it is up.")
            return
        col1, col2 = st.columns([4, 1])
        beat = _last_beat(last.pid)  # one that came up and hung since (a database gone) beat before
        col1.warning(f"The job worker started from here (process {last.pid}) "
                     + (f"stopped answering: its last heartbeat was {runner.ago(time.time() - beat)}"
                        if beat is not None else f"has not come up: it has run {span(waited)} without a heartbeat")
                     + " (a healthy one beats every few seconds), so queued jobs wait. Stop it and start another, or "
                       "read its log for why (a database it cannot reach, an import that hangs).")
        _log_tail(col1, log_path, "")
        if col2.button("Stop it and start again", key="restart_worker"):
            with _starting:  # two sessions clicking at once restart it once
                if _started[-1] is last:
                    _stop_worker(last)
                    _start_worker(log_path)
            st.rerun()  # the banner says it is starting
        return
    col1, col2 = st.columns([4, 1])
    col1.warning("No job worker is running, so queued jobs wait. The README's run command starts one; "
                 "or run `python -m backend worker` in a terminal.")
    if last is not None:  # started from here and ended since (at its start, or later): why is in its log
        _log_tail(col1, log_path, f"The worker started from here ended (exit code {last.returncode}).")
    if col2.button("Start worker", key="start_worker"):
        with _starting:  # two sessions clicking at once start one worker
            if not _started or _started[-1].poll() is not None:
                _start_worker(log_path)
        st.rerun()  # the banner says it is starting


# How often a job's status box asks for its row. An ended job is still asked, seldom: it can be queued again from
# elsewhere (`jobs resume` in a terminal, another tab, a recipe re-queueing the jobs that waited for it), and the
# box then follows it. Asked every second as the running one was, an ended job redrew its box (and, failed, looked
# for its checkpoints) every second for as long as the page stayed open.
LIVE_EVERY = 1.0
ENDED_EVERY = 5.0


def _active(job) -> bool:
    return job is not None and job.status in ("queued", "running")


def job_status(job_id: int) -> None:
    """Progress of one job, refreshed every second while it runs (a fragment, so the page does not rerun). The page
    runs again when the job's state changes from the one it was drawn with: it ended (the page shows what it made),
    it was queued again elsewhere (the page shows it running), or it is gone. A session flag that said "ended once"
    stayed set when the job was resumed from the command line, and the page did not rerun when it ended again."""
    drawn = runner.get(job_id)
    # a job that no longer exists is not asked again: nothing brings it back
    every = LIVE_EVERY if _active(drawn) else ENDED_EVERY if drawn is not None else None

    @st.fragment(run_every=every)
    def _show() -> None:
        job = runner.get(job_id)
        if (job is None) != (drawn is None) or _active(job) != _active(drawn):
            st.rerun(scope="app")  # once: the page is drawn again with this state
        if job is None:
            st.error(f"Job {job_id} no longer exists.")
            return
        said = job_said(job)  # "running? — …", "queued: the worker is busy…" say their status already
        label = f"Job {job.id} ({job.kind}): " + (said if said.startswith(job.status) else f"{job.status} — {said}")
        if job.status in ("queued", "running"):
            if said.startswith("running?"):  # runner.job_message: no worker, no process: nothing moves it on
                st.warning(label)
                st.caption(stale_progress(job))
            else:
                st.progress(min(max(job.progress, 0.0), 1.0), text=label)
            if warning := runner.will_fail(job):  # its model or data deleted since it was queued
                st.warning(warning)
            if st.button("Cancel", key=f"cancel_{job.id}"):
                runner.cancel(job.id)
                st.rerun()
        elif job.status == "succeeded":
            st.success(label)
        else:
            if job.status == "failed":
                st.error(f"Job {job.id} failed: {job.error}")
            else:
                st.warning(label)
            # what resuming will do, by runner.resume's rules (the CLI's `jobs resume` prints the same sentence): a
            # job whose own run registered its model before its row was stopped is marked succeeded, nothing runs
            # again (the button read "Run again"); a run stopped before its first checkpoint starts over. Every kind
            # resumes (runner.resume): the button was offered to training jobs alone once.
            action = runner.messages.resume_action(job)
            # a job cancelled unstarted because one it needs ended without succeeding: resumed, the worker cancelled
            # it again at once and the button did nothing visible; the job to resume instead is offered
            if not action.marks_done and (blocked := runner.resume_blocked(job)):
                st.caption(blocked[0])
                if blocked[1] is not None and st.button(f"Resume job {blocked[1]}", key=f"resume_{job.id}"):
                    try:
                        runner.resume(blocked[1])
                    except ValueError as exc:
                        st.error(str(exc))
                    else:
                        st.rerun(scope="app")
                return
            again, what = action.label, action.says[0].upper() + action.says[1:] + "."
            if st.button(again, key=f"resume_{job.id}", help=what):
                try:  # e.g. still stopping on the machine that ran it
                    runner.resume(job.id)
                except ValueError as exc:
                    st.error(str(exc))
                else:
                    st.rerun(scope="app")

    _show()


def stale_progress(job) -> str:
    """The last progress of a job whose worker and process are gone, said as a past state: drawn as a progress bar,
    it looked live while nothing advanced it. When: its log's last write (the job prints every progress line there,
    backend/runner/child.py execute; a log on another machine is not seen here, and then no time is said)."""
    said = f"Last progress {job.progress:.0%}" + (f" ({job.message})" if job.message else "")
    log = Path(job.log_path) if job.log_path else None
    if log and log.exists():
        said += f"; its log was last written {runner.ago(time.time() - log.stat().st_mtime)}"
    return said + ": not live, nothing advances it until the job is resumed."


def live_log(job_id: int, lines: int) -> None:
    """The last `lines` lines of a job's log, redrawn every 2 s while it is queued or running (drawn once, a log
    stood still at the lines it had when the page opened); job_status reruns the page when the job ends, which
    redraws it without the timer."""
    job = runner.get(job_id)
    live = job is not None and job.status in ("queued", "running")

    def draw() -> None:
        current = runner.get(job_id)
        log = Path(current.log_path) if current and current.log_path else None
        if log and log.exists():
            st.caption(f"Log: `{log}` (last {lines} lines)")
            # plain text: as Python, words such as "in", "for" and "not" in log lines were coloured as keywords
            st.code("\n".join(runner.log_tail(log, lines)) or "(empty)", language="text")
        elif current is not None and current.status in runner.FINISHED and current.started is None:
            # "yet" promised a log that never comes
            st.caption(f"No log: the job ended ({current.status}) before a worker started it.")
        elif current is not None and current.status in runner.FINISHED:  # it ran: its log is elsewhere, or gone
            elsewhere = current.host and current.host != runner.host_id() and not current.host.startswith("ray:")
            st.caption(f"No log here: `{log}` is not on this machine" + (
                f" (the job ran on {current.host})" if elsewhere else " (removed since)") + ".")
        elif current is None:  # "yet" promised a log for a job that is gone
            st.caption(f"No log: job {job_id} no longer exists.")
        else:
            st.caption("No log yet: the worker writes one when it starts the job.")

    st.fragment(run_every=2.0 if live else None)(draw)()


def model_names() -> list[str]:
    return [r.name for r in registry.list_models()]


def drop_deleted(key: str, names: list[str]) -> str | None:
    """Before the multiselect keyed `key` is drawn: the models it held that were deleted since this page last ran
    (in another tab, from the command line) taken out of its choice, and said — None when none were. Streamlit
    dropped them without a word, and the click that reran the page then evaluated or merged the models left."""
    chosen = st.session_state.get(key) or []
    if not (gone := [m for m in chosen if m not in names]):
        return None
    st.session_state[key] = [m for m in chosen if m in names]
    one = len(gone) == 1
    return (f"{', '.join(gone)} {'was' if one else 'were'} deleted since you chose {'it' if one else 'them'} (in "
            f"another tab or from the command line), and {'is' if one else 'are'} left out")


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def cached_model(path: str, name: str):
    # Shared by every session (st.cache_resource): generation on it is serialised by LoadedModel.lock.
    return load(path, name)


def _fitted(path: str, name: str, beside: tuple[str, ...] = ()):
    """cached_model; when the GPU has no room for the model beside those the cache holds (evaldevice.plan refuses
    it), once more after letting them go: nothing else frees them (the cache evicts only past 4 models), so a
    refused model stayed refused until the app was restarted. A model another session is answering with stays in
    memory until its reply ends; the error then says what does not fit, with the numbers. `beside`: the models the
    caller holds loaded (an arena round's earlier ones), which letting the cache go cannot free: the error names
    them rather than say that every model was unloaded."""
    try:
        return cached_model(path, name)
    except evaldevice.DeviceError:
        pass  # retried outside the handler: the exception's traceback is let go with it
    cached_model.clear()
    evaldevice.release_memory()
    try:
        return cached_model(path, name)
    except evaldevice.DeviceError as exc:
        if beside:
            raise evaldevice.DeviceError(
                f"{name} does not fit on the GPU beside {', '.join(beside)}, loaded first for the same round, even "
                f"with every other model the pages had loaded unloaded: a round's models answer at once, so they "
                f"must fit together; choose fewer or smaller models: {exc}") from None
        # a model in use stays in memory: one still answering in another session
        raise evaldevice.DeviceError(f"{name} does not fit on the GPU even with the models the pages had loaded "
                                     f"unloaded (those still answering stay until they are done): {exc}") from None


def current_model(path: str, name: str, beside: tuple[str, ...] = ()):
    """cached_model, loaded again when its folder changed since (LoadedModel.stale): a model deleted and imported
    again under its name was answered from the cache by the deleted one's weights (Models and Arena pages). On
    CUDA, models the cache holds are let go when the next does not fit beside them (_fitted; `beside`: the models
    the caller holds, named in the error)."""
    lm = _fitted(path, name, beside)
    if lm.stale():
        # let go before the reload: held here, the stale copy took the room its successor needs on the GPU
        lm = None
        cached_model.clear(path, name)
        evaldevice.release_memory()
        lm = _fitted(path, name, beside)
    return lm
