"""Data-integrity bugs found in a second review of the backend, each pinned by a test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from backend import evaljob, evaluate, registry, runner
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore, Generation


# ---------------------------------------------------------------- eval: a resumed job does not store scores twice

def _eval_rows(job_id: int) -> tuple[list[EvalScore], list[Generation]]:
    with db.session() as s:
        return (list(s.exec(select(EvalScore).where(EvalScore.job_id == job_id))),
                list(s.exec(select(Generation).where(Generation.job_id == job_id))))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_resumed_eval_job_keeps_what_it_stored_and_scores_only_the_rest(tiny_llama, tiny_llama_untied,
                                                                          monkeypatch, capsys):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama_untied, "tiny-b")
    job = runner.submit(EvalSpec(models=["tiny", "tiny-b"], tasks=["perplexity", "synth-math"], limit=2,
                                 max_new_tokens=8))
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    real_score, real_load = evaluate.score_task, evaluate._load
    calls, loaded = [], []

    def failing_fourth(ts, tok, model, spec, model_name, *a):  # tiny-b / synth-math: the job process dies there
        calls.append((model_name, ts.task))
        if len(calls) == 4:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_score(ts, tok, model, spec, model_name, *a)

    monkeypatch.setattr(evaljob, "score_task", failing_fourth)
    assert runner.execute(job.id) == 1 and runner.get(job.id).status == "failed"
    first_scores, first_gens = _eval_rows(job.id)
    assert {(r.model, r.task) for r in first_scores} == {("tiny", "perplexity"), ("tiny", "synth-math"),
                                                          ("tiny-b", "perplexity")}
    before = {r.id: (r.model, r.task, r.metric, r.value) for r in first_scores}

    monkeypatch.setattr(evaljob, "score_task", real_score)
    monkeypatch.setattr(evaljob, "_load", lambda name, plan=None: loaded.append(name) or real_load(name, plan))
    registry.delete("tiny", delete_files=False)  # all its scores are kept: the resumed job needs it no more
    runner.resume(job.id)
    capsys.readouterr()
    assert runner.execute(job.id) == 0
    printed = capsys.readouterr().out  # what the job's log gets
    done = runner.get(job.id)
    scores, gens = _eval_rows(job.id)
    # exactly one row per (model, task, metric), one generation per (model, item): nothing stored twice
    assert max(Counter((r.model, r.task, r.metric) for r in scores).values()) == 1
    assert Counter((g.model, g.task) for g in gens) == {("tiny", "synth-math"): 2, ("tiny-b", "synth-math"): 2}
    assert {(r.model, r.task) for r in scores} == {(m, t) for m in ("tiny", "tiny-b")
                                                   for t in ("perplexity", "synth-math")}
    # the rows stored before the failure are the very same rows, values unchanged
    assert {r.id: (r.model, r.task, r.metric, r.value) for r in scores if r.id in before} == before
    assert {g.id for g in first_gens} <= {g.id for g in gens}
    assert loaded == ["tiny-b"]  # tiny, all of whose tasks were stored, is not loaded again
    kept = len(first_scores)
    assert done.result["kept"] == kept and done.result["scores"] == len(scores)
    assert "kept the" in done.result["notes"][0] and "tiny / perplexity" in done.result["notes"][0]
    assert "tiny: every task already scored by this job's earlier run, kept" in printed
    assert "tiny-b: perplexity already scored by this job's earlier run, kept" in printed


# ---------------------------------------------------------------- a built model takes its tokenizer, not training leftovers

def test_an_upscale_of_a_trained_folder_copies_the_tokenizer_and_none_of_the_training_leftovers(tiny_llama,
                                                                                               tmp_path):
    """A LoRA-trained folder holds adapter_config.json: copied into the new model's folder, transformers (with peft
    installed) loads the new full model as an adapter onto the base it names."""
    import json
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    trained = tmp_path / "trained"
    shutil.copytree(tiny_llama, trained)
    (trained / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "no-such-base"), "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}))
    leftovers = ["adapter_config.json", "trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt",
                 "rng_state.pth", "rng_state_0.pth", "all_results.json", "train_results.json"]
    for name in leftovers[1:]:
        (trained / name).write_bytes(b"{}")
    (trained / "LICENSE").write_text("the parent model's licence\n")
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"}
    assert tokenizer_files <= {f.name for f in trained.iterdir()}

    out = Path(run_upscale(UpscaleSpec(base=str(trained), m=1, name="from-trained"))["path"])
    names = {f.name for f in out.iterdir()}
    assert names == tokenizer_files | {"LICENSE", "config.json", "README.md", "model.safetensors"}
    for name in tokenizer_files | {"LICENSE"}:
        assert (out / name).read_bytes() == (trained / name).read_bytes()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 10
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_llama).chat_template


# ---------------------------------------------------------------- synth: a rerun with no usable pair

class _Chatty:
    """A model rephraser whose every reply is chatter: no pair passes verification."""

    name = "chatty"

    def rephrase(self, seeds):
        return [ValueError("no question / solution in the reply") for _ in seeds]


def test_a_synth_rerun_under_its_name_or_into_its_folder_is_refused_and_keeps_the_export(tmp_path, monkeypatch):
    """A rerun replaced the pairs and removed an export it no longer made; two runs into one `out` shared the export's
    files. Both are refused now, before any work: the first run's pairs and export stay as they were."""
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    spec = SynthMathSpec(out=str(tmp_path / "out"), num_seeds=6, name="sm")
    first = pipeline.run_synth_math(spec)
    assert first["rows"] == 6 and first["instruct"] == "sm-instruct"
    files = {f: f.read_bytes() for f in (Path(pipeline.get_dataset(f"sm-{k}").path) for k in ("instruct",
                                                                                              "alignment"))}
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: _Chatty())
    with pytest.raises(pipeline.DatasetError, match="already named 'sm-pairs'"):
        pipeline.run_synth_math(spec)
    with pytest.raises(pipeline.DatasetError, match="holds the files of sm-alignment, sm-instruct, sm-pairs"):
        pipeline.run_synth_math(spec.model_copy(update={"name": "sm2"}))
    assert {f: f.read_bytes() for f in files} == files and pipeline.get_dataset("sm2-pairs") is None
    pairs = pipeline.get_dataset("sm-pairs")
    assert pairs.provenance["counts"] == {"verified": 6, "failed": 0, "flagged": 0}
    assert pipeline.query_pairs(pairs.id, states=["verified"])[0] == 6 == pipeline.get_dataset("sm-instruct").rows


# ---------------------------------------------------------------- resume after a cancel from another machine

def members_running(pgid: int) -> list[int]:
    """Processes of group `pgid` that have not ended: a zombie leader its worker has yet to reap has ended, though
    os.killpg(pgid, 0) still finds it."""
    out = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getpgid(pid) == pgid and "zombie" not in Path(f"/proc/{pid}/status").read_text():
                out.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return out


def pause_outside_a_write(pid: int) -> None:
    """SIGSTOP `pid`, but not while it holds SQLite's write lock (its heartbeat commit): paused there, every other
    writer would wait out the 30 s busy timeout and fail with "database is locked"."""
    import signal
    import sqlite3
    import time

    url = db.database_url()
    if not url.startswith("sqlite:///"):  # a server's row locks: the heartbeat takes none a cancel waits for
        os.kill(pid, signal.SIGSTOP)
        return
    path = url.removeprefix("sqlite:///")
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        try:
            con = sqlite3.connect(path, timeout=0)
            try:
                con.execute("BEGIN IMMEDIATE")  # takes the write lock only if nobody holds it
                con.rollback()
                return
            finally:
                con.close()
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError(f"process {pid} held the database's write lock at every try")


def test_resume_waits_until_another_machines_worker_has_stopped_the_cancelled_run(tiny_llama, monkeypatch):
    """A cancel from machine a only marks the row; machine b's worker kills the process within a poll. A resume in
    between queued the job again: b's worker, no longer seeing it cancelled, never killed the old run, and claimed the
    job a second time, so two processes of one job ran at once (the old one writing into the new run's row)."""
    import signal

    from tests.test_faults import release_progress, slow_upscale_on_machine_b
    from tests.test_jobs import group_alive, wait_for

    with slow_upscale_on_machine_b(tiny_llama, monkeypatch) as (job, worker):
        old = job
        monkeypatch.setenv("DUS_HOST_ID", "machine-a")
        pause_outside_a_write(worker.pid)  # b's worker between two polls: the cancel is not carried out yet
        try:
            assert runner.cancel(job.id).status == "cancelled"
            with pytest.raises(ValueError, match=f"Job {job.id} is still stopping on machine-b"):
                runner.resume(job.id)
            assert runner.get(job.id).status == "cancelled" and group_alive(old.pid)
        finally:
            os.kill(worker.pid, signal.SIGCONT)

        def resumed() -> bool:
            try:
                runner.resume(job.id)
                return True
            except ValueError:
                return False

        wait_for(resumed, 30, "b's worker to stop the cancelled run")
        assert not members_running(old.pid)  # refused for exactly as long as the old run lived
        release_progress()  # the resumed run need not crawl (52 progress lines x 0.3 s)
        done = wait_for(lambda: (j := runner.get(job.id)).status in runner.FINISHED and j, 120, "the resumed run")
    assert done.status == "succeeded", done.error
    starts = [ln for ln in Path(done.log_path).read_text().splitlines() if ln.startswith(f"job {job.id} ")]
    assert len(starts) == 2 and starts[0].endswith(f" {old.pid}") and not starts[1].endswith(f" {old.pid}")
    assert registry.get("slow") is not None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_resume_of_a_cancelled_job_asks_only_its_own_machine_whether_it_stopped(tiny_llama, monkeypatch):
    from datetime import timedelta

    from storage.models import WorkerBeat, utcnow

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"]))
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # the job's process, leading its group
    try:
        runner._update(job.id, status="running", started=utcnow(), pid=bystander.pid, host="machine-b")
        with db.session() as s:
            s.add(WorkerBeat(host="machine-b", pid=1, seen=utcnow()))
            s.commit()
        monkeypatch.setenv("DUS_HOST_ID", "machine-a")
        runner.cancel(job.id)
        assert bystander.poll() is None  # a pid means nothing on machine a: not signalled from here
        with pytest.raises(ValueError, match="still stopping on machine-b"):
            runner.resume(job.id)
        runner._clear_stopped()  # machine a's worker: not its job, the pid stays
        monkeypatch.setenv("DUS_HOST_ID", "machine-b")
        with pytest.raises(ValueError, match="still stopping on machine-b"):
            runner.resume(job.id)  # on machine b itself: the process is alive
        runner._clear_stopped()  # machine b's worker: alive, the pid stays
        assert runner.get(job.id).pid == bystander.pid
        bystander.kill()
        bystander.wait()
        runner._clear_stopped()  # ended: cleared, whoever asks next may resume
        assert runner.get(job.id).pid is None
        monkeypatch.setenv("DUS_HOST_ID", "machine-a")
        assert runner.resume(job.id).status == "queued"
    finally:
        bystander.kill()
        bystander.wait()
    # a machine whose workers all fell silent runs no job process: its cancelled job resumes at once
    job2 = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"]))
    runner._update(job2.id, status="cancelled", pid=2 ** 22 + 7, host="machine-c")
    with db.session() as s:
        s.add(WorkerBeat(host="machine-c", pid=1, seen=utcnow() - timedelta(seconds=runner.BEAT_STALE + 5)))
        s.commit()
    assert runner.resume(job2.id).status == "queued"


def test_a_pickle_import_keeps_the_tokenizer_and_leaves_the_training_leftovers(tiny_llama, tmp_path):
    """The conversion copied every file that was not .bin/.pt: a Trainer folder's trainer_state.json, and an
    adapter_config.json that makes transformers load the converted full model as a LoRA adapter."""
    import json as _json

    from transformers import AutoModelForCausalLM

    from tests.test_registry import pickle_folder

    folder = pickle_folder(tiny_llama, tmp_path / "trainer-out")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "adapter_config.json").write_text(_json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    rec = registry.import_folder(folder, "from-trainer", allow_pickle=True)
    names = {f.name for f in Path(rec.path).iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= names
    assert not names & {"trainer_state.json", "adapter_config.json", "pytorch_model.bin"}
    assert AutoModelForCausalLM.from_pretrained(rec.path).config.num_hidden_layers == 6


def test_a_zombie_is_no_running_process():
    """os.kill(pid, 0) succeeds on a process that ended but was not reaped; where PID 1 never reaps (a container
    running python as PID 1), a cancelled job whose worker had died read "still stopping" for good."""
    import time

    from storage.db import _pid_alive

    child = subprocess.Popen(["sleep", "0.1"])
    assert _pid_alive(child.pid)
    end = time.time() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < end:
        time.sleep(0.05)
    os.kill(child.pid, 0)  # the kernel still has it...
    assert not _pid_alive(child.pid)  # ...but it runs no more
    child.wait()
    assert not _pid_alive(child.pid) and _pid_alive(os.getpid())


def test_a_cancelled_run_is_over_only_when_its_whole_process_group_is():
    """A job process leads its own group (accelerate's workers, the trainer): its leader ended, a member running on
    still makes the run "still stopping"; ended members and a zombie leader do not."""
    import signal
    import time

    from storage.db import _group_running

    leader = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 0.2"], start_new_session=True)
    try:
        time.sleep(1.0)  # the leader has exited (a zombie until we reap it); its background sleep runs on
        assert members_running(leader.pid) and _group_running(leader.pid)
        os.killpg(leader.pid, signal.SIGKILL)
        end = time.time() + 10
        while members_running(leader.pid) and time.time() < end:
            time.sleep(0.05)
        assert not _group_running(leader.pid)
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        leader.wait()
