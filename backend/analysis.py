"""Length and hallucination statistics over stored generations: is a lower hallucination rate only shorter
answers? Pure functions on (model, words, correct, hallucination) records; the compare page plots them."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Record:
    model: str
    words: int
    correct: bool
    hallucination: bool


def bin_edges(records: list[Record], n_bins: int = 4) -> list[float]:
    """Quantile edges of answer length over all models pooled, so every model is cut at the same lengths."""
    words = np.array([r.words for r in records], dtype=float)
    edges = np.unique(np.quantile(words, np.linspace(0, 1, n_bins + 1)))
    return edges.tolist() if len(edges) > 1 else [float(words.min()), float(words.max()) + 1]


def bin_of(words: int, edges: list[float]) -> int:
    return int(min(np.searchsorted(edges, words, side="right") - 1, len(edges) - 2)) if len(edges) > 1 else 0


def by_length_bin(records: list[Record], n_bins: int = 4) -> list[dict]:
    """Per model and length bin: count, accuracy, hallucination rate."""
    edges = bin_edges(records, n_bins)
    cells: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        cells.setdefault((r.model, bin_of(r.words, edges)), []).append(r)
    return [{"model": m, "bin": b, "range": f"{edges[b]:.0f}–{edges[b + 1]:.0f} words", "n": len(rs),
             "accuracy": sum(r.correct for r in rs) / len(rs),
             "hallucination_rate": sum(r.hallucination for r in rs) / len(rs)}
            for (m, b), rs in sorted(cells.items())]


def _stratified_diff(a: list[Record], b: list[Record], edges: list[float]) -> float | None:
    """Hallucination rate A − B within each length bin, averaged with the pooled bin sizes as weights (direct
    standardisation); bins where either model has no answers are left out."""
    num = den = 0.0
    for k in range(len(edges) - 1):
        ra = [r for r in a if bin_of(r.words, edges) == k]
        rb = [r for r in b if bin_of(r.words, edges) == k]
        if not ra or not rb:
            continue
        w = len(ra) + len(rb)
        num += w * (sum(r.hallucination for r in ra) / len(ra) - sum(r.hallucination for r in rb) / len(rb))
        den += w
    return num / den if den else None


def length_controlled(records: list[Record], model_a: str, model_b: str, n_bins: int = 4, boots: int = 1000,
                      seed: int = 0) -> dict:
    """Raw and length-stratified difference in hallucination rate (A − B) with 95% bootstrap intervals, and each
    model's mean answer length. If the raw gap shrinks to ~0 once length is controlled, length explains it."""
    a = [r for r in records if r.model == model_a]
    b = [r for r in records if r.model == model_b]
    if not a or not b:
        raise ValueError("both models need generations on this task.")
    edges = bin_edges(a + b, n_bins)
    raw = lambda xa, xb: sum(r.hallucination for r in xa) / len(xa) - sum(r.hallucination for r in xb) / len(xb)  # noqa
    rng = random.Random(seed)
    raw_s, strat_s = [], []
    for _ in range(boots):
        xa, xb = rng.choices(a, k=len(a)), rng.choices(b, k=len(b))
        raw_s.append(raw(xa, xb))
        d = _stratified_diff(xa, xb, edges)
        if d is not None:
            strat_s.append(d)
    ci = lambda xs: (float(np.percentile(xs, 2.5)), float(np.percentile(xs, 97.5))) if xs else (None, None)  # noqa
    return {"model_a": model_a, "model_b": model_b, "n_a": len(a), "n_b": len(b),
            "mean_words_a": float(np.mean([r.words for r in a])), "mean_words_b": float(np.mean([r.words for r in b])),
            "raw_diff": raw(a, b), "raw_ci": ci(raw_s),
            "length_controlled_diff": _stratified_diff(a, b, edges), "length_controlled_ci": ci(strat_s),
            "bins": len(edges) - 1}
