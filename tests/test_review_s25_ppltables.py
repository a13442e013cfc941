"""Perplexity tables where tokenizers differ (session 25 review): the byte perplexity that heads such a table keeps
its ± (a bootstrap from the same resamples as the perplexity's), the recipe tables say why they switched, the switch
is decided over the models shown, the note is said once for tasks split alike, a bar of unlike perplexities says so,
and an lm-eval wikitext-style task is headed by its byte perplexity on purpose."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from backend import evalscore, scoretable, scorevalues, tablenotes
from backend.recipe import table_scores
from pages.compare_pick import no_chart_note
from storage.models import EvalScore

PER = [(random.Random(k).uniform(30.0, 90.0), random.Random(k + 99).randint(10, 40)) for k in range(10)]
TEXTS = [" ".join(["word"] * (k + 2)) + " é" * k for k in range(10)]


def _hand(nll: list[float], count: list[float], iters: int) -> float:
    """The bootstrap written out: chunk i of 1000 resamples drawn by default_rng(i), k = n texts with replacement,
    each resample's summed loss over its summed count, the sample standard deviation (ddof 1)."""
    nll, count = np.array(nll), np.array(count, dtype=float)
    ppl = []
    for i in range(iters // 1000):
        idx = np.random.default_rng(i).integers(0, len(nll), size=(1000, len(nll)))
        ppl += list(np.exp(nll[idx].sum(1) / count[idx].sum(1)))
    return float(np.std(ppl, ddof=1))


def test_byte_and_word_perplexity_carry_the_same_bootstrap_error():
    scores = evalscore._ppl(PER, TEXTS)
    nll = [a for a, _ in PER]
    size = [len(t.encode()) for t in TEXTS]
    words = [len(t.split()) for t in TEXTS]
    assert scores["byte_perplexity_stderr"] == pytest.approx(_hand(nll, size, 100_000), rel=1e-9)
    assert scores["word_perplexity_stderr"] == pytest.approx(_hand(nll, words, 100_000), rel=1e-9)
    assert scores["perplexity_stderr"] == pytest.approx(_hand(nll, [b for _, b in PER], 100_000), rel=1e-9)
    assert scores["perplexity_stderr"] == evalscore._ppl(PER)["perplexity_stderr"]  # the token error unchanged
    assert "bits_per_byte_stderr" not in scores and scores["byte_perplexity_stderr"] > 0
    # an overflowed word resample leaves only that error out
    assert set(evalscore.bootstrap_stderrs([1e6, 2.0], {"a": [1e6, 1e6], "b": [1, 1]}, 1000)) == {"a"}


def _rows(model: str, tokenizer: str | None, ppl: float, per_byte: float | None, task: str = "perplexity",
          byte_se: bool = True) -> dict:
    details = {"tokenizer": tokenizer} if tokenizer else {}
    metrics = {"perplexity": ppl, "perplexity_stderr": ppl / 10}
    if per_byte is not None:
        metrics |= {"byte_perplexity": per_byte, "word_perplexity": per_byte ** 5, "bits_per_byte": math.log2(per_byte)}
        metrics |= {"byte_perplexity_stderr": per_byte / 100} if byte_se else {}
    return {(model, task, m): EvalScore(model=model, task=task, metric=m, value=v, n=10, details=details)
            for m, v in metrics.items()}


MIXED = {**_rows("a", "sha256:x", 9.0, 1.8), **_rows("b", "sha256:x", 8.0, 1.7), **_rows("qwen", "sha256:y", 5.0, 2.1)}


def test_the_byte_perplexity_column_has_its_error():
    rows = scoretable.table_rows(MIXED, {})
    assert [r["perplexity (byte_perplexity) ±"] for r in rows] == [0.018, 0.017, 0.021]
    (bars,) = scoretable.chart_rows(MIXED).values()
    assert [b["stderr"] for b in bars] == pytest.approx([0.018, 0.017, 0.021])


def test_the_recipe_tables_say_why_the_column_is_byte_perplexity():
    stages = [{"output": m, "stage": m} for m in ("a", "b", "qwen")]
    scores = {m: {"perplexity byte_perplexity": v} for m, v in (("a", 1.8), ("b", 1.7), ("qwen", 2.1))}
    notes = table_scores.error_notes(MIXED, stages, scores, {})
    (note,) = [n for n in notes if "tokenize" in n]
    assert note.startswith("perplexity byte_perplexity: the models tokenize the texts in 2 ways (a, b | qwen)")


def test_the_switch_is_decided_over_the_models_shown():
    """One imported model of another tokenizer turned every view's column to bytes: a view of a and b alone (a merge
    beside its candidates, the charted models) keeps their perplexity per token."""
    assert {r.metric for r in scoretable.headline(MIXED).values()} == {"byte_perplexity"}
    mine = scoretable.of_models(MIXED, ["a", "b"])
    assert {k: r.metric for k, r in scoretable.headline(mine).items()} == {("a", "perplexity"): "perplexity",
                                                                           ("b", "perplexity"): "perplexity"}
    assert list(scoretable.chart_rows(mine)) == ["perplexity"]
    assert [r["perplexity"] for r in scoretable.table_rows(mine, {})] == [9.0, 8.0]
    # the charts' note on tasks with no chart compares tasks, not columns: perplexity is charted
    assert no_chart_note(scoretable.chart_rows(MIXED), scoretable.chart_rows(mine)) == ""
    assert no_chart_note(scoretable.chart_rows(MIXED), {}).startswith("No chart for perplexity (byte_perplexity)")


def test_tasks_split_alike_share_one_sentence():
    latest = {**MIXED, **_rows("a", "sha256:x", 9.0, 1.8, "perplexity:f.txt"),
              **_rows("b", "sha256:x", 8.0, 1.7, "perplexity:f.txt"),
              **_rows("qwen", "sha256:y", 5.0, 2.1, "perplexity:f.txt")}
    note = tablenotes.tokenizer_note(latest, scoretable.headline(latest))
    assert note.count("the models tokenize the texts") == 1
    assert note.startswith("perplexity (byte_perplexity), perplexity:f.txt (byte_perplexity): the models tokenize "
                           "the texts in 2 ways (a, b | qwen)")
    # old rows without byte perplexity, on both tasks: one sentence naming both and whom to evaluate again
    old = {**_rows("a", "sha256:x", 9.0, None), **_rows("qwen", "sha256:y", 5.0, 2.1),
           **_rows("a", "sha256:x", 9.0, None, "perplexity:f.txt"),
           **_rows("qwen", "sha256:y", 5.0, 2.1, "perplexity:f.txt")}
    note = tablenotes.tokenizer_note(old, scoretable.headline(old))
    assert note == ("perplexity, perplexity:f.txt: perplexity per token, of models that tokenize the texts in 2 ways "
                    "(a | qwen): not like for like. a was scored before byte perplexity was stored: evaluate again "
                    "for a byte perplexity, which compares across tokenizers.")


def test_a_bar_of_unlike_perplexities_says_so():
    old = {**_rows("a", "sha256:x", 9.0, None), **_rows("qwen", "sha256:y", 5.0, 2.1)}
    assert scoretable.unlike_tokenizers(scoretable.headline(old)) == {"perplexity"}
    assert scoretable.unlike_tokenizers(scoretable.headline(MIXED)) == set()  # headed by bytes: like for like
    from pages.figures import bar_figure

    (rows,) = scoretable.chart_rows(old).values()
    fig = bar_figure(rows, "perplexity", subtitle=scoretable.UNLIKE_TOKENIZERS)
    assert "not like for like: tokenizers differ" in fig.layout.title.text


def test_an_lm_eval_wikitext_task_is_headed_by_its_byte_perplexity():
    latest = {("m", "lm-eval:wikitext", k): EvalScore(model="m", task="lm-eval:wikitext", metric=k, value=v, n=5)
              for k, v in (("word_perplexity", 30.0), ("byte_perplexity", 1.9), ("bits_per_byte", 0.93))}
    assert scoretable.headline(latest)[("m", "lm-eval:wikitext")].metric == "byte_perplexity"
    assert scorevalues.PREFERRED_METRIC.index("perplexity") < scorevalues.PREFERRED_METRIC.index("byte_perplexity")
