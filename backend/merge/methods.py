"""Merge methods as pure tensor functions, registered by name (one entry each, mergekit's layout in small).

Each method takes the candidates' tensors (float32, same shape), its parameters, and the base's tensor where the
method is relative to a base; it returns the merged tensor. The streaming executor (backend/merge/__init__.py)
calls them one tensor at a time, so memory stays flat.
"""

from __future__ import annotations

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


def slerp(tensors: list[torch.Tensor], *, t: float, eps: float = 1e-8, **_) -> torch.Tensor:
    """Spherical interpolation (Shoemake, 1985) between two tensors treated as flat vectors; falls back to linear
    interpolation when they are (anti)parallel, where the angle is undefined."""
    a, b = tensors
    a64, b64 = a.flatten().double(), b.flatten().double()
    na, nb = a64.norm(), b64.norm()
    if na < eps or nb < eps:
        return torch.lerp(a, b, t)
    dot = torch.clamp((a64 / na) @ (b64 / nb), -1.0, 1.0)
    if abs(dot.item()) > 1 - 1e-6:  # colinear: linear interpolation is the same path
        return torch.lerp(a, b, t)
    theta = torch.arccos(dot)
    s = torch.sin(theta)
    c0, c1 = (torch.sin((1 - t) * theta) / s).item(), (torch.sin(t * theta) / s).item()
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
