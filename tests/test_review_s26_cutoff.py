"""A model whose every reply is cut off at the token cap, as a researcher replaying SOLAR's "does it hallucinate less
only because it answers shorter?" saw it (session 26): `eval` printed its hallucination rate as 0.0000 beside a
cut-off rate of 1.0000 where `scores` leaves it blank; `compare --outcome correct` printed a within-bins gap of
+0.000 [+0.000, +0.000] over the one bin of cut-off replies both models filled; and the remedy said "a higher Max
new tokens" under a warning that said it will not help. Each test fails on the code before its fix."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from backend import analysis, answerstats, cutoff
from backend.analysis import Record
from backend.cli import evaluate
from backend.recipe import table_scores
from storage import db
from storage.models import EvalScore, Generation

CAP = "Max new tokens (eval --max-new-tokens)"


def rec(model: str, i: int, verdict: str, tokens: int) -> Record:
    return Record(model, tokens, verdict == "correct", verdict == "wrong", prompt_id=str(i), tokens=tokens,
                  verdict=verdict, answered=verdict not in ("abstained", "cut off"))


def finisher_and_rambler(n: int = 16) -> list[Record]:
    """A answers 12 items (10–21 tokens, wrong on 3) and is cut off at 40 tokens on 4; B is cut off on every one:
    the one length bin both fill holds cut-off replies only."""
    return ([rec("A", i, "cut off" if i >= 12 else "wrong" if i % 4 == 0 else "correct", 40 if i >= 12 else 10 + i)
             for i in range(n)]
            + [rec("B", i, "cut off", 40) for i in range(n)])


def cut_off_runs(model: str, caps: list[int], n: int = 16, task: str = "qa") -> None:
    """Stored replies of `model`, cut off on every item at each of `caps` (one run a cap)."""
    with db.session() as s:
        for cap in caps:
            for i in range(n):
                s.add(Generation(model=model, task=task, prompt_id=str(i), prompt="q", reference="r", output="",
                                 tokens=cap, words=0, answered=False, correct=False, hallucination=False,
                                 verdict="cut off", truncated=True, run=f"r{cap}", item_kind="answerable"))
        s.commit()


# ---- 1. eval prints "—" where the tables leave the hallucination rate blank -------------------------------------

def _score(model, task, metric, value, n=16):
    return SimpleNamespace(model=model, task=task, metric=metric, value=value, n=n, overlap_share=0.0, run="r",
                           details={})


def test_eval_prints_a_dash_and_the_scores_note_for_a_model_that_never_finished(monkeypatch, capsys):
    rows = [_score("tiny", "qa", "accuracy", 0.0), _score("tiny", "qa", "cut_off_rate", 1.0),
            _score("tiny", "qa", "hallucination_rate", 0.0),
            _score("tiny", "qa", "hallucination_rate[unanswerable]", 0.0),
            _score("tiny", "qa", "cut_off_rate[unanswerable]", 1.0)]
    monkeypatch.setattr(evaluate, "stored_rows", lambda models: lambda: rows)
    monkeypatch.setattr(evaluate, "_run_or_queue", lambda spec, a, more=None: None)
    sub = argparse.ArgumentParser().add_subparsers()
    evaluate.add_eval(sub)
    a = sub.choices["eval"].parse_args(["tiny", "--tasks", "qa"])
    evaluate.cmd_eval(a)
    out = capsys.readouterr().out.splitlines()
    printed = {line.split()[2]: line.split()[3] for line in out if line.startswith("tiny ")}
    assert printed == {"accuracy": "0.0000", "cut_off_rate": "1.0000", "hallucination_rate": "—",
                       "hallucination_rate[unanswerable]": "—", "cut_off_rate[unanswerable]": "1.0000"}  # was 0.0000
    assert out[-1] == (
        "note: Hallucination left blank: qa for tiny (100% cut off). Over 50% of the replies were cut off by the token "
        "limit before an answer, and a cut-off reply counts as no hallucination, so the rate would read low for a "
        f"model that never finished; evaluate again with a higher {CAP}. Printed as — above, as `scores` leaves it "
        "blank; --json holds the stored values.")
    assert evaluate.rows_json(rows)["rows"][2]["value"] == 0.0  # the stored value, unchanged for scripts


# ---- 2. the gap within length bins says over how many items it is, and leaves cut-off replies out ----------------

def test_a_model_cut_off_throughout_gets_no_within_bins_gap_for_correct():
    strat = analysis.length_controlled(finisher_and_rambler(), "A", "B", n_bins=2, boots=50, outcome="correct")
    assert strat["raw_diff"] == pytest.approx(7 / 16 - 1)  # the raw gap keeps them: a cut-off reply is not correct
    # was +0.000 [+0.000, +0.000]: the only bin both filled held cut-off replies, not correct by definition
    assert (strat["length_controlled_diff"], strat["length_controlled_ci"]) == (None, (None, None))
    assert (strat["items_compared"], strat["bins_compared"], strat["n_items"], strat["cut_off_in_bins"]) == (
        0, 0, 16, 16)
    assert analysis.within_bins_text(strat) == "n/a (only 0 of 16 items fall in length bins both models fill)"


def test_below_the_floor_the_within_bins_gap_is_not_given_and_above_it_its_items_are_said():
    # A answers at 5–20 tokens; B at 5–7 on 3 items and at 103–115 on the rest: 3 length bins (edges 12.3 and
    # 104.7), and only 5 of B's answers lie in the 2 bins A fills too
    recs = ([rec("A", i, "wrong" if i % 2 else "correct", 5 + i) for i in range(16)]
            + [rec("B", i, "correct", 5 + i if i < 3 else 100 + i) for i in range(16)])
    strat = analysis.length_controlled(recs, "A", "B", n_bins=3, boots=50)
    assert strat["length_controlled_diff"] is None  # was a gap over 5 of B's answers against 16 of A's
    assert (strat["items_compared"], strat["bins_compared"], strat["bins"]) == (5, 2, 3)
    assert analysis.within_bins_text(strat) == "n/a (only 5 of 16 items fall in length bins both models fill)"
    even = [rec("B", i, "correct", 5 if i % 2 else 50) for i in range(16)] + [
        rec("A", i, "wrong" if i % 2 else "correct", 5 if i % 2 else 50) for i in range(16)]
    strat = analysis.length_controlled(even, "A", "B", n_bins=2, boots=50)
    assert (strat["items_compared"], strat["bins_compared"], strat["length_controlled_diff"]) == (16, 2, 0.5)
    assert analysis.within_bins_text(strat, bold=True).startswith("**+0.500** [")
    assert analysis.within_bins_text(strat).endswith(" (16 of 16 items in the 2 bins both models fill)")


def test_compare_prints_n_a_with_the_count(monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "_check_compared", lambda task, models: None)
    monkeypatch.setattr(analysis, "pair_records", lambda task, a, b: finisher_and_rambler())
    evaluate.cmd_compare(SimpleNamespace(task="qa", model_a="A", model_b="B", outcome="correct", bins=2))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("within"))
    assert line == ("within length bins: not-correct rate gap n/a (only 0 of 16 items fall in length bins both models "
                    "fill); mean length 22 vs 40 tokens")


# ---- 3. one remedy for cut-off replies: a higher cap, unless every cap tried cut the model off -------------------

def test_the_remedy_says_a_higher_cap_will_not_help_a_model_cut_off_at_two_caps():
    assert cutoff.cap_remedy(["B"], {}) == f"evaluate again with a higher {CAP}"
    assert cutoff.cap_remedy(["A", "B"], {"B": [32, 40], "A": [40]}) == (
        f"B was cut off on every reply at each cap tried (32 and 40 tokens), so a higher {CAP} will not help: it "
        f"needs training; for A, evaluate again with a higher {CAP}")


def test_the_verdict_under_the_warning_does_not_say_raise_the_cap_when_it_will_not_help():
    res = analysis.compare(finisher_and_rambler(), "A", "B", outcome="correct")
    assert res["sentence"].endswith(f"so this may measure the token cap rather than the models: evaluate again with "
                                    f"a higher {CAP}.")  # B at one cap so far: a higher cap tells
    cut_off_runs("B", [32, 40])
    res = analysis.compare(finisher_and_rambler(), "A", "B", outcome="correct")
    assert res["sentence"].endswith(f"so this may measure the token cap rather than the models: B was cut off on "
                                    f"every reply at each cap tried (32 and 40 tokens), so a higher {CAP} will not "
                                    f"help: it needs training; for A, evaluate again with a higher {CAP}.")
    assert res["never_ended"] == {"B": [32, 40]}
    hall = analysis.compare(finisher_and_rambler(), "A", "B")
    assert hall["sentence"] == (
        "No verdict: 16 of 16 items left out: a reply was cut off by the token limit (A on 4, B on 16), so none "
        f"remains and a comparison needs at least 10; B was cut off on every reply at each cap tried (32 and 40 "
        f"tokens), so a higher {CAP} will not help: it needs training; for A, evaluate again with a higher {CAP}.")
    with pytest.raises(ValueError, match="cut off by the token limit; B was cut off on every reply at each cap"):
        analysis.length_controlled(finisher_and_rambler(), "A", "B")


def _recipe_note() -> str:
    latest = {("m", "qa", "accuracy"): EvalScore(model="m", task="qa", metric="accuracy", value=0.0, n=16),
              ("m", "qa", "cut_off_rate"): EvalScore(model="m", task="qa", metric="cut_off_rate", value=1.0, n=16,
                                                     details={"settings": {"max_new_tokens": 40}})}
    return table_scores.cut_off_note(latest, [{"output": "m", "stage": "c1", "label": "C1"}],
                                     {"m": {"qa accuracy": 0.0}}, {"qa accuracy"})


def test_the_recipe_table_names_the_recipes_field_and_never_ended():
    head = "Cut off — qa accuracy (C1): every reply was cut off at 40 tokens: accuracy 0 measures the token cap, not "
    # was "Evaluate again with a higher Max new tokens (eval --max-new-tokens)": a field of the Evaluate form
    assert _recipe_note() == head + ("the model. Raise `eval.max_new_tokens` in the recipe and run it again before "
                                     "reading these scores.")
    cut_off_runs("m", [32, 40])
    assert _recipe_note() == head + ("the model. C1 was cut off on every reply at each cap tried (32 and 40 "
                                     "tokens), so a higher `eval.max_new_tokens` will not help: it needs training.")
    assert answerstats.never_ended(["m"]) == {"m": [32, 40]}


def test_the_scores_note_says_a_higher_cap_will_not_help_a_model_cut_off_at_each_cap_tried():
    latest = {("m", "qa", "cut_off_rate"): EvalScore(model="m", task="qa", metric="cut_off_rate", value=1.0, n=16),
              ("m", "qa", "hallucination_rate"): EvalScore(model="m", task="qa", metric="hallucination_rate",
                                                           value=0.0, n=16)}
    from backend import tablenotes

    once = tablenotes.cut_off_note(latest)
    assert once.endswith(f"never finished; evaluate again with a higher {CAP}.")
    cut_off_runs("m", [32, 40])
    assert tablenotes.cut_off_note(latest) == once + (
        f" But m was cut off on every reply at each cap tried (32 and 40 tokens), so a higher {CAP} will not help: "
        "it needs training.")


def test_the_compare_page_prints_n_a_with_the_count(monkeypatch):
    from pages import compare_length

    said = []
    monkeypatch.setattr(compare_length, "st", SimpleNamespace(markdown=said.append, caption=said.append,
                                                              dataframe=lambda *a, **k: None))
    res = analysis.compare(finisher_and_rambler(), "A", "B", outcome="correct")
    strat = analysis.length_controlled(finisher_and_rambler(), "A", "B", n_bins=3, boots=50, outcome="correct")
    compare_length._verdict_numbers(res, strat, "A", "B", "correct", "not-correct rate")
    assert said[-1].endswith("model-free length check (within bins of answer length in tokens): not-correct rate gap "
                             "n/a (only 0 of 16 items fall in length bins both models fill); mean answer length 22 vs "
                             "40 tokens.")  # was "gap **+0.000** [+0.000, +0.000]" over a bin of cut-off replies
