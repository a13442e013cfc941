"""What the multi-machine walk (PostgreSQL, a Ray head, two workers) found: a database restart ended the worker and
its jobs; a Ray head that stopped left its jobs "running 62.8 %" with no word; a name whose folder holds another
registered model was queued and failed 13 s later with advice that would break that model; the Jobs page said
jobs run on this machine while they ran on Ray.

    .venv/bin/python -m pytest tests/test_review_s22_resil.py -q
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from backend import runner
from backend.runner import loop
from storage import db
from storage.models import Job

_real_session = db.session


def _row(status: str = "queued", **fields) -> Job:
    with _real_session() as s:
        job = Job(kind="upscale", spec={"kind": "upscale", "base": "tiny", "m": 1}, status=status, **fields)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def _read(job_id: int) -> Job:
    with _real_session() as s:
        return s.get(Job, job_id)


def _set(job_id: int, **fields) -> None:
    with _real_session() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)
        s.commit()


@pytest.fixture
def started(monkeypatch):
    """The worker starts, for the job it claims, a process that looks like a job process (`… jobs exec ID`) and
    runs until killed: what it watches is the point, not what the job does. Killed at the end in any case."""
    procs = _fake_job_process(monkeypatch)
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _fake_job_process(monkeypatch) -> list[subprocess.Popen]:
    started = []

    def start_child(job):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job.id)],
                                start_new_session=True)
        started.append(proc)
        runner._update(job.id, pid=proc.pid)
        return proc

    monkeypatch.setattr(loop, "start_child", start_child)
    return started


def _lost_connection() -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError("SELECT", {}, Exception("server closed the connection unexpectedly"),
                             connection_invalidated=True)


# ---------------------------------------------------------------- 1. a database restart while a job runs

def test_a_lost_connection_while_a_job_runs_leaves_the_worker_watching_it(monkeypatch, started):
    """The walk: `pg_ctl restart -m fast` while a job ran, and the worker ended with a traceback in
    _not_ours_any_longer (its read was not under db.retrying); its job process ended with it. Here that read loses its
    connection once, just as another machine cancels the job: the worker reads again, sees the cancel and kills the
    job's process (it still watches it), then returns."""
    job = _row()
    lost = []

    def session():
        caller = inspect.stack()[1].function
        if caller == "_not_ours_any_longer" and not lost:
            lost.append(caller)
            _set(job.id, status="cancelled", message="cancelled from another machine")
            raise _lost_connection()
        return _real_session()

    monkeypatch.setattr(db, "session", session)
    runner.worker(poll=0.05, once=True)
    assert lost == ["_not_ours_any_longer"]
    assert len(started) == 1 and started[0].returncode == -9  # killed by the worker after the cancel it read
    assert _read(job.id).status == "cancelled"


def test_adopting_the_clusters_runs_rides_out_a_lost_connection(monkeypatch):
    """A worker starting while the server restarts: its read of the Ray jobs it adopts is run again too."""
    job = _row("running", host=runner.host_id(), cluster_ref="dus-x-1-1")
    opened = []

    def session():
        opened.append(1)
        if len(opened) == 1:
            raise _lost_connection()
        return _real_session()

    monkeypatch.setattr(db, "session", session)
    runs = loop._adopt_cluster_runs("http://head:8265")
    assert list(runs) == [job.id] and runs[job.id].submission_id == "dus-x-1-1" and len(opened) == 2


def test_a_database_down_past_the_retry_window_is_said_and_the_worker_goes_on(monkeypatch, caplog, started):
    """The last resort: a server down for longer than db.retrying waits (DatabaseUnavailable) no longer ends the
    worker and its jobs; it says so, tries again, and watches its job on (a cancel read afterwards kills it)."""
    job = _row()
    real_busy, calls = loop._busy, []

    def busy():
        calls.append(1)
        if started and len(calls) == 2:  # its job runs: the database goes away for longer than the retries wait
            _set(job.id, status="cancelled", message="cancelled from another machine")
            raise db.DatabaseUnavailable("PostgreSQL at /tmp:5432/x cannot be reached (still unreachable after 60 s)")
        return real_busy()

    monkeypatch.setattr(loop, "_busy", busy)
    with caplog.at_level(logging.WARNING, logger="backend.runner.loop"):
        runner.worker(poll=0.05, once=True)
    assert started[0].returncode == -9 and _read(job.id).status == "cancelled"
    said = [r.getMessage() for r in caplog.records if r.name == "backend.runner.loop"]
    assert any("database does not answer" in m and "still unreachable after 60 s" in m for m in said), said
    assert any("answers again" in m for m in said), said


def test_a_database_error_that_is_no_outage_still_ends_the_worker(monkeypatch):
    """Only a lost server is ridden out: a bug (a constraint, a bad statement) is not hidden in a loop of warnings."""
    def busy():
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(loop, "_busy", busy)
    with pytest.raises(sa.exc.IntegrityError):
        runner.worker(poll=0.05, once=True)


def test_a_job_whose_end_cannot_be_written_is_reaped_on_the_next_turn(monkeypatch):
    """A job process that ends during an outage: its end ("failed", its exit code) is written when the database
    answers again, not lost with the run forgotten first."""
    job = _row("running", host=runner.host_id())
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)", "jobs", "exec", str(job.id)],
                            start_new_session=True)
    proc.wait()
    _set(job.id, pid=proc.pid)
    running = {job.id: proc}
    real, tries = loop._transition, []

    def transition(*a, **kw):
        tries.append(1)
        if len(tries) == 1:
            raise db.DatabaseUnavailable("PostgreSQL at /tmp:5432/x cannot be reached")
        return real(*a, **kw)

    monkeypatch.setattr(loop, "_transition", transition)
    with pytest.raises(db.DatabaseUnavailable):
        loop._reap_ended(running)
    assert job.id in running and _read(job.id).status == "running"
    loop._reap_ended(running)
    assert running == {}
    row = _read(job.id)
    assert row.status == "failed" and "exited with code 3" in row.error


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_real_postgresql_restart_while_a_job_runs(started, postgres_cluster):
    """The walk's step on a real server: restarted (`pg_ctl -m fast`, as the walk did) three times while the worker
    watches a running job. The worker rides it out, and a cancel written after the restarts still reaches the job.
    (The walk's crash needs the shutdown to land between a pooled connection's ping and its query: rare here, so
    the lost-connection tests above are the ones that show it; this one checks the whole path on a real server.)"""
    job = _row()
    done = []

    def restart_then_cancel():
        try:
            deadline = time.monotonic() + 20
            while not (started and _read(job.id).pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(3):
                postgres_cluster.restart()
                time.sleep(0.3)
            db._engine_for(db.database_url()).dispose()  # this thread's own reads: a fresh connection
            _set(job.id, status="cancelled", message="cancelled from another machine")
        finally:
            done.append(1)

    helper = threading.Thread(target=restart_then_cancel, daemon=True)
    helper.start()
    runner.worker(poll=0.05, once=True)
    helper.join(30)
    assert done and started[0].returncode == -9 and _read(job.id).status == "cancelled"


# ---------------------------------------------------------------- 3. a name whose folder holds another model

@pytest.fixture
def k9a(tiny_llama):
    """The walk: `train sft --model tiny-llama --out ws/models/k9-a` registered `tiny-llama-sft` in folder k9-a."""
    import shutil

    from backend import registry

    registry.import_folder(tiny_llama, "tiny")
    folder = db.models_dir() / "k9-a"
    shutil.copytree(tiny_llama, folder)
    return registry.register(folder, "tiny-llama-sft", "sft", parents=["tiny"])


def test_a_folder_holding_a_registered_model_names_it_and_never_says_move_it(k9a):
    from backend import outputs

    with pytest.raises(FileExistsError) as err:
        outputs.output_dir(None, None, "k9-a")
    said = str(err.value)
    assert "registered sft model 'tiny-llama-sft'" in said and "choose another name" in said
    assert "move" not in said and "no model is registered" not in said
    with pytest.raises(FileExistsError) as err:  # given as an output folder: the same words, about the folder
        outputs.check_folder_free(db.models_dir() / "k9-a", by_name=False)
    assert "'tiny-llama-sft'" in str(err.value) and "choose another output folder" in str(err.value)


@pytest.mark.parametrize("where", ["ray", "another machine"])
def test_queueing_a_job_into_a_registered_models_folder_is_refused_at_once(k9a, monkeypatch, where):
    """`train cpt --name k9-a --queue` was accepted (the folder check ran only for jobs that run on this machine)
    and failed 13 s later in the job. A registered model's folder is a row, not a path only this machine sees: it is
    refused at once wherever the job will run."""
    from backend.runner import queue
    from backend.specs import CptSpec, DataSource

    if where == "ray":
        monkeypatch.setenv("DUS_RAY_ADDRESS", "http://head.invalid:8265")
    else:
        monkeypatch.setattr(queue, "live_hosts", lambda: {"other-machine", runner.host_id()})
    assert not queue._runs_here_only()
    spec = CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")], name="k9-a")
    with pytest.raises(ValueError, match="registered sft model 'tiny-llama-sft'"):
        queue.check_before_queueing(spec)
    with _real_session() as s:
        assert s.exec(sa.select(Job.id)).all() == []


# ---------------------------------------------------------------- 2. the Ray head stops mid-job

class _Head:
    """A Ray Jobs client for a head that can stop: the client made once keeps asking it (requests raises a
    ConnectionError), and a restarted head no longer knows the job (no GCS fault tolerance)."""

    def __init__(self):
        self.state = "up"

    def get_job_info(self, submission_id):
        from types import SimpleNamespace

        from ray.job_submission import JobStatus

        if self.state == "down":
            raise ConnectionError("HTTPConnectionPool(host='head', port=8265): Max retries exceeded (refused)")
        if self.state == "restarted":
            raise RuntimeError(f"Job {submission_id} does not exist")
        return SimpleNamespace(status=JobStatus.RUNNING)


@pytest.fixture
def head(monkeypatch):
    from backend.cluster import ray_checks, ray_jobs

    fake = _Head()
    monkeypatch.setattr(ray_jobs, "client", lambda addr: fake)
    monkeypatch.setattr(ray_checks, "client", lambda addr: fake)  # the same cluster, as ray_checks looks it up
    monkeypatch.setattr(ray_jobs, "_judged", {})
    monkeypatch.setattr(ray_jobs, "_silent", {}, raising=False)
    monkeypatch.setattr(ray_jobs, "JUDGE_EVERY", 0.0)
    return fake


def _look():
    """The worker's look at running rows (recover_orphans, every turn of its loop)."""
    from backend.runner.hosts import recover_orphans

    return recover_orphans()


def test_a_silent_ray_head_is_said_in_the_jobs_message_and_not_judged(head, monkeypatch):
    """The walk stopped the Ray head mid-job: the row read "running 62.8 % · ETA 0:28" for as long as the head was
    down. After SILENT_AFTER s without an answer its message says so; it stays running (the head may come back);
    when the head answers again the job is judged as before."""
    from backend.cluster import ray_jobs

    addr = "http://head:8265"
    job = _row("running", host=ray_jobs.host_for(addr), cluster_ref="dus-x-1-1", progress=0.628,
               message="step 5/8 · loss 1.2345 · ETA 0:28")
    other = _row("running", host=ray_jobs.host_for(addr), cluster_ref="dus-x-2-1", progress=0.1, message="step 1/8")
    assert _look() == [] and _read(job.id).message == "step 5/8 · loss 1.2345 · ETA 0:28"  # up: nothing to say
    head.state = "down"
    assert _look() == [] and _read(job.id).message == "step 5/8 · loss 1.2345 · ETA 0:28"  # a hiccup: nothing yet
    monkeypatch.setattr(ray_jobs, "SILENT_AFTER", 0.0, raising=False)  # as if 30 s had passed
    _look()  # judged nothing: no end written
    for j in (job, other):
        row = _read(j.id)
        assert row.status == "running" and row.finished is None
        assert row.message.startswith(f"Ray cluster at {addr} not answering since "), row.message
        assert row.message.endswith(" UTC: the job's state is unknown; it is marked interrupted when the cluster "
                                    "answers again and no longer runs it, or cancel it to give it up (its run is "
                                    "stopped if the cluster comes back)")
    assert time.strftime("%H:%M", time.gmtime(ray_jobs._silent[addr][1])) in row.message  # when it went silent
    head.state = "up"  # it answers again and runs the job: its message no longer says it is silent
    _look()
    assert _read(job.id).status == "running" and _read(job.id).message == "the Ray cluster answers again and runs " \
                                                                          "the job"
    head.state = "down"
    _look()
    assert _read(job.id).message.startswith("Ray cluster at ")
    head.state = "restarted"  # the walk's head came back without the job: interrupted, resume goes on
    assert sorted(_look()) == sorted([job.id, other.id])
    row = _read(job.id)
    assert row.status == "interrupted" and "no longer knows its submission" in row.message


def test_a_head_that_never_answered_this_worker_is_said_too(monkeypatch):
    """A worker started while the head is down makes no client (ClusterError): its jobs are told all the same."""
    from backend.cluster import ray_checks, ray_jobs

    def unreachable(addr):
        raise ray_jobs.ClusterError(f"The Ray cluster at {addr} (DUS_RAY_ADDRESS) does not answer: refused.")

    monkeypatch.setattr(ray_jobs, "client", unreachable)
    monkeypatch.setattr(ray_checks, "client", unreachable)
    monkeypatch.setattr(ray_jobs, "_judged", {})
    monkeypatch.setattr(ray_jobs, "_silent", {}, raising=False)
    monkeypatch.setattr(ray_jobs, "SILENT_AFTER", 0.0, raising=False)
    job = _row("running", host="ray:http://head:8265", cluster_ref="dus-x-1-1", message="step 5/8 · ETA 0:28")
    _look()
    row = _read(job.id)
    assert row.status == "running" and row.message.startswith("Ray cluster at http://head:8265 not answering since")


# ---------------------------------------------------------------- 5. the Jobs page's Cluster section

def test_the_cluster_section_says_jobs_ran_on_ray_when_their_rows_say_so():
    """The walk's dashboard had no DUS_RAY_ADDRESS (the README sets it only for the worker) and read "Jobs run on
    this machine" while jobs ran on Ray. What it says now is true for both setups, and names the cluster that the
    latest jobs' rows were handed to."""
    from datetime import timedelta

    from backend.cluster import ray_view
    from storage.models import utcnow

    assert "Jobs run on this machine" not in ray_view.HOW
    assert "on its own machine, or on a Ray cluster" in ray_view.HOW
    assert ray_view.where_jobs_run() == ray_view.HOW  # no job ever ran on a cluster: nothing more to say
    _row("succeeded", host="ray:http://old-head:8265", started=utcnow() - timedelta(days=3))  # long ago
    _row("succeeded", host="machine-b", started=utcnow())
    assert ray_view.where_jobs_run() == ray_view.HOW
    _row("running", host="ray:http://head:8265", started=utcnow() - timedelta(days=2))  # a days-long run
    said = ray_view.where_jobs_run()
    assert said.startswith("Jobs run on the Ray cluster at http://head:8265: a worker started with DUS_RAY_ADDRESS")
    assert "set `DUS_RAY_ADDRESS=http://head:8265` for it too" in said and "old-head" not in said


# ---------------------------------------------------------------- 4. a page during a database outage

@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_page_waiting_for_a_restarting_server_is_told_so(postgres_cluster, monkeypatch):
    """During `pg_ctl restart` the pages went blank for as long as the connection waited, with no word. A query that
    finds the server gone now calls the notice its context registered (app.py: "database unreachable, retrying for
    up to 60 s"), once, before it waits; then it gets its answer when the server is back."""
    monkeypatch.setenv("DUS_DB_RETRY_SECONDS", "20")
    db.init_db()
    _row()  # connected once: a later loss is waited out, not refused
    told = []
    postgres_cluster.stop()
    restart = threading.Timer(1.0, postgres_cluster.start)
    restart.start()
    try:
        db.on_unreachable(lambda where, seconds: told.append((where, seconds)))
        with db.session() as s:
            assert len(s.exec(sa.select(Job.id)).all()) == 1
    finally:
        restart.join()  # first: the server must be back whatever failed
        db.on_unreachable(None)
    assert len(told) == 1 and told[0][1] == 20.0 and "postgres" in told[0][0]


# ---------------------------------------------------------------- the review's cases (review s22b)

class _Spun(Exception):
    pass


def _spin_guard(monkeypatch, limit=8):
    turns = []

    def sleep(_s):
        turns.append(1)
        if len(turns) >= limit:
            raise _Spun(f"the worker loop went round {len(turns)} times and never ended")
    monkeypatch.setattr(loop.time, "sleep", sleep)


def test_sqlite_errors_are_no_outage_and_end_the_worker(monkeypatch):
    """SQLite has no server: "no such table" (a table dropped under a running worker), a read-only or full disk are
    no outage; the worker logged "the database does not answer" and went round for ever."""
    real = loop._busy

    def busy():
        with db.engine().begin() as c:
            c.exec_driver_sql("DROP TABLE IF EXISTS job_metrics")
            c.exec_driver_sql("DROP TABLE jobs")
        return real()
    monkeypatch.setattr(loop, "_busy", busy)
    _spin_guard(monkeypatch)
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        runner.worker(poll=0.01, once=False)


def test_a_wrong_password_after_a_rotation_ends_the_worker_with_its_reason(monkeypatch):
    """PostgreSQL's 28P01 (and 3D000, a database dropped) are no outage to wait out: the worker ends, saying why."""
    class Refused(Exception):
        sqlstate = "28P01"

    def busy():
        try:
            raise sa.exc.OperationalError("connect", {}, Refused("password authentication failed for user dus"))
        except sa.exc.OperationalError as exc:
            raise db.DatabaseUnavailable("could not connect to PostgreSQL at h:5432/dus as dus: password "
                                         "authentication failed; check DATABASE_URL") from exc
    monkeypatch.setattr(loop, "_busy", busy)
    _spin_guard(monkeypatch)
    with pytest.raises(db.DatabaseUnavailable, match="password authentication failed"):
        runner.worker(poll=0.01, once=False)
    assert loop._is_outage(sa.exc.OperationalError("x", {}, type("E", (Exception,), {"sqlstate": "57P01"})()))


def test_a_foreground_worker_fails_and_a_stopped_one_ends_during_an_outage(monkeypatch):
    """`recipe run`'s worker (once=True) with the server gone for good looped for ever; SIGTERM (systemctl stop) to
    an idle worker waiting out an outage was ignored until the server came back."""
    def busy():
        raise db.DatabaseUnavailable("could not connect to PostgreSQL at h:5432/x: refused (still unreachable "
                                     "after 60 s); check DATABASE_URL")
    monkeypatch.setattr(loop, "_busy", busy)
    _spin_guard(monkeypatch)
    with pytest.raises(db.DatabaseUnavailable, match="still unreachable"):
        runner.worker(poll=0.01, once=True)
    calls = []

    def busy_then_stop():
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        raise db.DatabaseUnavailable("down")
    monkeypatch.setattr(loop, "_busy", busy_then_stop)
    old = signal.getsignal(signal.SIGTERM)
    try:
        runner.worker(poll=0.01, once=False)  # returns: stopped, nothing running
    finally:
        signal.signal(signal.SIGTERM, old)
    assert len(calls) == 1


def test_a_model_registered_mid_pass_is_not_said_gone(monkeypatch, tiny_llama, tmp_path):
    """one_pass read the models before the queue: a producer that registered its model and ended between the two
    reads was neither active nor registered in the pass, and its consumer was warned it "will fail"."""
    import shutil

    from backend import registry
    from backend.runner import messages
    from backend.specs import DataSource, SftSpec, UpscaleSpec

    registry.import_folder(tiny_llama, name="tiny")
    prod = runner.submit(UpscaleSpec(base="tiny", m=1, name="up-x"))
    cons = runner.submit(SftSpec(model="up-x", data=[DataSource(source="builtin:alpaca-mini")], name="s-x"),
                         after=prod.id)
    assert runner._transition(prod.id, "queued", status="running", started=runner.utcnow())
    folder = tmp_path / "up-x"
    shutil.copytree(tiny_llama, folder)
    real = messages.active_jobs

    def active_jobs(*a, **k):  # the producer finishes as the pass reads the queue: registers, then its row ends
        if runner.get(prod.id).status == "running":
            registry.register(folder, "up-x", "upscaled")
            runner._transition(prod.id, "running", status="succeeded", finished=runner.utcnow(), message="done")
        return real(*a, **k)
    monkeypatch.setattr(messages, "active_jobs", active_jobs)
    jobs = runner.list_jobs(None)
    with runner.one_pass(jobs) as (active, alive):
        warns = [w for j in jobs if (w := runner.will_fail(j, active, runner.made_by(active)))]
    assert runner.get(cons.id).status == "queued" and warns == []


def test_a_registered_models_folder_that_is_gone_is_said_gone(tmp_path):
    """A row left pointing at a folder removed by hand was refused as if the folder "holds" the model."""
    from backend import outputs
    from storage.models import ModelRecord

    gone = tmp_path / "k9-a"
    with db.session() as s:
        s.add(ModelRecord(name="tiny-llama-sft", path=str(gone.resolve()), kind="sft"))
        s.commit()
    with pytest.raises(FileExistsError) as e:
        outputs.check_folder_free(gone, by_name=False)
    assert str(e.value) == (f"{gone} is the folder of the registered sft model 'tiny-llama-sft', though the folder "
                            "is gone: remove that entry first (python -m backend models delete tiny-llama-sft, or "
                            "the Models page), or choose another name. Nothing was changed.")


def test_the_waiting_notice_is_not_recorded_by_a_cached_function(tmp_path):
    """app.py's toast, called by a reconnect inside an st.cache_resource function (Compare's scores), was recorded
    with the cached value: every later hit of the entry failed to replay it (CacheReplayClosureError) and the page
    broke for every user until the entry went (the review's proof). Outside a cached function it still shows."""
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "page.py"
    script.write_text('''
import streamlit as st
from pages.dbnotice import database_wait_notice
from storage import db

db.on_unreachable(database_wait_notice)

@st.cache_resource(max_entries=4, show_spinner=False)
def scores(key):
    if st.session_state.setdefault("outage", True):
        db._tell_unreachable("/tmp:5432/x", 60)  # what do_connect calls as the server restarts
    return [1, 2, 3]

scores("v1")
st.session_state.outage = False
if st.session_state.setdefault("outside", True):
    db._tell_unreachable("/tmp:5432/y", 60)
st.session_state.outside = False
st.write("table drawn")
''')
    at = AppTest.from_file(str(script), default_timeout=30)
    try:
        at.run()
        assert not at.exception and [m.value for m in at.markdown] == ["table drawn"]
        assert [t.value for t in at.toast] == ["The database at /tmp:5432/y does not answer; retrying for up to 60 "
                                               "s."]
        at.run()  # the cache's hit: replayed without a toast recorded inside it
        assert not at.exception and [m.value for m in at.markdown] == ["table drawn"]
        db._tell_unreachable("/tmp:5432/z", 60)  # a thread that runs no page (this one): nothing to show it on
    finally:
        db.on_unreachable(None)  # the process's notice: the page's, not the next test's
