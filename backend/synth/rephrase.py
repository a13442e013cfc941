"""Rephrasers: turn a seed (question, worked solution) into a rephrased pair. Pluggable by name:

    rules             offline, deterministic rule-based paraphraser (the no-GPU default; tests)
    model:NAME        a registered chat model through transformers (batched generation)
    openai:BASE_URL   any OpenAI-compatible server (vLLM, Ollama, llama.cpp, a hosted API); model and key from the
                      spec / environment ($OPENAI_API_KEY unless another variable is named)

A rephraser returns, per seed, (question, solution) or raises for that seed; failures are kept with their reason.
Its `name` and `settings` are all that decides its reply besides the seed's text: `cache_key` keys the run's cache
by them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from backend.openai_compat import chat_completion
from backend.synth import quantities
from backend.synth.problems import ITEMS
from backend.synth.answers import format_number
from backend.synth.seeds import Seed

PROMPT = ("Rephrase the following math problem and its worked solution in your own words. Keep every number, "
          "every step and the final answer exactly the same. End the solution with 'The answer is \\boxed{{ANSWER}}'."
          "\nReply in exactly this format:\nQUESTION: <the rephrased problem>\nSOLUTION: <the rephrased solution>\n\n"
          "Problem: {question}\nSolution: {solution}")
_REPLY = re.compile(r"QUESTION:\s*(?P<q>.+?)\s*SOLUTION:\s*(?P<s>.+)\s*$", re.S | re.I)


class RephraseError(ValueError):
    pass


class Rephraser(Protocol):
    name: str
    settings: dict  # what besides `name` changes its replies (sampling, prompt, variant): part of the cache key

    def rephrase(self, seeds: list[Seed]) -> list[tuple[str, str] | Exception]: ...


def parse_reply(text: str) -> tuple[str, str]:
    m = _REPLY.search(text or "")
    if not m:
        # the reply itself, shortened: without it nobody can tell a chatty model from a broken prompt
        said = " ".join((text or "").split())
        raise RephraseError("the reply is not in the QUESTION: … SOLUTION: … format; it began: "
                            + (repr(said[:300]) + ("…" if len(said) > 300 else "") if said else "(empty)"))
    return m["q"].strip(), m["s"].strip()


def check_question(seed: Seed, question: str) -> None:
    """Refuse a rephrased question that states a quantity its seed's question does not: verification compares only
    the final answers, so a model that wrote $999 for $10 and kept the answer made a verified pair whose answer does
    not fit its question. Quantities are compared as values (backend/synth/quantities.py), so the notation may
    change ("2 pencils" → "two pencils", "1 1/2 cups" → "1.5 cups" or "one and a half cups", "50%" → "half",
    "$1.50" → "1 dollar and 50 cents", 1,000 → 1000, "a pen" → "one pen") but the quantity may not ("2 1/2" →
    "1 1/2", "= -3" → "= 3", "3/4" → "3/5", "$10" → "eleven dollars", "3 apples" → "one apple"). A quantity left
    out is no new quantity."""
    new = sorted(quantities.changed(seed.question, question))
    if new:
        said = ", ".join(format_number(x) for x in new)
        raise RephraseError(f"the rephrased question has {said}, which the original has neither in digits nor in "
                            "words: a changed number changes the answer.")


def parse_checked(seed: Seed, text: str) -> tuple[str, str]:
    """parse_reply, then check_question: a model's rephrasing of `seed`."""
    question, solution = parse_reply(text)
    check_question(seed, question)
    return question, solution


# ---------------------------------------------------------------- rules

_Q_FORMS = [
    (re.compile(r"^What is (.+)\?$"), ["Calculate {0}.", "Find the value of {0}.", "Work out {0}."]),
    (re.compile(r"^Compute (.+)\.$"), ["Evaluate {0}.", "Find the value of {0}.", "Work out {0}."]),
    (re.compile(r"^Solve for x: (.+)\.$"), ["Find x if {0}.", "Determine the value of x that satisfies {0}.",
                                            "What value of x makes {0} true?"]),
    (re.compile(r"^What percentage of (.+) is (.+)\?$"), ["What percent of {0} is {1}?",
                                                          "Express {1} as a percentage of {0}.",
                                                          "{1} is what percentage of {0}?"]),
    (re.compile(r"^In how many ways can (.+)\?$"), ["How many different ways can {0}?",
                                                    "In how many different ways can {0}?",
                                                    "In how many distinct ways can {0}?"]),
]
_SYNONYMS = [("How many", "What number of"), ("travels", "drives"), ("build", "put up"), ("costs", "is priced at"),
             ("pays with", "hands over"), ("different", "distinct"), ("lowest terms", "simplest form"),
             ("Working at the same rate", "At the same pace"), ("is on sale for", "is discounted by"),
             ("How long is", "What is the length of"), ("stand in a line", "be arranged in a row"),
             ("choose", "select"), ("each", "apiece")]
# Where a swap reads as a sentence: "What number of" before a plural noun only ("How many can Sam buy?", "How many of
# the 30 …", "How many remain …" are no sentences with it), "apiece" after a count or price only ("$5 each", "gives
# 3 each"; "each of 59 people", "more each week" are not)
_CONTEXT = {"How many": r"(?=\s+[a-z]+s\b)(?!\s+(?:was|is|has|does)\b)"}
_AFTER = {"each": r"(?<=\d )"}
_STEP_OPENERS = ["First, ", "Next, ", "Then, ", "After that, ", "Finally, "]


_COMMON_STARTS = {"a", "an", "the", "in", "at", "working", "you", "there", "it", "he", "she", "they", "his",
                  "her", "their", "first", "then", "finally", "subtract", "divide", "add", "by", "with", "distance",
                  "area", "perimeter", "so", "we", "pencils", "notebooks", "workers",
                  "what", "how", "which", "who", "when", "where", "why", "find", "after", "one", "two", "three",
                  "twice", "together", "now", "its", "each", "if"} | set(ITEMS)  # "Stickers cost …"


def _lower_first(s: str, text: str = "") -> str:
    """A sentence's first word lower-cased, for a sentence moved inside another ("Pens cost $2. How many …" → "Given
    that pens cost $2, how many …"), unless it is a name. Only the problem's own `text` tells a name from a noun, so
    the rule reads it: "I", an acronym or a word with an inner capital ("NASA", "McKay"), and a word the text
    capitalises mid-sentence ("How old is Ruth?") stay; a word of _COMMON_STARTS, or a plural the text writes in
    lower case elsewhere ("How many pens …"), is lowered (a singular may be a name: "Bill", "Rose", "Penny"). A word seen nowhere else stays as it is: "sam has 3 apples" reads
    worse than "Pens cost $2" (a lower-cased name is wrong, a capitalised noun only odd)."""
    m = re.match(r"[A-Z][A-Za-z]*", s)
    if not m:
        return s
    word, rest = m[0], s[m.end():]
    if word == "I" or (len(word) > 1 and not word[1:].islower()) or rest[:1].isdigit():
        return s  # "I", "I'm", "NASA", "McKay", "A4"
    low = word.lower()
    if low in _COMMON_STARTS:
        return low + rest
    # a plural the text also writes lower-case is a noun ("Pens … how many pens"); a singular may be a name that is
    # also a noun ("Bill has $5. He pays a bill of $3": Bill stays), as may any word capitalised mid-sentence
    plural = low.endswith("s") and not low.endswith("ss")
    if not plural or _named_mid_sentence(word, text) or not re.search(rf"(?<![A-Za-z]){low}(?![A-Za-z])", text):
        return s
    return low + rest


def _named_mid_sentence(word: str, text: str) -> bool:
    """Whether `text` writes `word`, capitalised, inside a sentence (not after . ? ! : or at its start): a name."""
    for m in re.finditer(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text):
        before = text[:m.start()].rstrip()
        if before and before[-1] not in ".?!:\"'(":
            return True
    return False


def _source(obj) -> str:
    """The source of a function or class, or its bytecode where no source file is installed beside it."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        fns = [obj] if hasattr(obj, "__code__") else [f for f in vars(obj).values() if hasattr(f, "__code__")]
        return "".join(f.__code__.co_code.hex() for f in fns)


def _rules_version() -> str:
    """A hash of what decides the rules' output besides the seed: the tables above and the code that applies them.
    Keyed by it, a cache written before a rule changed is not handed back as the new rules' output (a hash, not a
    number to bump by hand: nobody forgets it). A comment edit misses the cache too; the rules rerun in moments."""
    tables = [[(p.pattern, forms) for p, forms in _Q_FORMS], _SYNONYMS, sorted(_CONTEXT.items()),
              sorted(_AFTER.items()), _STEP_OPENERS, sorted(_COMMON_STARTS)]
    code = [_source(fn) for fn in (_lower_first, _named_mid_sentence, RulesRephraser)]
    return hashlib.sha256(json.dumps([tables, code]).encode()).hexdigest()[:16]


class RulesRephraser:
    """Deterministic paraphrases: question templates, synonym swaps, context moved behind the question, and the
    solution restated step by step. Numbers are never touched, so the final answer survives by construction."""

    name = "rules"

    def __init__(self, variant_seed: int = 0):
        self.variant_seed = variant_seed
        # the rules' version keys the cache with the seed (cache_key): an old cache keeps old output otherwise
        self.settings = {"variant_seed": variant_seed, "rules": RULES_VERSION}

    def _pick(self, text: str, k: int) -> int:
        return int(hashlib.sha1(f"{self.variant_seed}:{text}".encode()).hexdigest(), 16) % k

    def question(self, q: str, solution: str = "") -> str:
        """`q` rephrased; the seed's `solution` is read only for how it writes a word (_lower_first)."""
        text = f"{q}\n{solution}"
        for pattern, forms in _Q_FORMS:
            m = pattern.match(q)
            if m:
                return forms[self._pick(q, len(forms))].format(*m.groups())
        out = q
        for a, b in _SYNONYMS:
            out = re.sub(rf"{_AFTER.get(a, '')}\b{re.escape(a)}\b{_CONTEXT.get(a, '')}", b, out)
        sentences = re.split(r"(?<=[.?])\s+", out)
        if len(sentences) >= 2 and sentences[-1].endswith("?"):  # "Context. Question?" -> "Given …, question?"
            # the context stays before the question: "What is its area, given that a rectangle …" named the
            # rectangle after the pronoun that points to it
            context = " and ".join(_lower_first(s.rstrip("."), text) for s in sentences[:-1])
            out = f"Given that {context}, {_lower_first(sentences[-1], text)}"
        return out

    def solution(self, s: str, question: str = "") -> str:
        """`s` restated step by step; the seed's `question` is read only for how it writes a word (_lower_first)."""
        text = f"{question}\n{s}"
        body, _, tail = s.rpartition("The answer is")
        steps = [x for x in re.split(r"(?<=\.)\s+", body.strip()) if x]
        steps = [re.sub(r"^(First|Then|Finally),?\s*", "", x) for x in steps]
        n = len(steps)
        out = []
        for i, step in enumerate(steps):
            opener = _STEP_OPENERS[0] if i == 0 else (_STEP_OPENERS[-1] if i == n - 1 and n > 1 else
                                                      _STEP_OPENERS[1 + (i - 1) % 3])
            out.append(opener + _lower_first(step, text) if n > 1 else step)
        final = tail.strip() if tail else ""
        return " ".join(out) + (f" So the final answer is {final}" if final else "")

    def rephrase(self, seeds: list[Seed]) -> list[tuple[str, str] | Exception]:
        return [(self.question(s.question, s.solution), self.solution(s.solution, s.question)) for s in seeds]


RULES_VERSION = _rules_version()


# ---------------------------------------------------------------- a registered chat model

class ModelRephraser:
    def __init__(self, model: str, max_new_tokens: int = 384, temperature: float = 0.0):
        from backend import registry
        from backend.chat import load

        folder, name = registry.resolve(model)
        self.name = f"model:{name or folder}"
        self.lm = load(folder, name or str(folder))
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.settings = {"folder": str(folder), "max_new_tokens": max_new_tokens, "temperature": temperature,
                         "prompt": PROMPT}
        if not getattr(self.lm.tokenizer, "chat_template", None):  # its replies now end at a new role line: the
            self.settings["ends"] = "at a new role line"  # ones cached before ran on, and are not reused

    def rephrase(self, seeds: list[Seed]) -> list[tuple[str, str] | Exception]:
        import torch

        from backend.chat import build_prompt, cut_at_stop, encode, transcript_stops
        from backend.evaldevice import configure_pad_token

        tok, model = self.lm.tokenizer, self.lm.model
        tok.padding_side = "left"  # batched decoding continues every prompt from its end
        configure_pad_token(tok, model)  # a tokenizer.json-only folder has no eos to pad with either
        prompts = [build_prompt(tok, [{"role": "user", "content": PROMPT.format(question=s.question,
                                                                                solution=s.solution)}]) for s in seeds]
        batch = encode(tok, prompts, return_tensors="pt", padding=True).to(model.device)
        kwargs = dict(do_sample=True, temperature=self.temperature) if self.temperature > 0 else dict(do_sample=False)
        # a model without a chat template runs on into a made-up next turn ("\nuser: …"), which SOLUTION's pattern
        # swallowed: its last boxed answer failed a good rephrasing, or, verified, went into the SFT data
        if stops := transcript_stops(tok):
            kwargs |= {"stop_strings": list(stops), "tokenizer": tok}
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        texts = [cut_at_stop(t, stops)[0]
                 for t in tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
        results: list[tuple[str, str] | Exception] = []
        for seed, text in zip(seeds, texts):
            try:
                results.append(parse_checked(seed, text))
            except RephraseError as exc:
                results.append(exc)
        return results


# ---------------------------------------------------------------- an OpenAI-compatible endpoint

class OpenAIRephraser:
    def __init__(self, base_url: str, model: str, key_env: str = "OPENAI_API_KEY", temperature: float = 0.7,
                 timeout: float = 120.0, concurrency: int = 4):
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{self.base_url}#{model}"
        self.model, self.key = model, os.environ.get(key_env, "")
        self.temperature, self.timeout, self.concurrency = temperature, timeout, concurrency
        self.settings = {"temperature": temperature, "prompt": PROMPT}

    def _one(self, seed: Seed) -> tuple[str, str] | Exception:
        try:
            reply = chat_completion(self.base_url, self.model, PROMPT.format(question=seed.question,
                                                                             solution=seed.solution),
                                    key=self.key, temperature=self.temperature, timeout=self.timeout)
            return parse_checked(seed, reply)
        except urllib.error.HTTPError as exc:
            return RephraseError(f"HTTP {exc.code} from {self.base_url}: {exc.read()[:200]!r}")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return RephraseError(f"cannot reach {self.base_url}: {exc}")
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            return RephraseError(f"unexpected reply from {self.base_url}: {exc}")
        except RephraseError as exc:
            return exc

    def rephrase(self, seeds: list[Seed]) -> list[tuple[str, str] | Exception]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, seeds))


def cache_key(seed: Seed, rephraser: Rephraser) -> str:
    """What a rephrasing is cached under: a hash of exactly what decides it, the seed's question and solution and
    the rephraser with its settings. Not the seed's id: a generator id ('gen-0-3') names another problem once the
    categories or levels change, and a MATH file's id hashes the problem alone, so a cache keyed by id handed a run
    resumed with other filters or settings the rephrasing of another problem, or a stale one. A rephraser without
    `settings` (a test's stand-in) is known by its name alone."""
    what = [seed.question, seed.solution, rephraser.name, getattr(rephraser, "settings", {})]
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def make_rephraser(spec) -> Rephraser:
    r = spec.rephraser
    if r == "rules":
        return RulesRephraser(spec.seed)
    if r.startswith("model:"):
        return ModelRephraser(r.removeprefix("model:"), temperature=spec.temperature)
    if r.startswith("openai:"):
        if not spec.api_model:
            raise RephraseError("an openai: rephraser needs api_model, the model name the server serves.")
        return OpenAIRephraser(r.removeprefix("openai:"), spec.api_model, spec.api_key_env, spec.temperature or 0.7)
    raise RephraseError(f"rephraser {r!r}: use rules, model:NAME or openai:BASE_URL.")
