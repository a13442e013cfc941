"""A user's walk through the command line: eval printed earlier runs' scores as this run's, the README's `datasets
mix` form was refused, unknown recipe runs and missing or malformed ids looked like success or a traceback, a
closed pipe printed an error, and no command showed a job's whole message."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from backend import registry, runner, scoretable
from backend.__main__ import main
from backend.synth import pipeline
from storage import db
from storage.models import EvalScore, Job, RecipeRun, utcnow

ROOT = Path(__file__).resolve().parent.parent
REGISTERED = ("A model named 'tiny6-cpt' is already registered: the job would overwrite it. Delete it on the "
              "Models page or choose another name.")


def cli(*argv: str) -> tuple[int, str, str]:
    """main() as the shell runs it: exit code (argparse's usage errors exit 2), stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as stop:
            rc = stop.code
    return rc, out.getvalue(), err.getvalue()


def add(*rows) -> list:
    with db.session() as s:
        s.add_all(rows)
        s.commit()
        for r in rows:
            s.refresh(r)
    return list(rows)


# ---------------------------------------------------------------- 1. eval prints this run's scores, each once

def test_eval_in_the_foreground_prints_only_the_scores_it_wrote(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add(EvalScore(model="tiny", task="perplexity", metric="perplexity", value=99.0, n=2),  # two earlier runs
        EvalScore(model="tiny", task="perplexity", metric="perplexity", value=98.0, n=2),
        *[EvalScore(model="tiny", task="qa", metric=f"m{i}", value=0.5, n=3) for i in range(13)],
        EvalScore(job_id=7, model="tiny", task="perplexity", metric="perplexity", value=97.0, n=2))  # a worker's
    rc, out, err = cli("eval", "tiny", "--tasks", "perplexity", "--limit", "2", "--device", "cpu")
    assert rc == 0, err
    with db.session() as s:
        mine = s.get(EvalScore, 17)
    assert (mine.model, mine.task, mine.job_id) == ("tiny", "perplexity", None)
    # the perplexity, its bootstrap error (evalscore.perplexity_stderr) and lm-eval's word and byte perplexities and
    # bits per byte (session 25), the word and byte perplexities' bootstrap errors
    assert out.splitlines()[0] == "scores: 7"
    with db.session() as s:
        new = sorted((s.get(EvalScore, i) for i in range(17, 24)), key=lambda r: r.metric)
    assert [(r.model, r.task, r.job_id) for r in new] == [("tiny", "perplexity", None)] * 7
    assert [r.metric for r in new] == ["bits_per_byte", "byte_perplexity", "byte_perplexity_stderr", "perplexity",
                                       "perplexity_stderr", "word_perplexity", "word_perplexity_stderr"]
    rows = [line for line in out.splitlines() if line.startswith("tiny ")]
    shown = [scoretable.number_text(r.value) for r in new]  # a random model's word perplexity: "5.8e10"
    assert rows == [f"{'tiny':40} {'perplexity':28} {r.metric:28} "
                    f"{f'{v:>10}' if isinstance(v, str) else f'{v:10.4f}'}  (n={r.n})" for r, v in zip(new, shown)]


def test_eval_fan_out_without_queue_is_an_error_with_exit_code_2():
    assert cli("eval", "a", "b", "--fan-out") == (
        2, "", "error: eval --fan-out: one job per model runs through the worker; add --queue.\n")
    assert runner.list_jobs() == []


# ---------------------------------------------------------------- 2. datasets mix as the README writes it

def test_datasets_mix_takes_the_sources_after_for_as_the_readme_shows():
    rc, out, err = cli("datasets", "mix", "m1", "--for", "sft", "builtin:alpaca-mini@0.5",
                       "builtin:alpaca-mini@0.25")
    assert (rc, out, err) == (0, "saved mix m1 for sft: use --data mix:m1\n", "")
    assert pipeline.get_dataset("m1").provenance == {
        "for": "sft", "sources": [{"source": "builtin:alpaca-mini", "weight": 0.5},
                                  {"source": "builtin:alpaca-mini", "weight": 0.25}]}
    assert cli("datasets", "mix", "m2", "builtin:alpaca-mini@0.5", "--for", "sft")[0] == 0  # before --for
    assert pipeline.get_dataset("m2").provenance["sources"] == [{"source": "builtin:alpaca-mini", "weight": 0.5}]


def test_datasets_mix_without_for_says_which_purpose_it_took():
    rc, out, _ = cli("datasets", "mix", "m3", "builtin:alpaca-mini")
    assert (rc, out) == (0, "saved mix m3 for sft (the default: --for dpo or --for cpt saves preference or "
                            "pretraining data): use --data mix:m3\n")
    assert pipeline.get_dataset("m3").provenance["for"] == "sft"


# ---------------------------------------------------------------- 3. unknown recipe runs are errors

def test_recipe_cancel_and_tables_of_an_unknown_run_are_errors():
    none_yet = "error: no recipe run 99; no recipe has run yet: `python -m backend recipe run FILE` first.\n"
    assert cli("recipe", "cancel", "99") == (2, "", none_yet)
    assert cli("recipe", "tables", "99") == (2, "", none_yet)
    add(RecipeRun(name="a"), RecipeRun(name="b"))
    assert cli("recipe", "cancel", "99") == (
        2, "", "error: no recipe run 99; the latest are 2, 1 (the Recipe page lists them).\n")
    # nothing to cancel: refused with exit 1, as `jobs cancel` of a finished job (tests/test_review_s25_cli.py)
    assert cli("recipe", "cancel", "1") == (1, "", "error: recipe run 1: nothing to cancel: no job of it is waiting or "
                                                   "running (no stage of its own to run); python -m backend recipe "
                                                   "runs shows its stages.\n")


# ---------------------------------------------------------------- 4. a missing or malformed id is a usage error

def test_a_missing_or_malformed_id_is_a_usage_error_naming_it():
    for argv in (["jobs", "cancel"], ["jobs", "resume"], ["jobs", "show"]):
        rc, out, err = cli(*argv)
        assert (rc, out) == (2, "")
        assert err.splitlines() == [f"usage: python -m backend {' '.join(argv)} [-h] ID",
                                    f"python -m backend {' '.join(argv)}: error: the following arguments are "
                                    "required: ID"]
    assert cli("jobs", "cancel", "abc")[2].splitlines()[-1] == (
        "python -m backend jobs cancel: error: argument ID: invalid int value: 'abc'")
    assert cli("recipe", "cancel")[2].splitlines()[-1] == (
        "python -m backend recipe cancel: error: the following arguments are required: RUN")
    assert cli("recipe", "tables", "x")[:2] == (2, "")
    assert cli("jobs", "cancel", "999") == (2, "", "error: No job 999.\n")  # a well-formed unknown id: as before


# ---------------------------------------------------------------- 5. a closed pipe ends quietly

def test_jobs_list_into_a_closed_pipe_ends_quietly():
    add(*[Job(kind="upscale", status="succeeded", message="done") for _ in range(3)])
    proc = subprocess.Popen([sys.executable, "-m", "backend", "jobs", "list"], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=120), err) == (141, "")


# ---------------------------------------------------------------- 6. jobs show: the whole message, log, spec

def test_jobs_list_cuts_long_messages_and_jobs_show_has_them_whole():
    start = utcnow()
    job, = add(Job(kind="cpt", status="failed", progress=0.25, error=REGISTERED, log_path="/tmp/logs/job-1.log",
                   spec={"kind": "cpt", "model": "tiny6", "max_steps": 3}, created=start, started=start,
                   finished=start + timedelta(seconds=42)))
    rc, out, err = cli("jobs", "list")
    assert rc == 0
    line = f"failed: {REGISTERED}"
    assert out == f"{job.id:5d} {'cpt':10} {'failed':12}  25.0% {'-':24} {line[:59]}…\n"  # its spec names no output
    assert err == "a name or message cut with … is whole in: python -m backend jobs show ID\n"
    at = f"{start:%Y-%m-%d %H:%M:%S}"
    assert cli("jobs", "show", str(job.id)) == (0, "\n".join([
        f"job {job.id} (cpt): failed, 25%",
        f"message: {line}",
        "log: /tmp/logs/job-1.log",
        f"created: {at}  started: {at}  finished: {start + timedelta(seconds=42):%Y-%m-%d %H:%M:%S} (42 s)",
        "spec:", "kind: cpt", "model: tiny6", "max_steps: 3"]) + "\n", "")
    assert cli("jobs", "show", "999") == (2, "", "error: No job 999: python -m backend jobs list shows the jobs.\n")


def test_jobs_help_names_every_action():
    rc, out, _ = cli("--help")
    assert rc == 0 and "list jobs, show one in full, cancel or resume one" in out
    assert "jobs list | show ID | cancel ID | resume ID" in out


def test_an_upscale_in_the_foreground_prints_its_progress_a_few_times_not_per_tensor(tiny_llama):
    """A 0.7 s build printed about 80 `writing weights` lines: progress is printed at most twice a second, and the
    end always."""
    registry.import_folder(tiny_llama, "tiny")
    rc, _, err = cli("upscale", "--base", "tiny", "--m", "1", "--name", "deeper", "--shard-size", "20KB")
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert rc == 0 and registry.get("deeper") is not None
    assert 1 <= len(progress) <= 4, progress
    assert progress[-1].startswith("[100.0%]")
