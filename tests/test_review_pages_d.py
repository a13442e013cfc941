"""Defects a user's walk through the Merge & compare page found (pages/compare.py, backend/analysis.py,
backend/scoretable.py): the answer-length section ignored the chosen outcome, long merge names hid every score,
the regression blamed "a model that never errs" for a question kind, the accuracy-by-length chart mixed models
scored on different items, and a second merge hid the first one's job — each pinned by a test that fails without
its fix."""

from __future__ import annotations

import hashlib
import json

import pytest

from backend import analysis, registry, runner, scoretable
from backend.analysis import Record
from storage import db
from storage.models import EvalScore, Generation
from tests.test_pages import app

LONG = "smollm2-360m-instruct-dus-m8-cpt-sft-v4-dpo-v2-from-the-long-run-of-december"  # 76 characters


def add_generations(rows: list[tuple[str, int, str, int, str]], task: str = "qa") -> None:
    """Generation rows (model, item, verdict, words, kind), with an EvalScore per model so the page gets to them."""
    with db.session() as s:
        for model, i, verdict, words, kind in rows:
            s.add(Generation(model=model, task=task, prompt_id=str(i), prompt="q", reference="r", output="x",
                             tokens=words, words=words, answered=verdict != "abstained",
                             correct=verdict == "correct", hallucination=verdict == "wrong", verdict=verdict,
                             item_kind=kind))
        for model in sorted({r[0] for r in rows}):
            s.add(EvalScore(model=model, task=task, metric="accuracy", value=0.5, n=20))
        s.commit()


def chart(at, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. every number and label of the answer-length section follows the chosen outcome -------------------------

def verdicts_ab() -> list[tuple[str, int, str, int, str]]:
    """20 items, every answer 5 words: A is wrong on 6 and abstains on 6, B is wrong on 2 and abstains on 2. So the
    hallucination rates are 0.30 and 0.10 (gap +0.200), the not-correct rates 0.60 and 0.20 (gap +0.400)."""
    def verdict(i: int, wrong: int) -> str:
        return "wrong" if i < wrong else "abstained" if i < 2 * wrong else "correct"
    return [(m, i, verdict(i, w), 5, "answerable") for i in range(20) for m, w in (("A", 6), ("B", 2))]


def test_length_check_and_curves_follow_the_outcome():
    recs = [Record(m, 5, v == "correct", v == "wrong", prompt_id=str(i), tokens=5, verdict=v)
            for m, i, v, _, _ in verdicts_ab()]
    for outcome, gap, rate_a in (("hallucination", 0.2, 0.3), ("correct", 0.4, 0.6)):
        strat = analysis.length_controlled(recs, "A", "B", n_bins=3, boots=50, outcome=outcome)
        assert strat["raw_diff"] == pytest.approx(gap) and strat["length_controlled_diff"] == pytest.approx(gap)
        curves = analysis.length_curves(recs, ["A", "B"], n_bins=3, outcome=outcome)
        assert [(p["model"], p["n"], p["rate"]) for p in curves["observed"]] == [
            ("A", 20, pytest.approx(rate_a)), ("B", 20, pytest.approx(rate_a / 3))]


def test_compare_page_labels_and_numbers_follow_the_outcome(tiny):
    add_generations(verdicts_ab())
    at = app("compare.py")
    at.selectbox(key="lc_b").set_value("B").run()
    texts = lambda: [m.value for m in at.markdown if "A − B" in m.value]  # noqa: E731
    (hall,) = texts()
    assert hall.startswith("Hallucination rate A − B: raw **+0.200**") and "hallucination rate gap **+0.200**" in hall
    assert chart(at, "hall_length")["layout"]["title"]["text"] == "Hallucination rate against answer length"
    at.radio(key="lc_outcome").set_value("correct").run()
    assert not at.exception, at.exception
    (corr,) = texts()
    assert corr.startswith("Not-correct rate A − B: raw **+0.400**") and "not-correct rate gap **+0.400**" in corr
    assert "hallucination" not in corr.lower()
    fig = chart(at, "hall_length")
    assert fig["layout"]["title"]["text"] == "Not-correct rate against answer length"
    assert fig["layout"]["yaxis"]["title"]["text"] == "not-correct rate"
    assert sorted(y for t in fig["data"] for y in t["y"]) == pytest.approx([0.2, 0.6])  # the observed rates


# ---- 2. scores right after the model's name, which stays pinned -----------------------------------------------

def test_scores_come_before_the_lineage_and_the_name_is_pinned(tiny, tiny_llama):
    """With 82-character merge names only model / kind / layers / made from showed at 1400 px: no score."""
    registry.import_folder(tiny_llama, f"{LONG}-merged")
    with db.session() as s:
        s.add(EvalScore(model="tiny", task="synth-math", metric="accuracy", value=0.25, n=4))
        s.add(EvalScore(model="tiny", task="perplexity", metric="perplexity", value=300.0, n=100))
        s.add(EvalScore(model=f"{LONG}-merged", task="synth-math", metric="accuracy", value=0.5, n=4))
        s.commit()
    rows = scoretable.table_rows(scoretable.latest_scores(), {r.name: r for r in registry.list_models()})
    row = next(r for r in rows if r["model"] == "tiny")
    assert list(row) == ["model", "average (accuracy tasks)", "perplexity", "synth-math (accuracy)",
                         "synth-math (accuracy) ±", "kind", "layers", "made from"]
    assert list(row.values()) == ["tiny", 0.25, 300.0, 0.25, 0.25, "base", 6, "—"]
    at = app("compare.py")
    table = at.dataframe[0]  # the models × tasks table
    assert list(table.value.columns)[:3] == ["model", "average (accuracy tasks)", "perplexity"]
    # cut in the middle; in the order of their making (review s21: lineage order), no longer by name
    assert list(table.value["model"]) == ["tiny", f"{LONG[:27]}…{LONG[-21:]}-merged"]
    config = json.loads(table.proto.columns)
    assert config["model"]["pinned"] is True and config["model"]["width"] == 400  # the longest name fills it (name_width)


# ---- 3. what separates, in plain words; too few items per task is said beforehand ------------------------------

def qa_like() -> list[Record]:
    """30 items as the built-in qa set: 10 answerable, 10 unanswerable, 10 math. Both models hallucinate on every
    unanswerable item; elsewhere each is right on some and wrong on others."""
    recs = []
    for i in range(30):
        kind = ("answerable", "unanswerable", "math")[i // 10]
        for m, step in (("A", 2), ("B", 3)):
            wrong = kind == "unanswerable" or i % step == 0
            recs.append(Record(m, 5 + i % 7, not wrong, wrong, prompt_id=str(i), tokens=5 + i % 7, kind=kind,
                               verdict="wrong" if wrong else "correct"))
    return recs


def test_separation_names_the_group_and_its_outcome():
    # a question kind with one outcome (every unanswerable item hallucinated by both) is left out of the fit, not
    # the whole model (tests/test_review_s18_claims.py); a model with one outcome is still named
    res = analysis.compare(qa_like(), "A", "B")
    assert "adjusted" in res and res["model"]["notes"] == [
        "unanswerable items left out of the fit: every answer to them is a hallucination, whatever the model or "
        "length (they count in the effects with a gap of 0)"]
    assert "never errs" not in res["sentence"]
    sep = [Record(m, 10 + i, m == "B", m == "A", prompt_id=str(i), tokens=10 + i) for i in range(30) for m in "AB"]
    assert analysis.compare(sep, "A", "B", outcome="correct")["length_message"] == (
        "(without length) perfect separation: none of the 30 answers of A is correct; all 30 answers of B are "
        "correct, so no finite effect exists for those groups; read the raw rates")


def test_items_per_task_below_what_the_comparison_needs_is_warned(tiny):
    at = app("compare.py")
    warned = lambda: [w.value for w in at.warning if "items per task" in w.value]  # noqa: E731
    assert warned() == []  # the default, 20
    at.number_input(key="eval_limit").set_value(6).run()
    (w,) = warned()
    assert w.startswith(f"6 items per task: the answer-length comparison at the foot of this page needs at least "
                        f"{analysis.MIN_ITEMS} items")
    at.number_input(key="eval_limit").set_value(analysis.MIN_ITEMS).run()
    assert warned() == []


# ---- 4. accuracy by length on the same items, with n on every point --------------------------------------------

def test_accuracy_by_length_uses_the_shared_items_and_shows_n(tiny):
    rows = [("A", i, "correct" if i % 2 else "wrong", 3 + i, "math") for i in range(20)]
    rows += [("B", i, "correct", 3 + i, "math") for i in range(6)]  # B was scored on 6 of A's 20 items
    add_generations(rows, task="synth-math")
    at = app("compare.py")
    fig = chart(at, "bin_acc")
    n = {t["name"]: sum(int(x.removeprefix("n=")) for x in t["text"]) for t in fig["data"]}
    assert n == {"A": 6, "B": 6}
    assert all("text" in t["mode"] for t in fig["data"])
    assert any(c.value == "The models were scored on different numbers of items (A 20, B 6): the chart uses only "
                          "the 6 items every one of them answered; n = answers in the bin." for c in at.caption)


# ---- 5. every merge job stays on the page; default names short and distinct -----------------------------------

def test_every_merge_launched_shows_its_job(tiny, tokenizer_dir, tmp_path):
    from tests.conftest import make_llama

    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5), "tiny-b")
    at = app("compare.py")
    at.button(key="merge").click().run()
    at.selectbox(key="merge_method").set_value("slerp").run()
    at.button(key="merge").click().run()
    assert not at.exception, at.exception
    jobs = sorted(j.id for j in runner.list_jobs())
    assert len(jobs) == 2
    shown = " ".join(str(getattr(e, "value", "")) + str(getattr(e.proto, "text", "")) for e in at.get("progress"))
    assert all(f"Job {j} (merge): queued" in shown for j in jobs), shown


def test_default_merge_names_are_short_and_differ_by_method(tiny_llama):
    registry.import_folder(tiny_llama, LONG)
    registry.import_folder(tiny_llama, f"{LONG}-cpt")
    at = app("compare.py")
    at.multiselect(key="merge_models").set_value([LONG, f"{LONG}-cpt"]).run()
    names = {}
    for method in ("average", "slerp", "ties"):
        at.selectbox(key="merge_method").set_value(method).run()
        box = next(t for t in at.text_input if t.key and t.key.startswith(f"merge_name_{method}_"))
        names[method] = box.value
    assert len(set(names.values())) == 3 and all(len(n) <= 60 for n in names.values()), names
    # the candidates cut to fit: told apart by a digest of them and the tag (merges differing only in a tag that
    # safe_name cut got one name)
    digest = hashlib.sha1(f"{LONG}\n{LONG}-cpt\nslerp0.5".encode()).hexdigest()[:6]
    # each candidate keeps a share, the second by what it adds to the first (a cut of the joined names dropped it)
    assert names["slerp"] == f"{LONG[:39]}_cpt-{digest}-slerp0.5"
    assert names["average"].endswith("-average-0.5-0.5") and names["ties"].endswith("-d1")
    from backend.specs import MergeSpec  # the spec's own default: the CLI names a merge as the page does

    assert MergeSpec(models=[LONG, f"{LONG}-cpt"], method="slerp").default_name() == names["slerp"]


def test_a_model_has_one_colour_in_every_chart_of_the_compare_page(tiny, tiny_llama):
    """The page's order (model_names) colours the bars, the length boxes, the accuracy by length and the
    hallucination curves alike. Each chart had counted its own traces: the curves of the two models compared took
    the first two colours while the boxes of all three models had taken three."""
    for name in ("alpha", "beta"):
        registry.import_folder(tiny_llama, name)
    models = ("tiny", "alpha", "beta")
    rows = [(m, i, "correct" if (i + k) % 3 else "wrong", 3 + i % 7, "answerable")
            for k, m in enumerate(models) for i in range(20)]
    add_generations(rows)
    at = app("compare.py")
    at.selectbox(key="lc_a").set_value("beta").run()
    at.selectbox(key="lc_b").set_value("tiny").run()
    assert not at.exception

    def colours(fig: dict) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for t in (t for t in fig["data"] if not t.get("error_y")):  # a bar chart's 95 % whiskers: no model's
            c = (t.get("marker") or {}).get("color") or (t.get("line") or {}).get("color")
            names = t.get("y") if t.get("type") == "bar" and t.get("orientation") == "h" else \
                t.get("x") if t.get("type") == "bar" else [t["name"].split(" (")[0]]
            for n, col in zip(names, c if isinstance(c, list) else [c] * len(names)):
                out.setdefault(n, set()).add(col)
        return out

    seen: dict[str, set[str]] = {}
    for key in ("bar_qa", "len_box", "bin_acc", "hall_length"):
        for name, cols in colours(chart(at, key)).items():
            seen.setdefault(name, set()).update(cols)
    assert set(seen) == set(models) and all(len(c) == 1 for c in seen.values()), seen
    assert len({c for cols in seen.values() for c in cols}) == 3
