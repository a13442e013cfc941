"""Load a registered model and stream chat replies (transformers' TextIteratorStreamer on a generate thread), one
model at a time or several answering the same prompt at once (side-by-side chat).

Pages cache the loaded (model, tokenizer) pair; every session shares it, so generation on one model is serialised
with a lock (two sessions may chat with different models at once), and a copy whose folder changed since it was
loaded says so (LoadedModel.stale). A conversation longer than the model's context keeps its system message and its
latest turns (fit_context).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from backend.modelinfo import folder_stat


# Generation runs on long-lived threads. A fresh thread per reply costs a fresh OpenMP team in torch (while the last
# one still spins), which cost 13 % of tokens/s and 0.07 s to the first token against generate in the calling thread;
# on reused threads both match it (bench/bench_chat.py).
_GENERATE = ThreadPoolExecutor(16, thread_name_prefix="generate")


class TemplateRefused(RuntimeError):
    """The model's chat template refused the conversation (a system message, two user turns in a row) or would have
    left a system message out: the pages show it as any failed reply (RuntimeError); the command line calls it a
    refused input."""


class ContextTooLong(TemplateRefused):
    """The last message (with the system message) does not fit in the model's context: nothing was generated."""


# The transcript of a model without a chat template (build_prompt) has no end-of-turn token: a base model goes on
# to write the next "user:" turn itself, and that was streamed as part of its reply. A turn ends at a new role line.
TRANSCRIPT_STOPS = ("\nuser:", "\nassistant:", "\nsystem:")


def transcript_stops(tok) -> tuple[str, ...]:
    """The strings a reply of this tokenizer's model ends at: TRANSCRIPT_STOPS without a chat template, else none
    (its end-of-turn token stops it). Batch generation passes them as `stop_strings` and cuts with cut_at_stop."""
    return () if getattr(tok, "chat_template", None) else TRANSCRIPT_STOPS


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """(text up to the first of `stops`, whether one was found)."""
    at = min((k for k in (text.find(s) for s in stops) if k >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


@dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    path: Path | None = None
    fingerprint: list = field(default_factory=list)  # modelinfo.folder_stat when loaded

    def stale(self) -> bool:
        """True when the folder it was loaded from is gone or holds other files now (deleted, imported again): the
        pages cache a loaded model by (folder, name), and a model deleted and imported again under its name was
        answered by the deleted one's weights from the cache."""
        return self.path is not None and folder_stat(self.path, missing_ok=True) != self.fingerprint


@dataclass
class GenerationStats:
    new_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    dropped: int = 0  # messages left out from the start of the conversation to fit the model's context
    context: int | None = None  # the model's context length in tokens (None: its config names none)
    max_new_tokens: int | None = None  # the limit generation ran with: lower than asked when the context is full

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s else 0.0


def load(path: str | Path, name: str = "") -> LoadedModel:
    from backend import evaldevice

    path = Path(path)
    # As evaluation: float32 on the CPU; bfloat16 + sdpa on CUDA, refused before loading when it cannot fit.
    plan = evaldevice.plan_for(path, seq_len=2048, batch_size=1,  # chat has no device choice: "device: cpu" misled
                               on_cpu="chat on the CPU (start the app or command with CUDA_VISIBLE_DEVICES set empty, "
                                      "which hides the GPU)")
    fingerprint = folder_stat(path, missing_ok=True)  # before loading: files replaced while it loads make it stale, not fresh
    tok, model = evaldevice.load_model(path, plan)
    return LoadedModel(name or path.name, model, tok, path=path, fingerprint=fingerprint)


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


def context_length(model) -> int | None:
    """The number of positions the model was built for (max_position_embeddings; GPT-2's n_positions), or None."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(n := getattr(config, key, None), int) and n > 0:
            return n
    return None


def render(tok, messages: list[dict]) -> str:
    """build_prompt, with the template's refusals as TemplateRefused, and refused as well when the template leaves a
    system message out without a word (a template whose loop writes only user and assistant turns): the model then
    answered as if no instruction had been given."""
    try:
        prompt = build_prompt(tok, messages)
    except Exception as exc:  # noqa: BLE001 - jinja's TemplateError and whatever a template raises
        # Mistral's and Gemma's templates refuse two user turns in a row, Gemma's a system message; as jinja's
        # TemplateError it passed the callers' `except RuntimeError` as a traceback
        hint = (" Without the system message it may work: put its instructions into the first user message."
                if any(m.get("role") == "system" for m in messages) else "")
        raise TemplateRefused(f"the model's chat template refused this conversation: {exc}.{hint}") from exc
    for m in messages:
        if m.get("role") == "system" and isinstance(m.get("content"), str) and m["content"].strip() \
                and m["content"].strip() not in prompt:
            raise TemplateRefused("the model's chat template leaves system messages out (it writes only the user "
                                  "and assistant turns), so the model would never see it: ask without a system "
                                  "message, and put its instructions into the first user message.")
    return prompt


def fit_context(tok, messages: list[dict], budget: int) -> tuple[str, int]:
    """(prompt, messages left out) for the longest end of the conversation whose prompt takes at most `budget` tokens:
    the leading system messages are kept, the oldest turns left out from the left a whole exchange at a time (what is
    kept starts with a user turn, as templates that alternate turns need), the last user message always kept. When
    even that does not fit, (its prompt, messages left out) all the same: the caller says how long it is."""
    system = 0
    while system < len(messages) and messages[system].get("role") == "system":
        system += 1
    head, rest = messages[:system], messages[system:]
    starts = [i for i, m in enumerate(rest) if m.get("role") == "user"] or [0]
    best = None  # newest start first, until one does not fit (an older start only adds): each turn past the
    for i in reversed(starts):  # context rendered the whole conversation once per start, oldest first (61 s at 400)
        prompt = render(tok, head + rest[i:])
        if len(encode(tok, prompt).input_ids) > budget:
            break
        best = (prompt, i)
    return best or (prompt, starts[-1])


def _until_stop(pieces: Iterator[str], stops: tuple[str, ...]) -> Iterator[str]:
    """The streamed text up to the first of `stops` (left out): a piece that may begin a stop string is held back
    until the next piece says whether it does."""
    held = ""
    for piece in pieces:
        held += piece
        cut = min((i for i in (held.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            if held[:cut]:
                yield held[:cut]
            return
        keep = max((k for s in stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
        if len(held) > keep:
            yield held[:len(held) - keep]
            held = held[len(held) - keep:]
    if held:
        yield held


def stream_reply(lm: LoadedModel, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float | None = None, stats: GenerationStats | None = None) -> Iterator[str]:
    """Yield the reply text piece by piece as it is generated; fills `stats` when given. Sampling (temperature > 0)
    uses the model's generation_config.json for what is not given (top_p None: its top_p). A reader that stops early
    (the page's script stopped by a click or a closed tab, Ctrl-C in `python -m backend chat`: the generator is
    closed or dropped) stops the generation at its next token: it ran on to max_new_tokens holding the model's lock,
    so every other session's reply on that model waited, and the command line did not exit until it ended.

    A conversation longer than the model's context keeps its system message and its latest turns (fit_context; how
    many messages were left out is `stats.dropped`); when the last exchange alone leaves less room than
    max_new_tokens, the reply is limited to the room left (`stats.max_new_tokens`). Generation ran past the context
    with only transformers' warning: a model with learned positions (GPT-2) failed, the others read positions they
    were never trained on."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    tok, model = lm.tokenizer, lm.model
    stats = stats if stats is not None else GenerationStats()
    prompt = render(tok, messages)  # the template's refusals before anything else
    stats.context = limit = context_length(model)
    if limit is not None:
        used = len(encode(tok, prompt).input_ids)
        if used > limit - max_new_tokens:
            prompt, stats.dropped = fit_context(tok, messages, limit - max_new_tokens)
            used = len(encode(tok, prompt).input_ids)
        if used >= limit:
            raise ContextTooLong(f"the last message is too long for {lm.name}: with the chat template it takes "
                                 f"{used} tokens, and the model's context is {limit} tokens (prompt and reply "
                                 "together). Shorten the message"
                                 + (" or the system message." if messages[0].get("role") == "system" else "."))
        max_new_tokens = min(max_new_tokens, limit - used)
    stats.max_new_tokens = max_new_tokens
    inputs = encode(tok, prompt, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if temperature > 0:
        # top_p None: the model's generation_config.json (its top_p, top_k and repetition settings hold either way);
        # the 1.0 passed for it overrode the nucleus its makers tuned (0.9 for Llama 3 Instruct)
        kwargs.update(do_sample=True, temperature=temperature, **({} if top_p is None else {"top_p": top_p}))
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

    t0 = time.perf_counter()
    future = _GENERATE.submit(_generate)
    pieces = streamer if getattr(tok, "chat_template", None) else _until_stop(streamer, TRANSCRIPT_STOPS)
    try:
        for piece in pieces:
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
