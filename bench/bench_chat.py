"""Benchmark: the chat path (backend.chat.stream_reply: a generate thread feeding TextIteratorStreamer) against
plain transformers `generate` on the same model and prompt: time to first token and tokens/s.

    .venv/bin/python bench/bench_chat.py                  # the built-in SmolLM2-135M-Instruct, greedy, 64 tokens

The peer's time to first token is measured with a streamer that only timestamps the first token.
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
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="builtin")
    a = ap.parse_args()
    os.environ.setdefault("DUS_WORKSPACE", str(OUT / "ws-runner"))
    import torch
    from transformers.generation.streamers import BaseStreamer

    from backend import registry
    from backend.chat import GenerationStats, build_prompt, load, stream_reply

    folder, name = registry.resolve(a.model)
    lm = load(folder, name or str(folder))
    messages = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]
    tok, model = lm.tokenizer, lm.model

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.first, self.calls = None, 0

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # the first put is the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    rows = {"transformers generate": [], "dus-studio stream_reply": []}
    for _ in range(a.reps):
        ids = tok(build_prompt(tok, messages), return_tensors="pt", add_special_tokens=False)
        s = FirstToken()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False, streamer=s,
                                 pad_token_id=tok.eos_token_id)
        total = time.perf_counter() - t0
        n = out.shape[1] - ids["input_ids"].shape[1]
        rows["transformers generate"].append((s.first - t0, n / total))
        stats = GenerationStats()
        for _piece in stream_reply(lm, messages, max_new_tokens=a.tokens, stats=stats):
            pass
        rows["dus-studio stream_reply"].append((stats.first_token_s, stats.tokens_per_s))
    base_tps = statistics.median(t for _, t in rows["transformers generate"])
    print(f"\n{name}, greedy, {a.tokens} new tokens, {a.reps} reps (medians), CPU")
    print(f"{'path':26} {'first token s':>14} {'tokens/s':>9} {'ratio':>7}")
    for label, rs in rows.items():
        tps = statistics.median(t for _, t in rs)
        print(f"{label:26} {statistics.median(f for f, _ in rs):14.3f} {tps:9.1f} {tps / base_tps:7.3f}")


if __name__ == "__main__":
    main()
