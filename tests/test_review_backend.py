"""Bugs found in a correctness review of the backend, each pinned by a test that failed before its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend import registry
from storage import db
from tests.conftest import load_state
from tests.test_registry import pickle_folder

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- registry: pickle tensors that share storage

def test_pickle_tensors_that_are_views_of_one_storage_are_all_kept(tiny_llama, tmp_path):
    """Conversion scripts split a fused qkv with torch.split; torch.save keeps the views on one storage. Only
    tensors that are the very same view (tied weights) may be dropped, never disjoint slices."""
    state = load_state(tiny_llama)
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    fused = torch.cat([state[q], state[k]])  # one storage
    state[q], state[k] = torch.split(fused, [state[q].shape[0], state[k].shape[0]])
    assert state[q].untyped_storage().data_ptr() == state[k].untyped_storage().data_ptr()
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied: the same view, one copy is enough
    folder = tmp_path / "fused"
    folder.mkdir()
    for f in tiny_llama.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, folder / f.name)
    torch.save(state, folder / "pytorch_model.bin")

    rec = registry.import_folder(folder, "fused", allow_pickle=True)
    converted = load_state(Path(rec.path))
    original = load_state(tiny_llama)
    assert converted.keys() == original.keys()  # k_proj kept; the tied head stored once
    assert all(torch.equal(converted[n], original[n]) for n in original)


# ---------------------------------------------------------------- registry: killed between rename and registration

def test_an_import_killed_between_rename_and_registration_is_cleaned_at_the_next_start(tiny_llama, workspace):
    """A job killed (or cancelled: SIGTERM) right after the rename must not leave a folder in models/ that blocks
    the name for ever: the built-in import would then fail at every try."""
    src = db.new_tmp("import")
    for f in tiny_llama.iterdir():
        shutil.copy2(f, src / f.name)
    script = ("import os, sys; from pathlib import Path; from backend import registry; "
              "registry.register = lambda *a, **k: os._exit(9); "  # the process ends here, no handler runs
              "registry._finish(Path(sys.argv[1]), 'imp', 'test', lambda f, m: None)")
    rc = subprocess.run([sys.executable, "-c", script, str(src)], cwd=ROOT, env=dict(os.environ)).returncode
    assert rc == 9 and (db.models_dir() / "imp").exists() and registry.get("imp") is None
    db.clean_stale_tmp()  # what the next worker start does
    assert not (db.models_dir() / "imp").exists()
    src2 = db.new_tmp("import")
    for f in tiny_llama.iterdir():
        shutil.copy2(f, src2 / f.name)
    rec = registry._finish(src2, "imp", "test", lambda f, m: None)  # the name can be used again
    assert rec.name == "imp" and not (Path(rec.path) / db.UNREGISTERED_MARK).exists()


# ---------------------------------------------------------------- registry: one folder under two names

def test_deleting_one_of_two_names_for_one_folder_keeps_the_files_of_the_other(tiny_llama):
    made = db.models_dir() / "made"
    shutil.copytree(tiny_llama, made)
    registry.import_folder(made, "made")
    registry.import_folder(made, "alias")  # the same folder registered again under another name
    registry.delete("alias")
    assert (made / "config.json").exists()  # "made" still points here
    assert registry.resolve("made")[0] == made.resolve()
    registry.delete("made")
    assert not made.exists()  # the last name for it goes with its files


# ---------------------------------------------------------------- recipe: cancelling a run that waits on another

def test_cancelling_a_run_leaves_the_jobs_of_the_earlier_run_it_waits_on(tiny_llama):
    """A second run of an unchanged recipe waits on the first run's queued jobs (in-flight); cancelling the second
    run must not cancel the first run's work."""
    import yaml

    from backend import recipe, runner

    text = yaml.safe_dump(yaml.safe_load(recipe.preset("smoke", str(tiny_llama))), sort_keys=False)
    [p1] = recipe.plan_text(text)
    run1 = recipe.submit(p1, text)
    first = {r.stage: j.id for r, j in recipe.stages(run1) if j}
    [p2] = recipe.plan_text(text)
    assert {n.status for n in p2.nodes if n.stage in first} == {"in-flight"}
    run2 = recipe.submit(p2, text)
    assert recipe.cancel_run(run2) == []  # run 2 started nothing of its own
    assert {runner.get(i).status for i in first.values()} == {"queued"}


# ---------------------------------------------------------------- runner: a worker's dead child and a resumed run

def test_a_worker_does_not_fail_the_run_another_worker_started_after_a_resume(tiny_llama, monkeypatch):
    """Two workers on one machine: worker A's child writes 'failed' and exits; the user resumes; worker B claims
    and starts it again. When A then notices its own child's exit, the row belongs to B's run and must stay."""
    from backend import runner
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="again"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    class OldRun:  # the child worker A started: it has exited
        pid, returncode = dead.pid, 1

        def poll(self):
            return 1

    # worker B's run: a live process whose command line is the job's (`… jobs exec ID`)
    again = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jobs", "exec", str(job.id)])

    def start_child(j):
        # meanwhile its run failed, was resumed, and worker B started it again
        runner._update(j.id, status="running", pid=again.pid, message="running again")
        return OldRun()

    monkeypatch.setattr(runner.loop, "start_child", start_child)
    try:
        runner.worker(poll=0.05, once=True)
        row = runner.get(job.id)
        assert (row.status, row.pid, row.message) == ("running", again.pid, "running again")
    finally:
        again.kill()
        again.wait()
    runner._update(job.id, status="failed")


# ---------------------------------------------------------------- upscale: Qwen2 sliding layers without layer_types

def test_qwen2_sliding_layers_given_by_max_window_layers_follow_the_layer_map(tiny_qwen2, tmp_path):
    """A Qwen2 config.json from the Hub has no layer_types: transformers derives them (layers >= max_window_layers
    slide when use_sliding_window). Up-scaled, each copied layer must keep its own attention type."""
    import json

    from transformers import AutoConfig

    from backend.upscale import dus, run_upscale
    from backend.specs import UpscaleSpec

    base = tmp_path / "qwen-hub-style"
    shutil.copytree(tiny_qwen2, base)
    cfg = json.loads((base / "config.json").read_text())
    cfg.pop("layer_types")
    cfg.update(use_sliding_window=True, sliding_window=16, max_window_layers=3)
    (base / "config.json").write_text(json.dumps(cfg))
    types = AutoConfig.from_pretrained(base).layer_types
    assert types == ["full_attention"] * 3 + ["sliding_attention"] * 3

    out = run_upscale(UpscaleSpec(base=str(base), m=1, name="qwen-dus"))
    got = AutoConfig.from_pretrained(out["path"])
    assert got.num_hidden_layers == 10
    assert got.layer_types == [types[sl.layer] for sl in dus.plan(6, m=1)]


# ---------------------------------------------------------------- registry: a Trainer output folder in pickle form

def test_pickle_import_of_a_trainer_folder_reads_the_weights_not_training_args(tiny_llama, tmp_path):
    """transformers' Trainer writes training_args.bin (a pickled TrainingArguments object) beside
    pytorch_model.bin; it is no weights file, and weights_only=True rightly refuses it."""
    from types import SimpleNamespace

    folder = pickle_folder(tiny_llama, tmp_path / "trainer-out")
    torch.save(SimpleNamespace(learning_rate=1e-4), folder / "training_args.bin")
    rec = registry.import_folder(folder, "from-trainer", allow_pickle=True)
    converted, original = load_state(Path(rec.path)), load_state(tiny_llama)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[n], original[n]) for n in original)


# ---------------------------------------------------------------- evaluate: a multiple-choice answer that is no index

def test_mc_rows_whose_answer_is_not_an_index_into_choices_are_refused(tmp_path):
    """ARC files name the answer by letter (answerKey "B"); compared with a choice index it never matches, so the
    model would score 0 % without a word. Refused before any model loads, naming the line and field."""
    import json

    from backend import evaluate

    path = tmp_path / "letters.jsonl"
    ok = {"question": "2+2?", "choices": ["3", "4"], "answer": 1}
    for bad in ({"answer": "B"}, {"answer": 2}, {"answer": True}, {"choices": "34"}):
        path.write_text(json.dumps(ok) + "\n" + json.dumps({**ok, **bad}) + "\n")
        try:
            evaluate.task_set(f"mc:{path}", 10)
        except evaluate.EvalError as exc:
            assert "line 2" in str(exc) and ("answer" in str(exc) or "choices" in str(exc))
        else:
            raise AssertionError(f"{bad} was accepted")
    path.write_text(json.dumps(ok) + "\n")
    assert evaluate.task_set(f"mc:{path}", 10).items == [ok]


# ---------------------------------------------------------------- what a job says when it ends (found in the browser)

def test_the_built_in_model_given_another_name_is_refused_not_renamed_in_silence(workspace):
    with pytest.raises(registry.RegistryError, match="always registered as SmolLM2-135M-Instruct"):
        registry.import_any("builtin", "my-smol")  # it "succeeded" as SmolLM2-135M-Instruct; no my-smol existed
    assert registry.get("my-smol") is None


def test_a_finished_job_says_its_scalars_not_a_raw_dict(tiny_llama, monkeypatch):
    from backend import runner
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="x"))
    result = {"model": "x", "global_step": 4, "perf": {"compile": "off", "liger": False}, "notes": []}
    monkeypatch.setattr(runner.child, "work_function", lambda kind: lambda spec, out, progress: result)
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    assert runner.execute(job.id) == 0
    done = runner.get(job.id)
    assert done.message == "done: model x, global_step 4" and done.result["perf"] == result["perf"]


def test_the_progress_line_calls_an_eval_loss_an_eval_loss(tmp_path, capsys):
    from backend.train_entry import MetricsCallback

    cb = MetricsCallback(tmp_path, 4, None)
    cb.record(2, {"eval_loss": 1.5})
    cb.record(3, {"loss": 2.25})
    out = capsys.readouterr().out.splitlines()
    assert "step 2/4 · eval loss 1.5000" in out[0] and "step 3/4 · loss 2.2500" in out[1]


def test_tokens_per_second_leaves_out_evaluation_and_checkpoint_time(tmp_path, monkeypatch):
    """Two steps of 100 tokens, 1 s each; after the first, a 3 s evaluation and a 2 s save: 100 tokens/s both times
    (the window holding the evaluation and the save read 100 / 6 s)."""
    import json
    from types import SimpleNamespace

    from transformers import TrainerControl

    from backend import train_entry
    from backend.train_job import metrics

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(metrics.time, "time", lambda: clock.now)
    cb = train_entry.MetricsCallback(tmp_path, 2, None)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    for step, pause in ((1, True), (2, False)):
        clock.now += 1.0
        state.global_step, state.num_input_tokens_seen = step, 100 * step
        control = TrainerControl(should_save=pause)
        cb.on_step_end(None, state, control)
        assert control.should_log is pause  # a step that saves logs first (its loss goes into the checkpoint)
        cb.on_log(None, state, None, logs={"loss": 2.0})
        if pause:
            clock.now += 3.0
            cb.on_log(None, state, None, logs={"eval_loss": 1.9})  # the evaluation's own log line: no throughput
            cb.on_evaluate(None, state, None)
            clock.now += 2.0
            cb.on_save(None, state, None)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("tokens_per_s") for x in lines] == [100.0, None, 100.0]


# ---------------------------------------------------------------- found driving Synth / Compare / Recipe in a browser

def test_swept_merge_points_are_labelled_by_their_value_not_as_the_papers_merge():
    from backend.recipe import tables
    from backend.recipe.spec import expand_stages

    stages = expand_stages([{"name": "avg", "kind": "merge", "label": "Average (0.5, 0.5)",
                             "models": ["a", "b"], "sweep": {"weight": [0.0, 0.5, 1.0]}}])
    assert [s["label"] for s in stages] == ["avg [weight=0.0]", "avg [weight=0.5]", "avg [weight=1.0]"]
    assert all(s["label"] not in tables.PAPER_H6 for s in stages)  # no published number beside a sweep point
    assert tables._cell(309.7419) == "309.742" and tables._cell(309.7168) == "309.717"  # were both "309.7"


def test_an_eval_task_file_that_is_not_there_is_refused_in_the_spec(tmp_path):
    from pydantic import ValidationError

    from backend.specs import EvalSpec, explain

    for task in ("qa", "mc", "gsm8k"):
        with pytest.raises(ValidationError, match="does not exist"):
            EvalSpec(models=["m"], tasks=[f"{task}:{tmp_path}/none.jsonl"])
    with pytest.raises(ValidationError) as exc:
        EvalSpec(models=["m"], tasks=["qa", "qa"])
    assert explain(exc.value) == "tasks: listed twice: qa."  # was "tasks: tasks: a task is listed twice."


def test_no_usable_pair_registers_no_empty_training_set_and_lengths_are_the_exported_pairs(tmp_path, monkeypatch):
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    class Chatty:
        name = "chatty"

        def rephrase(self, seeds):
            from backend.synth.rephrase import parse_reply

            out = []
            for s in seeds:
                try:
                    out.append(parse_reply("Sure! Here is a rephrased version of your problem."))
                except Exception as exc:  # noqa: BLE001 - what a model rephraser returns for a bad reply
                    out.append(exc)
            return out

    rules = pipeline.make_rephraser
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Chatty())
    result = pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "a"), num_seeds=4, name="bad"))
    assert result["rows"] == 0 and result["failed"] == 4 and result["instruct"] is None
    assert pipeline.get_dataset("bad-instruct") is None and pipeline.get_dataset("bad-alignment") is None
    dsid = pipeline.get_dataset("bad-pairs").id
    _, pairs = pipeline.query_pairs(dsid)
    assert len(pairs) == 4  # each of the four seeds' pairs is checked below
    assert all("it began: 'Sure! Here is a rephrased version" in p.reason for p in pairs)  # what the model said
    with pytest.raises(pipeline.DatasetError, match="no pair to export: 0 verified"):
        pipeline.export("bad-pairs")
    assert pipeline.length_histograms(dsid) == {c: [] for c in ("q_words", "new_q_words", "a_words", "new_a_words")}
    # failed pairs are not drawn

    monkeypatch.setattr(pipeline, "make_rephraser", rules)  # not monkeypatch.undo(): that drops the test workspace
    pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "b"), num_seeds=6, name="good"))
    good = pipeline.get_dataset("good-pairs").id
    _, pairs = pipeline.query_pairs(good)
    pipeline.reject_by_hand(pairs[0].id)
    hist = pipeline.length_histograms(good)
    assert sum(n for _, n in hist["new_a_words"]) == 5 == pipeline.export("good-pairs")["rows"]


# ---------------------------------------------------------------- resume goes on with the chain

def test_resuming_a_failed_job_queues_again_the_chain_that_waited_for_it(tiny_llama):
    from backend import runner
    from backend.specs import DataSource, SftSpec

    registry.import_folder(tiny_llama, "tiny")

    def spec(name):
        return SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name=name)

    cpt = runner.submit(spec("a"))
    sft = runner.submit(spec("b"), after=cpt.id)
    dpo = runner.submit(spec("c"), after=sft.id)
    mine = runner.submit(spec("d"), after=cpt.id)
    runner.cancel(mine.id)  # the user's own cancel: it stays
    other = runner.submit(spec("e"))
    runner._update(cpt.id, status="failed", error="boom")
    runner._update(other.id, status="running")  # not claimable: the claim below only cancels the chain
    assert runner._claim_next() is None
    assert [runner.get(j.id).status for j in (sft, dpo)] == ["cancelled", "cancelled"]  # as before: not run
    runner.resume(cpt.id)
    assert [runner.get(j.id).status for j in (cpt, sft, dpo, mine)] == ["queued", "queued", "queued", "cancelled"]
    assert runner.get(dpo.id).message == f"queued again: job {sft.id} it waits for was queued again"


def test_the_recipe_graph_shows_a_data_sets_fingerprint_once_unless_stages_read_it_differently():
    from backend.recipe.graph import graph_dot

    dot = graph_dot([{"stage": "a", "kind": "sft", "data": {"builtin:alpaca-mini": "d3efbe51aaaa"}},
                     {"stage": "b", "kind": "sft", "data": {"builtin:alpaca-mini": "d3efbe51aaaa", "x.jsonl": "11"}},
                     {"stage": "c", "kind": "sft", "data": {"x.jsonl": "22"}}]).splitlines()
    assert '"data:builtin:alpaca-mini" -> "a" [style=dashed];' in dot  # no label on each of its edges
    assert any('label="alpaca-mini\\nd3efbe51"' in line for line in dot)  # said once, in its note
    assert '"data:x.jsonl" -> "b" [style=dashed, label="11", fontsize=8];' in dot  # read two ways: on the edges
    assert '"data:x.jsonl" -> "c" [style=dashed, label="22", fontsize=8];' in dot
