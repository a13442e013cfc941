"""Merge methods as tensor functions, registered by name: mergekit 0.1.5's definitions, op for op.

linear and SLERP compute in float32 and round once (mergekit's linear.py, slerp.py). Task arithmetic, TIES and DARE
(mergekit's GeneralizedTaskArithmeticMerge) compute in the merge's dtype, as mergekit does with `dtype:` set to it:
the deltas, the weights and the sums are rounded to that dtype at the same steps, so a bf16 merge takes the same
top-k and sign decisions as mergekit and gives the same bits. Every step is elementwise once a tensor's statistics
are known (the top-k threshold, the rescale factor, the SLERP angle), so the streaming executor
(backend/merge/executor.py) applies these functions to one chunk at a time; called on a whole tensor they are the
reference definitions the tests use.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

DOT_THRESHOLD = 0.9995  # mergekit slerp: |cos| above this interpolates linearly (the angle is numerically unsafe)
SLERP_EPS = 1e-8  # mergekit slerp: a norm at or below this counts as 1
RESCALE_EPS = 1e-7  # mergekit sparsify.rescaled_masked_tensor: no rescale when either L1 norm is below this


def linear(tensors: list[torch.Tensor], *, weights: list[float], normalize: bool = True,
           out: torch.Tensor | None = None, **_) -> torch.Tensor:
    """SOLAR's Average(a, b) = mergekit's linear: Σ wᵢ·xᵢ in float32, divided by Σ wᵢ with normalize. `out`: a
    float32 buffer of the same size to reuse."""
    w = torch.tensor(weights, dtype=torch.float32)
    out = torch.zeros_like(tensors[0], dtype=torch.float32) if out is None else out.zero_()
    for x, c in zip(tensors, w.unbind(0)):
        out.addcmul_(x, c)
    if normalize:
        out.div_(w.sum())
    return out


def slerp_cos(dot: float, na2: float, nb2: float) -> float:
    """The cosine SLERP takes its angle from, from ⟨a,b⟩, |a|², |b|² of the whole tensors as flat vectors, as
    mergekit computes it: float32, norms ≤ 1e-8 count as 1, clamped to [-1, 1]. The executor accumulates the three
    products over chunks in float64, and counts the tensors nearly_parallel (interpolated linearly)."""
    f32 = torch.float32
    na = torch.tensor(math.sqrt(na2), dtype=f32)
    nb = torch.tensor(math.sqrt(nb2), dtype=f32)
    na = torch.where(na > SLERP_EPS, na, 1)
    nb = torch.where(nb > SLERP_EPS, nb, 1)
    return float(torch.tensor(dot / (float(na) * float(nb)), dtype=f32).clamp(-1, 1))


def nearly_parallel(cos: float) -> bool:
    """mergekit's SLERP interpolates linearly past this: the angle is too small for sin(θ) to divide by."""
    return abs(cos) > DOT_THRESHOLD


def slerp_weights(cos: float, t: float) -> tuple[float, float]:
    """(c0, c1) with slerp(a, b) = c0·a + c1·b for tensors at angle acos(cos) (Shoemake, 1985). As mergekit:
    nearly parallel tensors are interpolated linearly, and the coefficients are float32."""
    t32 = torch.tensor(t, dtype=torch.float32)
    if nearly_parallel(cos):
        return float(1 - t32), float(t32)
    theta = torch.acos(torch.tensor(cos, dtype=torch.float32))
    s = torch.sin(theta)
    return float(torch.sin((1 - t32) * theta) / s), float(torch.sin(t32 * theta) / s)


def slerp_coefficients(dot: float, na2: float, nb2: float, t: float) -> tuple[float, float]:
    """(c0, c1) from ⟨a,b⟩, |a|², |b|² of the whole tensors: slerp_weights at their slerp_cos."""
    return slerp_weights(slerp_cos(dot, na2, nb2), t)


def slerp_combine(a: torch.Tensor, b: torch.Tensor, c0: float, c1: float) -> torch.Tensor:
    """c0·a + c1·b in float32: the same three roundings as mergekit."""
    return a.float() * c0 + b.float() * c1


def slerp(tensors: list[torch.Tensor], *, t: float, **_) -> torch.Tensor:
    """SLERP of two whole tensors."""
    a, b = tensors
    a64, b64 = a.flatten().double(), b.flatten().double()
    c0, c1 = slerp_coefficients((a64 @ b64).item(), (a64 @ a64).item(), (b64 @ b64).item(), t)
    return slerp_combine(a, b, c0, c1)


# ---- generalized task arithmetic: task_arithmetic, TIES, DARE ---------------------------------------------------

@dataclass(frozen=True)
class TaskArithmetic:
    """One method of mergekit's GeneralizedTaskArithmeticMerge: base + λ·Σ wᵢ·sparsify(mᵢ − base), with an optional
    sign election (TIES' "sum" consensus). Its defaults for normalize and rescale: MERGE_DEFAULTS (backend/specs.py)."""

    consensus: bool
    sparsify: str | None  # "magnitude": keep the top-k by |delta| (TIES); "random": keep each with p = density


def magnitude_bits(delta: torch.Tensor) -> torch.Tensor:
    """|delta| as integers that sort like the magnitudes (the IEEE bit pattern without its sign)."""
    if delta.dtype == torch.float32:
        return delta.view(torch.int32) & 0x7FFFFFFF
    return delta.view(torch.int16) & 0x7FFF  # bfloat16 and float16


def top_k_cuts(passes: Callable[[], Iterable[list[torch.Tensor]]], k: int, wide: bool) -> list[tuple[int, int]]:
    """Per task vector, (threshold, take) such that its k largest magnitudes are every bit pattern above `threshold`
    plus the first `take` equal to it, in index order. `passes()` yields, chunk by chunk, a list with the
    magnitude_bits of each task vector; a 16-bit dtype needs one pass (a histogram of every value), float32 two
    (high halves, then the low halves of the entries in the threshold's bin). Memory: the histograms only.

    mergekit ranks with torch.argsort, which is not stable: entries equal to the threshold are kept in an order only
    a full sort of the tensor reproduces. Here they are kept lowest index first: the same count, the same values."""

    def cut(hist: torch.Tensor, need: int) -> tuple[int, int]:
        above = hist.flip(0).cumsum(0).flip(0)  # above[v] = entries >= v
        v = int((above >= need).nonzero().max())
        return v, need - (int(above[v + 1]) if v + 1 < len(hist) else 0)

    def histograms(of: Callable[[torch.Tensor, int], torch.Tensor], size: int) -> list[torch.Tensor]:
        hists: list[torch.Tensor] | None = None
        for bits in passes():
            counts = [torch.bincount(of(b.reshape(-1), i), minlength=size) for i, b in enumerate(bits)]
            hists = counts if hists is None else [h + c for h, c in zip(hists, counts)]
        return hists

    if not wide:
        return [cut(h, k) for h in histograms(lambda b, i: b, 1 << 15)]
    high = [cut(h, k) for h in histograms(lambda b, i: b >> 16, 1 << 15)]
    low = histograms(lambda b, i: b[(b >> 16) == high[i][0]] & 0xFFFF, 1 << 16)
    out = []
    for (hi, need), h in zip(high, low):
        lo, take = cut(h, need)
        out.append(((hi << 16) | lo, take))
    return out


class TopK:
    """The keep mask of one task vector's top-k, chunk by chunk in index order (ties at the threshold: lowest index
    first, a running count)."""

    def __init__(self, threshold: int, take: int):
        self.threshold, self.left = threshold, take

    def __call__(self, bits: torch.Tensor) -> torch.Tensor:
        keep = bits > self.threshold
        if self.left > 0:
            eq = bits == self.threshold
            count = int(eq.sum())
            if count > self.left:  # the last chunk with kept ties: only the first `left` of them
                eq &= eq.cumsum(0) <= self.left
                count = self.left
            self.left -= count
            keep |= eq
        return keep


def random_keep(key: tuple[int, str, int], start: int, stop: int, density: float) -> torch.Tensor:
    """DARE's Bernoulli(density) keep mask for elements [start, stop) of one task vector. Counter-based: element i
    always gets the same draw (PCG64 of (seed, tensor, model) advanced to i), so the mask does not depend on how
    the tensor is chunked, and the same seed gives the same model. 16-bit draws: density is kept to ±2⁻¹⁷."""
    seed, name, model = key
    first = start // 4  # one 64-bit draw = four 16-bit uniforms
    bg = np.random.PCG64([seed, zlib.crc32(name.encode()), model])
    bg.advance(first)
    draws = bg.random_raw(-(-stop // 4) - first).view(np.uint16)[start - 4 * first:stop - 4 * first]
    return torch.from_numpy(draws < min(65536, round(density * 65536)))


def rescale_factor(l1_all: float, l1_kept: float, work: torch.dtype) -> torch.Tensor | None:
    """mergekit's rescale (sparsify.rescaled_masked_tensor, L1): ‖delta‖₁ / ‖kept‖₁ in the working dtype, or None
    when either norm is below 1e-7."""
    before, after = torch.tensor(l1_all, dtype=work), torch.tensor(l1_kept, dtype=work)
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return None
    return before / after


def _sum_rounded(parts: Iterable[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Σ parts accumulated in float32 and rounded once to like.dtype: what torch's sum(dim=0) of a stacked bf16 or
    float16 tensor computes (float32 accumulator), without building the stack or its mixed-dtype temporaries."""
    acc = torch.zeros(like.shape, dtype=torch.float32)
    for p in parts:
        acc.add_(p)
    return acc.to(like.dtype)


def combine(deltas: torch.Tensor, base: torch.Tensor, weights: torch.Tensor, *, consensus: bool, normalize: bool,
            lam: float) -> torch.Tensor:
    """mergekit's merge_group after sparsification, on stacked deltas [n, …] in the compute dtype (changed in
    place), weights [n] in the compute dtype: the same values rounded at the same steps, with cheaper ops."""
    w = [float(x) for x in weights]
    for d, wi in zip(deltas, w):
        d.mul_(wi)  # mergekit: deltas.mul_(weights), rounded to the compute dtype
    if consensus:
        # TIES sign election: the sign of the weighted sum, 0 counting as + (mergekit's `(sum >= 0) * 2 - 1`);
        # an entry joins when its sign agrees (a dropped entry, sign 0, never does). Float32 ops only (bf16 and
        # bool ops are several times slower on CPUs): with s = ±1 the majority, p = max(d·s, 0) is |d| where d
        # agrees and 0 elsewhere, so p·s is the entry that joins and sign(p) whether it does — exactly.
        total = torch.zeros(deltas.shape[1:], dtype=torch.float32)
        for d in deltas:
            total.add_(d)
        s = torch.sign(total).masked_fill_(total == 0, 1)
        acc = total.zero_()
        divisor = torch.zeros_like(acc)
        for d, wi in zip(deltas, w):
            p = torch.mul(d, s).clamp_(min=0)
            divisor.add_(torch.sign(p), alpha=wi)
            acc.addcmul_(p, s)
        mixed = acc.to(deltas.dtype)
        divisor = divisor.to(deltas.dtype).masked_fill_(divisor == 0, 1)
    else:
        mixed = _sum_rounded(deltas, deltas[0])
        divisor = weights.sum(dim=0)
        if divisor.abs() < 1e-8:
            divisor = torch.ones((), dtype=deltas.dtype)
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return (base + mixed).to(base.dtype)


def task_arithmetic_merge(tensors: list[torch.Tensor], *, base: torch.Tensor, weights: list[float],
                          method: TaskArithmetic, normalize: bool, rescale: bool, density: float = 1.0,
                          lam: float = 1.0, key: tuple[int, str] = (0, ""), **_) -> torch.Tensor:
    """The whole-tensor form of what the executor streams (the tests' reference). Computes in base.dtype."""
    deltas = torch.stack([(t.to(base.dtype) - base).reshape(-1) for t in tensors])
    numel = deltas.shape[1]
    k = max(1, int(density * numel))
    if method.sparsify and density < 1:
        work = base.dtype if method.sparsify == "magnitude" or base.dtype == torch.bfloat16 else torch.float32
        for i, d in enumerate(deltas):
            if method.sparsify == "magnitude":
                bits = magnitude_bits(d)
                keep = TopK(*top_k_cuts(lambda: [[bits]], k, d.dtype == torch.float32)[0])(bits) if k < numel else \
                    torch.ones(numel, dtype=torch.bool)
            else:
                keep = random_keep((key[0], key[1], i), 0, numel, density)
            kept = d.to(work).masked_fill(~keep, 0)
            factor = rescale_factor(d.to(work).abs().double().sum().item(), kept.abs().double().sum().item(), work) \
                if rescale else None
            deltas[i] = (kept * factor if factor is not None else kept).to(base.dtype)
    out = combine(deltas, base.reshape(-1), torch.tensor(weights, dtype=base.dtype), consensus=method.consensus,
                  normalize=normalize, lam=lam)
    return out.view_as(base)


METHODS: dict[str, object] = {
    "average": linear,  # mergekit: linear
    "slerp": slerp,
    "task_arithmetic": TaskArithmetic(consensus=False, sparsify=None),
    "ties": TaskArithmetic(consensus=True, sparsify="magnitude"),
    "dare_linear": TaskArithmetic(consensus=False, sparsify="random"),
    "dare_ties": TaskArithmetic(consensus=True, sparsify="random"),
}
