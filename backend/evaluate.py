"""Evaluation jobs: every model on the same tasks, scores stored per model and task.

    python -m backend eval SmolLM2-135M-Instruct SmolLM2-135M-Instruct-dus-m8 --tasks perplexity synth-math

Tasks:
  perplexity            held-out text: builtin:facts-corpus's last 20% (or perplexity:FILE, a .txt / .jsonl text)
  synth-math            exact final answer on a held-out generated set (generator seed 10_000, never used for
                        training data); every answer is also stored with its length and hallucination label
  mc:FILE               multiple choice by log-likelihood (ARC / HellaSwag / MMLU / TruthfulQA / Winogrande style):
                        JSONL rows {"question": str, "choices": [str, …], "answer": index}; acc and acc_norm
  gsm8k:FILE            generation accuracy on GSM8K-format rows {"question", "answer": "… #### n"}
  lm-eval:TASK          lm-evaluation-harness, when it is installed and its data is present (else a clear note)

A hallucination is a confident wrong final answer: the model states a final answer and it is wrong. With
`samples` > 1, k sampled answers also give a SelfCheck-style consistency score (agreement with the greedy answer).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

from backend import registry
from backend.specs import EvalSpec
from backend.synth.answers import extract_answer, same_answer
from storage import db
from storage.models import EvalScore, Generation

Progress = Callable[[float, str], None]
MATH_SEED = 10_000
SYSTEM_HINT = "Solve the problem. End with 'The answer is <number>.'"


class EvalError(ValueError):
    pass


def _load(path: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = registry.resolve(path)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return tok, model


def perplexity(tok, model, texts: list[str], max_length: int = 256) -> tuple[float, int]:
    import torch

    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length).input_ids
            if ids.shape[1] < 2:
                continue
            loss = model(ids, labels=ids).loss.item()
            total_nll += loss * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
    if not total_tokens:
        raise EvalError("perplexity: the texts are empty.")
    return math.exp(total_nll / total_tokens), total_tokens


def choice_logprob(tok, model, context: str, choice: str) -> float:
    """Sum of the log-probabilities of `choice`'s tokens after `context`."""
    import torch

    ctx = tok(context, add_special_tokens=False).input_ids
    full = tok(context + choice, add_special_tokens=False).input_ids
    n_choice = len(full) - len(ctx)
    if n_choice <= 0:
        return float("-inf")
    ids = torch.tensor([full])
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return logp[-n_choice:].gather(1, targets[-n_choice:, None]).sum().item()


def multiple_choice(tok, model, rows: list[dict]) -> dict:
    correct = correct_norm = 0
    for row in rows:
        context = f"Question: {row['question']}\nAnswer:"
        scores = [choice_logprob(tok, model, context, " " + c) for c in row["choices"]]
        norm = [s / max(len(c), 1) for s, c in zip(scores, row["choices"])]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == row["answer"])
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == row["answer"])
    return {"acc": correct / len(rows), "acc_norm": correct_norm / len(rows), "n": len(rows)}


def read_jsonl(path: str, fields: tuple[str, ...]) -> list[dict]:
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
        missing = [f for f in fields if f not in row]
        if missing:
            raise EvalError(f"{p.name}, line {n}: missing {', '.join(missing)} (the layout is "
                            f"{{{', '.join(fields)}}}).")
        rows.append(row)
    if not rows:
        raise EvalError(f"{p.name} has no rows.")
    return rows


def generate(tok, model, prompts: list[str], max_new_tokens: int, *, sample: bool = False, seed: int = 0,
             batch_size: int = 8) -> list[tuple[str, int]]:
    """(text, new tokens) per prompt, chat-formatted, batched with left padding."""
    import torch

    from backend.chat import build_prompt

    tok.padding_side = "left"
    out: list[tuple[str, int]] = []
    torch.manual_seed(seed)
    for i in range(0, len(prompts), batch_size):
        chats = [build_prompt(tok, [{"role": "user", "content": f"{SYSTEM_HINT}\n\n{p}"}])
                 for p in prompts[i:i + batch_size]]
        batch = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = dict(do_sample=True, temperature=0.8, top_p=0.95) if sample else dict(do_sample=False)
        with torch.inference_mode():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        new = ids[:, batch["input_ids"].shape[1]:]
        for row in new:
            n = int((row != tok.pad_token_id).sum())
            out.append((tok.decode(row, skip_special_tokens=True).strip(), n))
    return out


def answer_task(tok, model, items: list[tuple[str, str, str]], spec: EvalSpec, task: str, model_name: str,
                job_id: int | None) -> tuple[dict, list[Generation]]:
    """Generate answers to (id, question, reference answer) items; score, label, and keep every generation."""
    greedy = generate(tok, model, [q for _, q, _ in items], spec.max_new_tokens)
    samples = [generate(tok, model, [q for _, q, _ in items], spec.max_new_tokens, sample=True, seed=s + 1)
               for s in range(spec.samples - 1)] if spec.samples > 1 else []
    gens = []
    for j, ((pid, q, ref), (text, n_tok)) in enumerate(zip(items, greedy)):
        found = extract_answer(text)
        correct = same_answer(found, ref)
        consistency = None
        if samples:
            agree = [same_answer(extract_answer(s[j][0]), found) for s in samples] if found else []
            consistency = sum(agree) / len(samples) if found else 0.0
        gens.append(Generation(job_id=job_id, model=model_name, task=task, prompt_id=pid, prompt=q, reference=ref,
                               output=text, tokens=n_tok, words=len(text.split()), answered=found is not None,
                               correct=correct, hallucination=found is not None and not correct,
                               consistency=consistency))
    n = len(gens)
    scores = {"accuracy": sum(g.correct for g in gens) / n, "hallucination_rate": sum(g.hallucination for g in gens) / n,
              "mean_words": sum(g.words for g in gens) / n}
    if samples:
        scores["consistency"] = sum(g.consistency for g in gens) / n
    return scores, gens


def synth_math_items(n: int) -> list[tuple[str, str, str]]:
    from backend.synth.seeds import generate as gen_seeds

    return [(s.id, s.question, s.answer) for s in gen_seeds(n, seed=MATH_SEED)]


def heldout_texts(source: str | None) -> list[str]:
    from backend import data

    if source:
        ds = data.load_source(source)
        col = "text" if "text" in ds.column_names else ds.column_names[0]
        return [str(x) for x in ds[col]]
    lines = data.builtin_path("facts-corpus").read_text().splitlines()
    return lines[int(len(lines) * 0.8):]  # the last 20%: builtin training uses the whole file, say so in notes


def run_lm_eval(folder: Path, task: str, limit: int) -> dict:
    try:
        import lm_eval
    except ImportError:
        raise EvalError("lm-evaluation-harness is not installed (pip install lm-eval); its task data also needs "
                        "the internet or a local copy.")
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder}", tasks=[task], limit=limit)
    return {k: v for k, v in res["results"][task].items() if isinstance(v, (int, float))}


def run_eval(spec: EvalSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    import os

    progress = progress or (lambda f, m: None)
    job_id = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    for m in spec.models:
        registry.resolve(m)  # fail early on an unknown model
    t0 = time.perf_counter()
    rows: list[EvalScore] = []
    notes: list[str] = []
    steps = len(spec.models) * len(spec.tasks)
    for i, model_name in enumerate(spec.models):
        tok, model = _load(model_name)
        for k, task in enumerate(spec.tasks):
            progress((i * len(spec.tasks) + k) / steps, f"{model_name}: {task}")
            kind, _, arg = task.partition(":")
            gens: list[Generation] = []
            try:
                if kind == "perplexity":
                    ppl, ntok = perplexity(tok, model, heldout_texts(arg or None)[: spec.limit])
                    scores, n = {"perplexity": ppl}, ntok
                elif kind == "synth-math":
                    scores, gens = answer_task(tok, model, synth_math_items(spec.limit), spec, task, model_name,
                                               job_id)
                    n = len(gens)
                elif kind == "mc":
                    res = multiple_choice(tok, model, read_jsonl(arg, ("question", "choices", "answer"))[: spec.limit])
                    n = res.pop("n")
                    scores = res
                elif kind == "gsm8k":
                    items = [(f"gsm8k-{j}", r["question"], r["answer"].rsplit("####", 1)[-1].strip())
                             for j, r in enumerate(read_jsonl(arg, ("question", "answer"))[: spec.limit])]
                    scores, gens = answer_task(tok, model, items, spec, task, model_name, job_id)
                    n = len(gens)
                elif kind == "lm-eval":
                    scores, n = run_lm_eval(registry.resolve(model_name)[0], arg, spec.limit), spec.limit
                else:
                    raise EvalError(f"unknown task {task!r}")
            except EvalError as exc:
                if kind == "lm-eval":  # optional backend: a note, not a failure
                    notes.append(f"{task}: {exc}")
                    continue
                raise
            rows += [EvalScore(job_id=job_id, model=model_name, task=task, metric=metric, value=float(v), n=n)
                     for metric, v in scores.items()]
            with db.session() as s:
                s.add_all(gens)
                s.commit()
        del model
    with db.session() as s:
        s.add_all(rows)
        s.commit()
    progress(1.0, f"{len(rows)} scores in {time.perf_counter() - t0:.0f} s")
    return {"scores": len(rows), "notes": notes, "seconds": round(time.perf_counter() - t0, 1)}
