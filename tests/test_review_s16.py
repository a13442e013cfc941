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
