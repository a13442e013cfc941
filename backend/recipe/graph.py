"""The recipe graph's boxes: its stages, and the outside models they read (a registered model or a folder named
as a merge's candidate or a stage's model). The graph drew edges only between stages (a stage's `deps`), so a
merge of a recipe's SFT model with a registered one looked made from the one candidate.

    tables.graph_dot(with_outside_models(rows))   # rows: the plan's nodes, or a run's stage rows, as dicts
"""

from __future__ import annotations


def with_outside_models(stages: list[dict]) -> list[dict]:
    """`stages` (dicts with stage, deps and from: the models it was made from) with a box, status "given", for every
    outside model a stage was made from, and an edge from it; the stages' dicts are copied, not changed."""
    names = {s["stage"] for s in stages}
    outside: list[str] = []
    out = []
    for s in stages:
        refs = [r for r in s.get("from") or [] if r not in names]
        outside += [r for r in refs if r not in outside]
        out.append({**s, "deps": list(s.get("deps") or []) + refs} if refs else s)
    return [{"stage": r, "kind": "model", "status": "given", "deps": [], "output": r} for r in outside] + out
