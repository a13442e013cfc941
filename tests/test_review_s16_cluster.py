"""Review of the multi-machine and account code (backend/cluster, backend/auth.py): each finding's test fails on the
code before its fix; the few others guard what a fix keeps. No Ray cluster is started: Ray's Jobs API is a fake
answering as Ray 2.60's does."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import unicodedata
from types import SimpleNamespace

import pytest

from backend import auth, runner
from backend.cluster import ray_checks, ray_jobs, ray_train
from backend.cluster.slurm import slurm_script
from backend.specs import CptSpec, DataSource
from storage import db
from storage.models import Job, utcnow

ADDR = "http://head:8265"


@pytest.fixture(autouse=True)
def _no_login_settings(monkeypatch):
    for var in (auth.PASSWORD_ENV, auth.HASH_ENV, auth.FORCE_ENV):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- Slurm script

def test_a_model_with_a_newline_stays_inside_the_slurm_scripts_comment(tmp_path):
    """The model is free text (a folder may be named anything); its newline ended the comment line and the rest ran
    as a command, before the #SBATCH lines (which sbatch then stopped reading)."""
    marker = tmp_path / "ran"
    spec = CptSpec(model=f"M\ntouch {marker} #", data=[DataSource(source="builtin:facts-corpus")], name="c")
    script = slurm_script(spec, nodes=1, workspace=tmp_path / "ws")
    lines = script.splitlines()
    last_directive = max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    assert all(ln.startswith("#") for ln in lines[:last_directive + 1])  # sbatch reads every directive
    assert lines[1] == f"# DUS Studio: cpt of {spec.model!r} as c on 1 node(s) x 1 process(es),"
    subprocess.run(["bash", "-c", "\n".join(lines[:last_directive + 1])], check=True)  # the header runs nothing
    assert not marker.exists()


def test_a_printable_model_is_written_as_it_is(tmp_path):
    spec = CptSpec(model="/models/my model é", data=[DataSource(source="builtin:facts-corpus")], name="c")
    assert slurm_script(spec, nodes=1, workspace=tmp_path).splitlines()[1] == \
        "# DUS Studio: cpt of /models/my model é as c on 1 node(s) x 1 process(es),"


# ---------------------------------------------------------------- Ray: what a job's environment carries

class _Jobs:
    """Ray's Jobs API: submissions it holds, with their JobDetails-like answers; a taken id is refused."""

    def __init__(self, infos: dict | None = None):
        self.infos, self.submitted = dict(infos or {}), []

    def submit_job(self, *, submission_id, **kw):
        if submission_id in self.infos:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists. Please use a different id.")
        self.submitted.append((submission_id, kw))
        self.infos[submission_id] = _info("PENDING")

    def get_job_info(self, submission_id):
        if submission_id not in self.infos:
            raise RuntimeError(f"Job {submission_id} does not exist")
        return self.infos[submission_id]

    def stop_job(self, submission_id):
        pass


def _info(status: str, error_type: str | None = None, message: str = "", exit_code: int | None = None):
    from ray.job_submission import JobStatus

    return SimpleNamespace(status=JobStatus(status), error_type=error_type, message=message, driver_node_id=None,
                           driver_exit_code=exit_code)


def _row(status: str = "running", **fields) -> Job:
    with db.session() as s:
        job = Job(kind="sft", spec={"kind": "upscale", "base": "tiny", "m": 1}, status=status, **fields)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def test_a_ray_job_is_not_sent_the_dashboards_password(monkeypatch):
    """Ray shows a job's runtime_env to anyone who reaches its dashboard (`ray job list`, /api/jobs/)."""
    monkeypatch.setenv(auth.PASSWORD_ENV, "plain secret")
    monkeypatch.setenv(auth.HASH_ENV, "scrypt$16384$8$1$c2FsdHNhbHQ=$ZGlnZXN0ZGlnZXN0ZGlnZXN0")
    monkeypatch.setenv("HF_TOKEN", "hf_job_needs_this")
    jobs = _Jobs()
    monkeypatch.setattr(ray_jobs, "client", lambda addr: jobs)
    monkeypatch.setattr(ray_checks, "client", lambda addr: jobs)  # missing_paths looks it up there
    ray_jobs.submit(_row(), ADDR)
    env = jobs.submitted[0][1]["runtime_env"]["env_vars"]
    assert auth.PASSWORD_ENV not in env and auth.HASH_ENV not in env
    assert env["HF_TOKEN"] == "hf_job_needs_this" and env["DUS_WORKSPACE"] == str(db.workspace())


def test_ray_train_workers_are_not_sent_the_dashboards_password():
    """Their env rides in train_loop_config, which Ray Train's run state records as it is."""
    env = {"DUS_PASSWORD": "plain", "DUS_PASSWORD_HASH": "scrypt$x", "DUS_JOB_ID": "4",
           "DATABASE_URL": "sqlite:///x.db", "HF_HOME": "/hf", "PATH": "/usr/bin"}
    assert ray_train.worker_env(env) == {"DUS_JOB_ID": "4", "DATABASE_URL": "sqlite:///x.db", "HF_HOME": "/hf"}


# ---------------------------------------------------------------- Ray: how its ends map to ours

def test_a_job_ray_gave_up_starting_is_queued_again_and_submitted_as_the_next_attempt(monkeypatch):
    """Ray fails a job still PENDING (no node with its resources free) after RAY_JOB_START_TIMEOUT_SECONDS; its
    entrypoint never ran. It was marked "interrupted: the Ray node running it was lost" and waited for a hand."""
    sid = lambda n: f"dus-{ray_jobs.workspace_tag()}-{job.id}-{n}"  # noqa: E731
    job = _row(host=ray_jobs.host_for(ADDR), started=utcnow())
    runner._update(job.id, cluster_ref=sid(1))
    jobs = _Jobs({sid(1): _info("FAILED", "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
                                "Job supervisor actor failed to start within 900.0 seconds. This timeout can be "
                                "configured by setting the environment variable RAY_JOB_START_TIMEOUT_SECONDS.")})
    monkeypatch.setattr(ray_jobs, "client", lambda addr: jobs)
    monkeypatch.setattr(ray_checks, "client", lambda addr: jobs)  # missing_paths looks it up there
    monkeypatch.setattr(ray_jobs, "_judged", {})
    assert runner.recover_orphans() == [job.id]
    row = runner.get(job.id)
    assert (row.status, row.host, row.started, row.finished) == ("queued", "", None, None)
    assert row.message.startswith("waiting: the Ray cluster had no room for it within Ray's start timeout")
    monkeypatch.setattr(ray_jobs, "address", lambda: ADDR)
    claimed = runner._claim_next()
    assert claimed.id == job.id
    assert runner.start_child(claimed).submission_id == sid(2) and [s for s, _ in jobs.submitted] == [sid(2)]


@pytest.mark.parametrize("info,status,words", [
    (("FAILED", "RUNTIME_ENV_SETUP_FAILURE", "runtime_env setup failed: no space left"), "failed",
     "the Ray cluster could not set up the job's environment, so it never started: runtime_env setup failed: "
     "no space left"),
    (("STOPPED", None, "Job was intentionally stopped."), "interrupted",
     "interrupted: its Ray job was stopped outside DUS Studio (`ray job stop`, the Ray dashboard)"),
    (("FAILED", "JOB_SUPERVISOR_ACTOR_DIED", "Job supervisor actor died: node lost"), "interrupted",
     "interrupted: the Ray node running it was lost (Ray: FAILED, Job supervisor actor died: node lost)"),
    (("FAILED", "JOB_ENTRYPOINT_COMMAND_ERROR", "exit 137", 137), "failed",
     "the job process on the Ray cluster exited with code 137 without finishing; see its log"),
])
def test_ray_ends_that_are_no_lost_node_are_not_called_one(info, status, words):
    # what a resume then does is added by the runner, as to a local job's end (runner.messages.with_resume_step;
    # it said "resume it to continue from its last checkpoint" to a training that saved none: test_review_s24_runner)
    fields = ray_jobs.end_fields(_info(*info))
    assert fields["status"] == status and (fields.get("error") or fields["message"]) == words


@pytest.mark.parametrize("held,status,message", [
    ({1: "STOPPED", 2: "RUNNING"}, "running", "submitted to the Ray cluster"),  # attempt 2 runs: watched
    ({1: "FAILED"}, "interrupted", "interrupted: its worker stopped before handing it to the Ray cluster"),
    ({}, "interrupted", "interrupted: its worker stopped before handing it to the Ray cluster"),
])
def test_a_claim_whose_worker_died_before_writing_the_submission_is_judged_by_ray(monkeypatch, held, status,
                                                                                   message):
    """Its submit landed and the worker died before writing the id: the row was called interrupted while Ray ran
    the job, whose end then could not be written (a resume ran the finished job again)."""
    from datetime import timedelta

    job = _row(host=ray_jobs.host_for(ADDR), started=utcnow() - timedelta(seconds=120), cluster_ref="")
    sid = lambda n: f"dus-{ray_jobs.workspace_tag()}-{job.id}-{n}"  # noqa: E731
    jobs = _Jobs({sid(n): _info(s) for n, s in held.items()})
    monkeypatch.setattr(ray_jobs, "client", lambda addr: jobs)
    monkeypatch.setattr(ray_checks, "client", lambda addr: jobs)  # missing_paths looks it up there
    monkeypatch.setattr(ray_jobs, "_judged", {})
    runner.recover_orphans()
    row = runner.get(job.id)
    if status == "interrupted":  # and what a resume does (runner.messages.with_resume_step)
        message += ("; no checkpoint was saved; resume it to start the training over from step 0 (python -m backend "
                    f"jobs resume {job.id}, or \"Restart (no checkpoint was saved)\" on the Jobs page)")
    assert (row.status, row.message) == (status, message)
    assert row.cluster_ref == (sid(2) if status == "running" else "")


# ---------------------------------------------------------------- login

def test_guesses_sent_at_once_are_held_to_the_failure_limit(monkeypatch):
    """The lock was looked at before the password was checked and the failure counted after: 20 sessions guessing
    at once (scrypt runs outside the GIL) all got their guess checked against a limit of 5."""
    checked = []

    def slow_verify(password, stored):
        checked.append(password)
        time.sleep(0.2)
        return False

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    lock = auth.Lockout(max_failures=5, seconds=300)
    start = threading.Barrier(20)
    said = []

    def guess(i):
        start.wait()
        said.append(auth.attempt(f"guess {i}", "stored", "10.0.0.9", lock)[1])

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == 5
    assert sorted(said).count("Too many failed attempts: try again in 5 min.") == 15
    assert lock.locked_for("10.0.0.9") > 290 and lock.locked_for("10.0.0.10") == 0


def test_the_fifth_attempt_may_still_be_the_right_password():
    lock = auth.Lockout(max_failures=5, seconds=300)
    stored = auth.hash_password("correct horse")
    for _ in range(4):
        assert auth.attempt("wrong", stored, "c", lock) == (False, "Wrong password.")
    assert auth.attempt("correct horse", stored, "c", lock) == (True, "")
    assert lock.locked_for("c") == 0 and auth.attempt("wrong", stored, "c", lock) == (False, "Wrong password.")


def test_a_password_is_the_same_in_either_unicode_form():
    """'é' arrives as one code point or as e + combining accent depending on the keyboard (NIST SP 800-63B: verifiers
    normalise); a hash made before normalisation (of the password as typed) still verifies."""
    nfc = unicodedata.normalize("NFC", "mot de passe très sûr")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert auth.verify_password(nfd, auth.hash_password(nfc)) is True
    assert auth.verify_password(nfc, auth.hash_password(nfd)) is True
    salt = b"0123456789abcdef"  # an older hash: the NFD bytes as they were typed
    raw = hashlib.scrypt(nfd.encode(), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)
    old = f"scrypt${2 ** 14}$8$1${auth._b64(salt)}${auth._b64(raw)}"
    assert auth.verify_password(nfd, old) is True and auth.verify_password("mot de passe tres sur", old) is False


def test_a_hash_scrypt_cannot_compute_is_refused_at_start_not_at_every_login():
    """n=2**20 with r=16 passed the bounds but needs 2 GiB, over verify's maxmem: each login raised OpenSSL's
    'memory limit exceeded' on the form while the start check said nothing was wrong."""
    salt, digest = auth._b64(b"s" * 16), auth._b64(b"d" * 32)
    greedy = f"scrypt${2 ** 20}$16$1${salt}${digest}"
    assert auth.problem("0.0.0.0", {auth.HASH_ENV: greedy}) == (
        "DUS Studio is served on 0.0.0.0, which other machines can reach, but its password is unusable: "
        "DUS_PASSWORD_HASH is not a hash made by `python -m backend auth hash`.")
    assert auth.problem("0.0.0.0", {auth.HASH_ENV: f"scrypt${2 ** 20}$8$1${salt}${digest}"}) is None  # 1 GiB fits
