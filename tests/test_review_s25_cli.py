"""Session 25's CLI items: `datasets export` printed its result raw, `recipe cancel` of a finished run exited 0 where
`jobs cancel` of a finished job exits 1, `scores --format tex` set the first scores left-aligned, train / eval / merge
/ upscale had no --json for a script to read the new model's name and path, a failed read during the paper-mix
checks did not name the mix, and a seed file was read neither through gzip (x.jsonl.gz) nor refused on the page with
one instruction."""

from __future__ import annotations

import gzip
import json

import pytest

from backend import recipe, registry, runner
from backend.recipe import tables
from backend.synth import pipeline, seeds
from storage import db
from storage.models import EvalScore, Job, RecipeRun, RecipeStage
from tests.test_review_cli import add, cli


# ---------------------------------------------------------------- 1. datasets export: the shared result printer

def test_datasets_export_prints_its_result_as_every_job_command_does(monkeypatch):
    result = {"instruct": "sm-instruct", "alignment": "sm-alignment", "rows": 3, "folder": "/w/datasets/sm",
              "left_out": None, "notes": [], "skipped": ["a", "b"]}
    monkeypatch.setattr(pipeline, "export", lambda name, include_flagged=False: result)
    rc, out, err = cli("datasets", "export", "sm-pairs")
    # was "left_out: None", "notes: []" and "skipped: ['a', 'b']"
    assert (rc, out, err) == (0, "instruct: sm-instruct\nalignment: sm-alignment\nrows: 3\nfolder: /w/datasets/sm\n"
                                 "skipped:\n  - a\n  - b\n", "")


# ---------------------------------------------------------------- 2. recipe cancel of a finished run: exit 1

def run_with(*stages: tuple[str, str | None, dict]) -> int:
    """A recipe run whose stages have jobs of these statuses (None: no job), with these infos."""
    (run,) = add(RecipeRun(name="r"))
    for i, (stage, status, info) in enumerate(stages):
        job = add(Job(kind="sft", status=status))[0] if status else None
        add(RecipeStage(run_id=run.id, recipe="r", stage=stage, kind="sft", output=f"m{i}", hash=f"h{i}",
                        job_id=job.id if job else None, info=info))
    return run.id


def test_recipe_cancel_of_a_run_that_has_ended_exits_1_saying_why_and_what_to_do():
    run_id = run_with(("base", None, {"status": "given"}), ("sft-a", "succeeded", {"status": "run"}),
                      ("sft-b", "failed", {"status": "run"}))
    assert cli("recipe", "cancel", str(run_id)) == (1, "", (
        f"error: recipe run {run_id}: nothing to cancel: no job of it is waiting or running (1 succeeded, 1 failed); "
        f"to run its stages that did not succeed again, python -m backend recipe show {run_id} > recipe.yaml, then "
        "python -m backend recipe run recipe.yaml (the stages that succeeded are reused); python -m backend recipe "
        "runs shows its stages.\n"))
    done = run_with(("sft", "succeeded", {"status": "run"}))
    rc, out, err = cli("recipe", "cancel", str(done))
    assert (rc, out) == (1, "") and "(1 succeeded); python -m backend recipe runs shows its stages." in err
    assert cli("jobs", "cancel", "1")[0] == 1  # as `jobs cancel` of a finished job


def test_recipe_cancel_names_the_earlier_runs_jobs_its_stages_wait_on():
    first = run_with(("sft", "queued", {"status": "run"}))
    (job_id,) = [r.job_id for r, _ in recipe.stages(first)]
    (run,) = add(RecipeRun(name="r"))
    add(RecipeStage(run_id=run.id, recipe="r", stage="sft", kind="sft", output="m0", hash="h0", job_id=job_id,
                    info={"status": "in-flight"}))
    rc, out, err = cli("recipe", "cancel", str(run.id))
    assert (rc, out) == (1, "")
    assert err == (f"error: recipe run {run.id}: nothing to cancel: its waiting stages run in job {job_id} of an "
                   "earlier recipe run; cancel that run (python -m backend recipe runs shows which), or the job "
                   f"(python -m backend jobs cancel {job_id}).\n")
    assert runner.get(job_id).status == "queued"  # not cancelled: the earlier run's
    assert cli("recipe", "cancel", str(first)) == (0, f"recipe run {first}: cancelled job {job_id}\n", "")
    assert runner.get(job_id).status == "cancelled"


# ---------------------------------------------------------------- 3. LaTeX: numbers right-aligned

def test_latex_right_aligns_the_number_columns_and_left_aligns_text():
    t = tables.Table("scores", "Models × tasks", ["model", "average", "qa (accuracy)", "qa (accuracy) ±",
                                                  "perplexity", "kind", "layers", "made from"],
                     [["a", 0.5, 0.25, 0.0993, float("inf"), "trained", 44, "—"],
                      ["b", None, 0.125, None, 3.2e17, "base", 22, "—"]])
    tex = tables.to_latex(t)
    # model, average, qa "0.2500 ± 0.0993", perplexity ∞ / 3.2e17, kind, layers, made from (all "—": text)
    assert r"\begin{tabular}{lrrrlrl}" in tex  # was {lllccccc}-wide: the first scores left, the rest centred
    assert r"0.2500 $\pm$ 0.0993 & $\infty$" in tex


def test_scores_tex_sets_its_score_columns_right_aligned():
    add(EvalScore(model="base", task="qa", metric="accuracy", value=0.25, n=20),
        EvalScore(model="base", task="perplexity", metric="perplexity", value=41.05, n=20))
    rc, out, _ = cli("scores", "--format", "tex")
    assert rc == 0
    (spec,) = [line for line in out.splitlines() if line.startswith(r"\begin{tabular}")]
    header = out.splitlines()[out.splitlines().index(spec) + 2]
    columns = header.removesuffix(r" \\").split(" & ")
    align = spec.removeprefix(r"\begin{tabular}{").removesuffix("}")
    assert len(align) == len(columns)
    said = dict(zip(columns, align))
    assert said["model"] == "l" and said["perplexity"] == "r" and said["qa (accuracy)"] == "r", said


# ---------------------------------------------------------------- 4. --json on train, eval, merge, upscale

def test_upscale_json_prints_the_result_as_one_object_a_script_can_read(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("upscale", "--base", "tiny", "--m", "1", "--name", "tiny-dus", "--json")
    assert rc == 0, err
    result = json.loads(out)  # stdout is the JSON alone; the progress went to stderr
    rec = registry.get("tiny-dus")
    assert result["model"] == "tiny-dus" and result["path"] == rec.path
    assert result["layers"] == rec.num_layers and result["parameters"] == rec.num_parameters
    assert "[100.0%]" in err


def test_merge_json_and_a_queued_jobs_json(tiny_llama):
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(tiny_llama, "b")
    rc, out, err = cli("merge", "--models", "a", "b", "--name", "ab", "--json")
    assert rc == 0, err
    assert json.loads(out)["model"] == "ab" and json.loads(out)["path"] == registry.get("ab").path
    rc, out, err = cli("merge", "--models", "a", "ab", "--name", "ab2", "--json", "--queue")
    assert rc == 0, err
    (job,) = runner.list_jobs()
    assert json.loads(out) == {"job": job.id, "kind": "merge", "status": "queued", "after": None, "model": "ab2"}
    rc, out, err = cli("train", "sft", "--model", "a", "--data", "builtin:alpaca-mini", "--name", "a-sft", "--json",
                       "--after", str(job.id))
    assert rc == 0, err
    assert json.loads(out) == {"job": job.id + 1, "kind": "sft", "status": "queued", "after": job.id,
                               "model": "a-sft"}


def test_eval_json_holds_the_rows_it_stored(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add(EvalScore(model="tiny", task="perplexity", metric="perplexity", value=99.0, n=2))  # an earlier run's
    rc, out, err = cli("eval", "tiny", "--tasks", "perplexity", "--limit", "2", "--device", "cpu", "--json")
    assert rc == 0, err
    result = json.loads(out)
    from sqlmodel import select

    with db.session() as s:  # every row this run stored, not the earlier run's (id 1)
        stored = sorted(s.exec(select(EvalScore).where(EvalScore.id > 1)).all(), key=lambda r: r.metric)
    assert result["scores"] == len(stored) >= 2 and "perplexity" in [r["metric"] for r in result["rows"]]
    assert [(r["model"], r["task"], r["metric"], r["value"], r["n"]) for r in result["rows"]] == [
        (r.model, r.task, r.metric, r.value, r.n) for r in stored]
    assert 99.0 not in [r["value"] for r in result["rows"]]


def test_json_keeps_the_works_own_prints_off_stdout(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")

    def work(spec, out_dir, progress):
        print("a library's chatter")
        return {"model": "x", "path": "/p", "notes": []}
    monkeypatch.setattr(runner, "work_function", lambda kind: work)
    monkeypatch.setattr(runner.child, "work_function", lambda kind: work)  # the runner's own (the guard's rule)
    rc, out, err = cli("upscale", "--base", "tiny", "--m", "1", "--json")
    assert (rc, json.loads(out)) == (0, {"model": "x", "path": "/p", "notes": []})
    assert "a library's chatter" in err
    rc, out, _ = cli("upscale", "--base", "tiny", "--m", "1")  # without --json: as before
    assert out == "a library's chatter\nmodel: x\npath: /p\n"


def test_train_plan_refuses_json():
    rc, out, err = cli("train", "sft", "--model", "m", "--data", "builtin:alpaca-mini", "--plan", "--json")
    assert (rc, out) == (2, "") and "train --plan prints the memory plan as a table" in err


def test_every_json_option_is_in_the_help():
    for argv in (["upscale"], ["merge"], ["eval"], ["train"]):
        rc, out, _ = cli(*argv, "--help")
        assert rc == 0 and "--json" in out and "print the result as one JSON object" in " ".join(out.split())


# ---------------------------------------------------------------- 5. data: the mix named, seeds through gzip

def test_a_failed_read_during_the_paper_mix_checks_names_the_mix(monkeypatch):
    from backend import data

    def check_mix(sources, purpose):
        if any(s.startswith("dataset:sm-") for s, *_ in sources):
            raise data.ReaderFailed("Reading math_instruct.jsonl failed, not for anything in the file (MemoryError: "
                                    "). Try again; if it keeps failing, restart the app and report it.")
    monkeypatch.setattr(data, "check_mix", check_mix)
    first = next(name for name, (_, sources) in pipeline.paper_mixes("sm-pairs").items()
                 if any(s.startswith("dataset:sm-") for s, *_ in sources))
    with pytest.raises(data.ReaderFailed) as refused:  # still the reader's (the page keeps the files, "try again")
        pipeline.save_paper_mixes("sm-pairs")
    assert str(refused.value).startswith(f"Mix {first}: Reading math_instruct.jsonl failed, not for anything in the "
                                         "file (MemoryError: ). Try again;")
    assert str(refused.value).endswith("None of the paper's mixes (sft-v1, sft-v2, sft-v3, sft-v4, dpo-v1, dpo-v2) "
                                       "was saved.")
    assert pipeline.list_datasets("mix") == []


GSM = {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"}


def test_a_gzipped_seed_file_is_read_through_gzip(tmp_path):
    from backend.data_files import unicode_encoding

    plain = tmp_path / "seeds.jsonl.gz"
    plain.write_bytes(gzip.compress((json.dumps(GSM) + "\n").encode()))
    # its compressed bytes were read: "seeds.jsonl.gz, line 1, column 2: not UTF-8 (byte 0x8b)"
    assert [(s.question, s.answer) for s in seeds.load_seeds(str(plain))] == [(GSM["question"], "7")]
    array = tmp_path / "seeds.json.gz"  # a .json array, as a .json seed file
    array.write_bytes(gzip.compress(json.dumps([GSM, GSM | {"question": "And 5 more?"}]).encode("utf-16")))
    assert unicode_encoding(array) == "utf-16"  # its text's mark, not the compressed bytes'
    assert seeds.count_seeds(array, "seeds.json.gz") == 2
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(plain.read_bytes()[:20])
    with pytest.raises(seeds.SeedError) as refused:
        seeds.count_seeds(cut, "cut.jsonl.gz")
    assert str(refused.value).startswith("cut.jsonl.gz is not a whole gzip file (")
    assert seeds.upload_refused(refused.value).endswith(
        "compress it again (gzip FILE), or give the file uncompressed, then upload it again.")


def test_a_binary_seed_upload_is_refused_with_one_instruction(tmp_path):
    binary = tmp_path / "x"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00" + bytes(range(256)))  # a zip's first bytes
    with pytest.raises(seeds.SeedError) as refused:
        seeds.count_seeds(binary, "seeds.jsonl")
    said = seeds.upload_refused(refused.value)
    # was "… or no text file at all. Save it as UTF-8. Fix the file and upload it again."
    assert said == ("seeds.jsonl, line 1, column 6: a NUL byte (0x00), which no text holds: a UTF-16 or UTF-32 file "
                    "without its byte-order mark, or no text file at all. Save it as UTF-8, then upload it again.")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(seeds.SeedError) as refused:
        seeds.count_seeds(latin, "latin.jsonl")
    assert seeds.upload_refused(refused.value).endswith(": save the file as UTF-8, then upload it again.")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": \n')
    with pytest.raises(seeds.SeedError) as refused:
        seeds.count_seeds(bad, "bad.jsonl")
    assert seeds.upload_refused(refused.value) == ("bad.jsonl, line 1, column 14: not valid JSON (Expecting value). "
                                                   "Fix the file and upload it again.")  # no instruction of its own
