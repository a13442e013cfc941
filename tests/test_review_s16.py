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
