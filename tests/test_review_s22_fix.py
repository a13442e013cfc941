"""Review s22 fixes: a queued job's output folder taken as the model it will make (`eval FOLDER --queue --after N`
was refused, and the name the job derives said nowhere), and a queued import of the built-in imported before said
"already registered", not a fresh import's "done: model …"."""

from __future__ import annotations

import pytest

from backend import registry, runner
from backend.specs import EvalSpec, ImportSpec, UpscaleSpec


# ---------------------------------------------------------------- 1. a queued job's output folder as its model

def queued_upscale(tiny_llama, workspace):
    """`upscale --base tiny4 --m 1 --out WS/models/t4m1 --queue`: it will register tiny4-dus-m1 in t4m1."""
    registry.import_folder(tiny_llama, "tiny4")
    out = workspace / "models" / "t4m1"
    job = runner.submit(UpscaleSpec(base="tiny4", m=1, out=str(out)))
    assert runner.planned_name(job) == "tiny4-dus-m1"
    return job, out


def test_an_evaluation_of_the_folder_a_queued_job_writes_is_queued_and_scores_it(tiny_llama, workspace,
                                                                                monkeypatch):
    """The chain: the evaluation, queued after the up-scale by its output folder, is run once it succeeded (in
    this process, as the worker's child would: a worker's two child processes took 14 s) and resolves the folder to
    the model it registered."""
    up, out = queued_upscale(tiny_llama, workspace)
    ev = runner.submit(EvalSpec(models=[str(out)], tasks=["perplexity"], limit=2, device="cpu"), after=up.id)
    assert runner.get(ev.id).status == "queued" and runner.get(ev.id).after == up.id
    assert runner.inputs_gone(runner.get(ev.id)) is None  # not "its model folder … is gone" while it waits
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(up.id) == 0 and runner.execute(ev.id) == 0
    done_up, done_ev = runner.get(up.id), runner.get(ev.id)
    assert done_up.status == "succeeded", done_up.error
    assert registry.get("tiny4-dus-m1").path == str(out.resolve())
    assert done_ev.status == "succeeded", done_ev.error
    # perplexity, word and byte perplexity, their errors, bits per byte; the device by the model's name
    assert done_ev.result["scores"] == 7 and list(done_ev.result["device"]) == ["tiny4-dus-m1"]


def test_a_refused_reference_names_the_job_that_writes_a_folder_of_that_name(tiny_llama, workspace, tmp_path):
    up, out = queued_upscale(tiny_llama, workspace)
    hint = (f" Job {up.id} (upscale, queued) will register 'tiny4-dus-m1' at {out.resolve()}: give that name, or "
            "that folder.")
    with pytest.raises(ValueError) as by_name:
        runner.submit(EvalSpec(models=["t4m1"], tasks=["perplexity"]), after=up.id)
    assert str(by_name.value) == ("'t4m1' is neither a registered model (python -m backend models list), nor a "
                                  "folder, nor the model a queued job will make." + hint)
    other = tmp_path / "elsewhere" / "t4m1"  # a folder of that name, elsewhere: not the job's
    with pytest.raises(ValueError) as by_folder:
        runner.submit(EvalSpec(models=[str(other)], tasks=["perplexity"]), after=up.id)
    assert str(by_folder.value) == (f"{str(other)!r} is not a folder on this machine: give a model folder, or a "
                                    "registered model's name (python -m backend models list)." + hint)
    with pytest.raises(ValueError, match=r"nor the model a queued job will make\. Job \d+ \(upscale, queued\) will "
                                         r"register 'tiny4-dus-m1'"):  # a name like it
        runner.submit(EvalSpec(models=["tiny4-dus-m"], tasks=["perplexity"]))
    with pytest.raises(ValueError) as unlike:
        runner.submit(EvalSpec(models=["nothing-like"], tasks=["perplexity"]))
    assert str(unlike.value).endswith("nor the model a queued job will make.")  # no hint where none fits
    assert [j.id for j in runner.active_jobs()] == [up.id]


# ---------------------------------------------------------------- 2. the built-in imported again, as a job

def test_a_queued_import_of_the_builtin_registered_before_says_so(tiny_llama, monkeypatch):
    registry.register(tiny_llama, registry.BUILTIN_NAME, "base", source="builtin", recipe={"import": "builtin"})
    job = runner.submit(ImportSpec(target="builtin"))
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 0
    done = runner.get(job.id)
    assert done.result["already"] is True
    assert done.message.startswith(f"done: already registered: nothing imported, model {registry.BUILTIN_NAME}, "
                                   "layers 6, parameters ")
    assert [r.name for r in registry.list_models()] == [registry.BUILTIN_NAME]


def test_a_fresh_import_does_not_say_already_registered(tiny_llama, monkeypatch):
    job = runner.submit(ImportSpec(target=str(tiny_llama), name="fresh"))
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 0
    done = runner.get(job.id)
    assert done.result["already"] is False and done.message.startswith("done: model fresh, layers 6, ")


def test_the_cli_queues_an_evaluation_of_a_queued_jobs_output_folder(tiny_llama, workspace):
    """The walk's commands, as typed: `eval WS/models/t4m1 --queue --after 26` was refused."""
    from tests.test_review_cli import cli

    registry.import_folder(tiny_llama, "tiny4")
    out = workspace / "models" / "t4m1"
    rc, said, err = cli("upscale", "--base", "tiny4", "--m", "1", "--out", str(out), "--queue")
    assert rc == 0, err
    up = runner.active_jobs()[0]
    rc, said, err = cli("eval", str(out), "--tasks", "perplexity", "--queue", "--after", str(up.id))
    assert rc == 0, err
    ev = next(j for j in runner.active_jobs() if j.kind == "eval")
    assert ev.spec["models"] == [str(out)] and ev.after == up.id
    rc, said, err = cli("eval", "t4m1", "--tasks", "perplexity", "--queue", "--after", str(up.id))
    assert rc == 2 and err.endswith(f"will register 'tiny4-dus-m1' at {out}: give that name, or that folder.\n")
