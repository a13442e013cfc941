"""Sixteenth-session fixes that stand alone (each test failed before its fix)."""

from __future__ import annotations

import json

from backend.specs import SynthMathSpec
from backend.synth import rephrase
from backend.synth.pipeline import run_synth_math
from backend.synth.seeds import load_seeds


def test_a_cached_rephrasing_that_changed_a_number_fails_on_resume(tmp_path, monkeypatch):
    """The rephrasers now refuse a question with a number its seed lacks, but a job resumed from a cache written
    before that reused such rows and verified them (only the final answers are compared)."""
    spec = SynthMathSpec(num_seeds=4, rephraser="openai:http://127.0.0.1:9/v1", api_model="m", name="resumed")
    rephraser = rephrase.make_rephraser(spec)
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "rephrase_cache.jsonl", "w") as f:
        for seed in load_seeds(spec.seeds, spec.num_seeds, spec.seed):
            f.write(json.dumps({"key": rephrase.cache_key(seed, rephraser), "seed_id": seed.id,
                                "rephraser": rephraser.name, "question": f"{seed.question} Assume 12345 more.",
                                "solution": seed.solution}) + "\n")

    def unreachable(*_, **__):
        raise AssertionError("every seed was in the cache")

    monkeypatch.setattr(rephrase, "chat_completion", unreachable)
    result = run_synth_math(spec, out_dir=out)
    assert (result["verified"], result["failed"]) == (0, 4)
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert all("has 12345, which the original does not" in r["reason"] for r in rows)


def test_a_refusal_goes_into_the_job_log_as_its_message_a_bug_as_its_traceback(tiny_llama, capfd, monkeypatch):
    """The log of a job refused for a reason the user can act on (here: its base deleted after it was queued) held
    a page of runner frames under the one line that said what to do; an unexpected error keeps its traceback."""
    from backend import registry, runner, upscale
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=2, name="tiny-dus"))
    registry.delete("tiny", delete_files=False, force=True)
    assert runner.execute(job.id) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("error: ") and "tiny" in err
    assert runner.get(job.id).error in err

    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(upscale, "run_upscale", lambda *a, **k: {}["missing"])  # a bug: KeyError
    job = runner.submit(UpscaleSpec(base="tiny", m=2, name="tiny-dus2"))
    assert runner.execute(job.id) == 1
    assert "Traceback (most recent call last)" in capfd.readouterr().err


def test_no_verdict_on_too_few_items_asks_for_more_items_not_only_a_higher_cap():
    """8 items scored, 4 cut off: "evaluate again with a higher Max new tokens" could bring back 4, never the 10 a
    comparison needs."""
    from backend import analysis
    from tests.test_review_cutoff import base_model, rambler

    recs = [r for r in base_model() + rambler("dus", 4) if int(r.prompt_id) < 8]
    res = analysis.compare(recs, "base", "dus")
    assert res["sentence"] == ("No verdict: 4 of 8 items left out: dus's reply was cut off by the token limit, so "
                               "only 4 remain and a comparison needs at least 10; evaluate again with a higher Max "
                               "new tokens and more Items per task (only 8 were scored).")
    assert analysis.length_model(recs, ["base", "dus"])["message"].endswith(
        "evaluate again with a higher Max new tokens and more Items per task (only 8 were scored).")
    plain = analysis.compare([r for r in base_model() if int(r.prompt_id) < 6] + rambler("dus", 0)[:6], "base", "dus")
    assert plain["sentence"] == ("base and dus answered only 6 of the same items; a comparison needs at least 10: "
                                 "evaluate again with more Items per task.")


def test_a_queued_job_says_the_name_it_will_register(tiny_llama, tmp_path):
    """`merge --out …/dus-merged --queue` is registered under the spec's name, not the folder's; the queue line said
    only "queued job 6 (merge)", and `eval dus-merged` was then refused."""
    from backend import registry
    from tests.test_cli_runner import cli

    registry.import_folder(tiny_llama, "a")
    registry.register(tiny_llama, "b", "trained", parents=["a"])
    r = cli("merge", "--models", "a", "b", "--out", str(tmp_path / "dus-merged"), "--queue")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("queued job 1 (merge -> a_b-average); a running worker picks it up")


# ---- two synthetic-math runs of one name; an export the disk cut short (fault injection) -----------------------

def test_a_second_synth_math_job_of_a_queued_name_is_refused():
    from backend import runner

    runner.submit(SynthMathSpec(num_seeds=4, name="sm"))
    import pytest

    with pytest.raises(ValueError, match=r"Job 1 \(synth-math, queued\) will write data sets named sm-…"):
        runner.submit(SynthMathSpec(num_seeds=4, seed=7, name="sm"))
    runner.submit(SynthMathSpec(num_seeds=4, name="sm2"))  # another name: queued


def test_the_run_that_loses_a_name_race_leaves_the_winners_pairs_file_alone(tmp_path, monkeypatch):
    """Both runs passed the free-name check; the second to register wrote its pairs.jsonl over the file the first
    registered, then failed with SQLite's "UNIQUE constraint failed"."""
    import pytest

    from backend.synth import pipeline

    out = tmp_path / "sm"
    out.mkdir()
    (out / "pairs.jsonl").write_text("WINNER\n")
    pipeline.save_dataset("sm-pairs", "synth-pairs", str(out / "pairs.jsonl"), 1, {})
    monkeypatch.setattr(pipeline, "check_synth_free", lambda spec, out_dir=None: out)
    with pytest.raises(pipeline.DatasetError, match="already named 'sm-pairs'"):
        run_synth_math(SynthMathSpec(num_seeds=4, name="sm"))
    assert (out / "pairs.jsonl").read_text() == "WINNER\n"


def test_a_name_taken_between_the_check_and_the_insert_is_refused_in_words(monkeypatch):
    import pytest
    from sqlalchemy import false

    from backend.synth import pipeline

    pipeline.save_dataset("taken", "sft", "/x.jsonl", 1, {})
    real, calls = pipeline.select, []

    def blind_once(*a):  # the check sees no row (another run registers between it and the insert)
        calls.append(a)
        return real(*a).where(false()) if len(calls) == 1 else real(*a)

    monkeypatch.setattr(pipeline, "check_not_orphaned_dataset", lambda name: None)
    monkeypatch.setattr(pipeline, "select", blind_once)
    with pytest.raises(pipeline.DatasetError,
                       match=r"already named 'taken' \(1 rows at /x.jsonl\). Nothing was saved"):
        pipeline.save_dataset("taken", "sft", "/y.jsonl", 1, {})


def test_a_full_disk_during_an_export_changes_neither_file_nor_row(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import pytest

    from backend.synth import pipeline

    run_synth_math(SynthMathSpec(num_seeds=6, name="ex"), out_dir=tmp_path / "ex")
    files = {n: (tmp_path / "ex" / f).read_text() for n, f in (("ex-instruct", "math_instruct.jsonl"),
                                                                ("ex-alignment", "math_alignment.jsonl"))}
    rows = {n: pipeline.get_dataset(n).rows for n in files}
    with pipeline.db.session() as s:
        pair = s.exec(pipeline.select(pipeline.SynthPair).where(pipeline.SynthPair.status == "verified")).first()
    pipeline.reject_by_hand(pair.id)
    real, calls = Path.write_text, []

    def second_fails(self, text, *a, **k):
        calls.append(self.name)
        if len(calls) == 2:
            real(self, text[: len(text) // 2], *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", second_fails)
    with pytest.raises(OSError, match="Disk full while exporting to .*nothing was changed"):
        pipeline.export("ex-pairs")
    monkeypatch.setattr(Path, "write_text", real)
    assert {n: (tmp_path / "ex" / f).read_text() for n, f in (("ex-instruct", "math_instruct.jsonl"),
                                                               ("ex-alignment", "math_alignment.jsonl"))} == files
    assert {n: pipeline.get_dataset(n).rows for n in files} == rows
    assert not list((tmp_path / "ex").glob("*.partial"))


def test_a_killed_job_says_what_a_resume_does_for_its_kind():
    from backend import runner
    from storage.models import Job

    said = {k: runner._what_resume_does(Job(id=7, kind=k, spec={})) for k in ("upscale", "merge", "sft", "eval",
                                                                             "synth-math", "push")}
    assert said["upscale"] == said["merge"] == said["push"] == (
        "nothing was registered (a worker removes its partial files); resume it to run it again (python -m backend "
        "jobs resume 7, or Resume on the Jobs page)")
    assert said["sft"].startswith("resume it to continue from its last checkpoint (python -m backend jobs resume 7")
    assert said["eval"].startswith("the scores it stored are kept; resume it to score the rest")
    assert said["synth-math"].startswith("nothing was registered; resume it to go on from the rephrasings it cached")


def test_a_source_shard_deleted_mid_merge_is_named_and_nothing_is_registered(tiny_llama, tmp_path, monkeypatch):
    """A merge read its sources' files by a bare os.open: "[Errno 2] No such file or directory" said neither that
    the model changed under the job nor what to do."""
    import shutil

    import pytest

    from backend import registry
    from backend.merge import executor, run_merge
    from backend.safetensors_stream import CheckpointError
    from backend.specs import MergeSpec

    copy = tmp_path / "b"
    shutil.copytree(tiny_llama, copy)
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(copy, "b")
    real_init = executor.Reader.__init__

    def then_delete(self, *a, **k):
        real_init(self, *a, **k)
        for f in copy.glob("*.safetensors"):
            f.unlink()

    monkeypatch.setattr(executor.Reader, "__init__", then_delete)
    with pytest.raises(CheckpointError, match=r"\.safetensors is missing: it was deleted or moved while this job "
                                              "read its model. Nothing was registered"):
        run_merge(MergeSpec(models=["a", "b"], name="ab"))
    assert registry.get("ab") is None
