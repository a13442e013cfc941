"""Benchmark: the chat paths against plain transformers `generate` on the same model, prompt and settings.

    .venv/bin/python bench/bench_chat.py                  # the built-in SmolLM2-135M-Instruct, greedy, 64 tokens

1. One answer: backend.chat.stream_reply (a generate thread feeding TextIteratorStreamer, as the chat pages use it)
   against `model.generate` in the calling thread: time to first token and tokens/s. Both stop by the same rule
   (greedy, same max_new_tokens), so they produce the same tokens; the bench checks that.
2. Side by side: backend.chat.answer_all (every model at once, as the side-by-side page runs them) against plain
   `generate` on each model one after the other: total tokens/s and time to each model's first token.

The two paths alternate within each repetition (this VM's speed drifts by ±15 % over a minute), and the ratio is
the median of the per-repetition ratios (first token: this ÷ peer, lower is better; tokens/s: this ÷ peer). The peer's first token is timed by a streamer that only timestamps it.
Either row exits 1 when its two paths' answers differ (the same work is compared, or nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--side-by-side", nargs="*", default=None, metavar="MODEL",
                    help="models for the side-by-side row (default: two copies of --model)")
    a = ap.parse_args()
    os.environ.setdefault("DUS_WORKSPACE", str(OUT / "ws-runner"))
    import torch
    from transformers.generation.streamers import BaseStreamer

    from backend import registry
    from backend.chat import GenerationStats, answer_all, build_prompt, encode, load, stream_reply

    def loaded(ref: str):
        folder, name = registry.resolve(ref)
        return load(folder, name or str(folder))

    lm = loaded(a.model)
    pair = [loaded(m) for m in (a.side_by_side or [a.model, a.model])]  # separate copies: no shared lock
    messages = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]
    settings = dict(max_new_tokens=a.tokens, do_sample=False, temperature=None, top_p=None, top_k=None)

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.first, self.calls = None, 0

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # the first put is the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    def plain(model_lm) -> tuple[float, float, int, str]:
        """(first token s, total s, new tokens, text) of model.generate in this thread, prompt building included."""
        tok = model_lm.tokenizer
        t0 = time.perf_counter()
        ids = encode(tok, build_prompt(tok, messages), return_tensors="pt")  # as stream_reply encodes it
        s = FirstToken()
        with torch.inference_mode():
            out = model_lm.model.generate(**ids, **settings, streamer=s, pad_token_id=tok.eos_token_id)
        total = time.perf_counter() - t0
        new = out[0, ids["input_ids"].shape[1]:]
        return s.first - t0, total, len(new), tok.decode(new, skip_special_tokens=True)

    def ours() -> tuple[float, float, int, str]:
        stats = GenerationStats()
        text = "".join(stream_reply(lm, messages, max_new_tokens=a.tokens, stats=stats))
        return stats.first_token_s, stats.total_s, stats.new_tokens, text

    def sequential() -> tuple[float, list[float], int, list[str]]:
        t0 = time.perf_counter()
        firsts, tokens, texts = [], 0, []
        for m in pair:
            start = time.perf_counter() - t0
            first, _, n, text = plain(m)
            firsts.append(start + first)
            tokens += n
            texts.append(text)
        return time.perf_counter() - t0, firsts, tokens, texts

    def together() -> tuple[float, list[float], int, list[str]]:
        t0 = time.perf_counter()
        answers = answer_all({f"{i}:{m.name}": m for i, m in enumerate(pair)}, messages, max_new_tokens=a.tokens)
        for ans in answers.values():
            ans.thread.join()
            if ans.error:
                raise SystemExit(ans.error)
        return (time.perf_counter() - t0, [ans.stats.first_token_s for ans in answers.values()],
                sum(ans.stats.new_tokens for ans in answers.values()), [ans.text for ans in answers.values()])

    plain(lm)  # warm-up: first calls allocate caches
    ours()
    one = {"transformers generate": [], "dus-studio stream_reply": []}
    many = {"generate, one after another": [], "dus-studio answer_all": []}
    for rep in range(a.reps):
        order = [("transformers generate", lambda: plain(lm)), ("dus-studio stream_reply", ours)]
        for label, fn in order[::1 if rep % 2 == 0 else -1]:
            one[label].append(fn())
        order2 = [("generate, one after another", sequential), ("dus-studio answer_all", together)]
        for label, fn in order2[::1 if rep % 2 == 0 else -1]:
            many[label].append(fn())
    texts = {r[3] for rows in one.values() for r in rows}
    if len(texts) != 1:
        raise SystemExit("the two paths produced different answers: the comparison would not be fair")
    # the side-by-side row too: answer_all stopping early (half the tokens) read as a tokens/s ratio and exited 0
    if len({tuple(r[3]) for rows in many.values() for r in rows}) != 1:
        raise SystemExit("side by side: answer_all and generate produced different answers: the comparison would "
                         "not be fair")

    def ratio(rows: dict, label: str, peer: str, tps) -> float:
        return statistics.median(tps(x) / tps(y) for x, y in zip(rows[label], rows[peer]))

    print(f"\n{lm.name}, greedy, up to {a.tokens} new tokens, {a.reps} reps (medians), "
          f"{torch.get_num_threads()} torch threads, CPU")
    print(f"{'one answer':30} {'first token s':>14} {'÷ peer':>7} {'tokens':>7} {'tokens/s':>9} {'÷ peer':>7}")
    for label, rows in one.items():
        tps = statistics.median(n / total for _, total, n, _ in rows)
        r = ratio(one, label, "transformers generate", lambda x: x[2] / x[1])
        rf = ratio(one, label, "transformers generate", lambda x: 1 / x[0])  # of first-token times, peer ÷ this
        print(f"{label:30} {statistics.median(f for f, *_ in rows):14.3f} {1 / rf:6.2f}× {rows[0][2]:7d} {tps:9.1f} "
              f"{r:6.3f}×")
    print(f"\n{'side by side: ' + ' + '.join(m.name for m in pair):30}")
    print(f"{'path':30} {'first tokens s':>14} {'':7} {'tokens':>7} {'tokens/s':>9} {'÷ peer':>7}")
    for label, rows in many.items():
        tps = statistics.median(n / total for total, _, n, _ in rows)
        firsts = " / ".join(f"{statistics.median(r[1][i] for r in rows):.2f}" for i in range(len(pair)))
        r = ratio(many, label, "generate, one after another", lambda x: x[2] / x[0])
        print(f"{label:30} {firsts:>14} {'':7} {rows[0][2]:7d} {tps:9.1f} {r:6.3f}×")


if __name__ == "__main__":
    main()
