"""Evaluation jobs: every model on the same tasks, scores stored per model and task, with where each set came from.

    python -m backend eval SmolLM2-135M-Instruct SmolLM2-135M-Instruct-dus-m8 --tasks perplexity synth-math qa

Tasks:
  perplexity            held-out text (default data/heldout-text.txt: facts no built-in training set mentions), or
                        perplexity:FILE (a .txt, rows with a text column, or a conversation or instruction layout
                        backend/data.py reads for continued pretraining, not preference pairs: each row's text
                        as continued pretraining reads it)
  synth-math            exact final answer on data/eval-math.jsonl: word problems outside the training generator's
                        problem space (data/make_builtin.py says why no question can equal a training question)
  qa[:FILE]             closed-book QA with abstention (backend/qa.py): accuracy, abstention rate, hallucination
                        rate and precision, per item kind (answerable / unanswerable / math)
  mc:FILE               multiple choice by log-likelihood (ARC / HellaSwag / MMLU / TruthfulQA / Winogrande style):
                        JSONL rows {"question": str, "choices": [str, …], "answer": index}; acc and acc_norm,
                        each log-likelihood as lm-eval's HFLM computes it (choice_logprob)
  gsm8k:FILE            generation accuracy on GSM8K-format rows {"question", "answer": "… #### n"}
  lm-eval:TASK          lm-evaluation-harness (backend/lmeval.py when present)

Every score row records its source, a fingerprint of the items (none for a Hub lm-eval task, whose items are not
read here), how the task was run (settings: limit, token cap, samples, prompt format, the model's own decoding
settings), and the n-gram overlap of those items with the training data of the model's whole lineage
(backend/heldout.py; not for lm-eval tasks), plus the score on the non-overlapping items only.
Items are all read and validated before any model loads; a task that fails stores nothing and fails the job.
A resumed job keeps the (model, task) scores its earlier run stored and scores only the rest; a model none of
whose tasks is left is not loaded.
On CUDA models run in bfloat16 with sdpa and a batch fitted to free memory (backend/evaldevice.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend import evaldevice, heldout, qa, registry
from backend.specs import EvalSpec
from backend.synth.answers import extract_answer, same_answer, to_number
from storage import db
from storage.models import EvalScore, Generation

Progress = Callable[[float, str], None]
SYSTEM_HINT = "Solve the problem. End with 'The answer is <number>.'"
MAX_LENGTH = 256  # tokens of a perplexity text that are scored; a longer text is cut there
SAMPLING = {"temperature": 0.8, "top_p": 0.95}  # the extra answers of samples > 1 (consistency)
UNSET_MAX_LENGTH = int(1e30)  # a tokenizer's model_max_length when it sets none (transformers, lm-eval)
MC_CONTEXT = "Question: {question}\nAnswer:"  # mc_items' context, no chat template; each choice follows a space


class EvalError(ValueError):
    pass


class EvalFailed(EvalError, RuntimeError):
    """The scoring ran and failed (out of memory, a CUDA error): a RuntimeError too, so the CLI exits 1 for it, not 2
    as for an input refused."""


def _load(path: str, plan: evaldevice.DevicePlan | None = None):
    """The model's tokenizer and weights. A file gone since the job was planned (deleted or moved while the models
    before it were scored) failed with a bare "[Errno 2]"; the scores already stored are kept."""
    folder = registry.resolve(path)[0]
    try:
        return evaldevice.load_model(folder, plan)
    except OSError as exc:  # a shard gone (FileNotFoundError), or every weights file (transformers' OSError)
        what = f"{exc.filename} is missing" if exc.filename else str(exc).splitlines()[0][:300]
        raise EvalFailed(f"{path}: {what}: were the model's files deleted or moved while this evaluation ran? The "
                         "scores it stored are kept: restore the model (or leave it out) and run it again (a job: "
                         "resume it).") from None


# ---------------------------------------------------------------- scorers

def perplexity_items(tok, model, texts: list[str], max_length: int = MAX_LENGTH, batch_size: int = 8) -> list[tuple]:
    """(summed negative log-likelihood, predicted tokens) per text; batched with right padding."""
    import torch

    tok.padding_side = "right"
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", truncation=True, max_length=max_length,
                      padding=True).to(model.device)
            ids, mask = enc.input_ids, enc.attention_mask
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            m = mask[:, 1:].to(nll.dtype)
            out += [(float(a), int(b)) for a, b in zip((nll * m).sum(1).tolist(), m.sum(1).tolist())]
    return out


def _ppl(per_item: list[tuple]) -> dict:
    nll, n = sum(x[0] for x in per_item), sum(x[1] for x in per_item)
    if not n:
        raise EvalError("perplexity: the texts are empty.")
    return {"perplexity": math.exp(nll / n)}


def perplexity(tok, model, texts: list[str], max_length: int = MAX_LENGTH) -> tuple[float, int]:
    per = perplexity_items(tok, model, texts, max_length)
    return _ppl(per)["perplexity"], sum(x[1] for x in per)


def context_length(tok, model) -> int:
    """The longest input the model reads, found as lm-eval's HFLM finds it (lm_eval/models/utils.py
    resolve_max_length): the (text) config's n_positions, max_position_embeddings or n_ctx, else the tokenizer's
    model_max_length when it is set, else 2048."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, attr, None) is not None:
            return int(getattr(cfg, attr))
    n = getattr(tok, "model_max_length", None)
    return int(n) if n is not None and n != UNSET_MAX_LENGTH else 2048


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


def _mc_problem(row: dict) -> str | None:
    """An answer that is no index into choices (a letter, as ARC's answerKey) would never match: 0 % unsaid. An empty
    choice was scored on the space before it and divided by 1 for acc_norm, where lm-eval divides by its length, 0:
    a few nats over one character, it often won acc_norm. A question that is no text was scored as "None" or "3"."""
    choices, answer = row["choices"], row["answer"]
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "question must be non-empty text."
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        return "choices must be a list of at least two strings."
    if not all(choices):
        return (f"choice {choices.index('')} is empty: every choice must have text (acc_norm divides a choice's "
                "log-likelihood by its length).")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        return (f"answer must be the index of the right choice, 0 to {len(choices) - 1}; got {answer!r} "
                "(convert letters A, B, C… to 0, 1, 2…).")
    return None


def _gsm8k_problem(row: dict) -> str | None:
    """A question that is no text, or an answer that is neither text nor a number, failed at scoring with a
    traceback (an AttributeError on the answer's "####"), after the models loaded. An answer whose final answer
    (after its last "####", or the whole answer without one) is no number — empty, "… ####", a solution ending
    "The answer is 4." — became a reference no reply can equal: every reply scored "wrong", a hallucination."""
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "question must be non-empty text."
    if isinstance(row["answer"], bool) or not isinstance(row["answer"], (str, int, float)):
        return f"answer must be text ending in '#### n' (or the number); got {type(row['answer']).__name__}."
    if to_number(_gsm8k_reference(row["answer"])) is None:
        return f"answer must end in '#### n' with n a number (or be the number); got {str(row['answer'])[-60:]!r}."
    return None


def _gsm8k_reference(answer) -> str:
    """The final answer of a GSM8K answer: after its last "####", or the whole answer (a bare number)."""
    return str(answer).rsplit("####", 1)[-1].strip()


def _mc(per_item: list[tuple]) -> dict:
    return {"acc": sum(a for a, _ in per_item) / len(per_item), "acc_norm": sum(b for _, b in per_item) / len(per_item)}


def multiple_choice(tok, model, rows: list[dict]) -> dict:
    return {**_mc(mc_items(tok, model, rows)), "n": len(rows)}


def read_jsonl(path: str, fields: tuple[str, ...], check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Rows with `fields`; `check(row)` returns what is wrong with a row, if anything."""
    p = Path(path)
    if not p.exists():
        raise EvalError(f"{p} does not exist.")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise EvalError(f"{p.name}, line {n}: not valid JSON.")
        if not isinstance(row, dict):  # a list or a number: `in` below failed with a TypeError, not this line
            raise EvalError(f"{p.name}, line {n}: expected an object {{{', '.join(fields)}}}; got "
                            f"{type(row).__name__}.")
        missing = [f for f in fields if f not in row]
        if missing:
            raise EvalError(f"{p.name}, line {n}: missing {', '.join(missing)} (the layout is "
                            f"{{{', '.join(fields)}}}).")
        if check and (problem := check(row)):
            raise EvalError(f"{p.name}, line {n}: {problem}")
        rows.append(row)
    if not rows:
        raise EvalError(f"{p.name} has no rows.")
    return rows


def generate(tok, model, prompts: list[str], max_new_tokens: int, *, sample: bool = False, seed: int = 0,
             batch_size: int = 8) -> list[tuple[str, int, bool]]:
    """(text, new tokens, cut off) per user message, chat-formatted, batched with left padding. Prompts are batched
    in length order (less padding) and returned in the order given. Cut off: the reply used all max_new_tokens and
    its last token is no end of sequence (the model was stopped, it did not stop).

    A model without a chat template reads a transcript ("user: …\nassistant:") with no end-of-turn token: it stops
    where it starts the next turn (chat.TRANSCRIPT_STOPS, as lm-eval's `until` strings stop a generation), and the
    reply is cut there. Run on, a base model wrote "user: What is 3 + 4?\nassistant: 7" after its answer, and the
    last number of that was taken for its answer."""
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
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = encode(tok, [chats[j] for j in idx], return_tensors="pt", padding=True)
        batch = batch.to(model.device)
        with torch.inference_mode():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        for j, row in zip(idx, ids[:, batch["input_ids"].shape[1]:]):
            n = int((row != tok.pad_token_id).sum())
            cut = len(row) == max_new_tokens and int(row[-1]) not in ends
            text, ended = cut_at_stop(tok.decode(row, skip_special_tokens=True), stops)
            out[j] = (text.strip(), n, cut and not ended)  # it ended its turn: no cut-off, whatever the count
    return [out[j] for j in range(len(prompts))]


def _end_ids(model, tok) -> set[int]:
    """The token ids that end a reply: the generation config's eos (one id or several), the tokenizer's, padding."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id, tok.pad_token_id}
    return {int(i) for i in ids if i is not None}


def _answer_scores(gens: list[Generation]) -> dict:
    n = len(gens)
    rates = qa.summarise([g.verdict for g in gens])  # the QA probe's definitions, for math answers too
    scores = {k: rates[k] for k in ("accuracy", "hallucination_rate", "abstention_rate", "cut_off_rate")}
    scores["mean_words"] = sum(g.words for g in gens) / n
    if any(g.consistency is not None for g in gens):
        scores["consistency"] = sum(g.consistency or 0.0 for g in gens) / n
    return scores


def answer_task(tok, model, items: list[tuple[str, str, str]], spec: EvalSpec, task: str, model_name: str,
                job_id: int | None, *, batch_size: int = 8) -> tuple[dict, list[Generation]]:
    """Generate answers to (id, question, reference answer) math items; score, label, keep every generation."""
    prompts = [f"{SYSTEM_HINT}\n\n{q}" for _, q, _ in items]
    greedy = generate(tok, model, prompts, spec.max_new_tokens, batch_size=batch_size)
    samples = [generate(tok, model, prompts, spec.max_new_tokens, sample=True, seed=s + 1, batch_size=batch_size)
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
            batch_size: int = 8, judge: qa.Judge | None = None) -> tuple[dict, list[Generation], dict]:
    outputs = generate(tok, model, [qa.prompt_for(it) for it in items], spec.max_new_tokens, batch_size=batch_size)
    rules = [qa.classify(text, it["answers"], it["kind"], truncated=cut) for it, (text, _, cut) in zip(items, outputs)]
    judged = judge.grade(items, [t for t, _, _ in outputs]) if judge else None
    verdicts = [qa.unless_cut_off(v, text, it["kind"], cut) for v, it, (text, _, cut) in zip(judged, items, outputs)
                ] if judged else rules
    gens = [Generation(job_id=job_id, model=model_name, task=task, prompt_id=it["id"], prompt=it["question"],
                       reference=" | ".join(it["answers"]), output=text, tokens=n_tok, words=len(text.split()),
                       truncated=cut, verdict=v, item_kind=it["kind"], judge_verdict=judged[j] if judged else "",
                       **qa.flags(v))
            for j, (it, (text, n_tok, cut), v) in enumerate(zip(items, outputs, verdicts))]
    extra = {"graded_by": f"judge {judge.model} at {judge.base_url}" if judge else "rules"}
    if judged:
        extra["judge_agrees_with_rules"] = sum(a == b for a, b in zip(judged, rules)) / len(rules)
    return qa.scores_by_kind(verdicts, [it["kind"] for it in items]), gens, extra


def _stratified(items: list[dict], limit: int) -> list[dict]:
    """The first `limit` items taken in turn from each item kind, so a small limit still covers every kind."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it["kind"], []).append(it)
    out, queues = [], [list(g) for g in groups.values()]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


# ---------------------------------------------------------------- task sets (read and validated up front)

def _perplexity_texts(ds, source: str) -> list[str]:
    """The text of each row as continued pretraining reads it (backend/data.py, convert_row for cpt): a `text`
    column as it is, a conversation layout's turns joined. The first column taken instead scored the Python repr
    of a `messages` list, or an Alpaca set's instructions without their answers, and said nothing."""
    from backend import data

    try:
        layout = "text" if "text" in ds.column_names else data.detect_layout(ds.column_names, "cpt")
        data.check_rows(ds, source, layout, "cpt", n=len(ds))
    except data.DataError as exc:
        raise EvalError(f"perplexity:{source}: {exc} Perplexity scores the text of each row: give a .txt file or "
                        "rows with a text column.") from None
    return [data.convert_row(row, layout, "cpt")["text"] for row in ds]


@dataclass
class TaskSet:
    task: str
    kind: str
    source: str
    items: list  # what is scored (texts, rows or dicts)
    texts: list[str] = field(default_factory=list)  # per item: the text compared with training data
    arg: str = ""


def task_set(task: str, limit: int) -> TaskSet:
    kind, _, arg = task.partition(":")
    if kind == "perplexity":
        if arg:
            from backend import data

            try:
                ds = data.load_source(arg)
            except data.DataError as exc:
                raise EvalError(f"perplexity:{arg}: {exc}") from None
            # a blank text is no item: it has no token to score, yet counted in the row's n and overlap share; a
            # file of blank texts failed only after the models loaded ("the texts are empty")
            texts = [t for t in _perplexity_texts(ds.select(range(min(limit, len(ds)))), arg) if t.strip()]
            if not texts:
                raise EvalError(f"perplexity:{arg}: the first {min(limit, len(ds))} rows have no text to score.")
        else:
            texts = heldout.eval_path("heldout-text").read_text().splitlines()[:limit]
        return TaskSet(task, kind, arg or "builtin-eval:heldout-text", texts, texts)
    if kind == "synth-math":
        rows = [json.loads(x) for x in heldout.eval_path("eval-math").read_text().splitlines() if x.strip()][:limit]
        items = [(r["id"], r["question"], r["answer"]) for r in rows]
        return TaskSet(task, kind, "builtin-eval:eval-math", items, [q for _, q, _ in items])
    if kind == "qa":
        items = _stratified(qa.load_items(arg or heldout.eval_path("qa-closed-book")), limit)
        return TaskSet(task, kind, arg or "builtin-eval:qa-closed-book", items, [it["question"] for it in items])
    if kind == "mc":
        rows = read_jsonl(arg, ("question", "choices", "answer"), _mc_problem)[:limit]
        return TaskSet(task, kind, arg, rows, [r["question"] for r in rows])
    if kind == "gsm8k":
        rows = read_jsonl(arg, ("question", "answer"), _gsm8k_problem)[:limit]
        items = [(f"gsm8k-{j}", r["question"], _gsm8k_reference(r["answer"])) for j, r in enumerate(rows)]
        return TaskSet(task, kind, arg, items, [q for _, q, _ in items])
    if kind == "lm-eval":
        from backend import lmeval
        from backend.lm_eval_tasks.loaders import test_rows

        rows = []  # a local task's rows, which lm-eval takes the first `limit` of; a Hub task's are not known here
        for name, _, _ in lmeval.expand(arg):  # an unknown name or a malformed local file fails here, before any
            lmeval.resolve(name)  # model is loaded
            rows += (test_rows(name) or [])[:limit]
        # no texts: an overlap check of these items is not made (dus_truthfulqa_mini's short questions would read
        # "✓ 0%" though its facts are the built-in training corpus, make_data.py); the badge says "not measured"
        return TaskSet(task, kind, f"lm-eval:{arg}", rows, [], arg)
    raise EvalError(f"unknown task {task!r}")


FILE_TASKS = ("perplexity", "qa", "mc", "gsm8k")  # the task kinds that read a source named after the colon


def check_task(task: str, limit: int) -> None:
    """Read and check a task's items as the job will (task_set) when they come from this machine: a file, or for
    perplexity a built-in or registered set. Run when the job is queued (runner.check_before_queueing) and when a
    recipe is planned: a malformed file otherwise failed the job when its turn came, behind a busy queue. The
    built-in task sets need no check; lm-eval tasks and Hub data sets are left to the job (they need the network)."""
    from backend.uploads import DATA_SUFFIXES  # a path with one is read as a file (data.load_source)

    kind, _, arg = task.partition(":")
    path = Path(arg).expanduser()
    if kind not in FILE_TASKS or not arg or not (arg.startswith(("builtin:", "dataset:")) or path.exists()
                                                 or path.suffix in DATA_SUFFIXES):
        return
    try:
        task_set(task, limit)
    except UnicodeDecodeError as exc:  # a binary file: Python's message named neither the file nor the fix
        raise EvalError(f"{task}: {path.name} is not UTF-8 text (byte {exc.start}); give a JSON Lines file, one "
                        "object a line.") from None


def run_lm_eval(folder: Path, task: str, limit: int, **kw):
    """lm-evaluation-harness: local tasks offline, the h6 preset, Hub tasks online (backend/lmeval.py)."""
    from backend.lmeval import run_lm_eval as run

    return run(folder, task, limit, **kw)


def score_task(ts: TaskSet, tok, model, spec: EvalSpec, model_name: str, job_id: int | None,
               plan: evaldevice.DevicePlan, judge: qa.Judge | None
               ) -> tuple[dict, list, Callable[[list[int]], dict] | None, list, dict]:
    """(scores, generations, rescore(indices) for a subset, per-item results, extra details)."""
    batch = plan.batch_size
    if ts.kind == "perplexity":
        per = perplexity_items(tok, model, ts.items, batch_size=plan.scoring_batch_size)
        return _ppl(per), [], lambda ix: _ppl([per[i] for i in ix]), per, {"tokens": sum(x[1] for x in per)}
    if ts.kind in ("synth-math", "gsm8k"):
        scores, gens = answer_task(tok, model, ts.items, spec, ts.task, model_name, job_id, batch_size=batch)
        return scores, gens, lambda ix: _answer_scores([gens[i] for i in ix]), gens, {}
    if ts.kind == "qa":
        scores, gens, extra = qa_task(tok, model, ts.items, spec, ts.task, model_name, job_id, batch_size=batch,
                                      judge=judge)
        return scores, gens, (lambda ix: qa.scores_by_kind([gens[i].verdict for i in ix],
                                                           [gens[i].item_kind for i in ix])), gens, extra
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
        return {**out, "max_length": MAX_LENGTH}
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


def _counts(ts: TaskSet, gens: list[Generation], ix) -> dict[str, int]:
    """The items behind the rows scored over items `ix`: "n", and for a QA task each kind's `n[kind]`, which its
    `metric[kind]` rows record (qa.counts_by_kind)."""
    ix = list(ix)
    return qa.counts_by_kind([gens[i].item_kind for i in ix]) if ts.kind == "qa" else {"n": len(ix)}


def _judge(spec: EvalSpec) -> qa.Judge | None:
    if not spec.judge_url:
        return None
    return qa.Judge(spec.judge_url, spec.judge_model or "", os.environ.get(spec.judge_key_env, ""),
                    timeout=spec.judge_timeout)


def stored_by_job(job_id: int | None) -> dict[tuple[str, str], int]:
    """(model, task) -> score rows this job already stored. A task's rows and generations commit together, so a
    resumed job (backend/runner.py resume) that skips these pairs adds no second copy and keeps the first."""
    if job_id is None:
        return {}
    from sqlmodel import func, select

    with db.session() as s:
        rows = s.exec(select(EvalScore.model, EvalScore.task, func.count()).where(EvalScore.job_id == job_id)
                      .group_by(EvalScore.model, EvalScore.task)).all()
    return {(m, t): int(n) for m, t, n in rows}


def stored_name(model: str) -> str:
    """The name a model's scores are stored under: its registered name when `model` is a registered folder's path
    or "builtin" (stored under the path, its scores stood apart from its other scores, without lineage columns)."""
    rec = registry.record(model)
    return rec.name if rec else registry.BUILTIN_NAME if model.lower() == "builtin" else model


def missing_models(models: list[str]) -> list[str]:
    """The models that are neither registered, nor the built-in one, nor a folder: what a recipe's evaluation
    leaves out when the stage that was to make one failed (EvalSpec.skip_missing). A registered model whose folder
    is gone is not among them: that is an error the evaluation reports."""
    builtin = ("builtin", registry.BUILTIN_NAME.lower())
    return [m for m in models
            if registry.record(m) is None and m.lower() not in builtin and not Path(m).expanduser().is_dir()]


NONE_MADE = "none of the models to evaluate exists"  # how a skip_missing run with no model left fails: the runner
# queues such an evaluation again when a job it waits for is resumed (runner._left_out)


def run_eval(spec: EvalSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    progress = progress or (lambda f, m: None)
    spec = spec.model_copy(update={"models": list(dict.fromkeys(stored_name(m) for m in spec.models))})
    job_id = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    skipped = missing_models(spec.models) if spec.skip_missing else []
    if skipped:
        if len(skipped) == len(spec.models):
            raise EvalError(f"{NONE_MADE} ({', '.join(skipped)}): the jobs that were to "
                            "make them did not succeed.")
        spec = spec.model_copy(update={"models": [m for m in spec.models if m not in skipped]})
        progress(0.0, f"left out {', '.join(skipped)}: not registered (the job that was to make it did not succeed)")
    try:  # every task's items are read and checked before any model loads
        sets = [task_set(t, spec.limit) for t in spec.tasks]
    except (qa.QAError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    done = stored_by_job(job_id)
    kept = sum(done.get((m, ts.task), 0) for m in spec.models for ts in sets)
    notes = [f"left out, not registered: {', '.join(skipped)}"] if skipped else []
    notes += [f"resumed: kept the {kept} scores of {', '.join(f'{m} / {t}' for m, t in done)} that this job "
             "stored before it stopped"] if kept else []
    todo = [m for m in spec.models if any((m, ts.task) not in done for ts in sets)]
    # fail early on an unknown model; one whose scores were all kept may have been deleted since
    folders = {m: registry.resolve(m)[0] for m in todo}
    judge = _judge(spec)
    seq_len = 256 + spec.max_new_tokens
    plans = {}
    for m in todo:  # a model that cannot fit says so before anything loads
        try:
            plans[m] = evaldevice.plan_for(folders[m], seq_len=seq_len, batch_size=spec.batch_size,
                                           device=spec.device, score_len=MAX_LENGTH)
        except evaldevice.DeviceError as exc:
            raise EvalError(f"{m}: {exc}") from None
    t0 = time.perf_counter()
    stored = 0
    cache: dict = {}
    steps = len(spec.models) * len(sets)
    for i, model_name in enumerate(spec.models):
        if model_name not in todo:
            progress(i * len(sets) / steps, f"{model_name}: every task already scored by this job's earlier run, kept")
            continue
        plan = plans[model_name]
        progress(i * len(sets) / steps, f"{model_name}: loading ({plan.note})")
        tok, model = _load(model_name, plan)
        tidx = heldout.training_index(model_name, spec.ngram, cache)
        for k, ts in enumerate(sets):
            if (model_name, ts.task) in done:
                progress((i * len(sets) + k) / steps, f"{model_name}: {ts.task} already scored by this job's "
                                                      "earlier run, kept")
                continue
            progress((i * len(sets) + k) / steps, f"{model_name}: {ts.task}")
            try:
                scores, gens, rescore, _, extra = score_task(ts, tok, model, spec, model_name, job_id, plan,
                                                             judge)
            except Exception as exc:  # nothing of this task is stored; the job fails with the reason
                raise (EvalError if isinstance(exc, ValueError) else EvalFailed)(
                    f"{model_name} / {ts.task} failed: {type(exc).__name__}: {exc}") from exc
            overlaps = [tidx.overlap(t) for t in ts.texts]
            run = uuid.uuid4().hex  # this (model, task) scoring: its rows and answers replace an earlier run's whole
            for g, o in zip(gens, overlaps):
                g.overlap = o
            for g in gens:
                g.run = run
            summary = heldout.overlap_summary(overlaps, spec.overlap_threshold, tidx) if ts.texts else None
            clean_ix = [j for j, o in enumerate(overlaps) if o < spec.overlap_threshold]
            clean = None
            if rescore and summary and summary["items_over"] and clean_ix:
                clean = {**rescore(clean_ix), **_counts(ts, gens, clean_ix)}
            elif rescore and summary and not summary["items_over"]:
                clean = {**scores, **_counts(ts, gens, range(len(overlaps)))}
            # a Hub lm-eval task's items are unknown here: no fingerprint (every one was the hash of an empty list)
            details = {"source": ts.source, "fingerprint": heldout.fingerprint(ts.items) if ts.items else None,
                       "items": len(ts.items), "settings": settings(ts, spec, tok, model, plan.batch_size),
                       "overlap": summary, "clean": clean, "device": plan.note, **extra}
            n = extra.get("n") or len(ts.items) or spec.limit  # lm-eval reports how many items it scored
            counts = _counts(ts, gens, range(len(gens))) if ts.kind == "qa" else {}
            rows = [EvalScore(job_id=job_id, model=model_name, task=ts.task, metric=metric, value=float(v),
                              n=counts.get(qa.count_key(metric), n), details=details,
                              overlap_share=summary["share_over"] if summary else 0.0, run=run)
                    for metric, v in scores.items()]
            with db.session() as s:  # one transaction: a task's scores and generations land together or not at all
                s.add_all(rows + gens)
                s.commit()
            stored += len(rows)
        del model
    progress(1.0, f"{stored} scores in {time.perf_counter() - t0:.0f} s" + (f", {kept} kept from the earlier run"
                                                                           if kept else ""))
    return {"scores": stored + kept, "kept": kept, "notes": notes, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 1), "device": {m: p.note for m, p in plans.items()}}
