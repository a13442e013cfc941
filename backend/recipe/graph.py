"""The recipe graph (Graphviz DOT) of a plan or a run: its stages coloured by status, the data sets they read, and
the outside models they read (a registered model or a folder named as a merge's candidate or a stage's model). The
graph drew edges only between stages (a stage's `deps`), so a merge of a recipe's SFT model with a registered one
looked made from the one candidate.

    graph_dot(with_outside_models(rows))   # rows: the plan's nodes, or a run's stage rows, as dicts
"""

from __future__ import annotations

from backend.recipe.tables import source_label


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


COLOURS = {"succeeded": "#9be39b", "reuse": "#c9e7f7", "given": "#e8e8e8", "running": "#ffd966",
           "queued": "#f2f2f2", "failed": "#f4a3a3", "cancelled": "#d9b3ff", "interrupted": "#f9cb9c",
           "run": "#f2f2f2", "in-flight": "#ffd966", "not queued": "#ffffff"}


def graph_dot(stages: list[dict], with_data: bool = True) -> str:
    """Graphviz DOT: models/jobs as boxes coloured by status, data sets (with their fingerprints) as notes. A data
    set read alike by every stage shows its fingerprint once, in its note; only one read differently (another
    fingerprint) labels its edges: eight edges out of alpaca-mini, each labelled with the same hash, overlapped."""
    def q(s: str) -> str:
        return '"' + str(s).replace('"', r'\"') + '"'

    prints: dict[str, set[str]] = {}
    for s in stages if with_data else []:
        for src, fp in (s.get("data") or {}).items():
            prints.setdefault(src, set()).add(str(fp)[:8])

    lines = ["digraph recipe {", "rankdir=LR;", 'node [shape=box, style="rounded,filled", fontsize=10];']
    for s in stages:
        status = s.get("status", "")
        status = "reuse" if status != "given" and (s.get("reused") or status == "reuse") else status
        label = f"{s['stage']}\\n{s['kind']} · {status}" + (f"\\n{s['label']}" if s.get("label") else "")
        lines.append(f"{q(s['stage'])} [label={q(label)}, fillcolor={q(COLOURS.get(status, '#ffffff'))}, "
                     f"tooltip={q(s.get('output', ''))}];")
        for d in s.get("deps") or []:
            lines.append(f"{q(d)} -> {q(s['stage'])};")
        if with_data:
            for src, fp in (s.get("data") or {}).items():
                node, alike = f"data:{src}", len(prints[src]) == 1
                label = source_label(src) + (f"\\n{str(fp)[:8]}" if alike else "")
                lines.append(f"{q(node)} [shape=note, fillcolor=\"#fff8dc\", label={q(label)}, "
                             f"tooltip={q('fingerprint ' + str(fp)[:12])}];")
                edge = "" if alike else f", label={q(str(fp)[:8])}, fontsize=8"
                lines.append(f"{q(node)} -> {q(s['stage'])} [style=dashed{edge}];")
    if sinks := [q(s["stage"]) for s in stages if s.get("sink")]:
        lines.append(f"{{rank=sink; {'; '.join(sinks)};}}")
    lines.append("}")
    return "\n".join(lines)


def evaluation_nodes(evals: list[dict]) -> list[dict]:
    """The run's evaluation (state.evaluations) as graph boxes: its job's status and how many models it scored of
    how many ("job 19 · 5 of 18 models scored"), so the graph is not all green while the evaluation runs. No edges:
    it reads every model, and an edge from each would cross the whole graph; `sink` puts it last."""
    return [{"stage": e["name"], "kind": "eval", "status": e["status"], "deps": [], "sink": True,
             "label": e["detail"]} for e in evals]


def run_graph(run_id: int) -> str:
    from backend.recipe.state import NOT_QUEUED, evaluations, read_pass, stage_state, stages

    def status(r, job) -> str:  # a stage a cut-off Run never queued reads "not queued", not "run" (to be run)
        return "not queued" if stage_state(r, job) == NOT_QUEUED else (
            job.status if (job and not r.reused) else r.info.get("status", ""))

    with read_pass():  # the models and the evaluation's scores once, not per stage (state.read_pass)
        pairs = stages(run_id)
        rows = [{"stage": r.stage, "kind": r.kind, "output": r.output, "reused": r.reused, "status": status(r, job),
                 **{k: v for k, v in r.info.items() if k != "status"}} for r, job in pairs if r.kind != "eval"]
        evals = evaluations(pairs)
    # a registered model merged in: a box of its own, as in the plan
    return graph_dot(with_outside_models(rows) + evaluation_nodes(evals))
