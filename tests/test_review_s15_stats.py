"""The numbers users compare models by (review s15): the paired gap's 95 % interval covers near its rate in small
samples (backend/analysis.py paired_bootstrap), a share's whisker stops at 1, and the average over tasks is the mean
of the scores, not of cells already rounded (backend/scoretable.py). Each test fails without its fix."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from backend import analysis, scoretable


def _simulated_coverage(n: int, pa: float, pb: float, runs: int, seed: int = 0) -> float:
    """How often paired_bootstrap's interval holds the true gap pa − pb, over items whose difficulty both models share
    (half of B's outcomes follow A's latent draw)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for r in range(runs):
        u = rng.random(n)
        v = np.where(rng.random(n) < 0.5, u, rng.random(n))
        res = analysis.paired_bootstrap((u < pa).astype(float), (v < pb).astype(float), boots=1000, seed=r)
        hits += res["low"] <= pa - pb <= res["high"]
    return hits / runs


def test_the_paired_gaps_interval_is_not_too_narrow_in_small_samples():
    # 15 items: the plain percentile interval held the true gap in 90 % of these 400 runs, the expanded one in 93 %
    assert _simulated_coverage(15, 0.3, 0.2, runs=400) >= 0.91
    # 10 items, d = 1, 1, 1, −1, 0 × 6: mean 0.2, s/√n 0.2; t(9)·0.2 = 0.45 reaches −0.25, 1.96·plug-in only −0.17
    res = analysis.paired_bootstrap([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0], boots=4000)
    assert res["low"] <= -0.2 and res["high"] >= 0.6
    assert res["diff"] == 0.2


def test_a_shares_whisker_stops_at_one():
    se = (0.95 * 0.05 / 19) ** 0.5  # 19 of 20 correct: lm-eval's stderr 0.05
    low, high = scoretable.interval95(0.95, se, 20, "accuracy")
    assert high == 1.0 and abs(low - (0.95 - 1.96 * se)) < 1e-12  # was 1.048: an accuracy above 100 %
    assert scoretable.interval95(0.95, se, 20, "arc_challenge/acc_norm")[1] == 1.0
    assert scoretable.interval95(0.95, se, 20, "bleu")[1] > 1  # not a share: left as it is


def _score(task: str, value: float, n: int) -> SimpleNamespace:
    return SimpleNamespace(model="m", task=task, metric="accuracy", value=value, n=n, details={}, overlap_share=0.0,
                           id=0)


def test_the_average_is_the_rounded_mean_of_the_scores_not_a_mean_of_rounded_cells():
    # 0 of 7, 2 of 11, 6 of 13: cells 0.0, 0.1818, 0.4615 average to 0.2144; the scores' mean 0.214452 is 0.2145
    latest = {("m", t, "accuracy"): _score(t, v, n) for t, v, n in (("t1", 0 / 7, 7), ("t2", 2 / 11, 11),
                                                                      ("t3", 6 / 13, 13))}
    row = scoretable.table_rows(latest, {})[0]
    assert row[scoretable.AVERAGE] == round((0 / 7 + 2 / 11 + 6 / 13) / 3, 4) == 0.2145


def test_a_presets_own_average_heads_its_task_and_stands_in_the_average():
    # lm-eval:h6 stored as evaluate stores it (each task's TASK/METRIC row first, h6_average last): its headline, and so
    # its share of the average, was arc_challenge/acc_norm alone, under the name "lm-eval:h6"
    latest, rows = {}, [("lm-eval:h6", "arc_challenge/acc_norm", 0.3), ("lm-eval:h6", "hellaswag/acc_norm", 0.6),
                        ("lm-eval:h6", "h6_average", 0.45), ("qa", "accuracy", 0.5)]
    for i, (task, metric, v) in enumerate(rows):
        latest[("m", task, metric)] = SimpleNamespace(id=i, model="m", task=task, metric=metric, value=v, n=300,
                                                      details={}, overlap_share=0.0)
    primary = scoretable.headline(latest)
    assert primary[("m", "lm-eval:h6")].metric == "h6_average"
    row = scoretable.table_rows(latest, {})[0]
    assert row[scoretable.AVERAGE] == 0.475 and row["lm-eval:h6 (h6_average)"] == 0.45  # was 0.4: (ARC 0.3 + 0.5) / 2
    assert "mean of its own scores on lm-eval:h6, qa," in scoretable.average_note(primary)
