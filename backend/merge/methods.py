"""Merge methods as pure tensor functions, registered by name (one entry each, mergekit's layout in small).

Each method takes the candidates' tensors (float32, same shape), its parameters, and the base's tensor where the
method is relative to a base; it returns the merged tensor. The streaming executor (backend/merge/__init__.py)
calls them one tensor at a time, so memory stays flat.
"""

from __future__ import annotations

import math

import torch


def average(tensors: list[torch.Tensor], *, weights: list[float], normalize: bool = True, **_) -> torch.Tensor:
    """SOLAR's Average(a, b): the weighted mean; with normalize, the weights are divided by their sum."""
    total = sum(weights) if normalize else 1.0
    if normalize and total == 0:
        raise ValueError("average: the weights sum to zero.")
    out = tensors[0] * (weights[0] / total)
    for w, t in zip(weights[1:], tensors[1:]):
        out.add_(t, alpha=w / total)
    return out


def slerp_coefficients(dot: float, na2: float, nb2: float, t: float) -> tuple[float, float]:
    """(c0, c1) with slerp(a, b) = c0·a + c1·b, from ⟨a,b⟩, |a|², |b|²: spherical interpolation (Shoemake,
    1985) between the tensors as flat vectors, linear when they are (anti)parallel and the angle is undefined.
    The streaming executor accumulates the three products over chunks and calls this once per tensor."""
    na, nb = math.sqrt(na2), math.sqrt(nb2)
    if na < 1e-12 or nb < 1e-12:
        return 1 - t, t
    cos = max(-1.0, min(1.0, dot / (na * nb)))
    if abs(cos) > 1 - 1e-6:
        return 1 - t, t
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s


def slerp(tensors: list[torch.Tensor], *, t: float, **_) -> torch.Tensor:
    """SLERP of two whole tensors (float64 products)."""
    a, b = tensors
    a64, b64 = a.flatten().double(), b.flatten().double()
    c0, c1 = slerp_coefficients((a64 @ b64).item(), (a64 @ a64).item(), (b64 @ b64).item(), t)
    return (c0 * a.double() + c1 * b.double()).to(a.dtype)


def task_arithmetic(tensors: list[torch.Tensor], *, base: torch.Tensor, weights: list[float], **_) -> torch.Tensor:
    """base + Σ wᵢ (candidateᵢ − base) (Ilharco et al., 2023)."""
    out = base.clone()
    for w, t in zip(weights, tensors):
        out.add_(t - base, alpha=w)
    return out


def ties(tensors: list[torch.Tensor], *, base: torch.Tensor, weights: list[float], density: float = 0.5,
         **_) -> torch.Tensor:
    """TIES-merging (Yadav et al., 2023): keep each task vector's top-`density` entries by magnitude, elect a sign
    per entry by total mass, and average the entries that agree with it."""
    deltas = []
    for w, t in zip(weights, tensors):
        d = (t - base).flatten()
        k = max(1, int(density * d.numel()))
        if k < d.numel():
            threshold = d.abs().kthvalue(d.numel() - k + 1).values
            d = torch.where(d.abs() >= threshold, d, torch.zeros_like(d))
        deltas.append(d * w)
    stacked = torch.stack(deltas)
    sign = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    summed = (stacked * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return base + (summed / count).view_as(base)


def dare(tensors: list[torch.Tensor], *, base: torch.Tensor, weights: list[float], density: float = 0.5,
         seed: int = 0, **_) -> torch.Tensor:
    """DARE (Yu et al., 2023): drop each task-vector entry with probability 1 − density, rescale the survivors by
    1 / density, then add the weighted task vectors to the base. Seeded, so a merge is reproducible."""
    g = torch.Generator().manual_seed(seed)
    out = base.clone()
    for w, t in zip(weights, tensors):
        keep = torch.rand(t.shape, generator=g) < density
        out.add_((t - base) * keep / density, alpha=w)
    return out


METHODS = {"average": average, "slerp": slerp, "task_arithmetic": task_arithmetic, "ties": ties, "dare": dare}
