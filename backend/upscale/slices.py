"""Arbitrary stacks of half-open layer ranges [start, end) from one or two source models (mergekit's
"passthrough" slices). DUS is the special case [(0, n-m), (m, n)]."""

from __future__ import annotations

from backend.upscale.plan import Slot


def plan(layer_counts: list[int], *, slices: list[tuple[int, int, int]]) -> list[Slot]:
    """`slices`: (source index, start, end) with end exclusive; `layer_counts[k]` is source k's depth."""
    if not slices:
        raise ValueError("slices: give at least one half-open layer range [start, end).")
    out: list[Slot] = []
    for src, start, end in slices:
        if not 0 <= src < len(layer_counts):
            raise ValueError(f"slices: source {src} does not exist (there are {len(layer_counts)} source models).")
        n = layer_counts[src]
        if not (0 <= start < end <= n):
            raise ValueError(f"slices: range [{start}, {end}) is out of range for source {src} with {n} layers; "
                             f"ranges are half-open, so valid values are 0 <= start < end <= {n}.")
        out += [Slot(src, i) for i in range(start, end)]
    return out
