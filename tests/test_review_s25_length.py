"""The Compare page's answer-length section and its task names after session 25: replies cut off by the token limit
left out of the accuracy-by-length points (the warning above said they were left out, the chart drew them as
accuracy 0 at the cap's length); two models with the same points told apart (one line hid the other); a task read
from a file named by its stem wherever the page names it (bar titles were cut off inside the path); the overlap note
names the models it checked instead of "any model's" beside models it could not check."""

from __future__ import annotations

import json

import pytest

from backend import analysis, registry, scorenotes, scoretable, tablenotes, tasknames
from backend.analysis import Record
from pages import figure_scores
from storage import db
from storage.models import EvalScore, Generation
from tests.test_pages import app

TASK = "gsm8k:/data/benchmarks/math/2026/gsm8k_test_sample_v2.jsonl"


def rec(model: str, i: int, verdict: str, tokens: int) -> Record:
    return Record(model=model, words=max(1, tokens // 2), correct=verdict == "correct",
                  hallucination=verdict == "wrong", prompt_id=str(i), tokens=tokens, verdict=verdict,
                  answered=verdict in ("correct", "wrong"))


# ---- 1. cut-off replies: out of the accuracy-by-length points --------------------------------------------------------

def test_accuracy_by_length_leaves_cut_off_replies_out_and_counts_them():
    recs = [rec("base", i, "correct" if i % 2 else "wrong", 5 + i) for i in range(6)]
    recs += [rec("base", 6 + i, "cut off", 64) for i in range(4)]  # at the cap: were accuracy 0 in the longest bin
    recs += [rec("solar", i, "correct", 5 + i) for i in range(10)]
    rows = analysis.by_length_bin(recs, 2, "tokens")
    # the bins are over the stated answers (5–14 tokens): no bin reaches the cap of 64, where base's 4 cut-off
    # replies made a bin of accuracy 0 ("long answers are wrong")
    assert [(r["model"], r["range"], r["n"], r["accuracy"]) for r in rows] == [
        ("base", "5–8 tokens", 4, 0.5), ("base", "9–14 tokens", 2, 0.5),
        ("solar", "5–8 tokens", 4, 1.0), ("solar", "9–14 tokens", 6, 1.0)]
    assert sum(r["n"] for r in rows if r["model"] == "base") == 6
    kept, cut = analysis.stated(recs)  # what the page's caption counts
    assert cut == {"base": 4} and len(kept) == 16 and all(r.verdict != "cut off" for r in kept)
    assert analysis.by_length_bin([rec("up", i, "cut off", 48) for i in range(3)], 2, "tokens") == []
    # an empty reply stays in, at length 0 (the page says so)
    assert analysis.by_length_bin([rec("e", 0, "empty", 0), rec("e", 1, "correct", 4)], 2, "tokens")[0]["n"] == 1


def gen(model: str, task: str, verdicts: list[tuple[str, int]], value: float, overlap: dict | None = None) -> None:
    with db.session() as s:
        for i, (verdict, tokens) in enumerate(verdicts):
            s.add(Generation(model=model, task=task, prompt_id=str(i), prompt="q", reference="4",
                             output="x " * tokens, tokens=tokens, words=tokens,
                             answered=verdict in ("correct", "wrong"),
                             correct=verdict == "correct", hallucination=verdict == "wrong", verdict=verdict,
                             truncated=verdict == "cut off", run="r1", item_kind="math"))
        s.add(EvalScore(model=model, task=task, metric="accuracy", value=value, n=len(verdicts), run="r1",
                        details={"overlap": overlap} if overlap else {}))
        s.commit()


def chart(at, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)


def test_the_compare_page_draws_cut_off_replies_nowhere_on_accuracy_and_names_coinciding_models(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    # base: 12 answers, then 8 replies cut off at the cap (64); b and c gave the same answers
    base = [("correct" if i % 3 else "wrong", 4 + 3 * i) for i in range(12)] + [("cut off", 64)] * 8
    same = [("correct" if i % 2 else "wrong", 5 + 2 * i) for i in range(18)] + [("cut off", 64)] * 2
    gen("base", TASK, base, 0.4)
    gen("b", TASK, same, 0.45)
    gen("c", TASK, same, 0.45)
    at = app("compare.py")
    assert not at.exception, at.exception
    acc = chart(at, "bin_acc")
    lines = {t["name"]: t for t in acc["data"]}
    # no point of base's at the cap, and its points count its 12 stated answers only (were 20, 8 of them at 0)
    assert sum(int(n.removeprefix("n=")) for n in lines["base"]["text"]) == 12
    assert sum(int(n.removeprefix("n=")) for n in lines["b"]["text"]) == 18
    assert not any("64" in x for t in acc["data"] for x in t["x"])
    captions = " ".join(c.value for c in at.caption)
    assert ("Left out: the replies cut off by the token limit before an answer (b 2, base 8, c 2): they stated none, "
            "so they are neither right nor wrong at any length.") in captions
    assert "Replies cut off by the token limit are drawn at the length they ran to." in captions  # the boxes
    assert any("the accuracy by length at the bottom leaves them out" in w.value for w in at.warning)
    # b and c: one line on the other, told apart by symbol and dash, and named
    assert len({lines[m]["marker"]["symbol"] for m in ("base", "b", "c")}) == 3
    assert lines["b"]["line"].get("dash", "solid") == "solid" and lines["c"]["line"]["dash"] == "dash"
    assert "Same points, drawn on top of each other: b and c" in captions
    # the task by its file's stem in the task list, the table, the bar's title and the notes; the path said once
    assert at.selectbox(key="gen_task").options == ["gsm8k:gsm8k_test_sample_v2"]
    assert "gsm8k:gsm8k_test_sample_v2 is " + TASK + "." in captions
    table = next(d.value for d in at.dataframe if "average (accuracy tasks)" in d.value.columns)
    assert "gsm8k:gsm8k_test_sample_v2 (accuracy)" in table.columns and not [c for c in table.columns if "/" in c]
    bar = chart(at, "bar_" + TASK)
    assert bar["layout"]["title"]["text"].startswith("gsm8k:gsm8k_test_sample_v2 (accuracy)<br>")
    assert TASK in bar["data"][0]["hovertemplate"]
    assert ("Tasks named by their file: gsm8k:gsm8k_test_sample_v2 is " + TASK + ".") in captions
    assert "Items per task: gsm8k:gsm8k_test_sample_v2 20" in captions or "n = 20 items per task." in captions
    # the export keeps the whole path
    rows = scoretable.table_rows(scoretable.latest_scores(), {})
    assert f"{TASK} (accuracy)" in scoretable.export_table(rows).columns


def test_a_model_cut_off_on_every_reply_has_no_accuracy_line_and_the_caption_says_why(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    gen("up", "qa", [("cut off", 48)] * 10, 0.0)
    gen("talk", "qa", [("correct" if i % 2 else "wrong", 6 + i) for i in range(10)], 0.5)
    at = app("compare.py")
    acc = chart(at, "bin_acc")
    assert [t["name"] for t in acc["data"]] == ["talk"]  # "up" was a line at accuracy 0 in the 12–48 tokens bin
    assert next(t for t in chart(at, "len_box")["data"] if t["name"] == "up")["median"] == [48]
    captions = " ".join(c.value for c in at.caption)
    assert "up: no line, every reply cut off." in captions


# ---- 2. coinciding series in the figures -----------------------------------------------------------------------------

def test_coinciding_groups_and_the_figures_tell_models_apart():
    assert figure_scores.coinciding({"a": [(0, 0.5)], "b": [(0, 0.5)], "c": [(0, 0.6)], "d": []}) == [["a", "b"]]
    assert figure_scores.coinciding({"a": [(0, 1 / 3)], "b": [(0, 0.3333333)]}) == [["a", "b"]]  # 3 digits
    assert figure_scores.coincide_note([]) == ""
    assert figure_scores.coincide_note([["a", "b", "c"]]).startswith("Same points, drawn on top of each other: a, b "
                                                                      "and c")
    rows = [{"model": m, "bin": b, "range": f"{b} tokens", "n": 3, "accuracy": 0.5} for m in "xyz" for b in (0, 1)]
    fig = figure_scores.by_bin_figure(rows, "accuracy", models=["x", "y", "z"])
    assert [t.marker.symbol for t in fig.data] == ["circle-open", "square-open", "diamond-open"]
    assert [t.line.dash for t in fig.data] == ["solid", "dash", "dot"]
    assert figure_scores.bin_coincide_note(rows, "accuracy").startswith("Same points, drawn on top of each other: "
                                                                        "x, y and z")
    curves = {"observed": [{"model": m, "tokens": 5.0, "rate": 0.2, "n": 4} for m in "ab"],
              "fitted": [{"model": m, "tokens": t, "rate": 0.1 * t} for m in "ab" for t in (1.0, 2.0)]}
    fig = figure_scores.hallucination_length_figure(curves, models=["a", "b"])
    fits = [t for t in fig.data if t.mode == "lines"]
    assert [t.line.dash for t in fits] == ["solid", "dash"]
    assert len({t.marker.symbol for t in fig.data if t.mode == "markers"}) == 2
    assert figure_scores.curves_coincide_note(curves).startswith("Same points, drawn on top of each other: a and b")


def test_a_bar_chart_names_the_whiskers_on_its_second_line_and_the_whole_task_on_hover():
    fig = figure_scores.bar_figure([{"model": "a", "value": 0.25, "metric": "accuracy", "stderr": 0.1, "n": 20}],
                                   "mc:arc (acc)", source="mc:/d/arc.jsonl (acc)")
    assert fig.layout.title.text == "mc:arc (acc)<br><sup>higher is better; whiskers: 95 % interval</sup>"
    assert "mc:/d/arc.jsonl (acc)" in fig.data[0].hovertemplate


# ---- 3. a task read from a file: by its stem -------------------------------------------------------------------------

def test_task_labels_name_a_file_task_by_its_stem_and_keep_names_apart():
    labels = tasknames.task_labels([
        "qa", "synth-math", "lm-eval:arc_easy", "perplexity", "perplexity:builtin:facts-corpus",
        "perplexity:owner/name",
        "mc:/data/bench/arc_challenge.jsonl", "qa:/x/v1/facts.jsonl", "qa:/x/v2/facts.jsonl", "gsm8k:/t/g.jsonl.gz",
        "mc:/a/same.json", "mc:/a/same.jsonl", "qa:rel/q.jsonl"])
    assert labels == {
        "qa": "qa", "synth-math": "synth-math", "lm-eval:arc_easy": "lm-eval:arc_easy", "perplexity": "perplexity",
        "perplexity:builtin:facts-corpus": "perplexity:builtin:facts-corpus",
        "perplexity:owner/name": "perplexity:owner/name",  # a Hub data set, as named
        "mc:/data/bench/arc_challenge.jsonl": "mc:arc_challenge",
        "qa:/x/v1/facts.jsonl": "qa:v1/facts", "qa:/x/v2/facts.jsonl": "qa:v2/facts",  # one folder tells them apart
        "gsm8k:/t/g.jsonl.gz": "gsm8k:g",
        "mc:/a/same.json": "mc:same.json", "mc:/a/same.jsonl": "mc:same.jsonl",  # only the suffix differs
        "qa:rel/q.jsonl": "qa:q"}
    assert len(set(labels.values())) == len(labels)
    short = tasknames.task_labels(["mc:/d/arc.jsonl", "qa"])
    assert tasknames.relabel("mc:/d/arc.jsonl (acc) ±; mc:/d/arc.jsonl. mc:/d/arc.jsonl.gz, qa", short) == (
        "mc:arc (acc) ±; mc:arc. mc:/d/arc.jsonl.gz, qa")  # a longer path that starts alike is another file
    assert tasknames.files_note(short) == "Tasks named by their file: mc:arc is mc:/d/arc.jsonl."
    assert tasknames.files_note({"qa": "qa"}) == ""
    notes = scorenotes.table_notes({}, [], labels=short)
    assert [n.text for n in notes] == ["Tasks named by their file: mc:arc is mc:/d/arc.jsonl."]


# ---- 4. the overlap note claims only what was checked ----------------------------------------------------------------

def test_the_overlap_note_names_the_models_checked_and_those_that_could_not_be():
    checked = {"items_over": 0, "share_over": 0.0, "against": ["builtin:alpaca-mini"], "unchecked": {}}
    blind = {**checked, "against": []}
    for model, over in (("sft-a", checked), ("sft-b", checked), ("base-c", blind), ("base-d", blind)):
        gen(model, "synth-math", [("correct", 5)] * 10, 1.0, over)
        gen(model, "qa", [("correct", 5)] * 10, 1.0, over)
    note = tablenotes.overlap_note(scoretable.headline(scoretable.latest_scores()))
    assert note == ("Training overlap (8-gram; an item under 8 words counts when it appears whole) — qa, synth-math: "
                    "no item overlaps the recorded training data of sft-a, sft-b (✓, so no column); base-c, base-d "
                    "could not be checked: no training data of their lineage is recorded here (a base model's "
                    "pretraining data is not known).")
    assert "any model's" not in note


@pytest.mark.parametrize("path", ["pages/compare.py", "pages/compare_length.py", "pages/figure_scores.py",
                                  "backend/tasknames.py", "backend/answerstats.py", "backend/tablenotes.py"])
def test_the_files_changed_stay_under_500_lines(path):
    from pathlib import Path

    assert len((Path(__file__).resolve().parent.parent / path).read_text().splitlines()) < 500
