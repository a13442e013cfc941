"""The command line against the pages (session 14): a job's log (`jobs log`, --follow as tail -f), the recipe runs
with their stages' statuses (`recipe runs`), the Synthetic math inspector's pair listing and rejection and the Hub
push (`datasets pairs | reject | push`), one chat reply (`chat`), `run SPEC --name`, and Ctrl-C as one line with
exit code 130 instead of a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from backend import registry, runner
from backend.synth import pipeline
from storage import db
from storage.models import Job, RecipeRun, RecipeStage, SynthPair
from tests.test_hub import exported, hub
from tests.test_review_cli import add, cli  # main() as the shell runs it; rows added

HUB_FIXTURES = (hub, exported)  # tests/test_hub.py's: the local Hub emulator, synthetic pairs made and exported

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- 1. jobs log ID [--lines N] [--follow]

def test_jobs_log_prints_the_last_lines_of_the_jobs_log(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    done, = add(Job(kind="upscale", status="succeeded", log_path=str(log)))
    assert cli("jobs", "log", str(done.id), "--lines", "3") == (0, "line 97\nline 98\nline 99\n", "")
    rc, out, _ = cli("jobs", "log", str(done.id))  # the Jobs page's 60 lines
    assert rc == 0 and out.splitlines() == [f"line {i}" for i in range(40, 100)]


def test_jobs_log_without_a_log_says_why(tmp_path):
    queued, gone = add(Job(kind="eval", status="queued", log_path=str(tmp_path / "not-yet.log")),
                       Job(kind="sft", status="failed", log_path=str(tmp_path / "removed.log")))
    assert cli("jobs", "log", str(queued.id)) == (
        0, "", f"job {queued.id} is queued: no log yet (a worker writes one when it starts the job; --follow waits "
               "for it)\n")
    assert cli("jobs", "log", str(gone.id)) == (
        2, "", f"error: job {gone.id} (failed) has no log on this machine ({tmp_path / 'removed.log'} is not "
               "there).\n")
    assert cli("jobs", "log", "99") == (2, "", "error: No job 99: python -m backend jobs list shows the jobs.\n")


def _later(*steps) -> threading.Thread:
    """Run the steps one after the other, 0.3 s apart, beside the command (a job process writing its log)."""
    def run() -> None:
        for step in steps:
            time.sleep(0.3)
            step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _append(log: Path, text: str):
    def write() -> None:
        with open(log, "a") as f:
            f.write(text)
    return write


def test_jobs_log_follow_prints_new_lines_until_the_job_ends_with_its_outcome(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("first\nsecond\nthe third is ")
    job, = add(Job(kind="sft", status="running", log_path=str(log)))
    thread = _later(_append(log, "cut in two\n[ 10.0%] step 1\r"), _append(log, "[ 20.0%] step 2\rlast line\n"),
                    lambda: runner._update(job.id, status="succeeded", message="done: model x"))
    rc, out, err = cli("jobs", "log", str(job.id), "--follow", "--lines", "1", "--poll", "0.05")
    thread.join()
    # the last line there, then every line as it came (a line written in two parts once, tqdm's \r lines apart)
    assert out == "the third is \ncut in two\n[ 10.0%] step 1\n[ 20.0%] step 2\nlast line\n"
    assert (rc, err) == (0, f"job {job.id}: succeeded: done: model x\n")


def test_jobs_log_follow_of_a_queued_job_waits_for_its_log_and_exits_1_if_it_fails(tmp_path):
    log = tmp_path / "job.log"
    job, = add(Job(kind="cpt", status="queued", log_path=str(log)))
    thread = _later(lambda: runner._update(job.id, status="running"), _append(log, "loading\n"),
                    _append(log, "Traceback: boom\n"),
                    lambda: runner._update(job.id, status="failed", error="boom", message="failed"))
    rc, out, err = cli("jobs", "log", str(job.id), "--follow", "--poll", "0.05")
    thread.join()
    assert (rc, out) == (1, "loading\nTraceback: boom\n")
    assert err == (f"job {job.id} is queued: no log yet; following it once a worker starts the job\n"
                   f"job {job.id}: failed: boom\n")  # once: it said "failed: failed: boom" (review s22)


# ---------------------------------------------------------------- 2. recipe runs [--limit N] [--json]

def _recipe_run() -> tuple[RecipeRun, list[Job]]:
    jobs = add(Job(kind="upscale", status="succeeded", message="done: model mini-dus"),
               Job(kind="sft", status="failed", error="boom", message="failed"),
               Job(kind="eval", status="queued", message=runner.WAITING))
    run, = add(RecipeRun(name="solar-mini"))
    add(RecipeStage(run_id=run.id, recipe="solar-mini", stage="base", kind="import", output="tiny", hash="h0",
                    info={"status": "given"}),
        RecipeStage(run_id=run.id, recipe="solar-mini", stage="dus", kind="upscale", output="mini-dus", hash="h1",
                    job_id=jobs[0].id, reused=True),
        RecipeStage(run_id=run.id, recipe="solar-mini", stage="sft-v1", kind="sft", output="mini-sft", hash="h2",
                    job_id=jobs[1].id),
        RecipeStage(run_id=run.id, recipe="solar-mini", stage="eval", kind="eval", hash="h3", job_id=jobs[2].id))
    return run, jobs


def cut(message: str) -> str:
    return message if len(message) <= 60 else message[:59] + "…"


def test_recipe_runs_lists_each_run_with_its_stages_statuses():
    assert cli("recipe", "runs") == (0, "", "no recipe has run yet: `python -m backend recipe run FILE` first.\n")
    assert cli("recipe", "runs", "--json") == (0, "[]\n", "")
    run, jobs = _recipe_run()
    add(RecipeRun(name="later"))  # a second run, newer, with no stages
    rc, out, err = cli("recipe", "runs")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("run 2 · later · ") and lines[0].endswith(" · 0 stages")
    assert lines[1] == f"run {run.id} · solar-mini · {run.created:%Y-%m-%d %H:%M} · 4 stages: 1 given, 1 reused, " \
                       "1 failed, 1 queued"
    assert lines[2:] == [
        "  base   import     given           - tiny",
        f"  dus    upscale    reused      {jobs[0].id:5d} mini-dus  done: model mini-dus",
        f"  sft-v1 sft        failed      {jobs[1].id:5d} mini-sft  failed: boom",
        f"  eval   eval       queued      {jobs[2].id:5d} -  {cut(runner.WAITING)}"]
    assert cli("recipe", "runs", "--limit", "1")[1].splitlines() == lines[:1]
    rc, out, _ = cli("recipe", "runs", "--json", "--limit", "0")
    got = json.loads(out)
    assert [r["id"] for r in got] == [2, run.id] and got[0]["stages"] == []
    assert got[1]["stages"][2] == {"stage": "sft-v1", "kind": "sft", "status": "failed", "job": jobs[1].id,
                                   "output": "mini-sft", "message": "failed: boom"}
    assert [s["status"] for s in got[1]["stages"]] == ["given", "reused", "failed", "queued"]
    assert cli("recipe", "runs", "--limit", "-1")[0] == 2


# ---------------------------------------------------------------- 3. datasets pairs | reject | push

@pytest.fixture
def pairs(tmp_path) -> list[dict]:
    """Synthetic pairs made and exported (6 generated seeds, the rules rephraser), as `datasets pairs --json`
    lists them."""
    from backend.specs import SynthMathSpec

    pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "synth"), num_seeds=6))
    rc, out, err = cli("datasets", "pairs", "synth-math-pairs", "--json")
    assert rc == 0, err
    return json.loads(out)


def test_datasets_pairs_lists_the_pairs_with_their_ids(pairs):
    with db.session() as s:
        ids = [p.id for p in s.exec(select(SynthPair).order_by(SynthPair.id))]
    assert [p["id"] for p in pairs] == ids and len(ids) == 6
    rc, out, err = cli("datasets", "pairs", "synth-math-pairs", "--limit", "4")
    assert rc == 0 and [int(line.split()[0]) for line in out.splitlines()] == ids[:4]
    assert err == "4 of 6 matching pairs (page 1 of 2; --page N for another); the whole pair: --json\n"
    assert cli("datasets", "pairs", "synth-math-pairs", "--limit", "4", "--page", "2")[1].count("\n") == 2
    assert cli("datasets", "pairs", "nope-pairs") == (
        2, "", "error: No synthetic pairs named 'nope-pairs': `python -m backend datasets list` shows them (kind "
               "synth-pairs; their names end in -pairs).\n")


def test_datasets_reject_takes_a_pair_out_of_the_next_export_and_undo_puts_it_back(pairs):
    verified = [p["id"] for p in pairs if p["status"] == "verified"]
    assert verified
    rows = pipeline.get_dataset("synth-math-instruct").rows
    rc, out, err = cli("datasets", "reject", "synth-math-pairs", str(verified[0]))
    assert (rc, err) == (0, "")
    assert out == (f"pair {verified[0]} of synth-math-pairs: rejected by hand; synth-math-instruct and "
                   "synth-math-alignment are as exported before: `python -m backend datasets export synth-math-pairs` "
                   "writes them without it (a push is refused until then)\n")
    with db.session() as s:
        assert s.get(SynthPair, verified[0]).rejected_by_hand is True
    assert cli("datasets", "pairs", "synth-math-pairs", "--status", "rejected", "--json")[1].count('"id"') == 1
    assert cli("datasets", "export", "synth-math-pairs")[0] == 0
    assert pipeline.get_dataset("synth-math-instruct").rows == rows - 1  # the rejected pair is left out
    assert cli("datasets", "reject", "synth-math-pairs", str(verified[0])) == (
        0, f"pair {verified[0]} of synth-math-pairs: rejected by hand already\n", "")
    assert cli("datasets", "reject", "synth-math-pairs", str(verified[0]), "--undo")[0] == 0
    with db.session() as s:
        assert s.get(SynthPair, verified[0]).rejected_by_hand is False
    cli("datasets", "export", "synth-math-pairs")
    assert pipeline.get_dataset("synth-math-instruct").rows == rows


def test_datasets_reject_refuses_a_pair_of_another_data_set(pairs):
    other = max(p["id"] for p in pairs) + 1
    assert cli("datasets", "reject", "synth-math-pairs", str(other)) == (
        2, "", f"error: No pair {other} in synth-math-pairs: `python -m backend datasets pairs synth-math-pairs` "
               "lists its pairs with their ids.\n")
    assert cli("datasets", "reject", "synth-math-instruct", str(pairs[0]["id"]))[0] == 2  # not a pairs set
    with db.session() as s:
        assert not any(p.rejected_by_hand for p in s.exec(select(SynthPair)))


def test_datasets_push_uploads_the_export_and_says_why_when_it_cannot(hub, exported, monkeypatch):
    rc, out, err = cli("datasets", "push", "synth-math-pairs", "--repo", "acme/synth-math")
    assert (rc, out) == (2, "") and "needs a Hugging Face token with write access" in err  # refused: no token
    assert "dataset/acme/synth-math" not in hub.repos
    monkeypatch.setenv("HF_TOKEN", hub.token)
    rc, out, err = cli("datasets", "push", "synth-math-pairs", "--repo", "acme/synth-math")
    assert (rc, err) == (0, "")
    assert out.startswith("pushed synth-math-instruct (") and out.endswith(
        f"exported from synth-math-pairs, to {hub.url}/datasets/acme/synth-math\n")
    files = hub.files("dataset/acme/synth-math")
    assert {name: files[name] for name in ("math_instruct.jsonl", "math_alignment.jsonl")} == \
        {p.name: p.read_bytes() for p in exported}
    hub.stop()  # the push is tried and does not get through: the work failed (1), not a refusal
    rc, out, err = cli("datasets", "push", "synth-math-pairs", "--repo", "acme/other")
    assert (rc, out) == (1, "") and err.startswith("error: Could not reach the Hugging Face Hub to push to acme/other")


# ---------------------------------------------------------------- 4. chat MODEL --prompt TEXT

def test_chat_prints_the_reply_the_chat_functions_give(tiny_llama_untied):
    """The reply is what backend/chat.py's stream_reply gives for the same messages (greedy): the untied tiny Llama,
    whose random weights answer with visible text (the tied one answers with newlines only)."""
    from backend import chat

    registry.import_folder(tiny_llama_untied, "tiny")
    lm = chat.load(tiny_llama_untied, "tiny")
    user = {"role": "user", "content": "What is 3 + 4?"}
    replies = []
    system = {"role": "system", "content": "Answer briefly."}
    for extra, messages in (([], [user]), (["--system", "Answer briefly."], [system, user])):
        stats = chat.GenerationStats()
        replies.append("".join(chat.stream_reply(lm, messages, max_new_tokens=6, stats=stats)))
        rc, out, err = cli("chat", "tiny", "--prompt", "What is 3 + 4?", "--max-new-tokens", "6", *extra)
        assert (rc, out) == (0, replies[-1] + "\n"), err
        assert replies[-1].strip() and "only whitespace" not in err
        assert re.fullmatch(r"6 tokens · first token \d+\.\d\d s · \d+\.\d tokens/s", err.splitlines()[-1]), err
    assert replies[0] != replies[1]  # the system message reached the model
    rc, out, err = cli("chat", str(tiny_llama_untied), "--prompt", "What is 3 + 4?", "--max-new-tokens", "6")
    assert (rc, out) == (0, replies[0] + "\n"), err  # the model given as its folder


def test_chat_refusals_exit_2():
    rc, out, err = cli("chat", "nope", "--prompt", "hi")
    assert (rc, out) == (2, "") and err.startswith("error: 'nope' is neither a registered model")
    assert cli("chat", "nope", "--prompt", "  ") == (
        2, "", "error: --prompt is empty: give the message to answer (or - to read it from standard input).\n")
    assert cli("chat", "nope", "--prompt", "hi", "--max-new-tokens", "0")[0] == 2


# ---------------------------------------------------------------- run SPEC.yaml --name NAME

def test_run_with_name_registers_under_that_name(tiny_llama, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    spec = tmp_path / "up.yaml"
    spec.write_text("kind: upscale\nbase: tiny\nm: 1\nname: up-a\n")
    rc, out, err = cli("run", str(spec), "--name", "up-b", "--queue")
    assert (rc, err) == (0, "")
    assert runner.get(1).spec["name"] == "up-b"
    assert cli("run", str(spec), "--name", "bad name!", "--queue")[0] == 2  # the spec's own name check
    (tmp_path / "ev.yaml").write_text("kind: eval\nmodels: [tiny]\ntasks: [perplexity]\n")
    assert cli("run", str(tmp_path / "ev.yaml"), "--name", "x") == (
        2, "", "error: --name: a eval spec makes nothing to name (--name names the model an upscale, merge, import or "
               "training makes, or synth-math's data sets).\n")
    assert len(runner.list_jobs()) == 1


def test_run_recipe_with_name_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text("kind: recipe\nname: r\n")
    rc, out, err = cli("run", str(tmp_path / "r.yaml"), "--name", "x")
    assert (rc, out) == (2, "") and err.startswith("error: --name: a recipe cannot take it")


# ---------------------------------------------------------------- 5. Ctrl-C: one line, exit code 130

def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend", *argv], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until_it_reads_the_database(proc: subprocess.Popen, workspace: Path) -> None:
    """Until the command has the workspace's database open: past its imports, inside the command (a Ctrl-C during
    Python's own start-up is Python's to report)."""
    db_file = os.path.realpath(workspace / "studio.db")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
            if any(os.path.realpath(f"/proc/{proc.pid}/fd/{fd}") == db_file for fd in fds):
                time.sleep(0.5)
                return
        except FileNotFoundError:  # an fd closed between the listing and the look
            pass
        time.sleep(0.1)
    raise AssertionError("the command never opened the database")


def test_ctrl_c_in_jobs_wait_is_one_line_and_exit_code_130(workspace):
    job, = add(Job(kind="eval", status="queued"))
    proc = _start("jobs", "wait", str(job.id), "--poll", "0.2")
    _until_it_reads_the_database(proc, workspace)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (130, "")
    assert err == (f"interrupted: stopped waiting; job {job.id} is still queued and goes on without this command "
                   f"(python -m backend jobs wait {job.id} waits again; jobs show {job.id} shows it, jobs cancel "
                   f"{job.id} stops it)\n")
    assert runner.get(job.id).status == "queued"


def test_ctrl_c_in_jobs_log_follow_stops_following_not_the_job(tmp_path):
    job, = add(Job(kind="sft", status="queued", log_path=str(tmp_path / "job.log")))
    proc = _start("jobs", "log", str(job.id), "--follow", "--poll", "0.2")
    assert proc.stderr.readline() == f"job {job.id} is queued: no log yet; following it once a worker starts the job\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, "Traceback" in err) == (130, "", False)
    assert err.strip() == (f"interrupted: stopped following its log; job {job.id} is still queued and goes on without "
                           f"this command (python -m backend jobs log {job.id} --follow follows it again; jobs show "
                           f"{job.id} shows it, jobs cancel {job.id} stops it)")


def cli_ctrl_c(*argv: str) -> tuple[int, str, str]:
    """cli() where the command meets a Ctrl-C: a KeyboardInterrupt out of main() is the traceback the shell showed
    (and, let through, it would stop pytest itself)."""
    try:
        return cli(*argv)
    except KeyboardInterrupt:
        raise AssertionError("KeyboardInterrupt escaped main(): a traceback in the terminal, exit code not 130")


def test_ctrl_c_in_a_foreground_job_says_there_is_no_job_to_resume(monkeypatch, tiny_llama):
    """In-process: the work raises KeyboardInterrupt as Ctrl-C would, in the middle of the build."""
    registry.import_folder(tiny_llama, "tiny")

    def interrupted(spec, job, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "work_function", lambda kind: interrupted)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: interrupted)  # a job's, as before the split
    assert cli_ctrl_c("upscale", "--base", "tiny", "--m", "1", "--name", "up") == (
        130, "", "interrupted: the upscale stopped before it finished; it ran here, not as a job, so there is "
                 "nothing to resume: run the command again (with --queue the worker runs it, and closing the "
                 "terminal does not stop it)\n")


def test_ctrl_c_in_a_foreground_recipe_run_says_which_jobs_stop_and_which_wait(monkeypatch, tiny_llama, tmp_path):
    """In-process: Ctrl-C while the recipe's first stage runs here (the worker loop raises KeyboardInterrupt)."""
    from backend import recipe

    (tmp_path / "r.yaml").write_text(recipe.preset("smoke", str(tiny_llama)))

    def worker(**kwargs) -> None:
        runner._update(min(kwargs["only"]), status="running")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "worker", worker)
    rc, out, err = cli_ctrl_c("recipe", "run", str(tmp_path / "r.yaml"))
    ids = sorted(j.id for j in runner.list_jobs())
    assert (rc, len(ids) > 2) == (130, True)
    assert err == (f"interrupted: recipe run 1 stopped here; job {ids[0]} was interrupted (python -m backend jobs "
                   f"resume {ids[0]} goes on, and the stages waiting for it with it); queued jobs "
                   f"{', '.join(map(str, ids[1:]))} wait for a worker (python -m backend worker), or python -m backend "
                   "recipe cancel 1 drops them; python -m backend recipe runs shows it\n")
    assert "Traceback" not in out + err


def test_a_foreground_recipe_run_waits_for_the_stages_another_worker_took(monkeypatch, tiny_llama, tmp_path):
    """With a worker alive elsewhere (run.sh's), it may claim the first stage before this command's own worker loop:
    the loop finds nothing runnable and returns, and the run was reported as 9 stages that "did not succeed:
    upscaled (running), sft-a (queued), …" (exit 1) while it went on. Now the command waits for the run to end."""
    from backend import recipe

    (tmp_path / "r.yaml").write_text(recipe.preset("smoke", str(tiny_llama)))

    def another_worker_took_them(**kwargs) -> None:
        ids = sorted(kwargs["only"])
        runner._update(ids[0], status="running")
        _later(*[lambda i=i: runner._update(i, status="succeeded", message="done") for i in ids])

    monkeypatch.setattr(runner, "worker", another_worker_took_them)
    monkeypatch.setattr(runner, "worker_alive", lambda: True)
    monkeypatch.setattr(runner.messages, "worker_alive", lambda: True)  # job_message's own look
    rc, out, err = cli("recipe", "run", str(tmp_path / "r.yaml"))
    ids = sorted(j.id for j in runner.list_jobs())
    assert (rc, [j.status for j in runner.list_jobs()]) == (0, ["succeeded"] * len(ids)), err
    assert err == (f"another worker took stage jobs of recipe run 1: waiting for jobs {', '.join(map(str, ids))} to "
                   "end (Ctrl-C stops waiting, not them)\n")
    assert "running" not in out.split("submitted and run here")[1]


def test_ctrl_c_in_the_worker_names_the_jobs_it_interrupted(monkeypatch):
    """In-process: the worker loop marks the job it ran interrupted as Ctrl-C ends it (runner._interrupt_running),
    then lets the KeyboardInterrupt through; an older interrupted job is not this worker's."""
    from datetime import timedelta

    from storage.models import utcnow

    old, job, queued = add(Job(kind="sft", status="interrupted", started=utcnow() - timedelta(hours=1)),
                           Job(kind="sft", status="queued"), Job(kind="eval", status="queued"))

    def worker(**kwargs) -> None:
        runner._update(job.id, status="interrupted", started=utcnow())
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "worker", worker)
    assert cli_ctrl_c("worker") == (
        130, "", f"interrupted: the worker stopped; job {job.id} it was running was interrupted (python -m backend "
                 f"jobs resume {job.id} goes on); queued jobs wait for the next worker\n")
