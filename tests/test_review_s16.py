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
    assert all("has 12345, which the original has neither in digits nor in words" in r["reason"] for r in rows)


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
                               "new tokens (eval --max-new-tokens) and more Items per task (eval --limit), as only 8 "
                               "were scored.")
    assert analysis.length_model(recs, ["base", "dus"])["message"].endswith(
        "evaluate again with a higher Max new tokens (eval --max-new-tokens) and more Items per task (eval --limit), "
        "as only 8 were scored.")
    plain = analysis.compare([r for r in base_model() if int(r.prompt_id) < 6] + rambler("dus", 0)[:6], "base", "dus")
    assert plain["sentence"] == ("base and dus answered only 6 of the same items; a comparison needs at least 10: "
                                 "evaluate again with more Items per task (eval --limit).")


def test_a_queued_job_says_the_name_it_will_register(tiny_llama, tmp_path):
    """`merge --out …/dus-merged --queue` is registered under the spec's name, not the folder's; the queue line said
    only "queued job 6 (merge)", and `eval dus-merged` was then refused."""
    from backend import registry
    from tests.test_cli_runner import cli, here

    import shutil

    registry.import_folder(tiny_llama, "a")  # b in a folder of its own: two names of one folder are one model
    registry.register(shutil.copytree(tiny_llama, tmp_path / "b"), "b", "trained", parents=["a"])
    r = cli("merge", "--models", "a", "b", "--out", str(tmp_path / "dus-merged"), "--queue")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("queued job 1 (merge -> a_b-average); a running worker picks it up")
    r = here("synth-math", "--seeds", "4", "--name", "sm", "--queue")  # in this process: one start is enough
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("queued job 2 (synth-math -> sm-pairs, sm-instruct, sm-alignment); a running")


# ---- two synthetic-math runs of one name; an export the disk cut short (fault injection) -----------------------

def test_a_second_synth_math_job_of_a_queued_name_is_refused():
    from backend import runner

    runner.submit(SynthMathSpec(num_seeds=4, name="sm"))
    import pytest

    with pytest.raises(ValueError, match=r"Job 1 \(synth-math, queued\) will write data sets named sm-…"):
        runner.submit(SynthMathSpec(num_seeds=4, seed=7, name="sm"))
    from storage import db

    with pytest.raises(ValueError, match=r"Job 1 \(synth-math, queued\) will write into .*/datasets/sm: choose"):
        runner.submit(SynthMathSpec(num_seeds=4, name="other", out=str(db.workspace() / "datasets" / "sm")))
    assert [j.id for j in runner.list_jobs()] == [1]  # a refusal queues nothing
    runner.submit(SynthMathSpec(num_seeds=4, name="sm2"))  # another name and folder: queued
    assert [(j.id, j.spec["name"]) for j in runner.list_jobs()] == [(2, "sm2"), (1, "sm")]


def test_the_run_that_loses_a_name_race_leaves_the_winners_pairs_file_alone(tmp_path, monkeypatch):
    """Both runs passed the free-name check; the second to register wrote its pairs.jsonl over the file the first
    registered, then failed with SQLite's "UNIQUE constraint failed"."""
    import pytest

    from backend.synth import pipeline

    out = tmp_path / "sm"
    out.mkdir()
    (out / "pairs.jsonl").write_text("WINNER\n")
    import os

    winners = out / f"pairs.{os.getpid()}-0000.partial"  # a live run's, about to be put in place
    winners.write_text("WINNER PARTIAL\n")
    (out / "pairs.999999999-dead.partial").write_text("a killed run's\n")
    pipeline.save_dataset("sm-pairs", "synth-pairs", str(out / "pairs.jsonl"), 1, {})
    monkeypatch.setattr(pipeline, "check_synth_free", lambda spec, out_dir=None: out)
    with pytest.raises(pipeline.DatasetError, match="already named 'sm-pairs'"):
        run_synth_math(SynthMathSpec(num_seeds=4, name="sm"))
    assert (out / "pairs.jsonl").read_text() == "WINNER\n"
    # both runs wrote pairs.partial, and the refused one removed the file the other was about to rename
    assert sorted(p.name for p in out.glob("*.partial")) == [winners.name]


def test_a_name_taken_between_the_check_and_the_insert_is_refused_in_words(monkeypatch):
    import pytest
    from sqlalchemy import false

    from backend.synth import datasets, pipeline

    pipeline.save_dataset("taken", "sft", "/x.jsonl", 1, {})
    real, calls = datasets.select, []

    def blind_once(*a):  # the check sees no row (another run registers between it and the insert)
        calls.append(a)
        return real(*a).where(false()) if len(calls) == 1 else real(*a)

    monkeypatch.setattr(datasets, "check_not_orphaned_dataset", lambda name: None)
    monkeypatch.setattr(datasets, "select", blind_once)
    with pytest.raises(pipeline.DatasetError,
                       match=r"already named 'taken' \(1 row at /x.jsonl\). Nothing was saved"):
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
    with pytest.raises(OSError, match="Disk full while writing to .*nothing was changed"):
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
        "jobs resume 7, or \"Run again\" on the Jobs page)")
    # was "resume it to continue from its last checkpoint": job 7 saved none, and the button says it starts over
    assert said["sft"].startswith("no checkpoint was saved; resume it to start the training over from step 0 (python "
                                  "-m backend jobs resume 7")
    assert said["eval"].startswith("it stored no score; resume it to run it again (python -m backend jobs resume 7")
    from storage import db
    from storage.models import EvalScore

    with db.session() as s:
        s.add(EvalScore(model="m", task="qa", metric="accuracy", value=0.5, n=4, job_id=7))
        s.commit()
    assert runner._what_resume_does(Job(id=7, kind="eval", spec={})).startswith(
        "the scores it stored are kept; resume it to score the rest")
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


def test_a_rephrasing_may_write_the_seeds_numbers_in_another_form():
    """The changed-number check refused "two" → "2", "(100,200)" → "(100, 200)", "0.5" → ".5" and \\frac{1}{2} →
    \\frac12 as numbers "the original does not" have; a changed number is still refused."""
    import pytest

    from backend.synth.rephrase import RephraseError, check_question
    from backend.synth.seeds import Seed

    same = [("Tom has two apples and buys three more. How many?", "Tom has 2 apples and buys 3 more. How many?"),
            ("Find the distance from (100,200) to the origin.", "How far is the point (100, 200) from the origin?"),
            ("What is 0.5 of 10?", "What is .5 of 10?"),
            (r"What is $\frac{1}{2}$ of 10?", r"What is $\frac12$ of 10?"),
            ("It has 1000 pages.", "It has 1,000 pages."),
            ("twenty-five boxes of two hundred and five nails, three thousand five hundred in all, a dozen eggs",
             "25 boxes of 205 nails, 3500 in all, 12 eggs")]
    for question, rephrased in same:
        check_question(Seed("s", "c", 1, question, "", "1"), rephrased)
    for question, rephrased, new in [("Tom has two apples.", "Tom has 3 apples.", "3"),
                                     ("It has 1000 pages.", "It has 1,001 pages.", "1001"),
                                     (r"What is $\frac{1}{2}$ of 10?", r"What is $\frac13$ of 10?", "1/3")]:
        with pytest.raises(RephraseError, match=f"has {new}, which the original has neither in digits nor in words"):
            check_question(Seed("s", "c", 1, question, "", "1"), rephrased)


def test_a_full_disk_while_writing_the_pairs_registers_nothing_and_a_rerun_goes_on(tmp_path, monkeypatch):
    """Registered before its file was written, a run the disk stopped left a data set without its file, and the
    rerun was refused: the name was taken."""
    import errno
    from pathlib import Path

    import pytest

    from backend.synth import pipeline

    real = Path.write_text

    def full(self, text, *a, **k):
        if self.name.startswith("pairs.") and self.suffix == ".partial":
            real(self, text[:10], *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    spec = SynthMathSpec(num_seeds=4, name="full")
    with pytest.raises(OSError, match="Disk full while writing to .*nothing was changed"):
        run_synth_math(spec)
    assert pipeline.get_dataset("full-pairs") is None
    folder = Path(pipeline.db.workspace()) / "datasets" / "full"
    assert sorted(p.name for p in folder.iterdir()) == ["rephrase_cache.jsonl"]
    monkeypatch.setattr(Path, "write_text", real)
    assert run_synth_math(spec)["pairs"] == "full-pairs" and (folder / "pairs.jsonl").exists()


def test_the_synth_page_sees_a_rejected_pair_in_the_exports_when_the_counts_match():
    """One pair rejected and another restored: the exports' row count matched what an export would write, so the
    page said nothing while the files training reads held the rejected pair."""
    from backend.synth import pipeline
    from tests.test_pages import app

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))
    with pipeline.db.session() as s:
        a, b = s.exec(pipeline.select(pipeline.SynthPair.id).order_by(pipeline.SynthPair.id)).all()[:2]
    pipeline.reject_by_hand(a)
    pipeline.export("synth-math-pairs")  # 3 pairs, without a
    at = app("synth.py")
    assert not any("exported before" in w.value for w in at.warning)
    pipeline.reject_by_hand(a, undo=True)
    pipeline.reject_by_hand(b)  # still 3 to export, but not the 3 exported
    at = app("synth.py")
    (said,) = [w.value for w in at.warning if "exported before" in w.value]
    assert "hold 3 pairs, but not the ones an export would write now: exported before the latest" in said


def test_a_synth_math_job_killed_while_exporting_is_sent_to_export_not_resume():
    from backend import runner
    from backend.synth import pipeline
    from storage.models import Job

    from datetime import timedelta

    from storage.models import utcnow

    before = utcnow() - timedelta(seconds=5)
    pipeline.save_dataset("sm-pairs", "synth-pairs", "/x/pairs.jsonl", 4, {})
    assert runner._what_resume_does(Job(id=3, kind="synth-math", spec={"name": "sm"}, started=before)) == (
        "its pairs were registered as sm-pairs; make the Instruct / Alignment sets from them with python -m backend "
        "datasets export sm-pairs (or the Synthetic math page's Export tab)")
    # pairs of that name another run registered before this job started are not this run's
    later = Job(id=4, kind="synth-math", spec={"name": "sm"}, started=utcnow() + timedelta(seconds=5))
    assert runner._what_resume_does(later).startswith("nothing was registered; resume it")


def test_resume_promises_the_checkpoint_the_resumed_run_takes(tmp_path):
    """The Resume button and `jobs resume` named a checkpoint whose trainer_state.json was cut; the resumed run then
    removed it and went on from the one before (or from step 0)."""
    from backend import runner
    from backend.training import complete_checkpoints
    from storage.models import Job

    states = {"checkpoint-10": '{"global_step": 10}', "checkpoint-20": '{"global'}
    for name, text in states.items():
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "trainer_state.json").write_text(text)
    job = Job(id=4, kind="sft", spec={}, run_dir=str(tmp_path))
    assert runner.resume_point(job).name == "checkpoint-10"
    assert (tmp_path / "checkpoints" / "checkpoint-20").exists()  # saying so removes nothing
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-10"]
    (tmp_path / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text("")
    assert runner.resume_point(job) is None  # starts over, and says so


def test_the_number_check_neither_splits_money_nor_adds_up_a_list():
    """Splitting every comma group let "$1,500" → "$500" through; adding number words read "two dozen" as 14 and
    "five, six" as 11; "two and a half" and "3 million" in digits were refused."""
    import pytest

    from backend.synth.rephrase import RephraseError, check_question
    from backend.synth.seeds import Seed

    for question, rephrased in [("It costs $1,500.", "It costs $500."), ("It costs 1,000.", "It costs 0 or 1."),
                                ("two dozen eggs", "14 eggs"), ("five, six and seven", "11 and 7"),
                                ("five and six apples", "11 apples")]:
        with pytest.raises(RephraseError, match="which the original has neither in digits nor in words"):
            check_question(Seed("s", "c", 1, question, "", "1"), rephrased)
    for question, rephrased in [("two dozen eggs", "24 eggs"), ("two and a half cups", "2.5 cups"),
                                ("3 million people", "3,000,000 people"), ("(100,200)", "(100, 200)")]:
        check_question(Seed("s", "c", 1, question, "", "1"), rephrased)


def test_the_synth_page_says_an_exported_file_is_gone_not_that_pairs_were_rejected():
    from pathlib import Path

    from backend.synth import pipeline
    from tests.test_pages import app

    pipeline.run_synth_math(SynthMathSpec(num_seeds=4))
    Path(pipeline.get_dataset("synth-math-instruct").path).unlink()
    at = app("synth.py")
    assert not any("exported before" in w.value for w in at.warning)  # no rejection was made
    (said,) = [w.value for w in at.warning if "is gone" in w.value]
    assert said.startswith("`synth-math-instruct` (") and "export again on the Export tab" in said


def test_options_given_as_zero_or_dropped_by_json_are_refused():
    """`models list --after 0` passed (0 counted as "not given"); `scores --json --format csv` dropped the format."""
    from tests.test_cli_runner import cli, here

    r = cli("models", "list", "--after", "0")
    assert r.returncode == 2 and "models list takes no --after" in r.stderr
    r = here("scores", "--json", "--format", "csv")  # these two in this process: one start is enough
    assert r.returncode == 2 and "--format csv is for the table" in r.stderr
    assert here("scores", "--json").stdout.strip() == "[]"
