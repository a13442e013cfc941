"""Scoring a task set on a loaded model: perplexity (every token, in lm-eval's rolling windows: backend/evalrolling.py),
multiple choice by log-likelihood (as lm-eval's HFLM), generated answers (synth-math, gsm8k, qa),
lm-evaluation-harness tasks; and `settings`, how a task was run, stored with its scores (backend/evaluate.py lists
the tasks, backend/evaljob.py runs them and stores the scores).

    from backend.evalscore import perplexity
    perplexity(tok, model, ["Paris is the capital of France."])
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Callable

from backend import evaldevice, qa, registry
# perplexity's rolling windows and the positions a model reads live in evalrolling, their names here as before
from backend.evalrolling import (MAX_LENGTH, ROLLING, UNSET_MAX_LENGTH, context_length,  # noqa: F401
                                 perplexity_items, perplexity_window, tokenizer_id)
from backend.evaltasks import EvalError, TaskSet
from backend.specs import EVAL_ANSWER_KINDS, EvalSpec
from backend.synth.answers import extract_answer, same_answer
from storage.models import Generation

SYSTEM_HINT = "Solve the problem. End with 'The answer is <number>.'"
SAMPLING = {"temperature": 0.8, "top_p": 0.95}  # the extra answers of samples > 1 (consistency)
ItemProgress = Callable[[int, int], None]  # (answers generated so far, answers in all) within one task
MC_CONTEXT = "Question: {question}\nAnswer:"  # mc_items' context, no chat template; each choice follows a space


# Perplexity's standard error: a bootstrap over the texts, as lm-eval bootstraps its `perplexity` aggregation
# (lm_eval/api/metrics.py stderr_for_metric → bootstrap_stderr: resample the items with replacement, k = n, recompute
# the score, sample standard deviation of the resampled scores; draws in chunks of 1000, chunk i seeded i). Ours is
# token-weighted (the texts' summed loss over their summed tokens), recomputed so on every resample. lm-eval gives its
# token-weighted word and byte perplexities (weighted_perplexity) no error at all; we give them one from the same
# resamples (each resample's summed loss over its summed words or bytes), because a table of models whose tokenizers
# differ is headed by the byte perplexity (scorevalues.headline), and without it that column lost its ± and whiskers.
BOOTSTRAP_ITERS = 100_000  # lm-eval's default bootstrap_iters (lm_eval/evaluator.py simple_evaluate)
BOOTSTRAP_CHUNK = 1000  # lm-eval's chunk_size: chunk i draws its resamples from a generator seeded i
BOOTSTRAP_WORK = 10_000_000  # texts drawn in all: 100,000 resamples of up to 100 texts, 10,000 of 1,000 (0.1 s)
BOOTSTRAP_BLOCK = 2_000_000  # indices drawn at once (16 MB), whatever the number of texts
STDERR_NOTE = ("standard error: bootstrap over the texts ({resamples} resamples with replacement, each scored as the "
               "token-weighted perplexity; lm-eval's scheme for its perplexity; the word and byte perplexities' "
               "errors from the same resamples, which lm-eval does not give)")


def bootstrap_resamples(n: int) -> int:
    """lm-eval's 100,000 resamples where n texts allow them in well under a second, fewer (whole chunks of 1000, at
    least one) for a larger set: the cost grows with resamples × texts."""
    return max(BOOTSTRAP_CHUNK, min(BOOTSTRAP_ITERS, BOOTSTRAP_WORK // max(n, 1) // BOOTSTRAP_CHUNK * BOOTSTRAP_CHUNK))


def perplexity_stderr(per_item: list[tuple], iters: int | None = None) -> float | None:
    """The bootstrap standard error of the token-weighted perplexity of (summed nll, tokens) per text
    (bootstrap_stderrs). None, as lm-eval's "N/A", for fewer than 2 texts, and where a resample's perplexity is not
    finite (an overflowed loss, or a resample of texts with no predicted token)."""
    return bootstrap_stderrs([x[0] for x in per_item], {"perplexity": [x[1] for x in per_item]}, iters).get(
        "perplexity")


def bootstrap_stderrs(nll: list[float], counts: dict[str, list[float]], iters: int | None = None) -> dict[str, float]:
    """Per name in `counts` (per text: tokens, words or bytes), the bootstrap standard error of e ^ (summed nll /
    summed count): `iters` resamples (default bootstrap_resamples) of the texts with replacement, drawn by numpy
    generators seeded 0, 1, … per chunk of 1000 (deterministic), every count's perplexity taken on the same
    resamples, and the sample standard deviation (ddof 1, lm-eval's sample_stddev) of each. A name is left out
    for fewer than 2 texts, and where a resample's perplexity is not finite (an overflowed loss)."""
    import numpy as np

    n = len(nll)
    if n < 2:
        return {}
    iters = iters or bootstrap_resamples(n)
    loss = np.asarray(nll, dtype=np.float64)
    per = {k: np.asarray(v, dtype=np.float64) for k, v in counts.items()}
    chunk = min(BOOTSTRAP_CHUNK, iters)
    rows = max(1, BOOTSTRAP_BLOCK // n)
    out: dict[str, list] = {k: [] for k in per}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for i in range(iters // chunk):
            rng = np.random.default_rng(i)  # one chunk's draws in blocks: the same stream as drawn at once
            for start in range(0, chunk, rows):
                idx = rng.integers(0, n, size=(min(rows, chunk - start), n))
                total = loss[idx].sum(1)
                for k, c in per.items():
                    out[k].append(np.exp(total / c[idx].sum(1)))
    ppl = {k: np.concatenate(v) for k, v in out.items()}
    return {k: float(v.std(ddof=1)) for k, v in ppl.items() if np.isfinite(v).all()}


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf  # past that math.exp raises OverflowError


def _ppl(per_item: list[tuple], texts: list[str] | None = None) -> dict:
    """The token-weighted perplexity of the texts, and its bootstrap standard error as the row perplexity_stderr
    (lm-eval's METRIC_stderr, which the tables show as ±) where one is defined (bootstrap_stderrs). With the
    `texts`, lm-eval's wikitext metrics too (lm_eval/api/task.py count_words, count_bytes; metrics.py
    weighted_perplexity, bits_per_byte): the same summed loss over the texts' words (runs between whitespace) or
    UTF-8 bytes, which models with different tokenizers share: a perplexity per token of another tokenizer is not
    like for like. lm-eval gives these no standard error; we store word_perplexity_stderr and
    byte_perplexity_stderr from the same resamples as perplexity_stderr, as the byte perplexity heads the table
    where tokenizers differ (bits per byte, a function of it, gets none)."""
    nll, n = sum(x[0] for x in per_item), sum(x[1] for x in per_item)
    if not n:
        raise EvalError("perplexity: the texts are empty.")
    counts = {"perplexity": [x[1] for x in per_item]}
    if texts is not None:
        words = [len(re.split(r"\s+", t)) for t in texts]
        size = [len(t.encode("utf-8")) for t in texts]
        counts |= {"word_perplexity": words, "byte_perplexity": size}
    se = bootstrap_stderrs([x[0] for x in per_item], counts)
    out = {"perplexity": _exp(nll / n), **({"perplexity_stderr": se["perplexity"]} if "perplexity" in se else {})}
    if texts is not None:
        out |= {"word_perplexity": _exp(nll / sum(words)), "byte_perplexity": _exp(nll / sum(size)),
                "bits_per_byte": nll / sum(size) / math.log(2)}
        out |= {f"{k}_stderr": v for k, v in se.items() if k != "perplexity"}
    return out


def perplexity(tok, model, texts: list[str], max_length: int = MAX_LENGTH) -> tuple[float, int]:
    per = perplexity_items(tok, model, texts, max_length)
    return _ppl(per)["perplexity"], sum(x[1] for x in per)


def choice_logprob(tok, model, context: str, choice: str, max_len: int | None = None) -> float:
    """Sum of the log-probabilities of `choice`'s tokens after `context`, as lm-eval's HFLM loglikelihood computes it
    (lm_eval/api/model.py _encode_pair, lm_eval/models/huggingface.py _loglikelihood_tokens):
    - whitespace that ends the context is moved to the start of the choice ("Answer: " + "Paris" is scored as
      "Answer:" + " Paris", the way a BPE tokenizer writes a word with its leading space);
    - the context is encoded with the tokenizer's BOS (backend/chat.py encode), the choice's tokens are those that
      encoding context + choice adds after the context's;
    - a sequence longer than the model reads (max_length, + 1 for the target shift) loses tokens from the left:
      the context's start, never the choice. Scored whole, the positions past the model's context length were
      read anyway (RoPE does not refuse them), and the score was another than lm-eval's."""
    import torch

    from backend.chat import encode

    if not context:
        raise EvalError("a multiple-choice context must not be empty.")
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, choice = context[:-n_spaces], context[-n_spaces:] + choice
    ctx = encode(tok, context).input_ids  # with the tokenizer's BOS, as lm-eval's loglikelihood encodes a context
    full = encode(tok, context + choice).input_ids
    n_choice = len(full) - len(ctx)
    if n_choice <= 0:  # lm-eval asserts the same; -inf here made such a choice lose unsaid
        raise EvalError(f"the choice {choice!r} adds no token after {context[-40:]!r}: give every choice some text.")
    max_len = max_len or context_length(tok, model)
    if n_choice > max_len:
        raise EvalError(f"the choice {choice[:40]!r}… is {n_choice} tokens, more than the {max_len} the model reads: "
                        "shorten it.")
    ids = torch.tensor([full[-(max_len + 1):]], device=model.device)
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids[:, :-1]).logits[0].float(), -1)
    targets = ids[0, 1:]
    return logp[-n_choice:].gather(1, targets[-n_choice:, None]).sum().item()


def mc_items(tok, model, rows: list[dict]) -> list[tuple[bool, bool]]:
    """(acc, acc_norm) per row, as lm-eval's multiple_choice scores it (lm_eval/api/task.py process_results): the
    first choice of the highest log-likelihood, and of the highest log-likelihood per character of the choice (its
    own text, without the space put before it)."""
    out = []
    max_len = context_length(tok, model)
    for row in rows:
        context = MC_CONTEXT.format(question=row["question"])
        scores = [choice_logprob(tok, model, context, " " + c, max_len) for c in row["choices"]]
        norm = [s / len(c) for s, c in zip(scores, row["choices"])]  # _mc_problem refused an empty choice
        out.append((max(range(len(scores)), key=scores.__getitem__) == row["answer"],
                    max(range(len(norm)), key=norm.__getitem__) == row["answer"]))
    return out


def _mc(per_item: list[tuple]) -> dict:
    return {"acc": sum(a for a, _ in per_item) / len(per_item), "acc_norm": sum(b for _, b in per_item) / len(per_item)}


def multiple_choice(tok, model, rows: list[dict]) -> dict:
    return {**_mc(mc_items(tok, model, rows)), "n": len(rows)}


def generate(tok, model, prompts: list[str], max_new_tokens: int, *, sample: bool = False, seed: int = 0,
             batch_size: int = 8, notes: list[str] | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[tuple[str, int, bool]]:
    """(text, new tokens, cut off) per user message, chat-formatted, batched with left padding. Prompts are batched
    in length order (less padding) and returned in the order given. Cut off: the reply used all max_new_tokens and
    its last token is no end of sequence (the model was stopped, it did not stop).

    No reply runs past the positions the model reads (context_length), as in lm-eval's HFLM generate_until: a prompt
    longer than the positions less max_new_tokens is cut from the left (its end, the question, kept), and
    max_new_tokens at or past the positions is refused (lm-eval asserts it). Said before generating (the job's log)
    and in `notes`. Run on, a Llama read positions it was never trained on with only transformers' logged "friendly
    reminder", and a GPT-2 failed with "IndexError: index out of range in self".

    A model without a chat template reads a transcript ("user: …\nassistant:") with no end-of-turn token: it stops
    where it starts the next turn (chat.TRANSCRIPT_STOPS, as lm-eval's `until` strings stop a generation), and the
    reply is cut there. Run on, a base model wrote "user: What is 3 + 4?\nassistant: 7" after its answer, and the
    last number of that was taken for its answer.

    `on_batch(done)`: called after each batch with the prompts answered so far (the job's progress within a task)."""
    import torch

    from backend.chat import build_prompt, cut_at_stop, encode, transcript_stops

    tok.padding_side = "left"
    chats = [build_prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
    order = sorted(range(len(chats)), key=lambda j: len(chats[j]))
    out: dict[int, tuple[str, int]] = {}
    torch.manual_seed(seed)
    kwargs = dict(do_sample=True, **SAMPLING) if sample else dict(do_sample=False)
    stops = transcript_stops(tok)
    if stops:
        kwargs |= {"stop_strings": list(stops), "tokenizer": tok}
    ends = _end_ids(model, tok)
    limit = context_length(tok, model)
    if max_new_tokens >= limit:
        raise EvalError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt: the model reads {limit} "
                        f"positions (its max_position_embeddings), prompt and reply together. Lower max new tokens "
                        f"below {limit}.")
    keep = limit - max_new_tokens  # prompt tokens that leave every reply its max_new_tokens
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    encoded = [encode(tok, [chats[j] for j in idx], return_tensors="pt", padding=True) for idx in batches]
    if (long := sum(int((b["attention_mask"].sum(1) > keep).sum()) for b in encoded)) and notes is not None:
        said = (f"{long} of {len(prompts)} prompts are longer than the {keep} tokens that leave max_new_tokens "
                f"{max_new_tokens} in the {limit} positions the model reads (its max_position_embeddings): they were "
                "cut from the left, as lm-eval cuts them, and the model read only their last "
                f"{keep} tokens. Lower max new tokens, or evaluate a model with a longer context.")
        print(f"warning: {said}", flush=True)  # the job's log, before the replies
        notes.append(said)
    for idx, batch in zip(batches, encoded):
        batch = {k: v[:, -keep:].to(model.device) for k, v in batch.items()}  # left padding: the ends are the text
        with torch.inference_mode():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        for j, row in zip(idx, ids[:, batch["input_ids"].shape[1]:]):
            text, ended = cut_at_stop(tok.decode(row, skip_special_tokens=True), stops)
            n, closed = _reply_length(row.tolist(), ends, tok.pad_token_id, ended)
            cut = n == max_new_tokens and not closed
            out[j] = (text.strip(), n, cut and not ended)  # it ended its turn: no cut-off, whatever the count
        if on_batch is not None:
            on_batch(len(out))
    return [out[j] for j in range(len(prompts))]


def _end_ids(model, tok) -> set[int]:
    """The token ids that end a reply: the generation config's eos (one id or several) and the tokenizer's. Not the
    padding, unless it is also an eos: a tokenizer without a pad token pads with unk (evaldevice.configure_pad_token),
    and a reply cut off on unk is cut off."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    return {int(i) for i in ids if i is not None}


def _reply_length(row: list[int], ends: set[int], pad: int | None, stopped: bool) -> tuple[int, bool]:
    """(tokens in a generated reply, whether it ended on an end-of-reply id). The reply is its tokens before the first
    eos, whichever token pads the batch: generate() fills a finished row with pad_token_id, and a reply that ran on
    to the batch's end without an eos is all its own tokens. Only a reply a stop string ended (`stopped`) has padding
    and no eos: its trailing pad tokens are left out."""
    first = next((i for i, t in enumerate(row) if t in ends), None)
    if first is not None:
        return first, True
    n = len(row)
    if stopped and pad is not None:
        while n and row[n - 1] == pad:
            n -= 1
    return n, False


def _answer_scores(gens: list[Generation]) -> dict:
    n = len(gens)
    rates = qa.summarise([g.verdict for g in gens])  # the QA probe's definitions, for math answers too
    scores = {k: rates[k] for k in ("accuracy", "hallucination_rate", "abstention_rate", "cut_off_rate", "empty_rate")}
    scores["mean_words"] = sum(g.words for g in gens) / n
    if any(g.consistency is not None for g in gens):
        scores["consistency"] = sum(g.consistency or 0.0 for g in gens) / n
    return scores


def _counted(on_items: ItemProgress | None, before: int, total: int) -> Callable[[int], None] | None:
    """generate's on_batch for one of a task's passes over its prompts: (answers so far, answers in all)."""
    return None if on_items is None else (lambda done: on_items(before + done, total))


def answer_task(tok, model, items: list[tuple[str, str, str]], spec: EvalSpec, task: str, model_name: str,
                job_id: int | None, *, batch_size: int = 8, notes: list[str] | None = None,
                on_items: ItemProgress | None = None) -> tuple[dict, list[Generation]]:
    """Generate answers to (id, question, reference answer) math items; score, label, keep every generation.
    `notes`: generate's words on prompts cut to fit the model's positions; `on_items(done, total)`: answers generated
    so far, over the greedy pass and every sampled one."""
    prompts = [f"{SYSTEM_HINT}\n\n{q}" for _, q, _ in items]
    total = len(prompts) * max(spec.samples, 1)
    greedy = generate(tok, model, prompts, spec.max_new_tokens, batch_size=batch_size, notes=notes,
                      on_batch=_counted(on_items, 0, total))
    samples = [generate(tok, model, prompts, spec.max_new_tokens, sample=True, seed=s + 1, batch_size=batch_size,
                        on_batch=_counted(on_items, (s + 1) * len(prompts), total))
               for s in range(spec.samples - 1)] if spec.samples > 1 else []
    gens = []
    for j, ((pid, q, ref), (text, n_tok, cut)) in enumerate(zip(items, greedy)):
        found = extract_answer(text)
        verdict = qa.classify(text, [ref], "math", truncated=cut)
        consistency = None
        if samples:
            agree = [same_answer(extract_answer(s[j][0]), found) for s in samples] if found else []
            consistency = sum(agree) / len(samples) if found else 0.0
        gens.append(Generation(job_id=job_id, model=model_name, task=task, prompt_id=pid, prompt=q, reference=ref,
                               output=text, tokens=n_tok, words=len(text.split()), truncated=cut,
                               consistency=consistency, verdict=verdict, item_kind="math", **qa.flags(verdict)))
    return _answer_scores(gens), gens


def qa_task(tok, model, items: list[dict], spec: EvalSpec, task: str, model_name: str, job_id: int | None, *,
            batch_size: int = 8, judge: qa.Judge | None = None, on_items: ItemProgress | None = None
            ) -> tuple[dict, list[Generation], dict]:
    notes: list[str] = []
    outputs = generate(tok, model, [qa.prompt_for(it) for it in items], spec.max_new_tokens, batch_size=batch_size,
                       notes=notes, on_batch=_counted(on_items, 0, len(items)))
    rules = [qa.classify(text, it["answers"], it["kind"], truncated=cut) for it, (text, _, cut) in zip(items, outputs)]
    judged = judge.grade(items, [t for t, _, _ in outputs]) if judge else None
    verdicts = [qa.unless_cut_off(v, text, it["kind"], cut) for v, it, (text, _, cut) in zip(judged, items, outputs)
                ] if judged else rules
    # a blank reply is not sent to the judge (Judge.grade): the rules graded it, so its judge_verdict stays ""
    asked = [bool(judge) and judge.asked(text) for text, _, _ in outputs]
    gens = [Generation(job_id=job_id, model=model_name, task=task, prompt_id=it["id"], prompt=it["question"],
                       reference=" | ".join(it["answers"]), output=text, tokens=n_tok, words=len(text.split()),
                       truncated=cut, verdict=v, item_kind=it["kind"], judge_verdict=judged[j] if asked[j] else "",
                       **qa.flags(v))
            for j, (it, (text, n_tok, cut), v) in enumerate(zip(items, outputs, verdicts))]
    extra = {"graded_by": f"judge {judge.model} at {judge.base_url}" if judge else "rules",
             **({"context": " ".join(notes)} if notes else {})}
    if judged and any(asked):  # over the replies the judge saw (a blank one's "empty" agrees by construction)
        pairs = [(a, b) for a, b, k in zip(judged, rules, asked) if k]
        extra["judge_agrees_with_rules"] = sum(a == b for a, b in pairs) / len(pairs)
    return qa.scores_by_kind(verdicts, [it["kind"] for it in items]), gens, extra


def run_lm_eval(folder: Path, task: str, limit: int, **kw):
    """lm-evaluation-harness: local tasks offline, the h6 preset, Hub tasks online (backend/lmeval.py)."""
    from backend.lmeval import run_lm_eval as run

    return run(folder, task, limit, **kw)


def score_task(ts: TaskSet, tok, model, spec: EvalSpec, model_name: str, job_id: int | None,
               plan: evaldevice.DevicePlan, judge: qa.Judge | None, on_items: ItemProgress | None = None
               ) -> tuple[dict, list, Callable[[list[int]], dict] | None, list, dict]:
    """(scores, generations, rescore(indices) for a subset, per-item results, extra details). `on_items(done,
    total)`: a generating task's answers so far (a task of 16 items at batch 8 said nothing for minutes)."""
    batch = plan.batch_size
    if ts.kind in EVAL_ANSWER_KINDS:  # generated answers, stored: `compare` reads them (the others: scores only)
        if ts.kind == "qa":
            scores, gens, extra = qa_task(tok, model, ts.items, spec, ts.task, model_name, job_id, batch_size=batch,
                                          judge=judge, on_items=on_items)
            return scores, gens, (lambda ix: qa.scores_by_kind([gens[i].verdict for i in ix],
                                                               [gens[i].item_kind for i in ix])), gens, extra
        notes: list[str] = []  # synth-math, gsm8k
        scores, gens = answer_task(tok, model, ts.items, spec, ts.task, model_name, job_id, batch_size=batch,
                                   notes=notes, on_items=on_items)
        # stored in the scores' details (`scores --json`), beside the settings it changed
        return scores, gens, lambda ix: _answer_scores([gens[i] for i in ix]), gens, (
            {"context": " ".join(notes)} if notes else {})
    if ts.kind == "perplexity":
        per = perplexity_items(tok, model, ts.items, max_length=spec.perplexity_window,
                               batch_size=plan.scoring_batch_size)
        return _ppl(per, ts.items), [], lambda ix: _ppl([per[i] for i in ix], [ts.items[i] for i in ix]), per, {
            "tokens": sum(x[1] for x in per), "tokenizer": tokenizer_id(tok),
            "stderr": STDERR_NOTE.format(resamples=bootstrap_resamples(len(per)))}
    if ts.kind == "mc":
        per = mc_items(tok, model, ts.items)
        return _mc(per), [], lambda ix: _mc([per[i] for i in ix]), per, {}
    folder = registry.resolve(model_name)[0]
    # the job's loaded model, wrapped (not loaded twice); lm-eval's contexts (25-shot ARC) outgrow the plan's batch
    res = run_lm_eval(folder, ts.arg, spec.limit, model=model, tokenizer=tok, batch_size=spec.batch_size,
                      max_new_tokens=spec.max_new_tokens)
    return res.scores, [], None, [], {"n": res.n, "lm_eval": res.details}


def settings(ts: TaskSet, spec: EvalSpec, tok, model, batch: int | None = None) -> dict:
    """How a task was run, stored beside its items' fingerprint so a score can be redone and two scores on the same
    items told apart: another token limit, number of samples or prompt format is another measurement (a reply a
    16-token cap cuts off is no answer; with 256 it may be right). The prompt format is the tokenizer's chat
    template (its sha256, as backend/chat.py build_prompt applies it) or, without one, build_prompt's transcript;
    `generation_config` the model's own decoding settings that act beside ours (decoding_extras). Sampled answers
    also depend on the generation `batch` (generate seeds once per call and batches by length: the same seed drew
    other answers for all 8 items at batch 1 and at batch 8), so samples record it."""
    from backend.chat import build_prompt

    out: dict = {"limit": spec.limit}
    if ts.kind == "perplexity":
        return {**out, "scoring": ROLLING, "window": perplexity_window(tok, model, spec.perplexity_window)}
    if ts.kind == "mc":
        return {**out, "prompt": _after_specials(tok, MC_CONTEXT, MC_CONTEXT + " {choice}")}
    if ts.kind == "lm-eval":  # lm-eval's own settings (few-shot counts, version) are in details["lm_eval"]
        return {**out, **_lm_eval_settings(ts, spec, model)}
    template = getattr(tok, "chat_template", None)
    if template:
        text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
        out["prompt"] = f"chat template sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    else:
        out["prompt"] = "transcript (no chat template: backend/chat.py build_prompt), ends at a new role line"
    # a BOS the tokenizer adds before the prompt (since chat.encode) is part of the prompt; those measured without it
    # keep their settings and are told apart
    out["prompt"] = _after_specials(tok, build_prompt(tok, [{"role": "user", "content": "?"}]), out["prompt"])
    out |= {"max_new_tokens": spec.max_new_tokens, "decoding": "greedy", "generation_config": decoding_extras(model)}
    if ts.kind != "qa" and spec.samples > 1:  # qa_task draws no samples; answer_task's are seeded 1 to k - 1
        out |= {"samples": spec.samples, "sampling": SAMPLING, "batch": batch}
    return out


def _lm_eval_settings(ts: TaskSet, spec: EvalSpec, model) -> dict:
    """What shapes an lm-eval task's answers beside lm-eval's own settings: the token cap run_lm_eval gives the
    local generation tasks (max_gen_toks: 8 or 256 tokens for a worked GSM8K answer is another measurement), and the
    model's generation_config fields lm-eval's generate does not set. A max_new_tokens there outranks lm-eval's
    max_length (transformers takes max_new_tokens first): a model whose file says 8 answered in 8 tokens whatever
    the cap. Neither was recorded, so two such scores read as measured alike."""
    from backend import lmeval
    from backend.lm_eval_tasks.loaders import DATA, FEWSHOT_FILES, GENERATION_TASKS

    out: dict = {}
    names = [name for name, _, _ in lmeval.expand(ts.arg)]
    if any(name in GENERATION_TASKS for name in names):
        out["max_gen_toks"] = spec.max_new_tokens
    # a local task's few-shot examples are in every prompt: another file is another measurement (the items'
    # fingerprint covers the test rows only, so a remade few-shot file left old and new scores "measured alike")
    shots = {n: "sha256:" + hashlib.sha256((DATA / FEWSHOT_FILES[n]).read_bytes()).hexdigest()[:16]
             for n in names if n in FEWSHOT_FILES and (DATA / FEWSHOT_FILES[n]).is_file()}
    if shots:
        out["fewshot"] = shots
    cfg = getattr(model, "generation_config", None)
    own = {"max_new_tokens": cfg.max_new_tokens} if getattr(cfg, "max_new_tokens", None) is not None else {}
    return {**out, "generation_config": {**decoding_extras(model), **own}}


def _after_specials(tok, example: str, prompt: str) -> str:
    """`prompt`, preceded by the special tokens chat.encode adds before a prompt like `example` (none: as it was)."""
    from backend.chat import added_before

    return " ".join(added_before(tok, example) + [prompt])


SET_BY_GENERATE = {"do_sample", "temperature", "top_p", "max_new_tokens", "max_length", "pad_token_id",
                   "eos_token_id", "bos_token_id", "transformers_version"}  # generate() sets these, or they only stop


def decoding_extras(model) -> dict:
    """The fields of the model's generation_config.json that still shape this evaluation's answers: generate()
    sets do_sample, temperature, top_p and max_new_tokens, but transformers applies the rest of the model's file
    (as lm-eval's HFLM does), so Qwen2.5-Instruct's repetition_penalty 1.05 penalises its "greedy" answers and not
    those of a model it is compared with."""
    cfg = getattr(model, "generation_config", None)
    diff = cfg.to_diff_dict() if cfg is not None else {}
    return {k: v for k, v in diff.items() if k not in SET_BY_GENERATE and not k.startswith("_")}
