"""Session 22: one rule for "the model name this spec registers" (runner.output_name), which the queue's withdraw of
a second job under one name, a resume's refusal of a name now taken, and the CLI's foreground runs all go by; the
CLI reaches no private name of the runner; and a resume of a job whose own run registered its model before its row
was marked stopped says the work is done instead of "queue it again under a new name"."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from backend import registry, runner
from backend.specs import (CptSpec, DataSource, DpoSpec, EvalSpec, ImportSpec, MergeSpec, SftSpec, UpscaleSpec,
                           spec_from_dict)
from storage import db
from storage.models import Job, ModelRecord

ROOT = Path(__file__).resolve().parent.parent
ALPACA = [DataSource(source="builtin:alpaca-mini")]
MULTI = dict(num_machines=2, main_process_ip="h0")


def _table(tiny_llama: Path) -> dict[str, tuple]:
    """Every kind of spec, with the name it registers (None: none)."""
    folder = str(tiny_llama)
    return {
        "import named": (ImportSpec(target=folder, name="imp"), "imp"),
        "import unnamed": (ImportSpec(target=folder), registry.import_name(folder)),  # the folder's name, made safe
        "import builtin": (ImportSpec(target="builtin"), None),  # imported once, under its own name
        "upscale": (UpscaleSpec(base="tiny", m=1), "tiny-dus-m1"),
        "sft named": (SftSpec(model="tiny", data=ALPACA, name="s1"), "s1"),
        "dpo": (DpoSpec(model="tiny", data=[DataSource(source="builtin:prefs-mini")]), "tiny-dpo"),
        "pretrain (cpt)": (CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]), "tiny-cpt"),
        "merge": (MergeSpec(models=["a", "b"], method="average"), "a_b-average"),
        "eval": (EvalSpec(models=["tiny"], tasks=["perplexity"]), None),
        "sft machine 0 of 2": (SftSpec(model="tiny", data=ALPACA, name="multi", machine_rank=0, **MULTI), "multi"),
        # machine 0 registers the model (training.py); the others train and register nothing
        "sft machine 1 of 2": (SftSpec(model="tiny", data=ALPACA, name="multi", machine_rank=1, **MULTI), None),
    }


CASES = ["import named", "import unnamed", "import builtin", "upscale", "sft named", "dpo", "pretrain (cpt)", "merge",
         "eval", "sft machine 0 of 2", "sft machine 1 of 2"]


def _row(spec, status: str = "queued") -> Job:
    """A job row as submit writes it (an unnamed import holds the name it derives), without submit's checks."""
    if spec.kind == "import" and not spec.name and (name := registry.import_name(spec.target)):
        spec = spec.model_copy(update={"name": name})
    with db.session() as s:
        job = Job(kind=spec.kind, spec=spec.model_dump(mode="json"), status=status)
        s.add(job)
        s.commit()
        s.refresh(job)
    return job


def _foreground(spec, monkeypatch) -> list:
    """Run `spec` as the CLI runs it without --queue (_run_or_queue), the work replaced by a stand-in."""
    from backend.cli.common import _run_or_queue

    ran = []
    work = lambda kind: (lambda spec, out, progress: ran.append(spec.kind) or {})  # noqa: E731
    monkeypatch.setattr(runner, "work_function", work)
    monkeypatch.setattr(runner.child, "work_function", work)
    _run_or_queue(spec, argparse.Namespace(queue=False, after=None, save_spec=None))
    return ran


@pytest.mark.parametrize("case", CASES)
def test_the_queue_the_resume_and_the_foreground_agree_on_the_name_a_spec_registers(case, tiny_llama, monkeypatch):
    """machine_rank 1 registers nothing: the foreground said so, while the queue withdrew such a job as a second
    maker of its name and a resume refused it once machine 0 had registered the model."""
    spec, name = _table(tiny_llama)[case]
    assert runner.output_name(spec, derive_import=True) == name
    assert runner.output_name(spec_from_dict(_row(spec, "succeeded").spec)) == name  # as stored by submit
    # the queue: a second active row of the spec is withdrawn (as a maker of a name another active job makes) or not
    first, second = _row(spec), _row(spec)
    if name:
        assert runner.queue._making(name).id == first.id
        with pytest.raises(ValueError, match=f"Job {first.id} .* will register a model named '{name}'"):
            runner.queue._withdraw_if_second(second, spec_from_dict(second.spec))  # as submit passes it
        assert runner.get(second.id) is None
    else:
        runner.queue._withdraw_if_second(second, spec_from_dict(second.spec))
        assert runner.get(second.id).status == "queued"
    # the foreground: refused while a queued job makes the name, as --queue is
    if name:
        with pytest.raises(ValueError, match=f"Job {first.id} .* will register a model named '{name}'"):
            _foreground(spec, monkeypatch)
    elif spec.kind != "import":  # (the built-in's import is not run here: it converts a GGUF)
        assert _foreground(spec, monkeypatch) == [spec.kind]
    # the resume: refused once a model holds the name
    runner.cancel(first.id)
    if name:
        registry.register(tiny_llama, name, "base")
        with pytest.raises(ValueError, match=f"Job {first.id} would register '{name}' again"):
            runner.resume(first.id)
    else:
        registry.register(tiny_llama, "multi", "base")  # machine 0's model (the others' spec names it)
        assert runner.resume(first.id).status == "queued"


def test_the_foreground_import_is_refused_by_the_name_it_derives(tiny_llama, capsys):
    """`models import FOLDER` (no --queue) while a queued import of that folder will register the derived name."""
    from backend.__main__ import main

    queued = _row(ImportSpec(target=str(tiny_llama)))
    assert main(["models", "import", str(tiny_llama)]) == 2
    assert f"Job {queued.id} (import, queued) will register a model named '{registry.import_name(str(tiny_llama))}'" \
        in capsys.readouterr().err
    assert registry.list_models() == []


def test_the_cli_reaches_no_private_name_of_the_runner():
    """`runner._check_not_making` was called from cli/common.py and cli/models.py: the CLI is a client of the
    runner's public face (a comment may still name a private function)."""
    reached = []
    for path in sorted((ROOT / "backend" / "cli").glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "runner" \
                    and n.attr.startswith("_"):
                reached.append(f"{path.name}:{n.lineno} runner.{n.attr}")
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("backend.runner"):
                reached += [f"{path.name}:{n.lineno} {n.module}.{a.name}" for a in n.names if a.name.startswith("_")]
    assert reached == []
    assert not hasattr(__import__("backend.cli.common").cli.common, "_foreground_name")  # the second spelling, gone


def test_a_machine_1_job_is_queued_beside_machine_0s_but_not_under_a_taken_name(tiny_llama):
    """check_before_queueing by the same rule: machine 0's queued job is its partner, not a second maker of the name
    (it was refused as one); a name already taken still refuses it (machine 0 fails on it at its start)."""
    registry.import_folder(tiny_llama, "tiny")
    zero = runner.submit(SftSpec(model="tiny", data=ALPACA, name="multi", machine_rank=0, **MULTI))
    one = runner.submit(SftSpec(model="tiny", data=ALPACA, name="multi", machine_rank=1, **MULTI))
    assert [runner.get(j.id).status for j in (zero, one)] == ["queued", "queued"]
    with pytest.raises(ValueError, match=f"Job {zero.id} .* will register a model named 'multi'"):  # a second maker
        runner.submit(SftSpec(model="tiny", data=ALPACA, name="multi"))
    with pytest.raises(ValueError, match="A model named 'tiny' is already registered"):
        runner.submit(SftSpec(model="tiny", data=ALPACA, name="tiny", machine_rank=1, **MULTI))
    assert [j.id for j in runner.list_jobs()] == [one.id, zero.id]  # the refusals queued nothing


# ---------------------------------------------------------------- 2. a resume of a job whose model is registered

def _upscale_job(tiny_llama, name: str) -> Job:
    registry.import_folder(tiny_llama, "tiny")
    return runner.submit(UpscaleSpec(base="tiny", m=1, name=name))


@pytest.mark.parametrize("stop", ["interrupted", "cancelled"])
def test_resume_of_a_job_whose_own_run_registered_its_model_marks_it_done(stop, tiny_llama, monkeypatch, capsys):
    """Given up for dead by another machine (or cancelled) while its work finished: the job's own run recorded the
    model it registered in its row ("the work had finished anyway"). `jobs resume` (and the Jobs page's button, which
    calls runner.resume) refused it: "would register 'up1' again … queue its spec again with a new name"."""
    from backend.__main__ import main

    job = _upscale_job(tiny_llama, "up1")
    real = runner.work_function("upscale")

    def work(spec, out, progress):
        result = real(spec, out, progress)  # registered: the row is stopped before its run writes "succeeded"
        if stop == "cancelled":
            assert runner.cancel(job.id).status == "cancelled"
        else:  # as recover_orphans on another machine marks a job whose machine fell silent
            assert runner._transition(job.id, "running", status="interrupted", finished=runner.utcnow(),
                                      message="interrupted: its process ended without finishing")
        return result

    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 1
    row = runner.get(job.id)
    assert row.status == stop and row.result["model"] == "up1" and registry.get("up1").path == row.result["path"]
    # a job that waited for it, cancelled unstarted because it did not succeed
    with db.session() as s:
        waiting = Job(kind="eval", spec=EvalSpec(models=["up1"], tasks=["perplexity"]).model_dump(mode="json"),
                      status="cancelled", after=job.id, message=f"not run: job {job.id} it waited for {stop}")
        s.add(waiting)
        s.commit()
        s.refresh(waiting)
    capsys.readouterr()
    assert main(["jobs", "resume", str(job.id)]) == 0
    assert capsys.readouterr().out == (f"job {job.id}: succeeded (its work was done: its run registered up1 before "
                                       f"the job was marked {stop}; nothing was run again)\n")
    done = runner.get(job.id)
    assert (done.status, done.progress, done.result["model"]) == ("succeeded", 1.0, "up1")
    assert "registered" in done.message and "up1" in done.message
    assert runner.get(waiting.id).status == "queued"  # it runs now, after the job it waits for succeeded
    assert [m.name for m in registry.list_models()] == ["tiny", "up1"]  # nothing made twice, nothing removed
    with pytest.raises(ValueError, match=f"Job {job.id} has succeeded"):
        runner.resume(job.id)


@pytest.mark.parametrize("kind", ["upscale", "import"])
def test_resume_of_a_job_killed_after_it_registered_says_its_work_is_there(kind, tiny_llama, monkeypatch):
    """Killed between registering and writing its result (its worker died; _watch_parent ends the job's process): the
    model's row names the job, so resume marks it done. A row of an older version names none: the job is not marked
    done, but the refusal says what is known: the model was registered during this job's run from its very spec, so
    its work looks done; it sent the user to queue the spec again under a new name, the work done a second time."""
    import subprocess
    import sys

    job = _upscale_job(tiny_llama, "up2") if kind == "upscale" else runner.submit(ImportSpec(target=str(tiny_llama),
                                                                                              name="up2"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: the job's process, ended with its worker
    assert runner._transition(job.id, "queued", status="running", started=runner.utcnow(), pid=gone.pid)
    monkeypatch.setenv("DUS_JOB_ID", str(job.id))
    runner.work_function(kind)(spec_from_dict(job.spec), None, lambda f, m: None)  # registers up2
    assert runner.recover_orphans() == [job.id] and runner.get(job.id).status == "interrupted"
    assert registry.get("up2").job_id == job.id  # the model's row names the job that registered it: known done
    done = runner.resume(job.id)
    assert (done.status, done.message) == ("succeeded", "done: its run registered up2 before the job was marked "
                                                        "interrupted; nothing was run again")
    # a model registered by an older version names no job: not marked done, but the refusal says what is known
    assert runner._transition(job.id, "succeeded", status="interrupted")
    with db.session() as s:
        rec = s.get(ModelRecord, registry.get("up2").id)
        rec.job_id = None
        s.add(rec)
        s.commit()
    with pytest.raises(ValueError) as refused:
        runner.resume(job.id)
    said = str(refused.value)
    made = {"upscale": "upscaled", "import": "base"}[kind]
    assert said.startswith(f"Job {job.id}'s work looks done: the {made} model 'up2' at {registry.get('up2').path} ")
    assert "registered during this job's last run, from this job's own spec" in said
    assert f"python -m backend jobs log {job.id}" in said and "python -m backend models delete up2" in said
    assert "new name" not in said
    assert runner.get(job.id).status == "interrupted"  # no row says this job made it: not marked done


def test_resume_still_refuses_a_name_another_model_took(tiny_llama):
    """A model registered under the name before the job ran, or of another spec, is not the job's work."""
    job = _upscale_job(tiny_llama, "up3")
    assert runner._transition(job.id, "queued", status="interrupted", started=runner.utcnow(),
                              finished=runner.utcnow())
    registry.register(tiny_llama, "up3", "base")  # registered after the run, and no up-scale of this spec
    with pytest.raises(ValueError, match=f"Job {job.id} would register 'up3' again: .* new name"):
        runner.resume(job.id)


@pytest.mark.parametrize("by", ["foreground", "job 99"])
def test_resume_does_not_take_a_model_another_spec_registered_later_under_its_name(by, tiny_llama, monkeypatch):
    """A's run registered up1 after A was cancelled (result recorded); the user deleted up1 and an up-scale of
    another spec (m=2) registered up1 again, at the same default folder. Resuming A must not call B's model A's
    (the review's proof: it was marked done, the same name and folder, registered after A's run started)."""
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="up1"))
    real = runner.work_function("upscale")

    def work(spec, out, progress):
        result = real(spec, out, progress)
        assert runner.cancel(job.id).status == "cancelled"
        return result

    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 1
    a_path = runner.get(job.id).result["path"]
    registry.delete("up1")
    other = UpscaleSpec(base="tiny", m=2, name="up1")  # another spec, same name
    if by == "job 99":  # registered by another queued job's child: its row names job 99
        monkeypatch.setenv("DUS_JOB_ID", "99")
    else:  # a foreground CLI run (execute above set it in this process)
        monkeypatch.delenv("DUS_JOB_ID", raising=False)
    real(other, None, lambda f, m: None)
    rec = registry.get("up1")
    assert rec.recipe["m"] == 2 and rec.path == a_path and rec.job_id != job.id  # the same folder: models/up1
    with pytest.raises(ValueError, match=f"Job {job.id} would register 'up1' again"):
        runner.resume(job.id)  # was marked succeeded "done: its run registered up1", its waiters given B's model
    assert runner.get(job.id).status == "cancelled"
