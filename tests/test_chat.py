"""Chat streaming (backend/chat.py): the streamed reply is exactly what plain `generate` gives, stats count the
tokens, and side-by-side answers run at once without mixing their texts or their failures."""

from __future__ import annotations

import torch

from backend.chat import GenerationStats, answer_all, build_prompt, load, stream_reply
from tests.conftest import make_llama

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def plain_generate(lm, max_new_tokens: int) -> tuple[str, int]:
    tok = lm.tokenizer
    ids = tok(build_prompt(tok, MESSAGES), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = lm.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                top_k=None, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:]
    return tok.decode(new, skip_special_tokens=True), len(new)


def test_stream_reply_equals_generate_and_counts_tokens(tiny_llama):
    lm = load(tiny_llama, "tiny")
    stats = GenerationStats()
    pieces = list(stream_reply(lm, MESSAGES, max_new_tokens=12, stats=stats))
    text, n = plain_generate(lm, 12)
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1  # streamed, not one block
    assert stats.new_tokens == n == 12
    assert 0 < stats.first_token_s <= stats.total_s and stats.tokens_per_s == 12 / stats.total_s


def test_answer_all_runs_models_side_by_side_and_keeps_failures_apart(tokenizer_dir, tmp_path):
    a = load(make_llama(tokenizer_dir, tmp_path / "a", seed=1), "a")
    b = load(make_llama(tokenizer_dir, tmp_path / "b", seed=2), "b")
    four = b.tokenizer.encode("4", add_special_tokens=False)[-1]
    head = torch.nn.Linear(b.model.config.hidden_size, b.model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    head.bias.data[:] = torch.nn.functional.one_hot(torch.tensor(four), b.model.config.vocab_size) * 10.0
    b.model.lm_head = head  # b always answers "4"
    broken = load(make_llama(tokenizer_dir, tmp_path / "c", seed=3), "broken")
    broken.model.model.embed_tokens = None  # generation fails inside its thread
    answers = answer_all({"a": a, "b": b, "broken": broken}, MESSAGES, max_new_tokens=10)
    for ans in answers.values():
        ans.thread.join(timeout=60)
        assert ans.done
    for name, lm in (("a", a), ("b", b)):
        text, n = plain_generate(lm, 10)
        assert answers[name].text == text and answers[name].stats.new_tokens == n and answers[name].error is None
    assert answers["b"].text.replace(" ", "") == "4" * 10 and "4" * 10 not in answers["a"].text  # nothing mixed
    assert "generation failed" in answers["broken"].error and answers["broken"].text == ""
