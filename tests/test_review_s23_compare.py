"""The Compare page past scorenotes.MANY models (walk 23a, an 18-model recipe run): Model A and Model B of "Answer
length and hallucination" offered only the models of the charts' pick (the newest model's lineage, 8 at most), so
the base and the Average merges could not be chosen and nothing said why; a charted model with no score on the
radar's tasks had no line, and a task none of the picked models is scored on had no bar chart, both without a word."""

from __future__ import annotations

import json

from pages.compare_pick import answer_pair, no_chart_note, no_radar_note
from storage import db
from storage.models import EvalScore, Generation, ModelRecord
from tests.test_pages import app

CHAIN = [f"c{i}" for i in range(11)]  # c0 → c1 → … → c10: the newest model's lineage is 11 long, the pick 8
WRONG = {"c0": 6, "side": 4, "c10": 2}  # of 20 qa items: hallucination rates 0.30, 0.20, 0.10


def scenario(path: str) -> None:
    """12 scored models (a picker), the chain plus `side`, made from c0 and not in the newest model's lineage.
    qa: every model but c3, which has only a perplexity; synth-math and mc:quiz (the radar's third task): c9, c10;
    mc:trivia: side alone. Answers on qa: c0, side and c10 (20 items, every answer 5 tokens)."""
    names = ["c0", "side"] + CHAIN[1:]  # registered oldest first: c10 is the newest
    parents = {"side": ["c0"]} | {m: [CHAIN[i]] for i, m in enumerate(CHAIN[1:])}
    with db.session() as s:
        for m in names:
            s.add(ModelRecord(name=m, path=path, kind="upscaled", num_layers=4, parents=parents.get(m, [])))
        scores = [(m, "qa", "accuracy", 0.5) for m in names if m != "c3"] + [("c3", "perplexity", "perplexity", 9.0)]
        scores += [(m, t, "accuracy", 0.4) for m in ("c9", "c10") for t in ("synth-math", "mc:quiz")]
        scores += [("side", "mc:trivia", "accuracy", 0.7)]
        s.add_all(EvalScore(model=m, task=t, metric=k, value=v, n=20, run="r1") for m, t, k, v in scores)
        for m, wrong in WRONG.items():
            for i in range(20):
                v = "wrong" if i < wrong else "correct"
                s.add(Generation(model=m, task="qa", prompt_id=str(i), prompt="q", reference="r", output="x", tokens=5,
                                 words=5, answered=True, correct=v == "correct", hallucination=v == "wrong", verdict=v,
                                 item_kind="answerable"))
        s.commit()


def test_model_a_and_b_offer_every_model_with_answers_and_default_to_base_against_newest(tiny_llama):
    scenario(str(tiny_llama))
    at = app("compare.py")
    assert "c0" not in at.multiselect(key="chart_models").value  # the charts' pick leaves the base out
    a, b = at.selectbox(key="lc_a"), at.selectbox(key="lc_b")
    assert a.options == b.options == ["c0", "side", "c10"]  # every model with answers, in lineage order
    assert (a.value, b.value) == ("c0", "c10")  # the newest model against its lineage's root
    said = lambda: next(m.value for m in at.markdown if "A − B" in m.value)  # noqa: E731
    assert said().startswith("Hallucination rate A − B: raw **+0.200**")
    a.set_value("side").run()  # a model neither in the pick nor in the newest model's lineage
    assert not at.exception, at.exception
    assert said().startswith("Hallucination rate A − B: raw **+0.100**")
    hall = json.loads(next(c for c in at.get("plotly_chart") if "hall_length" in c.proto.id).proto.spec)
    assert {t["name"].split(" (")[0] for t in hall["data"]} == {"side", "c10"}


def test_a_missing_radar_line_and_a_missing_bar_chart_are_said(tiny_llama):
    scenario(str(tiny_llama))
    at = app("compare.py")
    assert at.multiselect(key="chart_models").value == CHAIN[3:]
    bars = {c.proto.id.split("bar_")[1] for c in at.get("plotly_chart") if "bar_" in c.proto.id}
    assert "mc:trivia (accuracy)" not in bars and "radar" in {c.proto.id[-5:] for c in at.get("plotly_chart")}
    captions = [c.value for c in at.caption]
    assert ("No chart for mc:trivia (accuracy): none of the charted models is scored on it (side is: add it to "
            "Models in the charts).") in captions
    assert "No line on the radar for c3: not scored on any of its tasks." in captions
    at.multiselect(key="chart_models").set_value(CHAIN[3:] + ["side"]).run()  # picked: its chart is back
    assert not any(c.value.startswith("No chart for") for c in at.caption)
    assert any("bar_mc:trivia (accuracy)" in c.proto.id for c in at.get("plotly_chart"))


def test_the_default_pair_and_the_notes_without_a_page():
    order = ["base", "up", "sft", "other", "merge"]
    made_from = {"merge": {"sft", "up", "base"}, "other": set()}
    assert answer_pair(order, made_from, "merge") == ("base", "merge")
    assert answer_pair(order[1:], made_from, "merge") == ("up", "merge")  # no answers of the base: the oldest one
    assert answer_pair(order, made_from, "other") == ("base", "up")  # no ancestor with answers: the first two
    assert answer_pair(order, made_from, None) == ("base", "up")
    rows = lambda *ms: [{"model": m} for m in ms]  # noqa: E731
    every = {"a (accuracy)": rows("x"), "b (accuracy)": rows("x", "y"), "c (accuracy)": rows("z")}
    assert no_chart_note(every, {"c (accuracy)": rows("z")}) == (
        "No chart for a (accuracy), b (accuracy): none of the charted models is scored on them (x, y are: add one "
        "to Models in the charts).")
    assert no_chart_note(every, every) == ""
    many = {f"t{i} (accuracy)": rows(f"m{i}") for i in range(5)}
    assert no_chart_note(many, {}).startswith("No chart for 5 of the tasks: none of the charted models is scored "
                                              "on them (5 of the other models are")
    radar = {"a": {"qa": 0.5}, "b": {"qa": 0.4}}
    assert no_radar_note(radar, ["a", "b"]) == ""
    assert no_radar_note(radar, ["a", "c", "d"], scored={"d"}) == (
        "No line on the radar for c: not scored on any of its tasks.")  # d: no clean score, said under the charts
    assert no_radar_note(radar, ["a", "c", "d", "e", "f"]) == (
        "No line on the radar for 4 of the charted models: not scored on any of its tasks.")
