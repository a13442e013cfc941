"""SOLAR's depth up-scaling (arXiv 2312.15166, section 2): copy A keeps layers [0, n-m), copy B keeps [m, n),
stacked into s = 2·(n-m) layers. SOLAR: n=32, m=8 -> 48 layers (10.7B from a 7B base)."""

from __future__ import annotations

from backend.upscale.plan import Slot


def valid_m(n: int) -> range:
    """m must remove at least one layer and leave a deeper model: 2·(n-m) > n  <=>  m < n/2."""
    return range(1, (n + 1) // 2)


def suggested_m(n: int) -> int | None:
    """SOLAR removes a quarter of the layers from each copy (8 of 32): the valid m nearest n/4, the larger on a tie.
    The Build page's default, the slices method's starting stack and `recipe new --base B`'s m. None when no m is
    valid (n < 3)."""
    valid = list(valid_m(n))
    return min(valid, key=lambda m: (abs(m - n / 4), -m)) if valid else None


def plan(n: int, *, m: int) -> list[Slot]:
    ok = valid_m(n)
    if m not in ok:
        if len(ok) == 0:
            raise ValueError(f"m={m}: a {n}-layer model is too shallow for DUS (needs at least 3 layers).")
        raise ValueError(f"m={m} is out of range for a {n}-layer model: choose 1 <= m <= {ok[-1]} "
                         f"(s = 2·(n-m) must exceed n={n}).")
    copy_a = [Slot(0, i) for i in range(0, n - m)]
    copy_b = [Slot(0, i) for i in range(m, n)]
    return copy_a + copy_b
