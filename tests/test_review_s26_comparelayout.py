"""The Compare page with several merges: each merge's view (its scores beside its candidates') was drawn open, one under
another, between the score tables and the charts, so the bars, the radar and the answer-length plots sat below every
merge's block (9,600 px down with many merges). Now the views come last, each in an expander headed by the merge's name
and method, collapsed when there are several; every view, its table (key merge_view_NAME) and its notes are still
drawn."""

from __future__ import annotations

from sqlmodel import select

from storage import db
from storage.models import EvalScore, ModelRecord
from tests.test_pages import app


def _workspace(path: str, merges: int) -> list[str]:
    """Two candidates and `merges` averages of them, all scored on perplexity and qa; returns the merges' names."""
    names = [f"m-{i}" for i in range(merges)]
    with db.session() as s:
        for name in ("a", "b"):
            s.add(ModelRecord(name=name, path=path, kind="base", num_layers=4))
        for i, name in enumerate(names):
            s.add(ModelRecord(name=name, path=path, kind="merged", num_layers=4, parents=["a", "b"],
                              recipe={"method": "average", "weights": [0.1 * (i + 1), 1 - 0.1 * (i + 1)]}))
        for i, m in enumerate(["a", "b"] + names):
            s.add(EvalScore(model=m, task="perplexity", metric="perplexity", value=20.0 + i, stderr=0.5, n=10, run="r"))
            s.add(EvalScore(model=m, task="qa", metric="accuracy", value=0.4 + 0.01 * i, stderr=0.1, n=10, run="r"))
        s.commit()
    return names


def _walk(node):
    """The page's elements and blocks in the order they are drawn."""
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def _layout(at) -> tuple[list, list[str]]:
    """The main area's nodes in order, and their kinds ("chart", "merge", "merge_table", "table")."""
    nodes = list(_walk(at.main))
    kinds = []
    for n in nodes:
        if n.type == "plotly_chart":
            kinds.append("chart")
        elif n.type == "expander" and n.label.startswith("**m-"):
            kinds.append("merge")
        else:
            kinds.append(n.type)
    return nodes, kinds


def test_the_charts_come_before_the_merge_views_which_are_collapsed(tiny_llama):
    names = _workspace(str(tiny_llama), 3)
    at = app("compare.py")
    nodes, kinds = _layout(at)
    merges = [n for n, k in zip(nodes, kinds) if k == "merge"]
    # one expander a merge, headed by its name and method, collapsed: three open views pushed the charts down
    assert [m.label for m in merges] == [f"**{n}** — average weights=[{w:g}, {1 - w:g}]"
                                        for n, w in zip(names, (0.1, 0.2, 0.3))]
    assert [m.proto.expanded for m in merges] == [False, False, False]
    # every bar chart above the first merge view (was: the views sat between the table and the charts)
    charts = [i for i, k in enumerate(kinds) if k == "chart"]
    assert len(charts) >= 2 and max(charts) < kinds.index("merge")
    # nothing lost: each expander holds its merge's table, the merge beside both candidates, and nothing else's
    for name, m in zip(names, merges):
        (table,) = [n for n in _walk(m) if n.type == "dataframe"]
        assert list(table.value["model"]) == ["a", "b", name]
    headers = [n.value for n in nodes if n.type == "subheader"]
    assert headers.index("Merge candidates") == len(headers) - 1  # the last section of the page


def test_one_merge_is_drawn_open_and_its_notes_stay_in_its_view(tiny_llama):
    (name,) = _workspace(str(tiny_llama), 1)
    with db.session() as s:  # a third candidate never scored: named under the view, inside the expander
        merge = s.exec(select(ModelRecord).where(ModelRecord.name == name)).one()
        merge.parents = ["a", "b", "c"]
        s.add(ModelRecord(name="c", path=str(tiny_llama), kind="base", num_layers=4))
        s.add(merge)
        s.commit()
    at = app("compare.py")
    nodes, kinds = _layout(at)
    (view,) = [n for n, k in zip(nodes, kinds) if k == "merge"]
    assert view.proto.expanded  # a single merge costs one table's height: open
    assert "Not in this table: `c`, no scores yet (Evaluate above)." in [n.value for n in _walk(view)
                                                                          if n.type == "caption"]
    assert max(i for i, k in enumerate(kinds) if k == "chart") < kinds.index("merge")
