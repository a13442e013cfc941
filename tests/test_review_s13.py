"""Review fixes of session 13."""

from __future__ import annotations

import importlib

import pytest
import torch

from backend import evaldevice, evaljob, evalscore, evaluate, registry
from backend.specs import EvalSpec

# Qwen2.5-7B's shape: 28 layers, 4 KV heads of 128, a 152k vocabulary
QWEN7B = evaldevice.ModelShape(num_parameters=7_615_616_512, num_layers=28, kv_heads=4, head_dim=128,
                               vocab_size=152_064)


def test_a_perplexity_batch_counts_the_logits_of_every_position():
    """Scoring a 256-token text whole holds logits over the vocabulary at every position (bf16, their float32
    copy, the log-softmax): 0.37 GiB for Qwen2.5, 25 times its KV cache. The generation batch (KV cache and one
    logits row) would have put 256 texts, about 96 GiB of logits, on an 80 GiB GPU."""
    per_text = evaldevice.scoring_bytes_per_sequence(QWEN7B, 256)
    assert per_text == 2 * 28 * 4 * 128 * 2 * 256 + 10 * 256 * 152_064
    free = 80 * 2**30
    p = evaldevice.plan(QWEN7B, cuda=True, free_bytes=free, seq_len=512, score_len=256)
    room = free - p.weights_bytes - evaldevice.RESERVE
    assert p.batch_size == 256  # generation: the cap
    assert p.scoring_batch_size == room // per_text < 256
    assert p.scoring_batch_size * per_text <= room < (p.scoring_batch_size + 1) * per_text
    assert f"scoring whole texts: batch {p.scoring_batch_size}" in p.note
    assert evaldevice.plan(QWEN7B, cuda=True, free_bytes=free, batch_size=4).scoring_batch_size == 4
    cpu = evaldevice.plan(QWEN7B, cuda=False, batch_size=3)
    assert (cpu.batch_size, cpu.scoring_batch_size) == (3, 3)


def test_the_perplexity_task_runs_at_the_scoring_batch(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (80 * 2**30, 80 * 2**30))
    monkeypatch.setattr(evaldevice, "model_shape", lambda folder: QWEN7B)
    real_load, seen = evaldevice.load_model, []
    monkeypatch.setattr(evaldevice, "load_model", lambda folder, plan=None: real_load(folder, None))
    real_items = evaluate.perplexity_items

    def items(tok, model, texts, max_length=evaluate.MAX_LENGTH, batch_size=8):
        seen.append(batch_size)
        return real_items(tok, model, texts, max_length, batch_size)

    monkeypatch.setattr(evalscore, "perplexity_items", items)
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=2))
    want = evaldevice.plan(QWEN7B, cuda=True, free_bytes=80 * 2**30, seq_len=256 + EvalSpec.model_fields["max_new_tokens"].default)
    assert seen == [want.scoring_batch_size] and want.scoring_batch_size < want.batch_size


@pytest.mark.parametrize("keep", [8, 100, -500], ids=["header-only", "cut-in-metadata", "cut-in-tensor-data"])
def test_a_gguf_cut_short_is_refused_before_queueing(tmp_path, keep):
    """It was queued, and failed only when the import job's turn came (behind a busy queue)."""
    from backend import runner
    from backend.specs import ImportSpec
    from tests.test_review_s12_models import write_gguf

    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep] if keep > 0 else whole[:len(whole) + keep])
    with pytest.raises(ValueError) as refused:
        runner.submit(ImportSpec(target=str(cut), name="cut"))
    assert str(refused.value) == (f"Could not read GGUF file {cut} ({cut.stat().st_size:,} bytes): it looks "
                                  "truncated or damaged (an interrupted download or copy?). Download it again.")
    assert runner.list_jobs() == []
    registry.check_import(str(tmp_path / "whole.gguf"), "whole")  # the whole file passes the check


def test_the_training_jobs_own_check_names_a_mixed_type_row_at_its_own_row():
    """The check before queueing named row 25; the job's own check (its data loading, for a file changed after
    queueing) saw `datasets`' decoded Json column and blamed row 1."""
    from backend import data
    from tests.test_review_s12_data import alpaca, upload

    path = upload(alpaca(30, {25: 12345}), "int25.jsonl")
    said = "int25.jsonl, row 25: output must be text; got int. Fix or remove that row."
    for load in (lambda: data.prepare(path, "sft"), lambda: data.split_mix([(path, 1.0)], "sft", eval_fraction=0.1)):
        with pytest.raises(data.DataError) as exc:
            load()
        assert str(exc.value) == said


# a resumed run's loss covers the steps between its last log and the checkpoint: in
# tests/test_review_s17_train.py's resume test (one run for the resume tests of sessions 12, 13 and 17)


# ---------------------------------------------------------------- synthetic math (review of pipeline.py)

def _flagged_run(tmp_path, name: str, include_flagged: bool = False):
    """A rules run of 12 seeds whose first 6 questions are the benchmark's: 6 pairs flagged as contaminated."""
    import json

    from backend.specs import SynthMathSpec
    from backend.synth import pipeline
    from backend.synth.seeds import load_seeds

    seeds = load_seeds("generator", 12, 0, None, None)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": s.question}) + "\n" for s in seeds[:6]))
    res = pipeline.run_synth_math(SynthMathSpec(name=name, num_seeds=12, seed=0, rephraser="rules",
                                                benchmark=str(bench), include_flagged=include_flagged))
    assert res["flagged"] == 6
    return pipeline.get_dataset(f"{name}-pairs"), bench


@pytest.mark.parametrize("run_with, export_with", [(False, True), (True, False)])
def test_an_exports_provenance_says_whether_it_holds_flagged_pairs(tmp_path, run_with, export_with):
    """The run's settings were spread after the export's choice: an export holding 6 benchmark-contaminated pairs
    was registered as include_flagged False, and its push was refused as 'no longer holds the export'."""
    from backend.synth import pipeline

    _flagged_run(tmp_path, "m", include_flagged=run_with)
    out = pipeline.export("m-pairs", include_flagged=export_with)
    assert out["rows"] == (12 if export_with else 6)
    for name in ("m-instruct", "m-alignment"):
        rec = pipeline.get_dataset(name)
        assert rec.provenance["include_flagged"] is export_with
        assert len(open(rec.path).read().splitlines()) == out["rows"]
    assert [d.name for d in pipeline._pushable_export("m-pairs")] == ["m-instruct", "m-alignment"]


def test_undoing_a_hand_rejection_gives_the_pair_its_own_reason_back(tmp_path):
    from backend.synth import pipeline

    rec, _ = _flagged_run(tmp_path, "m")
    _, flagged = pipeline.query_pairs(rec.id, states=["flagged"])
    pair = flagged[0]
    assert pair.reason.endswith("appear in the benchmark")
    pipeline.reject_by_hand(pair.id)
    _, [rejected] = pipeline.query_pairs(rec.id, states=["rejected"])
    assert (rejected.id, rejected.rejected_by_hand, rejected.reason) == (pair.id, True, pair.reason)
    pipeline.reject_by_hand(pair.id, undo=True)
    _, again = pipeline.query_pairs(rec.id, states=["flagged"])
    back = next(p for p in again if p.id == pair.id)
    assert (back.rejected_by_hand, back.reason) == (False, pair.reason)  # before: 'rejected by hand'


@pytest.mark.parametrize("body", [
    pytest.param('[{"question": "What is 15 percent of 200?"}, {"problem": "Half of ten is what number?"}]',
                 id="one-line-array"),
    pytest.param('[\n  {"question": "What is 15 percent of 200?"},\n  {"problem": "Half of ten is what number?"}\n]',
                 id="pretty-array"),
    pytest.param('{"question": "What is 15 percent of 200?"}\n{"prompt": "Half of ten is what number?"}\n',
                 id="json-lines"),
])
def test_a_benchmark_file_may_be_a_json_array_as_a_seed_file_may(tmp_path, body):
    """A .json array was read line by line: 'line 1: no question field' (one line) or 'line 1: not valid JSON'."""
    from backend.synth import pipeline

    path = tmp_path / ("bench.jsonl" if "\n{" in body else "bench.json")
    path.write_text(body)
    assert pipeline.load_benchmark(str(path)) == ["What is 15 percent of 200?", "Half of ten is what number?"]


@pytest.mark.parametrize("body, said", [
    ('[{"question": "ok"}, {"answer": "4"}]', "bench.json, record 2: no question / problem / prompt / text field "
                                              "of text."),
    ('[{"question": "ok"}, 7]', "bench.json, record 2: no question / problem / prompt / text field of text."),
    ('[{"question": 12}]', "bench.json, record 1: no question / problem / prompt / text field of text."),
    ('[{"question": "ok"}', "bench.json is not valid JSON"),
])
def test_a_malformed_benchmark_file_is_named_with_its_record(tmp_path, body, said):
    from backend.synth import pipeline

    path = tmp_path / "bench.json"
    path.write_text(body)
    with pytest.raises(pipeline.DatasetError) as exc:
        pipeline.load_benchmark(str(path))
    assert str(exc.value).startswith(said)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_the_pair_search_takes_percent_and_underscore_literally(database):
    from storage import db
    from storage.models import DatasetRecord, SynthPair
    from backend.synth import pipeline

    questions = ["What is 50% of 8?", "What is 50 times 8?", "Solve x_1 + 2 = 5.", "Solve x1 + 2 = 5.", "A 100%_B"]
    with db.session() as s:
        d = DatasetRecord(name="p-pairs", kind="synth-pairs", path="", rows=len(questions))
        s.add(d)
        s.commit()
        s.refresh(d)
        s.add_all(SynthPair(dataset_id=d.id, seed_id=str(i), category="c", level=1, status="verified", question=q,
                            solution="s", answer="a") for i, q in enumerate(questions))
        s.commit()
        did = d.id
    for search, want in (("50%", [questions[0]]), ("x_1", [questions[2]]), ("%_", [questions[4]]),
                         ("solve X", questions[2:4])):
        total, rows = pipeline.query_pairs(did, search=search)
        assert (total, [r.question for r in rows]) == (len(want), want), search


# ---------------------------------------------------------------- at scale (the session's scale walk)

@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 16])
def test_a_logs_tail_is_read_from_its_end_and_equals_the_whole_read(tmp_path, chunk):
    """The live log read the whole file every 2 s (a 33 MB log: 0.25 s, 140 MiB each time)."""
    from backend import runner

    log = tmp_path / "job.log"
    body = "".join(f"step {i} · loss {i / 7:.3f} ✓\n" if i % 3 else f" {i}%|██▌ | {i}/99\r" for i in range(99))
    log.write_bytes(body.encode() + "tail without newline é".encode())
    for lines in (0, 1, 2, 5, 40, 200):
        assert runner.log_tail(log, lines, chunk) == (log.read_text().splitlines()[-lines:] if lines else [])
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert runner.log_tail(empty, 10, chunk) == []


def test_the_live_log_reads_only_the_end_of_a_big_log(tmp_path, monkeypatch, tiny_llama):
    from pathlib import Path

    from backend import runner
    from backend.specs import UpscaleSpec
    from tests.test_pages import app

    log = tmp_path / "big.log"
    log.write_bytes(b"x" * 1000 + b"\n" + b"".join(b"line %d\n" % i for i in range(100_000)))  # ~1.2 MB
    reads = []
    real_open = open

    def counting_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        real_read = f.read
        f.read = lambda n=-1: (reads.append(n), real_read(n))[1]
        return f

    monkeypatch.setattr("builtins.open", counting_open)
    assert runner.log_tail(log, 60) == [f"line {i}" for i in range(99_940, 100_000)]
    assert sum(reads) <= 64 * 1024
    monkeypatch.setattr("builtins.open", real_open)
    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="up"))
    runner._update(job.id, status="running", log_path=str(log))
    real_read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: pytest.fail(f"read {self} whole")
                        if self == log else real_read_text(self, *a, **k))
    at = app("jobs.py")
    assert not at.exception
    assert "\n".join(f"line {i}" for i in range(99_940, 100_000)) in [c.value for c in at.code]


def _old_running_job_behind(n: int, kind: str = "sft", newer_kind: str = "merge") -> int:
    """A running `kind` job with `n` finished `newer_kind` jobs after it; returns its id."""
    from storage import db
    from storage.models import Job

    with db.session() as s:
        old = Job(kind=kind, status="running", spec={"kind": kind, "name": "days-long", "model": "tiny"})
        s.add(old)
        s.commit()
        s.refresh(old)
        s.add_all(Job(kind=newer_kind, status="succeeded", spec={"kind": newer_kind, "name": f"m{i}"})
                  for i in range(n))
        s.commit()
        return old.id


def test_a_running_job_older_than_the_100_newest_stays_in_view(tiny_llama):
    """At 3000 jobs only the 100 newest were listed: a running training behind them could not be opened, cancelled
    or chained after (Jobs page, `jobs list`, Train's "Start after job")."""
    from backend import runner
    from tests.test_pages import app

    old = _old_running_job_behind(120)
    listed = runner.list_jobs()
    assert len(listed) == 101 and listed[-1].id == old and [j.id for j in listed] == sorted(
        (j.id for j in listed), reverse=True)
    assert len(runner.list_jobs(None)) == 121
    assert [j.id for j in runner.list_jobs(5, kinds=("sft",))] == [old]
    at = app("jobs.py")
    assert at.selectbox(key="job").options[-1] == f"{old} · sft · days-long"
    assert len(at.selectbox(key="job").options) == 101
    at.selectbox(key="jobs_shown").set_value(0).run()  # all
    assert len(at.selectbox(key="job").options) == 121
    registry.import_folder(tiny_llama, "tiny")
    train = app("train.py")
    assert not train.exception
    assert train.selectbox(key="after").options == ["start now", f"job {old} · sft · running → days-long"]


def test_monitor_offers_training_jobs_older_than_the_500_newest_jobs():
    from tests.test_pages import app

    from backend import runner

    old = _old_running_job_behind(520)
    runner._update(old, status="succeeded")
    at = app("monitor.py")
    assert not at.exception
    assert at.multiselect(key="monitor_jobs").options == [f"{old} · sft · days-long"]


def test_the_models_table_reads_the_registered_names_once_not_per_parent(tiny_llama, monkeypatch, capsys):
    """One lookup per parent: 185 queries per Models page rerun at 150 models (and `models list` alike)."""
    from backend.__main__ import main
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "root")
    for i in range(30):
        registry.register(tiny_llama, f"child{i}", "trained", parents=["root", "gone"])
    calls = []
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name, *a, **k: (calls.append(name), real_get(name, *a, **k))[1])
    at = app("models.py")
    assert not at.exception
    parents = at.dataframe[0].value["parents"].tolist()
    assert parents.count("root, gone (deleted)") == 30
    assert len(calls) <= 6  # the picked model's own lookups (66 before: two per child)
    calls.clear()
    capsys.readouterr()
    assert main(["models", "list"]) in (0, None)
    assert capsys.readouterr().out.count("root, gone (deleted)") == 30 and calls == []


def test_a_foreground_recipe_run_runs_its_own_jobs_and_what_they_wait_for_only(tmp_path, monkeypatch, capsys):
    """`recipe run` (not --queue) called the worker with nothing to hold it to the run: a job queued for later, or
    another machine's in a shared database, ran in this terminal first."""
    from types import SimpleNamespace

    from backend import recipe, runner
    from backend.__main__ import main
    from storage import db
    from storage.models import Job

    def add(**kw) -> int:
        with db.session() as s:
            job = Job(**kw)
            s.add(job)
            s.commit()
            s.refresh(job)
            return job.id

    unrelated = add(kind="upscale", status="queued")
    elsewhere = add(kind="sft", status="queued")  # another run's stage in flight, which this run's stage reads
    mine = add(kind="merge", status="queued", needs=[elsewhere])
    monkeypatch.setattr(recipe, "plan_text", lambda text: [SimpleNamespace(lines=lambda: ["plan"])])
    recipe_plan = importlib.import_module("backend.recipe.plan")  # the package exports its function plan()

    monkeypatch.setattr(recipe_plan, "submit", lambda p, text: 7)
    monkeypatch.setattr(recipe_plan, "stages", lambda run_id: [
        (SimpleNamespace(stage="merge", kind="merge", reused=False, output="m", info={}), runner.get(mine)),
        (SimpleNamespace(stage="sft", kind="sft", reused=True, output="s", info={}), runner.get(elsewhere))])
    monkeypatch.setattr(recipe, "stages", recipe_plan.stages)
    monkeypatch.setattr("backend.recipe.state.stages", recipe_plan.stages)  # where cancellable reads them
    seen = {}
    monkeypatch.setattr(runner, "worker", lambda **k: seen.update(k))
    f = tmp_path / "r.yaml"
    f.write_text("kind: recipe\n")
    main(["recipe", "run", str(f)])
    assert seen["once"] is True and seen["only"] == {mine, elsewhere}
    # and the claim honours it: the older unrelated job is not taken
    claimed = runner._claim_next(only={elsewhere})
    assert claimed.id == elsewhere and runner.get(unrelated).status == "queued"
    assert runner._claim_next(only={mine}) is None  # it waits for `elsewhere`, now running


def test_the_papers_mixes_are_saved_from_the_command_line_as_from_the_page(tmp_path, capsys):
    """`--data mix:dpo-v2` (a README example) worked only after the Synthetic math page's button: the mixes were
    defined in the page alone."""
    from backend.__main__ import main
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline
    from tests.test_pages import app

    pipeline.run_synth_math(SynthMathSpec(name="sm", num_seeds=6, seed=0, rephraser="rules"))
    assert main(["datasets", "paper-mixes", "sm-pairs"]) in (0, None)
    assert "saved sft-v1, sft-v2, sft-v3, sft-v4, dpo-v1, dpo-v2" in capsys.readouterr().out
    mixes = {d.name: d.provenance for d in pipeline.list_datasets("mix")}
    assert mixes["dpo-v2"] == {"for": "dpo", "sources": [{"source": "builtin:prefs-mini", "weight": 1.0},
                                                         {"source": "dataset:sm-alignment", "weight": 1.0}]}
    assert mixes["sft-v3"]["sources"][-1] == {"source": "dataset:sm-instruct", "weight": 1.0}
    at = app("synth.py")  # the page's button saves the same mixes: nothing changes, nothing is refused
    at.button(key="save_presets").click().run()
    assert not at.exception and not at.error
    assert {d.name: d.provenance for d in pipeline.list_datasets("mix")} == mixes


@pytest.mark.parametrize("unit", ["get", "_update", "record_run_dir", "_transition", "beat", "_beat_ages",
                                  "recover_orphans", "_clear_stopped", "_claim_next", "_busy"])
def test_the_runners_units_of_work_survive_a_lost_database_connection(unit, monkeypatch):
    """A function inserted between `@db.retrying` and the function below it took its decorator: `_update` (session
    12's record_run_dir) and `_claim_next` (this session's with_dependencies) lost theirs, so on PostgreSQL a
    server restart during a claim or a progress update failed the worker loop or the job."""
    import sqlalchemy as sa

    from backend import runner
    from storage import db

    fn = getattr(runner, unit)
    assert getattr(fn, "__wrapped__", None) is not None, f"{unit} is not @db.retrying"
    if unit != "_claim_next":
        return
    real, opened = db.session, []

    def lost_once():
        opened.append(1)
        if len(opened) == 1:
            raise sa.exc.DBAPIError("SELECT", {}, Exception("server closed the connection"),
                                    connection_invalidated=True)
        return real()

    monkeypatch.setattr(db, "session", lost_once)
    assert runner._claim_next(1) is None and len(opened) == 2  # ran again, nothing queued


def test_eval_task_sources_keep_their_prefixes_and_files_become_absolute(tmp_path, monkeypatch):
    """`--tasks perplexity:builtin:facts-corpus` became /cwd/builtin:facts-corpus ("does not exist", rc 2)."""
    from backend.cli.common import absolute_paths

    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "myqa.jsonl").write_text('{"question": "q", "answers": ["a"]}\n')
    monkeypatch.chdir(tmp_path)
    spec = absolute_paths(EvalSpec(models=["m"], tasks=[
        "perplexity:builtin:facts-corpus", "perplexity:dataset:held", "perplexity:mix:m", "perplexity:owner/name",
        "qa:q/myqa.jsonl", "perplexity", "synth-math", "lm-eval:dus_gsm8k_mini"]))
    assert spec.tasks == ["perplexity:builtin:facts-corpus", "perplexity:dataset:held", "perplexity:mix:m",
                          "perplexity:owner/name", f"qa:{tmp_path / 'q' / 'myqa.jsonl'}", "perplexity",
                          "synth-math", "lm-eval:dus_gsm8k_mini"]


def test_compare_finds_a_task_file_stored_under_its_absolute_path(tmp_path, monkeypatch, capsys):
    from backend import analysis
    from backend.__main__ import main

    seen = []
    monkeypatch.setattr(analysis, "pair_records", lambda task, a, b: (seen.append(task), [])[1])
    monkeypatch.setattr(analysis, "compare", lambda *a, **k: {"sentence": "s", "ok": False})
    monkeypatch.chdir(tmp_path)
    from storage import db
    from storage.models import Generation

    with db.session() as s:  # their answers, stored under the absolute path: compare refuses unknown models (s22)
        s.add_all([Generation(model=m, task=f"qa:{tmp_path / 'q' / 'myqa.jsonl'}", prompt_id="1", prompt="q",
                              reference="r", output="x", tokens=1, words=1, answered=True, correct=True,
                              hallucination=False) for m in ("A", "B")])
        s.commit()
    main(["compare", "A", "B", "--task", "qa:q/myqa.jsonl"])
    assert seen == [f"qa:{tmp_path / 'q' / 'myqa.jsonl'}"]  # as `eval --tasks qa:q/myqa.jsonl` stored it


@pytest.mark.parametrize("raised, code", [(RuntimeError("CUDA out of memory"), 1), (ValueError("bad item"), 2)])
def test_an_evaluation_that_ran_and_failed_exits_1(tiny_llama, monkeypatch, raised, code, capsys):
    """Every failure inside scoring became an EvalError (a ValueError): exit 2, as for a refused input."""
    from backend.__main__ import main

    registry.import_folder(tiny_llama, "tiny")

    def fail(*a, **k):
        raise raised

    monkeypatch.setattr(evaljob, "score_task", fail)
    assert main(["eval", "tiny", "--tasks", "perplexity", "--limit", "2"]) == code
    assert f"tiny / perplexity failed: {type(raised).__name__}: {raised}" in capsys.readouterr().err


def test_a_spec_file_that_is_not_utf8_and_an_out_that_is_a_file_are_named(tmp_path, tiny_llama, capsys):
    from backend.__main__ import main

    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"kind: upscale\nbase: tiny\nm: 1\nname: caf\x83\n")
    assert main(["run", str(spec)]) == 2
    assert capsys.readouterr().err == (f"error: {spec} is not UTF-8 text (byte 0x83 at offset 39): a spec is a YAML "
                                       "file; save it as UTF-8.\n")
    registry.import_folder(tiny_llama, "tiny")
    target = tmp_path / "mk.py"
    target.write_text("print()\n")
    assert main(["upscale", "--base", "tiny", "--m", "1", "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"error: {target} is a file, not a folder: choose another output folder. " \
                                      "Nothing was changed.\n"
    assert target.read_text() == "print()\n" and registry.get("tiny-dus-m1") is None


def test_listings_for_scripts_as_json_with_filters(tiny_llama, capsys):
    """Scripts had only fixed-width text, messages cut at 60 characters, the 100 newest jobs."""
    import json

    from backend import runner
    from backend.__main__ import main

    old = _old_running_job_behind(120)
    runner._update(old, error="x" * 200)
    assert main(["jobs", "list", "--json", "--limit", "5"]) in (0, None)
    jobs = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in jobs] == [121, 120, 119, 118, 117, old]  # the 5 newest and the running one
    assert jobs[-1]["kind"] == "sft" and jobs[-1]["status"] == "running" and jobs[-1]["name"] == "days-long"
    assert main(["jobs", "list", "--json", "--limit", "0", "--status", "succeeded", "--kind", "merge"]) in (0, None)
    assert len(json.loads(capsys.readouterr().out)) == 120
    registry.import_folder(tiny_llama, "tiny")
    registry.register(tiny_llama, "child", "trained", parents=["tiny", "gone"])
    assert main(["models", "list", "--json"]) in (0, None)
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["child"]["parents"] == ["tiny", "gone"] and models["child"]["parents_registered"] == [True, False]
    assert models["tiny"]["layers"] == 6 and isinstance(models["tiny"]["created"], str)
    assert main(["datasets", "list", "--json"]) in (0, None)
    assert json.loads(capsys.readouterr().out) == []


def test_a_job_process_in_the_instant_of_its_death_still_counts_while_its_worker_may_reap_it(monkeypatch):
    """SIGKILL: the process's command line is gone before it becomes a zombie. recover_orphans, looking in that
    instant, called the job "interrupted" before its worker recorded "failed: exited with code -9" (a CI run of
    test_faults' kill -9 test saw it)."""
    import os

    from backend import runner
    from storage import db

    worker = os.getpid()  # as if this process were the job's worker: its command line must say so
    real_cmdline, real_stat = runner._cmdline, db._stat_fields
    monkeypatch.setattr(db, "_stat_fields", lambda path: ("R", str(worker)) if path.name == "4242" else
                        real_stat(path))
    monkeypatch.setattr(runner.hosts.os, "kill", lambda pid, sig: None)
    for parent, alive in (([b"python", b"-m", b"backend", b"worker", b""], True), ([b"bash", b""], False)):
        monkeypatch.setattr(runner.hosts, "_cmdline", lambda pid, parent=parent: [b""] if pid == 4242 else
                            parent if pid == worker else real_cmdline(pid))
        assert runner._runs_job(4242, 7) is alive  # before: False, whatever its parent
