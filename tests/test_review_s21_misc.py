"""Session 21's left-alone items: `jobs list` warns of a queued job whose inputs are gone (the Jobs page's words);
the weights check's markers of an older transformers are swept; an evaluation that would generate past the model's
positions says so before generating; a huge or infinite perplexity is printed in one compact form."""

from __future__ import annotations

import json

import pytest

from backend import registry, runner
from backend.specs import SftSpec, UpscaleSpec
from tests.test_review_cli import cli


# ---------------------------------------------------------------- 1. `jobs list` warns as the Jobs page does

def test_jobs_list_warns_of_a_queued_job_whose_model_was_deleted(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    first = runner.submit(UpscaleSpec(base="tiny", m=1, name="first"))
    on_made = runner.submit(SftSpec(model="first", data=[{"source": "builtin:alpaca-mini"}], max_steps=1,
                                    name="f-sft"), after=first.id)
    registry.delete("tiny", delete_files=False, force=True)
    said = (f"Job {first.id} will fail when it runs: its model tiny is gone (deleted since it was queued). Cancel "
            "it, or make it again before it runs.")
    rc, out, err = cli("jobs", "list")  # old code: "waiting for the worker", and no word of it
    assert rc == 0 and f"warning: {said}" in err.splitlines()
    assert f"Job {on_made.id} will fail" not in err  # the job it waits for makes its model
    rc, out, _ = cli("jobs", "list", "--json")
    assert {j["id"]: j["will_fail"] for j in json.loads(out)} == {first.id: said, on_made.id: None}
    rc, out, _ = cli("jobs", "show", str(first.id))
    assert f"warning: {said}" in out.splitlines()


# ---------------------------------------------------------------- 2. the weights check's markers of old versions

def test_the_weights_markers_of_another_transformers_are_swept_when_a_new_one_is_written(tiny_llama, workspace,
                                                                                        monkeypatch):
    """One empty file per model family checked, but every upgrade of transformers left them all behind, never to be
    read again (the version is in the key): they are removed once no process has added to them in a week."""
    import os
    import time
    from importlib.metadata import version

    from backend import modelinfo
    from backend.modelinfo import inspect_model

    fits = workspace / ".cache" / "weights-fit"
    old, flat, recent = fits / "2-4.0.0" / "a", fits / ("0" * 64), fits / "2-99.0" / "b"
    for p in (old, flat, recent):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    week_ago = time.time() - modelinfo.SWEEP_AFTER_S - 60
    for p in (old.parent, flat):
        os.utime(p, (week_ago, week_ago))
    modelinfo._weights_problem.cache_clear()
    inspect_model(tiny_llama)  # old code: the marker beside them, and both old entries kept
    current = fits / f"{modelinfo.WEIGHTS_CHECK}-{version('transformers')}"
    assert sorted(p.name for p in fits.iterdir()) == sorted([current.name, "2-99.0"])
    assert len(list(current.iterdir())) == 1 and recent.exists()  # another machine's, written lately: kept
    modelinfo._weights_problem.cache_clear()  # as a new process: a hit reads one marker and sweeps nothing
    monkeypatch.setattr(modelinfo, "_sweep", lambda *a: (_ for _ in ()).throw(AssertionError("swept on a hit")))
    monkeypatch.setattr(modelinfo, "weights_fit", lambda *a: (_ for _ in ()).throw(AssertionError("checked again")))
    assert inspect_model(tiny_llama).num_layers == 6


# ---------------------------------------------------------------- 3. generating past the model's positions

@pytest.fixture(scope="module")
def short_models(tokenizer_dir):
    """A Llama (RoPE) and a GPT-2 (learned positions) that read 64 positions, and the test tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()
    return AutoTokenizer.from_pretrained(tokenizer_dir), llama, gpt2


def test_a_prompt_past_the_models_positions_is_cut_from_the_left_and_said(short_models, monkeypatch):
    """As lm-eval's generate_until: the prompt keeps its last (positions - max_new_tokens) tokens."""
    from backend.chat import build_prompt, encode
    from backend.evalscore import generate

    tok, llama, gpt2 = short_models
    question = "What is twelve times seven? " * 3
    used = len(encode(tok, build_prompt(tok, [{"role": "user", "content": question}])).input_ids)
    assert used + 16 > 64
    for model in (llama, gpt2):  # old code: the Llama generated past its 64 positions, the GPT-2 failed with
        read = []  # "IndexError: index out of range in self"
        real = model.generate
        monkeypatch.setattr(model, "generate", lambda **kw: read.append(kw["input_ids"].shape[1]) or real(**kw))
        notes: list[str] = []
        (_, n, _), _ = generate(tok, model, [question, "What is 2 + 2?"], 16, notes=notes)
        assert read == [48] and n <= 16
        assert notes == ["1 of 2 prompts are longer than the 48 tokens that leave max_new_tokens 16 in the 64 "
                         "positions the model reads (its max_position_embeddings): they were cut from the left, as "
                         "lm-eval cuts them, and the model read only their last 48 tokens. Lower max new tokens, or "
                         "evaluate a model with a longer context."]
    notes = []
    generate(tok, llama, ["What is 2 + 2?"], 16, notes=notes)  # within the positions: nothing said
    assert notes == []


def test_no_room_for_a_prompt_is_refused_with_the_number_to_lower(short_models):
    from backend.evalscore import generate
    from backend.evaltasks import EvalError

    tok, llama, _ = short_models
    with pytest.raises(EvalError, match="max_new_tokens 64 leaves no room for a prompt: the model reads 64 positions "
                                        r"\(its max_position_embeddings\), prompt and reply together. Lower max new "
                                        "tokens below 64."):
        generate(tok, llama, ["What is 2 + 2?"], 64)


# ---------------------------------------------------------------- 4. a huge or infinite perplexity

def test_a_huge_or_infinite_perplexity_is_printed_compactly_and_stored_exactly():
    from backend.scoretable import number_text
    from storage.models import EvalScore
    from tests.test_review_cli import add

    assert [number_text(v) for v in (3.2e17, 3.25e17, 1234567.0, 1e6, float("inf"), 999999.5, 12.3456)] == [
        "3.2e17", "3.2e17", "1.2e6", "1e6", "∞", 999999.5, 12.3456]
    add(EvalScore(model="up", task="perplexity", metric="perplexity", value=3.2e17, n=2),
        EvalScore(model="rand", task="perplexity", metric="perplexity", value=float("inf"), n=2),
        EvalScore(model="base", task="perplexity", metric="perplexity", value=12.3456, n=2))
    rc, out, err = cli("scores")  # old code: "3.2e+17" and "inf" beside 12.3456, unexplained
    assert rc == 0, err
    # (the score in the second column: perplexity alone gives no average column, session 26)
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in out.splitlines()
             if line.startswith(("| up ", "| rand ", "| base "))}
    assert cells == {"up": "3.2e17", "rand": "∞", "base": "12.3456"}
    assert ("note: 3.2e17 is 3.2 × 10^17: scores of a million or more are written so; ∞: an infinite score (a "
            "perplexity whose mean loss overflowed: the model gives the text's tokens no probability that counts, as "
            "an untrained or broken one does). Export CSV and `scores --format csv` hold the exact values.") in out
    rc, out, _ = cli("scores", "--format", "csv")
    assert {line.split(",")[0]: line.split(",")[1] for line in out.splitlines()[1:]} == {
        "up": "3.2e+17", "rand": "inf", "base": "12.3456"}  # the exact values, as Python writes them
