"""Fourteenth session: a recipe's evaluation scores the models its stages made when one stage fails (it was
cancelled with the failed stage, and the run's tables came out empty). Each test fails without its fix."""

from __future__ import annotations

import json

import pytest
import yaml

from backend import recipe, registry, runner
from backend.evaluate import EvalError, run_eval
from backend.recipe import tables
from backend.specs import DataSource, EvalSpec, SftSpec


def _fast_sft(model: str, name: str) -> SftSpec:
    return SftSpec(model=model, data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=1,
                   save_steps=1, eval_fraction=0.0, max_length=32, max_rows=4)


def test_a_job_that_waits_runs_once_its_jobs_ended_however(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(_fast_sft("tiny", "a"))
    b = runner.submit(_fast_sft("tiny", "b"))
    ev = runner.submit(EvalSpec(models=["a", "b"], tasks=["perplexity"], limit=2, skip_missing=True),
                       waits=[a.id, b.id])
    assert runner.get(ev.id).waits == [a.id, b.id] and runner.get(ev.id).message == f"waiting for jobs {a.id}, {b.id}"
    assert runner.with_dependencies([ev.id]) == {a.id, b.id, ev.id}  # a foreground run takes what it waits for
    runner._update(a.id, status="succeeded")
    runner._update(b.id, status="running")
    assert runner._claim_next(only={ev.id}) is None  # b still runs
    assert runner._waits_on_a_job(runner.get(ev.id), {})
    runner._update(b.id, status="failed")
    assert not runner._waits_on_a_job(runner.get(ev.id), {}) and runner._ended_dependency(runner.get(ev.id), {}) is None
    claimed = runner._claim_next(only={ev.id})  # a `needs` job would be cancelled here ("it waited for failed")
    assert claimed is not None and claimed.id == ev.id and runner.get(ev.id).status == "running"
    with pytest.raises(ValueError, match="No job 999"):
        runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"]), waits=[999])


def test_an_evaluation_leaves_out_models_not_made_and_fails_when_none_is(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    out = run_eval(EvalSpec(models=["tiny", "never-made"], tasks=["perplexity"], limit=2, skip_missing=True))
    assert out["skipped"] == ["never-made"] and out["scores"] >= 1
    assert any("never-made" in n for n in out["notes"])
    assert tables.latest_scores(["tiny"])["tiny"]["perplexity"] > 1
    with pytest.raises(EvalError, match="none of the models to evaluate exists"):
        run_eval(EvalSpec(models=["never-made"], tasks=["perplexity"], limit=2, skip_missing=True))
    with pytest.raises(Exception, match="never-made"):  # without skip_missing an unknown model is an error, as before
        run_eval(EvalSpec(models=["tiny", "never-made"], tasks=["perplexity"], limit=2))


def test_one_failed_stage_leaves_the_other_stages_scores(tiny_llama, tokenizer_dir, tmp_path, capsys):
    from tests.conftest import make_llama

    good = json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n"
    bad = tmp_path / "chat.jsonl"
    bad.write_text(good)
    d = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    # the stage that succeeds beside the failing one: a merge of two small registered models, not the preset's
    # first SFT (a second trainer's start, the test's largest cost, for a stage any kind stands for here); avg
    # merges the up-scaled model with sft-b (equal depths), as tests/test_recipe.py's failed-stage test does
    for seed in (1, 2):
        registry.import_folder(make_llama(tokenizer_dir, tmp_path / f"other{seed}", seed=seed), f"other{seed}")
    d["stages"][0] = {"name": "twin", "kind": "merge", "models": ["other1", "other2"], "method": "average",
                      "weights": [0.5, 0.5]}
    d["stages"][1]["data"] = [{"source": str(bad)}]
    d["stages"][2]["models"] = ["upscaled", "sft-b"]
    d["eval"]["limit"] = 2
    text = yaml.safe_dump(d, sort_keys=False)
    [p] = recipe.plan_text(text)
    run1 = recipe.submit(p, text)
    bad.write_text("this is not json\n")  # broken after queueing: sft-b's job fails, so does avg (needs it)
    runner.worker(once=True, slots=2)  # twin and sft-b side by side
    rows = {r.stage: (r, j) for r, j in recipe.stages(run1)}
    assert rows["sft-b"][1].status == "failed" and rows["avg"][1].status == "cancelled"
    ev_job = rows["eval:twin"][1]
    assert ev_job.status == "succeeded", (ev_job.status, ev_job.message)
    assert sorted(ev_job.result["skipped"]) == sorted([rows["sft-b"][0].output, rows["avg"][0].output])
    states = {stage: recipe.stage_state(r, j) for stage, (r, j) in rows.items()}
    assert states["eval:twin"] == states["eval:upscaled"] == states["eval:base"] == "succeeded"
    assert states["eval:sft-b"] == states["eval:avg"] == "skipped"
    scores = tables.latest_scores([rows[s][0].output or str(tiny_llama) for s in ("upscaled", "twin")])
    assert all(v["perplexity"] > 1 for v in scores.values()) and len(scores) == 2
    # the command line says so as the page does (it had a copy of the rule without "skipped")
    from backend.__main__ import main as cli

    assert cli(["recipe", "runs"]) in (0, None)
    shown = capsys.readouterr().out
    assert "skipped" in next(line for line in shown.splitlines() if "eval:sft-b" in line), shown
    # fixed: the rerun makes sft-b and avg and evaluates them alone; the scores already stored are reused
    bad.write_text(good)
    [p2] = recipe.plan_text(text)
    status = {n.stage: n.status for n in p2.nodes}
    assert status["eval:twin"] == status["eval:upscaled"] == "reuse"
    assert status["sft-b"] == status["avg"] == status["eval:sft-b"] == status["eval:avg"] == "run"
    # a model made since (here: registered by hand) is not "evaluated" by the job that left it out
    out_b = rows["sft-b"][0].output
    registry.import_folder(tiny_llama, out_b)
    [p3] = recipe.plan_text(text)
    status = {n.stage: n.status for n in p3.nodes}
    assert status["sft-b"] == "reuse" and status["eval:sft-b"] == "run", status
    registry.delete(out_b, delete_files=False)
    # or the failed stage resumed: the evaluation that left its model out is queued again with it, keeps the scores
    # it stored, and scores what the stage (and the merge after it) now make
    runner.resume(rows["sft-b"][1].id)
    assert runner.get(ev_job.id).status == "queued"
    runner.worker(once=True)
    rows = {r.stage: (r, j) for r, j in recipe.stages(run1)}
    assert rows["sft-b"][1].status == rows["avg"][1].status == rows["eval:avg"][1].status == "succeeded"
    states = {stage: recipe.stage_state(r, j) for stage, (r, j) in rows.items()}
    assert states["eval:sft-b"] == states["eval:avg"] == states["eval:twin"] == "succeeded", states
    made = [rows[s][0].output for s in ("sft-b", "avg")]
    assert all(v["perplexity"] > 1 for v in tables.latest_scores(made).values()) and len(made) == 2
    assert tables.latest_scores([rows["twin"][0].output])[rows["twin"][0].output] == scores[rows["twin"][0].output]


def test_ctrl_c_in_a_foreground_worker_marks_its_job_interrupted_at_once(tiny_llama, workspace):
    """Ctrl-C in `worker` (and in a foreground `recipe run`, which runs one): the job process, in a session
    of its own, killed itself when its worker went, but its row stayed "running" until a worker next started."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from storage import db

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(_fast_sft("tiny", "long").model_copy(update={"max_steps": 100000, "save_steps": 100000}))
    proc = subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.2"], env=dict(os.environ),
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        while not (runner.get(job.id).status == "running" and runner.get(job.id).pid) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        pid = runner.get(job.id).pid
        assert pid and db._pid_alive(pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:  # a failure above left the worker and its training job running for the rest of the suite
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if (left := runner.get(job.id).pid) and db._pid_alive(left):
            try:
                os.killpg(left, signal.SIGKILL)  # the job runs in a session of its own: its launcher and trainer
            except OSError:
                pass
    assert proc.returncode == 130 and "Traceback" not in err, err
    row = runner.get(job.id)
    assert row.status == "interrupted" and "Ctrl-C" in row.message and f"jobs resume {job.id}" in row.message
    assert row.finished is not None and not db._pid_alive(pid)
    assert runner.resume_point(row) is None  # no checkpoint yet: a resume starts over, as the Jobs page says


def test_a_model_folder_without_a_tokenizer_is_refused_before_anything_runs(tiny_llama, tmp_path):
    """It was registered (and up-scaled, merged: their outputs had no tokenizer either), and its first training
    job failed in the trainer with "Couldn't instantiate the backend tokenizer from one of: ."."""
    import shutil

    from backend.training import TrainingError, check_inputs

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama / f, bare / f)
    with pytest.raises(registry.RegistryError, match="has no tokenizer .*Copy the tokenizer files"):
        registry.import_any(str(bare), "bare")
    assert registry.get("bare") is None
    with pytest.raises(ValueError, match="has no tokenizer"):  # queued from a page or --queue
        runner.submit(_fast_sft(str(bare), "bare-sft"))
    assert runner.list_jobs() == []
    with pytest.raises(TrainingError, match="has no tokenizer"):  # in the foreground
        check_inputs(_fast_sft(str(bare), "bare-sft"))
    shutil.copy(tiny_llama / "tokenizer.json", bare / "tokenizer.json")  # what the message says to do
    assert registry.import_any(str(bare), "bare").num_layers == 6


@pytest.mark.parametrize("packing", [False, True])
def test_completion_only_loss_learns_the_last_reply_alone(tiny_llama, tmp_path, packing):
    """SftSpec.completion_only_loss: trl's labels are -100 on every token of the conversation before the last
    assistant reply (the default learns every token, as trl does for conversations)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import data, perf
    from backend.train_entry import build_trainer, make_config

    rows = tmp_path / "chat.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": f"answer {i} is here"},
                                                     {"role": "user", "content": "and?"}]}) + "\n"
                            for i in range(4)))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    labels = {}
    for only in (False, True):
        spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(rows))], max_steps=1, max_length=64,
                       packing=packing, completion_only_loss=only, eval_fraction=0.0)
        train, _, _ = data.split_mix([(str(rows), 1.0)], "sft", 0, None, eval_fraction=0.0)
        if only:
            train = data.to_prompt_completion(train)
            assert train[0]["prompt"][-1]["content"].startswith("question") and len(train[0]["completion"]) == 1
        args = make_config(spec, tmp_path / str(only), False, perf.resolve(spec, False))
        assert args.completion_only_loss is only
        trainer = build_trainer(spec, AutoModelForCausalLM.from_pretrained(tiny_llama), None, tok, args, train,
                                None, [])
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        labels[only] = batch["labels"]
        learned = tok.decode([t for t in batch["labels"][0].tolist() if t != -100])
        if only:
            assert "answer" in learned and "question" not in learned and "and?" not in learned, learned
        else:
            assert "question" in learned and "answer" in learned, learned
    assert (labels[True] != -100).sum() < (labels[False] != -100).sum() / 2


def test_an_sft_row_without_an_assistant_reply_is_refused(tmp_path):
    from backend import data

    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(data.DataError, match=r"q.jsonl, row 1: no assistant reply .*roles: system, user"):
        data.check_source(str(f), "sft")
    data.check_source(str(f), "cpt")  # plain text for continued pretraining: fine


def test_a_reply_nobody_reads_any_more_stops_generating(tiny_llama_untied):
    """The page's script stopped mid-reply (a click, a closed tab) or Ctrl-C in `chat`: generation ran on to
    max_new_tokens holding the model's lock, so other sessions' replies on that model waited behind it."""
    import time

    from backend import chat

    lm = chat.load(tiny_llama_untied, "tiny")
    made = []
    generate = lm.model.generate

    def recording(**kw):
        out = generate(**kw)
        made.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    lm.model.generate = recording
    full = "".join(chat.stream_reply(lm, [{"role": "user", "content": "hi"}], max_new_tokens=100))
    assert made == [100] and full  # read to the end: the whole reply, as before
    reply = chat.stream_reply(lm, [{"role": "user", "content": "hi"}], max_new_tokens=100)
    next(reply)
    reply.close()
    deadline = time.monotonic() + 30
    while len(made) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(made) == 2 and made[1] < 100, made
    assert lm.lock.acquire(timeout=5)  # released for the next reply
    lm.lock.release()


def test_sizes_in_messages_and_progress_have_their_own_unit(tmp_path, monkeypatch):
    """A small model's disk check read "needs 0.00 GiB, 0.00 GiB is free", its build "writing weights: 0 / 0 MiB"."""
    from collections import namedtuple

    from backend import outputs
    from backend.names import human_bytes

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage(10 << 20, 0, 900 << 10))
    with pytest.raises(OSError, match=r"needs 1.43 MiB \(and 50 MiB to spare\), 900 KiB is free"):
        outputs.check_disk(tmp_path, 1_500_000)
    assert [human_bytes(n) for n in (0, 1536, 702 << 20, int(1.234 * 2**30), 1500 << 30, 1023 * 1024 + 1000,
                                     999.7 * 2**30)] == \
        ["0 B", "1.5 KiB", "702 MiB", "1.23 GiB", "1,500 GiB", "1 MiB", "1,000 GiB"]


def test_a_foreground_train_prints_its_result_alone_on_stdout(tiny_llama, workspace, capfd):
    """The trainer's output (hundreds of lines on a long run) went to stdout between the result lines a script reads:
    it is progress, on stderr, as the command's own progress lines are."""
    from backend.__main__ import main as cli

    assert cli(["train", "sft", "--model", str(tiny_llama), "--data", "builtin:alpaca-mini", "--max-steps", "1",
                "--max-rows", "4", "--max-length", "32", "--eval-fraction", "0", "--name", "fg"]) == 0
    out, err = capfd.readouterr()
    assert "'loss'" in err and "'loss'" not in out and "step 1/1" not in out
    # key: value lines, a nested block (perf) indented under its key (review s24: Python's repr was printed)
    assert out.splitlines()[0] == "model: fg" and all(": " in line or line.endswith(":") for line in out.splitlines())
    assert "perf:" in out.splitlines() and "  compile: off" in out.splitlines() and "None" not in out, out


def test_deleting_a_model_an_active_job_reads_is_refused_without_force(tiny_llama, capsys):
    """The page warns (runner.jobs_using); `models delete` and registry.delete removed it and the job failed later."""
    from backend.__main__ import main as cli

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(_fast_sft("tiny", "later"))
    with pytest.raises(registry.RegistryError, match=rf"1 queued or running job\(s\) read 'tiny': job {job.id} "
                                                     r"\(sft, queued\)"):
        registry.delete("tiny")
    assert cli(["models", "delete", "tiny"]) == 2 and registry.get("tiny") is not None
    assert "jobs cancel ID" in capsys.readouterr().err
    runner.cancel(job.id)
    registry.delete("tiny")  # nothing reads it any more
    assert registry.get("tiny") is None


def test_jobs_list_json_says_what_an_unnamed_job_makes_and_what_it_waits_for(tiny_llama, capsys):
    """`name` is null for a job queued without --name; the pages showed the name it derives, scripts could not."""
    from backend.__main__ import main as cli

    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")]))
    ev = runner.submit(EvalSpec(models=["tiny-sft"], tasks=["perplexity"], skip_missing=True), waits=[a.id])
    assert cli(["jobs", "list", "--json"]) in (0, None)
    rows = {j["id"]: j for j in json.loads(capsys.readouterr().out)}
    assert rows[a.id]["name"] is None and rows[a.id]["output"] == "tiny-sft"
    assert rows[ev.id]["waits"] == [a.id] and rows[ev.id]["needs"] == [] and rows[ev.id]["output"] == "scores of tiny-sft"


def test_completion_only_loss_says_when_replies_lie_past_max_length(tiny_llama, tmp_path, capsys):
    """trl drops, unpacked, every conversation whose last reply truncation cut off: they went without a word, and
    with none left the job failed with "num_samples should be a positive integer value, but got num_samples=0"."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import data, perf
    from backend.train_entry import build_trainer, check_replies_fit, make_config

    long_q = " ".join(["word"] * 60)
    rows = tmp_path / "chat.jsonl"
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    for questions, said in ((["short", "brief", long_q, long_q], "data: 2 of 4 conversations dropped"),
                            ([long_q] * 4, None)):
        rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": "ok"}]}) + "\n"
                                for q in questions))
        spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(rows))], max_steps=1, max_length=32,
                       packing=False, completion_only_loss=True, eval_fraction=0.0)
        train, _, _ = data.split_mix([(str(rows), 1.0)], "sft", 0, None, eval_fraction=0.0)
        train = data.to_prompt_completion(train)
        args = make_config(spec, tmp_path / "run", False, perf.resolve(spec, False))
        trainer = build_trainer(spec, AutoModelForCausalLM.from_pretrained(tiny_llama), None, tok, args, train,
                                None, [])
        if said:
            check_replies_fit(spec, train, trainer.train_dataset, packed=False)
            assert said in capsys.readouterr().out
        else:
            with pytest.raises(SystemExit, match="every conversation's last reply lies past max_length 32"):
                check_replies_fit(spec, train, trainer.train_dataset, packed=False)


def test_an_evaluation_that_skipped_a_stage_resumed_while_it_ran_is_queued_again(tiny_llama, monkeypatch):
    """The resume landed while the evaluation that left the stage's model out was still scoring the others: it
    ended "succeeded" with the model skipped, and nothing queued it again (only one that had ended was)."""
    from backend import evaljob, evaluate

    registry.import_folder(tiny_llama, "tiny")
    a = runner.submit(_fast_sft("tiny", "made-by-a"))
    ev = runner.submit(EvalSpec(models=["tiny", "made-by-a"], tasks=["perplexity"], limit=2, skip_missing=True),
                       waits=[a.id])
    runner._update(a.id, status="failed", error="x")  # its stage failed: the evaluation starts without its model
    real = evaluate.score_task

    def resume_meanwhile(*args, **kw):
        if runner.get(a.id).status == "failed":
            runner.resume(a.id)  # the user, on the Jobs page, while the evaluation scores "tiny"
        return real(*args, **kw)

    monkeypatch.setattr(evaljob, "score_task", resume_meanwhile)
    assert runner.execute(ev.id) == 0
    row = runner.get(ev.id)
    assert row.result["skipped"] == ["made-by-a"] and runner.get(a.id).status == "queued"
    assert row.status == "queued" and row.message == f"queued again: job {a.id} it waits for was queued again"
    assert row.pid is None and row.host == ""


def test_the_delete_guard_sees_a_model_read_by_its_folder_or_as_a_rephraser(tiny_llama):
    from backend.specs import SynthMathSpec

    rec = registry.import_folder(tiny_llama, "tiny")
    by_path = runner.submit(_fast_sft(rec.path, "later"))  # `--model FOLDER`: the CLI stores the folder's path
    rephraser = runner.submit(SynthMathSpec(num_seeds=4, rephraser="model:tiny", name="s1"))
    by_name = runner.submit(_fast_sft("tiny", "later2"))
    assert [j.id for j in runner.jobs_using("tiny")] == [by_path.id, rephraser.id, by_name.id]
    assert runner.jobs_using("nope") == []
    with pytest.raises(registry.RegistryError, match="3 queued or running job"):
        registry.delete("tiny")
    # a name nobody registered: "No model named", not "a job reads it … --force" (then "No model named" anyway)
    runner.submit(EvalSpec(models=["later"], tasks=["perplexity"], skip_missing=True), waits=[by_path.id])
    with pytest.raises(registry.RegistryError, match="No model named 'later'"):
        registry.delete("later")


def test_completion_only_loss_checks_the_held_out_set_too(tiny_llama, tmp_path, capsys):
    """trl drops held-out conversations alike: an emptied held-out set scored no eval_loss, without a word."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import data, perf
    from backend.train_entry import build_trainer, check_replies_fit, make_config

    def conversations(path, questions):
        path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": "ok"}]}) + "\n"
                                for q in questions))
        return path

    tr = conversations(tmp_path / "train.jsonl", ["short", "brief", "hi", "yo"])
    ev = conversations(tmp_path / "eval.jsonl", [" ".join(["word"] * 60)] * 4)
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(tr))], eval_data=DataSource(source=str(ev)),
                   max_steps=1, max_length=32, packing=False, completion_only_loss=True)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    train = data.to_prompt_completion(data.split_mix([(str(tr), 1.0)], "sft", 0, None, eval_fraction=0.0)[0])
    evals = data.to_prompt_completion(data.prepare(str(ev), "sft")[0])
    trainer = build_trainer(spec, AutoModelForCausalLM.from_pretrained(tiny_llama), None, tok,
                            make_config(spec, tmp_path / "run", True, perf.resolve(spec, False)), train, evals, [])
    check_replies_fit(spec, train, trainer.train_dataset, False)
    assert capsys.readouterr().out == ""  # the training rows all fit
    with pytest.raises(SystemExit, match="every held-out conversation's last reply lies past max_length 32.*"
                                         "hold out other conversations"):
        check_replies_fit(spec, evals, trainer.eval_dataset, False, what="held-out ")


def test_a_finished_job_whose_log_is_elsewhere_is_not_said_never_started(tiny_llama):
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    ran = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"]))
    runner._update(ran.id, status="succeeded", progress=1.0, host="other-host", started=runner.utcnow(),
                   finished=runner.utcnow())
    at = app("jobs.py")
    said = [c.value for c in at.caption if "log" in c.value.lower()]
    assert any("is not on this machine (the job ran on other-host)" in c for c in said), said
    assert not any("before a worker started it" in c for c in said), said


def test_chat_with_a_template_that_refuses_a_system_message_is_a_refused_input(tiny_llama_untied, tmp_path, capsys):
    """`chat --system` on a model whose template refuses system messages (Gemma's): the command line caught jinja's
    TemplateError, which stream_reply now turns into a RuntimeError, so it said "the work failed" (exit 1)."""
    import shutil

    from backend.__main__ import main as cli

    folder = tmp_path / "no-system"
    shutil.copytree(tiny_llama_untied, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:"
        "{% endif %}")
    assert cli(["chat", str(folder), "--prompt", "hi", "--system", "be brief", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "chat template refused this conversation: System role not supported" in err and "leave out --system" in err
    assert cli(["chat", str(folder), "--prompt", "hi", "--max-new-tokens", "4"]) == 0  # without it: a reply
