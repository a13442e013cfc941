"""Perplexity's standard error (session 21): a bootstrap over the texts, as lm-eval bootstraps its `perplexity`
(lm_eval/api/metrics.py bootstrap_stderr), token-weighted as our perplexity is. Perplexity had none anywhere
(`scores --json` gave "stderr": null), so 310.13 / 309.42 / 308.12 over 10 texts could not be told from noise."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from backend import evalscore, registry, scoretable
from backend.evaluate import perplexity_items, run_eval
from backend.evaltasks import task_set
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore
from tests.test_review_cli import cli

PER = [(random.Random(k).uniform(30.0, 90.0), random.Random(k + 99).randint(10, 40)) for k in range(10)]


def _direct(per: list[tuple], iters: int) -> float:
    """The bootstrap written out: chunk i of 1000 resamples drawn by default_rng(i), k = n texts with replacement,
    each resample's summed loss over its summed tokens, then the sample standard deviation (ddof 1)."""
    nll, tok = np.array([x[0] for x in per]), np.array([x[1] for x in per], dtype=float)
    ppl = []
    for i in range(iters // 1000):
        idx = np.random.default_rng(i).integers(0, len(per), size=(1000, len(per)))
        ppl += list(np.exp(nll[idx].sum(1) / tok[idx].sum(1)))
    return float(np.std(ppl, ddof=1))


def test_the_perplexity_scores_carry_a_seeded_bootstrap_error_over_the_texts(monkeypatch):
    scores = evalscore._ppl(PER)
    assert scores["perplexity"] == pytest.approx(math.exp(sum(a for a, _ in PER) / sum(b for _, b in PER)))
    assert scores["perplexity_stderr"] == pytest.approx(_direct(PER, 100_000), rel=1e-9)  # lm-eval's 100,000
    assert evalscore.bootstrap_resamples(len(PER)) == 100_000  # lm-eval's default bootstrap_iters
    assert evalscore._ppl(PER)["perplexity_stderr"] == scores["perplexity_stderr"]  # seeded: the same every time
    # drawn in blocks to bound memory (a chunk's draws split), the stream is the one drawn whole
    monkeypatch.setattr(evalscore, "BOOTSTRAP_BLOCK", 37)
    assert evalscore.perplexity_stderr(PER, 3000) == pytest.approx(_direct(PER, 3000), rel=1e-12)
    # lm-eval's own bootstrap of the same token-weighted statistic (its items are (loglikelihood, tokens)) agrees
    # within the two bootstraps' Monte Carlo spread (each about 1/√(2·iters), 1.6 % at 2000)
    from lm_eval.api.metrics import bootstrap_stderr, weighted_perplexity

    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    theirs = bootstrap_stderr(weighted_perplexity, [(-a, b) for a, b in PER], iters=2000)
    assert scores["perplexity_stderr"] == pytest.approx(theirs, rel=0.08)
    # a larger set: fewer resamples, whole chunks (cost ∝ resamples × texts); one text: none, lm-eval's "N/A"
    assert [evalscore.bootstrap_resamples(n) for n in (100, 1000, 10_000, 10 ** 6)] == [100_000, 10_000, 1000, 1000]
    assert "perplexity_stderr" not in evalscore._ppl(PER[:1])
    assert evalscore.perplexity_stderr([(1e6, 1), (2.0, 1)]) is None  # an overflowed resample: no error, no inf


def test_an_evaluation_stores_it_and_compare_and_scores_json_show_it(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    run_eval(EvalSpec(models=["tiny"], tasks=["perplexity"], limit=6))
    with db.session() as s:
        from sqlmodel import select

        rows = {r.metric: r for r in s.exec(select(EvalScore))}
    # the same texts scored again on the same model: its stored error is the bootstrap of their per-text losses
    ts = task_set("perplexity", 6)
    tok, model = evalscore.evaldevice.load_model(registry.resolve("tiny")[0])
    per = perplexity_items(tok, model, ts.items)
    want = _direct(per, 100_000)  # 6 texts: lm-eval's 100,000 resamples
    # lm-eval's word and byte perplexities and bits per byte beside it (session 25), the first two with errors from
    # the same bootstrap (lm-eval gives them none)
    assert set(rows) == {"perplexity", "perplexity_stderr", "word_perplexity", "byte_perplexity", "bits_per_byte",
                         "word_perplexity_stderr", "byte_perplexity_stderr"}
    assert rows["perplexity_stderr"].value == pytest.approx(want, rel=1e-6) and want > 0
    assert rows["perplexity_stderr"].n == rows["perplexity"].n == 6
    assert "bootstrap over the texts (100000 resamples" in rows["perplexity"].details["stderr"]
    # Compare's table: the error in the ± column (it was left out as a column no row fills) and the ± note
    latest = scoretable.latest_scores()
    table = scoretable.table_rows(latest, {})
    assert table[0]["perplexity ±"] == pytest.approx(want, abs=1e-4)
    assert any(n.startswith("± : standard error") for n in scoretable.table_notes(latest, table))
    # `scores --json`: the error beside the score (it was null), the error row not listed as a score of its own
    rc, out, err = cli("scores", "--json")
    assert (rc, err) == (0, "")
    (got,) = [x for x in json.loads(out) if x["metric"] == "perplexity"]
    assert (got["metric"], got["value"]) == ("perplexity", rows["perplexity"].value)
    assert got["stderr"] == pytest.approx(want, rel=1e-6)
    assert "bootstrap over the texts" in got["details"]["stderr"]
