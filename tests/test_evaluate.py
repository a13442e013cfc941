"""Evaluation scoring hand-checked on a tiny model, and the length / hallucination statistics on fixed data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from backend import analysis, evaljob, evalscore, evaluate, qa, registry
from backend.analysis import Record
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore, Generation


@pytest.fixture
def tiny(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    return evaluate._load("tiny")


def test_perplexity_is_exp_of_the_token_mean_nll(tiny):
    tok, model = tiny
    texts = ["The capital of France is Paris.", "Twelve times seven is eighty four."]
    ppl, n = evaluate.perplexity(tok, model, texts)
    nll, count = 0.0, 0
    for t in texts:  # every token, the first after the BOS (lm-eval's prefix token; this tokenizer adds none)
        ids = torch.tensor([[tok.bos_token_id] + tok(t, add_special_tokens=False).input_ids])
        logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    assert n == count and ppl == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_multiple_choice_scores_by_log_likelihood(tiny, tmp_path):
    tok, model = tiny
    q, choices = "What is the capital of France?", ["Paris", "the lazy dog", "eighty four"]
    context = f"Question: {q}\nAnswer:"
    manual = []
    for c in choices:  # independent: score the whole sequence, keep the choice's tokens
        full = tok(context + " " + c, add_special_tokens=False, return_tensors="pt").input_ids
        n_ctx = len(tok(context, add_special_tokens=False).input_ids)
        logp = torch.log_softmax(model(full).logits[0, :-1], -1).gather(1, full[0, 1:, None])[:, 0]
        manual.append(logp[n_ctx - 1:].sum().item())
    for c, m in zip(choices, manual):
        assert evaluate.choice_logprob(tok, model, context, " " + c) == pytest.approx(m, abs=1e-4)
    best = max(range(3), key=manual.__getitem__)
    rows = [{"question": q, "choices": choices, "answer": best},
            {"question": q, "choices": choices, "answer": (best + 1) % 3}]
    assert evaluate.multiple_choice(tok, model, rows)["acc"] == 0.5
    path = tmp_path / "arc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="missing choices"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"question": "q", "answer": 0}) + "\n")
        evaluate.read_jsonl(str(bad), ("question", "choices", "answer"))


def test_answer_scoring_and_hallucination_labels(tiny, monkeypatch):
    tok, model = tiny
    # the last two replies ran into the token limit: one had stated its answer, one stopped mid-working
    outputs = iter([[("Adding gives 5. The answer is 5.", 9, False), ("The answer is 8.", 4, False),
                     ("I am not sure.", 4, False), ("The answer is 4. Let me also check 4 + 4 = 8 and", 12, True),
                     ("First 12 + 30 = 42, then 42 - 3 = 39, then", 12, True)],
                    [("The answer is 5.", 4, False), ("The answer is 9.", 4, False), ("Hmm.", 2, False),
                     ("The answer is 4.", 4, False), ("39", 1, False)]])
    monkeypatch.setattr(evalscore, "generate", lambda *a, **k: next(outputs))
    items = [("a", "2 + 3?", "5"), ("b", "3 + 4?", "7"), ("c", "1 + 1?", "2"), ("d", "2 + 3?", "5"),
             ("e", "12 + 30 - 4?", "38")]
    spec = EvalSpec(models=["tiny"], tasks=["synth-math"], samples=2)
    scores, gens = evaluate.answer_task(tok, model, items, spec, "synth-math", "tiny", None)
    assert [(g.correct, g.hallucination, g.answered) for g in gens] == [(True, False, True), (False, True, True),
                                                                        (False, False, False), (False, True, True),
                                                                        (False, False, False)]
    # a stated answer stands though the reply ran on; a reply stopped before any is cut off, not a hallucination
    assert [g.verdict for g in gens][3:] == ["wrong", "cut off"] and [g.truncated for g in gens][3:] == [True, True]
    # d: "The answer is 4. Let me also check…" states 4, as its sample does (the whole line, compared as a number,
    # agreed with nothing); e: its last number agrees with the sample
    assert [g.consistency for g in gens] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert scores["accuracy"] == pytest.approx(1 / 5) and scores["hallucination_rate"] == pytest.approx(2 / 5)
    assert scores["cut_off_rate"] == pytest.approx(1 / 5) and scores["abstention_rate"] == pytest.approx(1 / 5)
    assert [g.words for g in gens][:3] == [7, 4, 4]


def test_run_eval_writes_scores_and_generations(tiny, tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "2+2?", "choices": ["4", "5"], "answer": 0}) + "\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"})
                   + "\n")
    result = evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity", "synth-math", f"mc:{mc}",
                                                                  f"gsm8k:{gsm}"], limit=3, max_new_tokens=8))
    assert result["device"]["tiny"].startswith("CPU: float32")
    with db.session() as s:
        from sqlmodel import select

        rows = list(s.exec(select(EvalScore)))
        gens = list(s.exec(select(Generation)))
    scores = {(r.task.split(":")[0], r.metric): r.value for r in rows}
    assert scores[("perplexity", "perplexity")] > 1 and ("mc", "acc") in scores
    assert 0 <= scores[("synth-math", "accuracy")] <= 1 and ("gsm8k", "hallucination_rate") in scores
    assert len(gens) == 4 and [g.reference for g in gens if g.task.startswith("gsm8k")] == ["7"]
    assert all(g.model == "tiny" and g.tokens <= 8 and g.verdict in ("correct", "wrong", "abstained", "cut off")
               and g.item_kind == "math" for g in gens)
    assert all(g.hallucination == (g.verdict == "wrong") for g in gens)
    # defaults are the held-out built-in sets, each row says so with the items' fingerprint
    src = {r.task: r.details["source"] for r in rows}
    assert src["perplexity"] == "builtin-eval:heldout-text" and src["synth-math"] == "builtin-eval:eval-math"
    from backend import heldout

    lines = heldout.eval_path("heldout-text").read_text().splitlines()[:3]
    ppl_row = next(r for r in rows if r.task == "perplexity")
    assert ppl_row.details["fingerprint"] == heldout.fingerprint(lines) and ppl_row.n == 3
    math_q = {g.prompt for g in gens if g.task == "synth-math"}
    assert all(any(w.isdigit() and int(w) >= 1000 for w in q.replace("'", " ").split()) for q in math_q)


def test_perplexity_batched_equals_one_at_a_time(tiny):
    tok, model = tiny
    texts = ["short one.", "A much longer sentence about the planets of the solar system and their order.", "Hi"]
    batched = evaluate.perplexity_items(tok, model, texts, batch_size=3)
    single = [evaluate.perplexity_items(tok, model, [t], batch_size=1)[0] for t in texts]
    assert [b[1] for b in batched] == [s[1] for s in single]
    assert [b[0] for b in batched] == pytest.approx([s[0] for s in single], rel=1e-4)


def test_a_failing_task_stores_nothing_and_fails_the_job(tiny, monkeypatch):
    from sqlmodel import select

    def broken(*a, **k):
        raise RuntimeError("harness exploded")

    monkeypatch.setattr(evalscore, "run_lm_eval", broken)
    with pytest.raises(evaluate.EvalError, match="tiny / lm-eval:arc_easy failed: RuntimeError: harness exploded"):
        evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity", "lm-eval:arc_easy"], limit=2))
    with db.session() as s:
        tasks = {r.task for r in s.exec(select(EvalScore))}
    assert tasks == {"perplexity"}  # the finished task is complete; the failed one left no row
    calls = iter([[("The answer is 3.", 4, False)] * 2])  # the first generation batch works, the sampled one fails

    def flaky(*a, **k):
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError("out of memory")

    monkeypatch.setattr(evalscore, "generate", flaky)
    with pytest.raises(evaluate.EvalError, match="out of memory"):
        evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["synth-math"], limit=2, samples=2))
    with db.session() as s:
        assert not list(s.exec(select(EvalScore).where(EvalScore.task == "synth-math")))
        assert not list(s.exec(select(Generation)))


def test_device_plan_cpu_cuda_and_too_big():
    from backend.evaldevice import DeviceError, ModelShape, kv_bytes_per_sequence, plan

    shape = ModelShape(num_parameters=1_000_000_000, num_layers=22, kv_heads=4, head_dim=64, vocab_size=32000)
    cpu = plan(shape, cuda=False)
    assert (cpu.device, cpu.dtype, cpu.attn, cpu.batch_size) == ("cpu", "float32", None, 8)
    assert plan(shape, cuda=True, free_bytes=80 * 2**30, device="cpu").dtype == "float32"
    per_seq = kv_bytes_per_sequence(shape, 512)
    assert per_seq == 2 * 22 * 4 * 64 * 2 * 512 + 4 * 32000
    free = int(1e9 * 2 * 1.10) + 2**30 + 10 * per_seq + 5  # room for exactly ten sequences
    gpu = plan(shape, cuda=True, free_bytes=free, seq_len=512)
    assert (gpu.device, gpu.dtype, gpu.attn, gpu.batch_size) == ("cuda", "bfloat16", "sdpa", 10)
    assert plan(shape, cuda=True, free_bytes=free, seq_len=512, batch_size=4).batch_size == 4
    assert plan(shape, cuda=True, free_bytes=free, seq_len=512, batch_size=64).batch_size == 10
    assert plan(shape, cuda=True, free_bytes=200 * 2**30).batch_size == 256  # capped
    with pytest.raises(DeviceError, match=r"needs about 2\.05 GiB .* has 1\.5 GiB free"):
        plan(shape, cuda=True, free_bytes=int(1.5 * 2**30))
    with pytest.raises(DeviceError, match="no CUDA device"):
        plan(shape, cuda=False, device="cuda")


def test_a_model_that_cannot_fit_is_refused_before_loading(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (100 * 2**20, 80 * 2**30))
    monkeypatch.setattr(evaljob, "_load", lambda *a, **k: pytest.fail("loaded a model that cannot fit"))
    with pytest.raises(evaluate.EvalError, match="tiny: the model needs about .* has 100 MiB free"):
        evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=2))
    from backend.evaldevice import model_shape

    shape = model_shape(tiny_llama)
    assert (shape.num_layers, shape.kv_heads, shape.head_dim, shape.vocab_size) == (6, 2, 8, 300)


def test_length_explains_a_hallucination_gap():
    # Both models hallucinate 50% of their long answers and 0% of their short ones; A answers long more often.
    recs = []
    for model, n_long, n_short in (("A", 40, 10), ("B", 10, 40)):
        recs += [Record(model, 80, i % 2 == 0, i % 2 == 1, prompt_id=str(i)) for i in range(n_long)]
        recs += [Record(model, 10, True, False, prompt_id=str(n_long + i)) for i in range(n_short)]  # the same 50
    res = analysis.length_controlled(recs, "A", "B", n_bins=2, boots=300)
    assert res["raw_diff"] == pytest.approx(0.4 - 0.1)
    assert res["length_controlled_diff"] == pytest.approx(0.0, abs=1e-9)
    lo, hi = res["raw_ci"]
    assert lo > 0 and hi < 0.6  # the raw gap is real…
    clo, chi = res["length_controlled_ci"]
    assert clo <= 0 <= chi  # …and vanishes once length is held fixed
    bins = {(r["model"], r["bin"]): r for r in analysis.by_length_bin(recs, 2)}
    assert bins[("A", 1)]["hallucination_rate"] == bins[("B", 1)]["hallucination_rate"] == 0.5
    assert bins[("A", 0)]["hallucination_rate"] == 0.0


def test_eval_spec_checks_tasks():
    with pytest.raises(ValueError, match="needs a file"):
        EvalSpec(models=["m"], tasks=["mc"])
    with pytest.raises(ValueError, match="choose one of perplexity"):
        EvalSpec(models=["m"], tasks=["bogus"])
    with pytest.raises(ValueError, match="judge_model"):
        EvalSpec(models=["m"], tasks=["qa"], judge_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="listed twice"):
        EvalSpec(models=["m"], tasks=["qa", "qa"])


def test_generate_says_which_replies_the_token_limit_stopped(tiny):
    """A reply that used every new token without an end-of-sequence was stopped, not finished: it is scored
    "cut off" (backend/qa.py), not as a hallucination."""
    tok, model = tiny
    ((text, n, cut),) = evaluate.generate(tok, model, ["What is 2 + 2?"], 5)
    assert n == 5 and cut  # a random model never ends a reply
    from backend.chat import build_prompt

    prompt = tok(build_prompt(tok, [{"role": "user", "content": "What is 2 + 2?"}]), return_tensors="pt",
                 add_special_tokens=False)
    with torch.inference_mode():
        first = int(model(**prompt).logits[0, -1].argmax())  # the greedy reply's first token
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = first  # now its first token ends the reply
    try:
        ((_, n2, cut2),) = evaluate.generate(tok, model, ["What is 2 + 2?"], 5)
    finally:
        model.generation_config.eos_token_id = saved
    assert not cut2 and n2 < 5
    assert qa.classify("Paris is", ["Rome"], "answerable", truncated=True) == "cut off"
    assert qa.classify("Paris is", ["Rome"], "answerable") == "wrong"
    assert qa.classify("Rome, the", ["Rome"], "answerable", truncated=True) == "correct"
    assert qa.classify("I don't know, but", ["Rome"], "answerable", truncated=True) == "abstained"
    assert qa.unless_cut_off("wrong", "Paris is", "answerable", True) == "cut off"
    assert qa.unless_cut_off("wrong", "The answer is 7. Also", "math", True) == "wrong"
