"""Session 20: a reply that is empty because the model ended it at once (end of sequence first, as an up-scaled model
does before continued pretraining) is "empty", not "abstained". Counted as an abstention, such a model scored
abstention 1.0 and hallucination 0.0 — the most careful model in the QA table and in "does it hallucinate less only
because it answers shorter?" — while it said nothing at all; a judge, shown "(empty)", could even call it WRONG.
Blank until the token limit stays "cut off" (stopped, not ended). Each test fails without its fix."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from sqlmodel import select

from backend import analysis, evalscore, evaluate, qa, qatable, registry, scoretable
from backend.analysis import Record
from backend.answerstats import from_generation
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore, Generation
from tests.test_pages import app
from tests.test_qa import _Judge, _write, judge_server  # noqa: F401  (judge_server: the fixture, used by name)
from tests.test_review_pages_d import add_generations

ITEMS = [{"id": "a", "question": "Which city is the capital of France?", "answers": ["Paris"], "answerable": True,
          "kind": "answerable"},
         {"id": "b", "question": "Which city is the capital of Veltravia?", "answers": [], "answerable": False,
          "kind": "unanswerable"},
         {"id": "c", "question": "What is 2 + 2?", "answers": ["4"], "answerable": True, "kind": "math"}]


def eos_first(folder):
    """The tiny model with a head that puts end of sequence first whatever the input."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[model.config.eos_token_id] = 10.0
    model.lm_head = head
    return tok, model


# ---- the verdict, its rates, and a model that ends every reply at once -------------------------------------------

def test_a_model_that_ends_every_reply_at_once_is_empty_not_the_most_careful(tiny_llama_untied):
    tok, model = eos_first(tiny_llama_untied)
    spec = EvalSpec(models=["up"], tasks=["qa"], max_new_tokens=8)
    scores, gens, _ = evalscore.qa_task(tok, model, ITEMS, spec, "qa", "up", None)
    assert [(g.output, g.truncated, g.words, g.verdict) for g in gens] == [("", False, 0, "empty")] * 3
    assert [(g.answered, g.correct, g.hallucination) for g in gens] == [(False, False, False)] * 3
    # was: abstention_rate 1.0, hallucination_rate 0.0
    assert {k: v for k, v in scores.items() if "[" not in k} == {
        "accuracy": 0.0, "abstention_rate": 0.0, "hallucination_rate": 0.0, "cut_off_rate": 0.0, "empty_rate": 1.0}
    assert scores["empty_rate[math]"] == 1.0 and scores["abstention_rate[unanswerable]"] == 0.0
    math_scores, math_gens = evalscore.answer_task(tok, model, [("m1", "What is 2 + 2?", "4")], spec, "synth-math",
                                                   "up", None)
    assert math_gens[0].verdict == "empty"
    assert (math_scores["abstention_rate"], math_scores["empty_rate"]) == (0.0, 1.0)


@pytest.mark.parametrize("kind, answers", [("math", ["12"]), ("answerable", ["Rome"]), ("unanswerable", [])])
def test_blank_and_ended_is_empty_blank_to_the_limit_is_cut_off(kind, answers):
    for blank in ("", " \n\t "):  # whitespace only is blank
        assert qa.classify(blank, answers, kind) == "empty"
        assert qa.classify(blank, answers, kind, truncated=True) == "cut off"
        # a judge's word on a blank reply: empty when ended, cut off when stopped
        assert qa.unless_cut_off("abstained", blank, kind, truncated=False) == "empty"
        assert qa.unless_cut_off("wrong", blank, kind, truncated=True) == "cut off"
    assert qa.classify("I don't know.", answers, kind) == "abstained"  # a decline is still one
    assert qa.flags("empty") == {"correct": False, "hallucination": False, "answered": False}
    assert [v for v, _ in qa.RULES] == ["correct", "empty", "abstained", "cut off", "wrong"]


def test_the_empty_rate_is_its_own_and_the_rates_add_up():
    s = qa.summarise(["correct", "wrong", "abstained", "cut off", "empty", "empty"])
    assert s == pytest.approx({"accuracy": 1 / 6, "abstention_rate": 1 / 6, "hallucination_rate": 1 / 6,
                               "cut_off_rate": 1 / 6, "empty_rate": 2 / 6, "precision": 0.5, "n": 6})
    assert "precision" not in qa.summarise(["empty"] * 4)  # nothing answered
    with pytest.raises(qa.QAError, match="unknown verdict 'abstain'"):
        qa.summarise(["abstain"])  # was: counted in no rate at all, silently


# ---- the judge is not asked about a blank reply ------------------------------------------------------------------

def test_the_judge_is_not_asked_about_a_blank_reply(tiny_llama, tmp_path, monkeypatch, judge_server):  # noqa: F811
    registry.import_folder(tiny_llama, "tiny")
    f = _write(tmp_path / "qa.jsonl", [
        {"id": "a", "question": "Which city is the capital of Norway?", "answers": ["Oslo"], "answerable": True},
        {"id": "b", "question": "Which city is the capital of Veltravia?", "answers": [], "answerable": False},
        {"id": "c", "question": "Which city is the capital of Quendor?", "answers": [], "answerable": False}])
    replies = {"Norway": ("Oslo", 1, False), "Veltravia": ("", 0, False), "Quendor": ("  \n ", 8, True)}
    monkeypatch.setattr(evalscore, "generate", lambda tok, model, prompts, n, **k: [
        next(r for q, r in replies.items() if q in p) for p in prompts])
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=[f"qa:{f}"], judge_url=judge_server, judge_model="grader",
                               judge_timeout=5))
    with db.session() as s:
        gens = {g.prompt_id: g for g in s.exec(select(Generation))}
        scores = {r.metric: r for r in s.exec(select(EvalScore))}
    assert {k: (g.verdict, g.judge_verdict) for k, g in gens.items()} == {
        "a": ("correct", "correct"), "b": ("empty", ""), "c": ("cut off", "")}  # b was the judge's WRONG
    assert len(_Judge.prompts) == 1 and "Oslo" in _Judge.prompts[0]
    assert scores["empty_rate"].value == pytest.approx(1 / 3) and scores["hallucination_rate"].value == 0.0
    assert scores["accuracy"].details["judge_agrees_with_rules"] == 1.0  # over the one reply it graded
    # without a server: a blank reply needs none
    assert qa.Judge("http://127.0.0.1:9/v1", "m", timeout=1).grade(ITEMS[:2], ["", " "]) == ["empty", "empty"]


# ---- stored rows ------------------------------------------------------------------------------------------------

def test_an_old_stored_blank_abstention_reads_as_empty():
    with db.session() as s:
        for i, (output, truncated, verdict) in enumerate((("", False, "abstained"), ("", True, "abstained"),
                                                          ("I don't know", False, "abstained"))):
            s.add(Generation(model="up", task="qa", prompt_id=str(i), prompt="q", reference="r", output=output,
                             tokens=len(output.split()), words=len(output.split()), answered=False, correct=False,
                             hallucination=False, verdict=verdict, item_kind="answerable", truncated=truncated))
        s.commit()
    recs = sorted(analysis.task_records("qa"), key=lambda r: r.prompt_id)
    assert [(r.verdict, r.answered, r.hallucination) for r in recs] == [
        ("empty", False, False), ("cut off", False, False), ("abstained", False, False)]
    row = dict(model="m", correct=False, hallucination=False, answered=False, prompt_id="1", tokens=0, words=0,
               item_kind="math", verdict="abstained", truncated=False)
    assert from_generation(SimpleNamespace(**row)).verdict == "empty"
    # a judge shown "(empty)" graded blank replies before it was spared them: stored "wrong", a 0-word hallucination
    judged = from_generation(SimpleNamespace(**{**row, "verdict": "wrong", "hallucination": True}))
    assert (judged.verdict, judged.hallucination) == ("empty", False)


# ---- the length analysis: a blank reply is no 0-word answer ------------------------------------------------------

def rec(model: str, i: int, verdict: str, words: int) -> Record:
    return Record(model, words, verdict == "correct", verdict == "wrong", prompt_id=str(i), tokens=words,
                  kind="answerable", verdict=verdict, answered=verdict in ("correct", "wrong"))


def talker_and_up(empty: int) -> list[Record]:
    """20 items. talker: 8-word answers, wrong on the even items. up: empty (0 words) on the first `empty`, then
    12-word answers, wrong on items divisible by 3."""
    return ([rec("talker", i, "wrong" if i % 2 == 0 else "correct", 8) for i in range(20)]
            + [rec("up", i, "empty" if i < empty else "wrong" if i % 3 == 0 else "correct", 0 if i < empty else 12)
               for i in range(20)])


@pytest.mark.parametrize("outcome", ["hallucination", "correct"])
def test_items_with_an_empty_reply_are_left_out_of_the_length_comparison(outcome):
    recs = talker_and_up(8)
    res = analysis.compare(recs, "talker", "up", outcome=outcome)
    assert res["ok"] and res["n_items"] == 12 and res["raw"]["n"] == 12
    assert res["left_out"] == {"n_shared": 20, "n": 8, "by_model": {"talker": 0, "up": 0}, "n_empty": 8,
                               "empty_by_model": {"talker": 0, "up": 8},
                               "message": "8 of 20 items left out: up's reply was empty"}
    assert res["mean_tokens_b"] == 12.0  # was 7.2: eight 0-word "answers" made up the shorter model
    # items 8–19: talker wrong on 6, up on 4 (9, 12, 15, 18)
    assert (res["rate_a"], res["rate_b"]) == pytest.approx((0.5, 4 / 12))
    assert "8 of 20 items left out: up's reply was empty; an empty reply (the model ended it at once) is neither" \
           in res["sentence"]
    assert "higher Max new tokens" not in res["sentence"]  # no token cap brings an empty reply back
    fit = analysis.length_model(recs, ["talker", "up"], outcome)
    assert fit["n_items"] == 12
    curves = analysis.length_curves(recs, ["talker", "up"], outcome=outcome)
    assert min(p["tokens"] for p in curves["observed"]) == 8.0  # no 0-word point
    strat = analysis.length_controlled(recs, "talker", "up", outcome=outcome, boots=50)
    assert (strat["n_b"], strat["mean_words_b"]) == (12, 12.0)


def test_a_model_that_only_replies_empty_gets_no_verdict_and_the_right_remedy():
    res = analysis.compare(talker_and_up(20), "talker", "up")
    assert not res["ok"]
    assert res["sentence"] == (
        "No verdict: 20 of 20 items left out: up's reply was empty, so none remains and a comparison needs at least "
        "10; continue pretraining the model whose replies are empty (it ends them at once), then evaluate it.")
    with pytest.raises(ValueError, match="no item is left to judge hallucination on: 20 of 20 items left out"):
        analysis.length_controlled(talker_and_up(20), "talker", "up")


# ---- the score tables and the compare page ------------------------------------------------------------------------

def store_scores() -> None:
    """careful declines on 12 of 20 items and answers 8 (4 wrong); up replies empty on every item."""
    kinds = ["answerable"] * 10 + ["unanswerable"] * 10
    verdicts = {"careful": ["correct"] * 4 + ["abstained"] * 6 + ["abstained"] * 6 + ["wrong"] * 4,
                "up": ["empty"] * 20}
    with db.session() as s:
        for model, vs in verdicts.items():
            counts = qa.counts_by_kind(kinds)
            for metric, v in qa.scores_by_kind(vs, kinds).items():
                s.add(EvalScore(model=model, task="qa", metric=metric, value=v, n=counts[qa.count_key(metric)]))
        s.commit()


def test_the_score_tables_show_the_empty_rate_and_blank_its_hallucination_rate():
    store_scores()
    latest = scoretable.latest_scores()
    up = next(r for r in qatable.qa_rows(latest) if r["model"] == "up" and r["item kind"] == "all")
    # was abstention_rate 1.0; its hallucination rate blank as in the models × tasks table (0 read as the best)
    assert up == {"model": "up", "task": "qa", "item kind": "all", "accuracy": 0.0, "abstention_rate": 0.0,
                  "hallucination_rate": None, "cut_off_rate": 0.0, "empty_rate": 1.0}
    rows = {r["model"]: r for r in scoretable.table_rows(latest, {})}
    assert rows["up"]["qa (hallucination)"] is None and rows["up"]["qa (empty)"] == 1.0
    assert rows["careful"]["qa (hallucination)"] == 0.2 and rows["careful"]["qa (empty)"] == 0.0
    assert [c for c in rows["up"] if c.startswith("qa")] == [
        "qa (accuracy)", "qa (accuracy) ±", "qa (hallucination)", "qa (hallucination) ±", "qa (cut off)",
        "qa (empty)"]
    assert scoretable.cut_off_note(latest).startswith("Hallucination left blank: qa for up (100% empty). Over 50% "
                                                      "of the replies were cut off by the token limit before an "
                                                      "answer or empty")


def test_the_compare_pages_qa_table_caption_and_rules_name_the_empty_reply(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    store_scores()
    at = app("compare.py")
    frame = next(d.value for d in at.dataframe if "empty_rate" in d.value.columns)
    up = frame[(frame["model"] == "up") & (frame["item kind"] == "all")].iloc[0]
    assert (up["abstention_rate"], up["empty_rate"]) == (0.0, 1.0) and pd.isna(up["hallucination_rate"])
    careful = frame[(frame["model"] == "careful") & (frame["item kind"] == "all")].iloc[0]
    assert (careful["abstention_rate"], careful["empty_rate"]) == (0.6, 0.0)
    assert any(c.value.startswith("Hallucination rate = wrong ÷ all") and "nor an empty reply" in c.value
               for c in at.caption)
    rules = next(m.value for m in at.markdown if m.value.startswith("1. **correct**"))
    assert "2. **empty** — otherwise, the reply is blank" in rules
    assert not any("scored before empty replies" in c.value for c in at.caption)


def test_qa_scores_stored_before_the_empty_verdict_are_said_so(tiny_llama):
    """An older evaluation's abstention rate counted the replies a model ended at once: the page now says which."""
    registry.import_folder(tiny_llama, "tiny")
    with db.session() as s:
        for metric, v in {"accuracy": 0.0, "abstention_rate": 1.0, "hallucination_rate": 0.0,
                          "cut_off_rate": 0.0}.items():
            s.add(EvalScore(model="old", task="qa", metric=metric, value=v, n=20))
        s.commit()
    at = app("compare.py")
    assert not at.exception, at.exception
    assert "old (qa): scored before empty replies were told apart (no empty rate): their abstention rate counts " \
        "the replies the model ended at once. Evaluate them again to separate them." in [c.value for c in at.caption]


def test_the_compare_pages_length_section_says_which_items_an_empty_reply_left_out(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add_generations([(r.model, int(r.prompt_id), r.verdict, r.words, r.kind) for r in talker_and_up(8)])
    at = app("compare.py")
    assert not at.exception, at.exception
    (bold,) = [m.value for m in at.markdown if m.value.startswith("**talker and up")]
    assert "12 shared items" in bold and "8 of 20 items left out: up's reply was empty" in bold
    assert "The plot: the 12 items both models answered and neither replied empty (8 of 20 left out: up 8)." in [
        c.value for c in at.caption]
    # the boxes and accuracy by length below still draw empty replies as answers of 0 words: the page says so
    (warned,) = [w.value for w in at.warning if w.value.startswith("Empty replies")]
    assert warned.startswith("Empty replies (the model ended them at once): up 40%. An empty reply is no answer")
    assert "show them as answers of 0 words" in warned and "continue pretraining the model" in warned


def test_the_recipe_tables_leave_a_mostly_unanswered_models_hallucination_rate_blank():
    """The Recipe page's tables (and `recipe tables`) showed qa hallucination_rate 0 for a model that replied empty
    on every item, while the Compare page left the same cell blank."""
    from backend.recipe import tables

    store_scores()
    scores = tables.latest_scores(["up", "careful"])
    assert scores["up"]["qa hallucination_rate"] is None and scores["up"]["qa empty_rate"] == 1.0
    assert scores["up"]["qa hallucination_rate[answerable]"] is None
    assert scores["careful"]["qa hallucination_rate"] == 0.2


def test_a_merge_surface_leaves_out_a_point_whose_rate_is_blank():
    """run_surfaces passed (0.3, None) for a swept merge whose hallucination rate latest_scores left blank: the
    Recipe page's Surface tab raised TypeError ('<' not supported between 'float' and 'NoneType')."""
    from backend.recipe import surface

    s = surface.merge_surface([(0.7, 0.3), (0.3, None), (0.5, 0.2)], 0.25, 0.2, "weight", higher_is_better=False)
    assert s["x"] == [0.5, 0.7] and s["best"] == (0.5, 0.2)


def test_the_recipe_pages_note_says_a_blank_hallucination_rate_is_not_a_missing_score():
    """A rate left blank (mostly unanswered) read "up has no qa score — not evaluated on that task"."""
    from backend.recipe.tables import Table, unscored_note

    t = Table("t", "Table 3", ["Model", "qa accuracy", "qa hallucination_rate", "synth-math accuracy"],
              [["up", 0.0, None, None], ["careful", 0.4, 0.2, 0.5]], pending=True)  # its evaluation to come
    assert unscored_note(t, "—") == (
        "A — cell: up has no synth-math score — not evaluated on that task (the run's evaluation leaves it out, or "
        "has not run yet), not a score of zero. Left blank (—): up (qa hallucination_rate): over half of those "
        "replies were cut off by the token limit or empty, so no hallucination rate is given (its 0 would read as "
        "the best).")
