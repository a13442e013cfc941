"""The Compare page's closed-book QA table (qa_rows) and the rule both it and the Recipe page's tables share with
the Models × tasks table (scoretable._task_cells): a hallucination rate of a model that mostly never answered —
its replies cut off by the token limit or empty — is left blank, not a 0 that reads as the best score."""

from __future__ import annotations

from backend.scoretable import QA_METRICS, too_few_answers, value


def qa_rows(latest: dict, clean: bool = False) -> list[dict]:
    """Per model, QA task and item kind: accuracy, abstention, hallucination (wrong ÷ all), cut-off and empty
    shares, precision."""
    out: dict[tuple[str, str, str], dict] = {}
    for (model, task, metric), r in latest.items():
        if not task.startswith("qa"):
            continue
        base, _, kind = metric.partition("[")
        kind = kind.rstrip("]") or "all"
        if base in QA_METRICS:
            v = value(r, metric, clean)
            out.setdefault((model, task, kind), {"model": model, "task": task, "item kind": kind})[base] = (
                round(v, 4) if v is not None else None)
    for row in out.values():  # as _task_cells: "0" read as the best rate for a model that never answered
        if too_few_answers(row.get("cut_off_rate"), row.get("empty_rate")):
            row["hallucination_rate"] = None
    order = {"all": 0, "answerable": 1, "unanswerable": 2, "math": 3}
    return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1], order.get(k[2], 9)))]


def mostly_unanswered(latest: dict, model: str, task: str, metric: str) -> bool:
    """Whether `metric` is a hallucination rate (of all items or one kind, "hallucination_rate[math]") of a model
    whose replies on that task (that kind) were mostly cut off or empty (too_few_answers): a rate to leave blank."""
    base, bracket, kind = metric.partition("[")
    if base != "hallucination_rate":
        return False
    rows = (latest.get((model, task, f"{m}{bracket}{kind}")) for m in ("cut_off_rate", "empty_rate"))
    return too_few_answers(*(r.value if r is not None else None for r in rows))
