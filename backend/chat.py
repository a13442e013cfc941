"""Load a registered model and stream chat replies (transformers' TextIteratorStreamer on a generate thread), one
model at a time or several answering the same prompt at once (side-by-side chat).

Pages cache the loaded (model, tokenizer) pair; every session shares it, so generation on one model is serialised
with a lock (two sessions may chat with different models at once).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


# Generation runs on long-lived threads. A fresh thread per reply costs a fresh OpenMP team in torch (while the last
# one still spins), which cost 13 % of tokens/s and 0.07 s to the first token against generate in the calling thread;
# on reused threads both match it (bench/bench_chat.py).
_GENERATE = ThreadPoolExecutor(16, thread_name_prefix="generate")


class TemplateRefused(RuntimeError):
    """The model's chat template refused the conversation (a system message, two user turns in a row): the pages
    show it as any failed reply (RuntimeError); the command line calls it a refused input."""


@dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class GenerationStats:
    new_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s else 0.0


def load(path: str | Path, name: str = "") -> LoadedModel:
    from backend import evaldevice

    path = Path(path)
    # As evaluation: float32 on the CPU; bfloat16 + sdpa on CUDA, refused before loading when it cannot fit.
    plan = evaldevice.plan_for(path, seq_len=2048, batch_size=1)
    tok, model = evaldevice.load_model(path, plan)
    return LoadedModel(name or path.name, model, tok)


def encode(tok, texts: str | list[str], **kwargs):
    """`tok(texts, **kwargs)` as lm-eval's Hugging Face model encodes a prompt: with the tokenizer's own special
    tokens (a Llama tokenizer's BOS) unless the text starts with the BOS already, as a chat template writes it. Every
    prompt here was encoded without them, so a base model without a chat template (TinyLlama, Llama 2, Mistral base)
    generated and was scored without the BOS it always saw in pretraining."""
    first = texts if isinstance(texts, str) else (texts[0] if texts else "")
    starts = bool(tok.bos_token) and first.startswith(tok.bos_token)  # lm-eval looks at the first string too
    return tok(texts, add_special_tokens=not starts, **kwargs)


def added_before(tok, text: str) -> list[str]:
    """The special tokens `encode` puts before `text` (["<s>"] for a Llama tokenizer and a prompt without its BOS):
    part of how a score was measured (evaluate.settings)."""
    ids = encode(tok, text).input_ids
    plain = tok(text, add_special_tokens=False).input_ids
    return tok.convert_ids_to_tokens(ids[:len(ids) - len(plain)]) if ids[len(ids) - len(plain):] == plain else []


def build_prompt(tok, messages: list[dict]) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # base models without a template: plain transcript
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def stream_reply(lm: LoadedModel, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, stats: GenerationStats | None = None) -> Iterator[str]:
    """Yield the reply text piece by piece as it is generated; fills `stats` when given. A reader that stops early
    (the page's script stopped by a click or a closed tab, Ctrl-C in `python -m backend chat`: the generator is
    closed or dropped) stops the generation at its next token: it ran on to max_new_tokens holding the model's lock,
    so every other session's reply on that model waited, and the command line did not exit until it ended."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    tok, model = lm.tokenizer, lm.model
    try:
        prompt = build_prompt(tok, messages)
    except Exception as exc:  # noqa: BLE001 - jinja's TemplateError and whatever a template raises
        # Mistral's and Gemma's templates refuse two user turns in a row (the Models page's history holds them after
        # a reply failed); as jinja's TemplateError it passed the callers' `except RuntimeError` as a traceback
        raise TemplateRefused(f"the model's chat template refused this conversation: {exc}") from exc
    inputs = encode(tok, prompt, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    result: dict = {}
    abandoned = threading.Event()

    class _Abandoned(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool, device=input_ids.device)

    kwargs["stopping_criteria"] = StoppingCriteriaList([_Abandoned()])

    def _generate() -> None:
        with lm.lock, torch.inference_mode():
            try:
                result["ids"] = model.generate(**kwargs)
            except Exception as exc:  # surface in the caller's thread
                result["error"] = exc
                streamer.end()

    stats = stats if stats is not None else GenerationStats()
    t0 = time.perf_counter()
    future = _GENERATE.submit(_generate)
    try:
        for piece in streamer:
            if piece and stats.first_token_s is None:
                stats.first_token_s = time.perf_counter() - t0
            yield piece
    finally:  # also when the reader closes the generator (GeneratorExit) or an exception passes through the yield
        if not future.done():
            abandoned.set()
    future.result()
    stats.total_s = time.perf_counter() - t0
    if "error" in result:
        raise RuntimeError(f"generation failed: {result['error']}")
    stats.new_tokens = int(result["ids"].shape[1] - inputs["input_ids"].shape[1])


@dataclass
class Answer:
    """One model's answer in a side-by-side round, filled in by its generation thread while it runs."""

    text: str = ""
    stats: GenerationStats = field(default_factory=GenerationStats)
    error: str | None = None
    done: bool = False
    thread: threading.Thread | None = None


def answer_all(lms: dict[str, LoadedModel], messages: list[dict], **settings) -> dict[str, Answer]:
    """Start one generation thread per model on the same messages and return their answers at once; poll `done`
    (or join `thread`). Answers run side by side: a small model's decoding does not fill two cores, so two models
    at once give more tokens per second in total than one after the other (bench/bench_chat.py)."""
    answers = {name: Answer() for name in lms}

    def run(name: str) -> None:
        a = answers[name]
        try:
            for piece in stream_reply(lms[name], messages, stats=a.stats, **settings):
                a.text += piece
        except Exception as exc:  # shown in that model's column
            a.error = str(exc)
        finally:
            a.done = True

    for name, a in answers.items():
        a.thread = threading.Thread(target=run, args=(name,), daemon=True, name=f"answer-{name}")
        a.thread.start()
    return answers
