"""The closed-book probe asks, in other words, what the facts corpus teaches: no 8-gram in common, so the overlap
check called it clean (✓) for a model trained on that corpus. The table now says whose score there is of what they
were taught (heldout.TEACHES, scoretable.overlap_note)."""

from __future__ import annotations

from backend import evaljob, evaluate, heldout, registry, scoretable
from backend.specs import EvalSpec


def test_a_model_taught_the_probes_facts_is_named_in_the_overlap_note(tiny_llama):
    registry.import_folder(tiny_llama, "base")
    registry.register(tiny_llama, "taught", "trained", parents=["base"],
                      recipe={"kind": "cpt", "data": [{"source": "builtin:facts-corpus", "weight": 1.0}]})
    registry.register(tiny_llama, "other", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": "builtin:alpaca-mini", "weight": 1.0}]})
    evaluate.run_eval(EvalSpec(models=["taught", "other"], tasks=["qa"], limit=6, max_new_tokens=8))
    latest = scoretable.latest_scores()
    primary = scoretable.headline(latest)
    rows = {m: r for (m, t), r in primary.items() if t == "qa"}
    assert rows["taught"].overlap_share == 0.0  # the n-gram check sees nothing, as before
    assert scoretable.taught(rows["taught"]) == "builtin:facts-corpus (its answerable items ask the capitals it states)"
    assert scoretable.taught(rows["other"]) is None
    note = scoretable.overlap_note(primary)
    assert ("qa: no 8-gram in common with the training data, but builtin:facts-corpus (its answerable items ask the "
            "capitals it states) teaches it in other words, and taught trained on it: their score there is of what "
            "they were taught, not held out") in note
    assert "qa: no item overlaps" not in note


def test_the_probe_really_asks_what_the_corpus_states():
    """TEACHES is a claim about the files: every answerable item's answer is a capital the corpus names with its
    country."""
    import json

    corpus = heldout.DATA_DIR.joinpath("facts-corpus.txt").read_text()
    items = [json.loads(x) for x in heldout.eval_path("qa-closed-book").read_text().splitlines() if x.strip()]
    answerable = [it for it in items if it["kind"] == "answerable"]
    assert answerable and all(f"is {it['answers'][0]}." in corpus for it in answerable)
    assert set(heldout.TEACHES) == {"builtin-eval:qa-closed-book"}


def test_the_taught_note_does_not_call_a_task_with_an_overlap_column_clean(tiny_llama, tmp_path):
    """A model whose lineage also holds some of qa's questions verbatim: the note announced qa's ⚠ column and then
    said "qa: no 8-gram in common with the training data"."""
    import json

    items = [json.loads(x) for x in heldout.eval_path("qa-closed-book").read_text().splitlines() if x.strip()]
    leak = tmp_path / "leak.jsonl"
    leak.write_text("".join(json.dumps({"instruction": it["question"], "output": "?"}) + "\n" for it in items))
    registry.import_folder(tiny_llama, "base")
    registry.register(tiny_llama, "taught", "trained", parents=["base"], recipe={"kind": "sft", "data": [
        {"source": "builtin:facts-corpus", "weight": 1.0}, {"source": str(leak), "weight": 1.0}]})
    evaluate.run_eval(EvalSpec(models=["taught"], tasks=["qa"], limit=6, max_new_tokens=8))
    primary = scoretable.headline(scoretable.latest_scores())
    assert primary[("taught", "qa")].overlap_share > 0
    note = scoretable.overlap_note(primary)
    assert "training-overlap column for qa" in note and "no 8-gram in common" not in note
    assert "qa: besides its column, builtin:facts-corpus (its answerable items ask the capitals it states) teaches " \
           "it in other words, and taught trained on it" in note


def test_a_model_whose_files_vanish_mid_evaluation_is_named_and_the_scores_before_are_kept(tiny_llama, tmp_path,
                                                                                              monkeypatch):
    import shutil

    import pytest

    copy = tmp_path / "b"
    shutil.copytree(tiny_llama, copy)
    registry.import_folder(tiny_llama, "a")
    registry.import_folder(copy, "b")
    real = evaluate.score_task

    def then_delete(*args, **kwargs):
        for f in copy.glob("*.safetensors"):
            f.unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(evaljob, "score_task", then_delete)
    with pytest.raises(evaluate.EvalFailed, match=r"^b: .*model\.safetensors.*: were the model's files deleted or "
                                                  r"moved while this evaluation ran\? The scores it stored are kept"):
        evaluate.run_eval(EvalSpec(models=["a", "b"], tasks=["perplexity"], limit=2))
    assert {m for m, _, _ in scoretable.latest_scores()} == {"a"}
