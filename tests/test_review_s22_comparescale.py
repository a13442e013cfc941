"""The Compare page and `scores` at scale (walk 22b, 114 models): the notes under the table count their models past
scorenotes.MANY and keep every name in an expander / `scores --verbose` (a 0 ± 0 note of 5,568 characters, a
blanked-hallucination note of 10,270); the charts draw the picked models (by default the newest model's lineage), and
a legend of many lines no longer squeezes its plot to a strip."""

from __future__ import annotations

import json

from backend import registry, scorenotes, scoretable, tablenotes
from backend.__main__ import main as cli
from pages.compare_pick import CHART_MODELS, chart_defaults
from pages.figure_scores import by_bin_figure
from storage import db
from storage.models import EvalScore, ModelRecord
from tests.test_pages import app

MODELS = [f"tiny-{i}" for i in range(50)]


def cut_off_models(names: list[str], n: int = 4) -> None:
    """qa scores of models that never finished a reply: accuracy 0 of n (0 ± 0), every reply cut off (the
    hallucination cell blanked)."""
    with db.session() as s:
        for m in names:
            for metric, v in (("accuracy", 0.0), ("hallucination_rate", 0.0), ("cut_off_rate", 1.0),
                              ("empty_rate", 0.0)):
                s.add(EvalScore(model=m, task="qa", metric=metric, value=v, n=n, run="r1"))
        s.commit()


def register(names: list[str], parents: dict[str, list[str]] | None = None, path: str = "/nowhere") -> None:
    """Registry rows (at `path`: a real model folder where the page resolves them), oldest first."""
    with db.session() as s:
        for m in names:
            s.add(ModelRecord(name=m, path=path, kind="upscaled", num_layers=4,
                              parents=(parents or {}).get(m, [])))
        s.commit()


def notes_of(names: list[str]) -> tuple[dict, list[dict], list[scorenotes.Note]]:
    latest = scoretable.latest_scores()
    rows = scoretable.table_rows(latest, {r.name: r for r in registry.list_models()})
    return latest, rows, scorenotes.table_notes(latest, rows)


def test_a_note_of_50_models_is_short_says_how_many_and_keeps_every_name_in_full():
    cut_off_models(MODELS)
    latest, rows, notes = notes_of(MODELS)
    zero = next(n for n in notes if n.text.startswith("0 ± 0"))
    blank = next(n for n in notes if n.text.startswith("Hallucination left blank"))
    assert len(zero.text) < 600 and len(blank.text) < 600, (len(zero.text), len(blank.text))
    assert "qa (accuracy) for 50 models, 0 of 4 items: 95 % interval 0–0.75" in zero.text
    assert blank.text.startswith("Hallucination left blank for 50 models: qa (100% cut off) for 50 models. Over 50%")
    # the full notes are the table's own, every model named
    assert [n.full for n in (zero, blank)] == [scoretable.zero_error_note(latest, rows),
                                               scoretable.cut_off_note(latest)]
    assert all(f"qa for {m} (100% cut off)" in blank.full and f"{m}," in zero.full + "," for m in MODELS)
    assert len(blank.full) > 1500  # what the page showed before


def test_a_note_of_3_models_reads_as_before():
    cut_off_models(MODELS[:3])
    latest, rows, notes = notes_of(MODELS[:3])
    assert [n.text for n in notes] == scoretable.table_notes(latest, rows)
    assert all(n.full == "" for n in notes)
    assert any("qa for tiny-0 (100% cut off), qa for tiny-1 (100% cut off)" in n.text for n in notes)


def test_groups_of_unlike_models_and_counted_name_runs():
    cut_off_models(MODELS[:12])  # 12 cut off at 4 items, 12 more at 20 items: two groups, each counted
    cut_off_models(MODELS[12:24], n=20)
    _, _, notes = notes_of(MODELS[:24])
    zero = next(n for n in notes if n.text.startswith("0 ± 0"))
    assert ("for 12 models, 0 of 4 items: 95 % interval 0–0.75; qa (accuracy) for 12 models, 0 of 20 items"
            in zero.text)
    # a run of names counted; "tiny-1" is not the start of "tiny-10"; a run of MANY or fewer is kept
    names = [f"tiny-{i}" for i in range(1, 13)]
    assert scorenotes.count_names("left out: qa (no score for " + ", ".join(names) + ").", names) == \
        "left out: qa (no score for 12 models)."
    assert scorenotes.count_names("for tiny-1, tiny-10.", names) == "for tiny-1, tiny-10."
    assert scorenotes.shares_text({m: 1.0 for m in names} | {"x": 0.4, "y": 0.0}) == "100% for 12 models, 40% for x"
    assert scorenotes.shares_text({"a": 1.0, "b": 0.0, "c": 0.25}) == "a 100%, c 25%"


def test_scores_prints_the_short_notes_and_verbose_names_every_model(capsys):
    cut_off_models(MODELS)
    register(MODELS)
    assert cli(["scores"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert max(map(len, notes)) < 600 and notes[-1] == ("note: the notes count models past 10; --verbose names "
                                                        "every one.")
    assert cli(["scores", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert all(f"qa for {m} (100% cut off)" in out for m in MODELS) and "--verbose names" not in out


def test_the_charts_default_to_the_newest_models_lineage():
    order = [f"m{i}" for i in range(20)]
    made_from = {"m19": {"m0", "m5", "m12"}, "m18": set()}
    assert chart_defaults(order, made_from, "m19") == ["m0", "m5", "m12", "m19"]
    assert chart_defaults(order, made_from, "m18") == order[:CHART_MODELS]  # no scored ancestor: the first ones
    long_line = {"m19": set(order[:19])}
    assert chart_defaults(order, long_line, "m19") == order[-CHART_MODELS:]  # the nearest CHART_MODELS
    assert chart_defaults(order[:10], made_from, "m9") == order[:10]  # a few: all of them


def test_a_legend_of_many_lines_goes_under_the_plot_or_gives_way_to_hover():
    rows = lambda k: [dict(model=f"tiny-llama-3-dus-m2-{i}", bin=0, range="0–8", n=4, accuracy=0.5)  # noqa: E731
                      for i in range(k)]
    few = by_bin_figure(rows(16), "accuracy")
    assert few.layout.legend.orientation == "v" and few.layout.legend.x == 1.02
    some = by_bin_figure(rows(20), "accuracy")  # at the right it took 3/4 of a half-page column
    assert some.layout.legend.orientation == "h" and some.layout.legend.yanchor == "top"
    assert some.layout.height - some.layout.margin.b - some.layout.margin.t == 220  # the plot keeps its height
    many = by_bin_figure(rows(30), "accuracy")  # past 24 colours a colour names no line
    assert many.layout.showlegend is False and many.layout.height == 340
    assert "hover a line" in many.layout.annotations[0].text


def bar_names(at) -> list[str]:
    """The models of the page's first bar chart (upright bars name them on x, lying ones on y)."""
    bars = json.loads(next(c for c in at.get("plotly_chart") if "bar_" in c.proto.id).proto.spec)["data"][0]
    return bars["y"] if bars.get("orientation") == "h" else bars["x"]


def test_the_compare_page_with_50_models_counts_them_and_charts_the_picked(tiny_llama):
    cut_off_models(MODELS)
    register(MODELS, {m: [MODELS[0]] for m in MODELS[-1:]}, str(tiny_llama))
    at = app("compare.py")
    notes = next(c.value for c in at.caption if "Hallucination left blank" in c.value)
    assert len(notes) < 2000 and "for 50 models" in notes and "tiny-7" not in notes
    full = next(e for e in at.expander if e.label.startswith("The notes with every model named"))
    assert all(f"qa for {m} (100% cut off)" in full.caption[0].value for m in MODELS)
    assert at.multiselect(key="chart_models").value == [MODELS[0], MODELS[-1]]  # the newest model's lineage
    assert bar_names(at) == [MODELS[0], MODELS[-1]]
    at.toggle(key="chart_all").set_value(True).run()
    assert bar_names(at) == MODELS
    assert len(at.dataframe[0].value) == 50  # the models × tasks table shows every model throughout


def test_the_groups_past_five_count_only_models_not_named_above(monkeypatch):
    """A model sits in one group per task: "and 12 more models in 2 other groups" counted the models the groups shown
    had named already (review s22b)."""
    first = [f"a{i}" for i in range(12)]
    cells = {(f"task{k} (accuracy)", 0.0, 4 + k): [f"g{k}-{i}" for i in range(11)] for k in range(5)}
    cells[("late (accuracy)", 0.0, 40)] = first[:3]  # the first groups' models again: no more models
    cells[("first (accuracy)", 0.0, 50)] = first  # 12 models: shown first
    monkeypatch.setattr(tablenotes, "zero_error_cells",  # where scorenotes looks it up
                        lambda latest, rows, clean=False: cells)
    said = scorenotes.zero_error_summary({}, [])
    assert said.startswith(scoretable.ZERO_ERROR_WHY + "first (accuracy) for 12 models, 0 of 50 items")
    assert said.endswith("; and 2 other groups of 11 more models (the full note names them).")
    del cells[("task4 (accuracy)", 0.0, 8)]
    cells[("late2 (accuracy)", 0.0, 41)] = first[:2]
    assert scorenotes.zero_error_summary({}, []).endswith(
        "; and 2 other groups of the models above (the full note names them).")
    del cells[("late2 (accuracy)", 0.0, 41)]
    assert scorenotes.zero_error_summary({}, []).endswith(
        "; and 1 other group of the models above (the full note names them).")
