"""Benchmark: the contamination check's short items (fewer words than the n-gram) against a large training corpus,
the sorted word-window index of backend/synth/contamination.py (ContaminationIndex) against the linear substring search
it replaced, kept here as the reference, in the same run.

    .venv/bin/python bench/contamination_index.py                      # 160,000 texts, 1,000 short items
    .venv/bin/python bench/contamination_index.py --distinct           # every copy's words made its own
    .venv/bin/python bench/contamination_index.py --repeat 20 --items 200

The corpus is the built-in training sets (backend/data.py BUILTIN, their rows' text as backend/heldout.py reads
them) repeated --repeat times; with --distinct each copy's words get the copy's number ("the" -> "the_17"), so no
window repeats: the index's memory for a corpus of that size without duplicates. The items: half present (3 to n - 1 consecutive words of a training text), half
near-misses the corpus does not hold (one word cut short, grown or swapped; a run across two neighbouring texts).
The reference is the old path: every text's words on one line, space-delimited, and one `in` per item. A full-
length item (the n-gram path, unchanged) is timed for scale. The bench exits with status 1 when the index and the
reference disagree on any item.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import data, heldout  # noqa: E402
from backend.synth.contamination import ContaminationIndex, _WordWindows, words  # noqa: E402


def corpus(repeat: int, distinct: bool) -> list[str]:
    base = [heldout.row_text(r) for name in data.BUILTIN for r in data.load_source(f"builtin:{name}")]
    if not distinct:
        return base * repeat
    return [re.sub(r"\w+", lambda m: f"{m.group(0)}_{c}", t) for c in range(repeat) for t in base]


def joined_lines(texts: list[str]) -> str:
    """The reference (the old index): all texts' words, one text a line, spaces on both sides of every word."""
    return " " + " \n ".join(" ".join(words(t)) for t in texts) + " "


def reference(lines: str, item: str) -> bool:
    return f" {' '.join(words(item))} " in lines


def near_miss(first: list[str], second: list[str], rng: random.Random, k: int) -> list[str]:
    """k words the first text nearly holds: one word cut short, grown or swapped, or a run into the second text."""
    kind = rng.choice(("cut", "grown", "swapped", "across"))
    if kind == "across":
        cut = rng.randint(1, k - 1)
        return first[len(first) - cut:] + second[:k - cut]
    i, j = rng.randint(0, len(first) - k), rng.randrange(k)
    run = first[i:i + k]
    word = {"cut": run[j][:-1] or "x", "grown": run[j] + "s", "swapped": rng.choice(second)}[kind]
    return run[:j] + [word] + run[j + 1:]


def short_items(texts: list[str], n: int, count: int, lines: str, rng: random.Random) -> list[tuple[str, bool]]:
    """(item, present by the reference): count // 2 runs of 3 to n - 1 words of a training text, then near-misses
    of neighbouring texts until count, those the reference finds absent."""
    tw = [w for w in map(words, texts) if len(w) >= n - 1]
    pairs = list(zip(tw, tw[1:]))
    items: list[tuple[str, bool]] = []
    while len(items) < count // 2:
        w = rng.choice(tw)
        k = rng.randint(ContaminationIndex.SHORT_MIN, n - 1)
        i = rng.randint(0, len(w) - k)
        items.append((" ".join(w[i:i + k]), True))
    while len(items) < count:
        miss = " ".join(near_miss(*rng.choice(pairs), rng, rng.randint(ContaminationIndex.SHORT_MIN, n - 1)))
        if not reference(lines, miss):
            items.append((miss, False))
    return items


def per_item_us(check, items: list[str], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for q in items:
            check(q)
        best = min(best, time.perf_counter() - t0)
    return best / len(items) * 1e6


def seal_peak_mb(texts: list[str], n: int) -> tuple[float, float]:
    """(seconds, peak MB) of sorting the word windows alone: the index's transient memory on top of what it keeps."""
    windows = _WordWindows(n - 1)
    for t in texts:
        windows.add(words(t))
    tracemalloc.start()
    t0 = time.perf_counter()
    windows.seal()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="copies of the built-in training sets (200: 160,000)")
    ap.add_argument("--distinct", action="store_true", help="no two copies share a word")
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--n", type=int, default=heldout.NGRAM)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    texts = corpus(a.repeat, a.distinct)
    t0 = time.perf_counter()
    index = ContaminationIndex(texts, a.n)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lines = joined_lines(texts)
    lines_s = time.perf_counter() - t0
    seal_s, seal_mb = seal_peak_mb(texts, a.n)

    items = short_items(texts, a.n, a.items, lines, random.Random(a.seed))
    wrong = [(q, p) for q, p in items if index.overlap(q) != float(p)]
    present = [q for q, p in items if p]
    absent = [q for q, p in items if not p]
    full = max(texts, key=lambda t: len(words(t)))

    rows = []
    for label, qs in ((f"short items, present ({len(present)})", present), (f"short items, absent ({len(absent)})", absent),
                      (f"short items, all ({len(items)})", [q for q, _ in items])):
        new, old = per_item_us(index.overlap, qs), per_item_us(lambda q: reference(lines, q), qs)
        rows.append((label, new, old))
    full_us = per_item_us(index.overlap, [full] * 200)

    windows = index._windows
    vocab_mb = (sys.getsizeof(windows.vocab) + sum(sys.getsizeof(w) for w in windows.vocab)) / 1e6
    print(f"\ncorpus: {len(texts):,} texts ({len(texts) // a.repeat:,} built-in × {a.repeat}{', distinct' if a.distinct else ''}), {len(lines) / 1e6:.1f} MB of words "
          f"joined; n = {a.n}")
    print(f"\n{'µs per item':34} {'index':>10} {'linear search':>14} {'linear ÷ index':>15}")
    for label, new, old in rows:
        print(f"{label:34} {new:10.1f} {old:14.1f} {old / new:14.1f}×")
    print(f"{f'full-length item ({len(words(full))} words, n-grams)':34} {full_us:10.1f}")
    print(f"\n{'build / memory':34} {'value':>10}")
    print(f"{'ContaminationIndex build, s':34} {build_s:10.2f}")
    print(f"{'  of which sorting windows, s':34} {seal_s:10.2f}")
    print(f"{'joined lines (old index) build, s':34} {lines_s:10.2f}")
    print(f"{'distinct word windows':34} {len(windows.cols[0]):10,}")
    print(f"{'windows kept, MB':34} {windows.nbytes / 1e6:10.2f}")
    print(f"{'vocabulary kept, MB':34} {vocab_mb:10.2f}")
    print(f"{'sorting windows, peak MB':34} {seal_mb:10.1f}")
    print(f"{'joined lines (old index), MB':34} {len(lines.encode()) / 1e6:10.1f}")
    print(f"\nindex and linear search agree on {len(items) - len(wrong)} of {len(items)} items")
    if wrong:
        for q, p in wrong[:10]:
            print(f"  DISAGREE: {q!r}: linear search {p}, index {index.overlap(q)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
