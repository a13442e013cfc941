"""The arena's Bradley–Terry ratings and bootstrap against FastChat's own code (session 17): point ratings on several
vote sets (ties and both-bad ties, two to four models, a clean sweep, style control), and the bootstrap intervals as
distributions, resample by resample on the same draws and on FastChat's own random draws.

FastChat is not importable here (its module needs fastchat, plotly, pytz); its few lines are written out below, each
citing its file, and run with the scikit-learn and pandas that requirements.txt brings (lm-eval, datasets):
- fschat 0.2.36 (the PyPI wheel) fastchat/serve/monitor/elo_analysis.py: compute_elo_mle_with_tie and
  get_bootstrap_result (the plain leaderboard: LogisticRegression(fit_intercept=False), its default C=1 penalty);
- FastChat main, same file: construct_style_matrices, fit_mle_elo and get_bootstrap_result_style_control (style
  control, the same penalised fit with four standardised style columns).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from backend import arena
from storage.models import Vote
from tests.needs import need_module
from tests.test_arena import planted_votes

pd = need_module("pandas", "pandas is not installed (requirements.txt)")
linear_model = need_module("sklearn.linear_model", "scikit-learn is not installed (requirements.txt)")
WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "bad": "tie (bothbad)"}  # FastChat's names of outcomes
STYLE_ELEMENTS = ["sum_assistant_a_tokens", "header_count_a", "list_count_a", "bold_count_a",
                  "sum_assistant_b_tokens", "header_count_b", "list_count_b", "bold_count_b"]


def battles(vs: list[Vote]):
    """Votes as FastChat's battles frame, style counts in conv_metadata (add_markdown_info.py's names)."""
    meta = [{"sum_assistant_a_tokens": v.tokens_a, "header_count_a": v.headers_a, "list_count_a": v.lists_a,
             "bold_count_a": v.bold_a, "sum_assistant_b_tokens": v.tokens_b, "header_count_b": v.headers_b,
             "list_count_b": v.lists_b, "bold_count_b": v.bold_b} for v in vs]
    return pd.DataFrame({"model_a": [v.model_a for v in vs], "model_b": [v.model_b for v in vs],
                         "winner": [WINNER[v.outcome] for v in vs], "conv_metadata": meta})


def compute_elo_mle_with_tie(df, SCALE=400, BASE=10, INIT_RATING=1000, tol=1e-4):
    """fschat 0.2.36 fastchat/serve/monitor/elo_analysis.py, as written there (less its llama-13b anchor); `tol`
    is scikit-learn's default, which FastChat keeps."""
    models = pd.concat([df["model_a"], df["model_b"]]).unique()
    models = pd.Series(np.arange(len(models)), index=models)
    df = pd.concat([df, df], ignore_index=True)  # duplicate battles
    p, n = len(models.index), df.shape[0]
    X = np.zeros([n, p])
    X[np.arange(n), models[df["model_a"]]] = +math.log(BASE)
    X[np.arange(n), models[df["model_b"]]] = -math.log(BASE)
    Y = np.zeros(n)  # one A win => two A win
    Y[df["winner"] == "model_a"] = 1.0
    tie_idx = (df["winner"] == "tie") | (df["winner"] == "tie (bothbad)")  # one tie => one A win + one B win
    tie_idx[len(tie_idx) // 2:] = False
    Y[tie_idx] = 1.0
    lr = linear_model.LogisticRegression(fit_intercept=False, tol=tol, max_iter=100 if tol == 1e-4 else 10000)
    lr.fit(X, Y)
    return pd.Series(SCALE * lr.coef_[0] + INIT_RATING, index=models.index)


def get_bootstrap_result(df, func_compute_elo, num_round):
    """fschat 0.2.36, same file: resample the battles (votes) with replacement, refit, one row per round."""
    rows = [func_compute_elo(df.sample(frac=1.0, replace=True)) for _ in range(num_round)]
    return pd.DataFrame(rows)


def construct_style_matrices(df, BASE=10):
    """FastChat main, same file (apply_ratio all ones, add_one=True)."""
    models = pd.concat([df["model_a"], df["model_b"]]).unique()
    models = pd.Series(np.arange(len(models)), index=models)
    df = pd.concat([df, df], ignore_index=True)
    p, n, k = len(models.index), df.shape[0], len(STYLE_ELEMENTS) // 2
    X = np.zeros([n, p + k])
    X[np.arange(n), models[df["model_a"]]] = +math.log(BASE)
    X[np.arange(n), models[df["model_b"]]] = -math.log(BASE)
    style_vector = np.array([df.conv_metadata.map(lambda x: x[e]).tolist() for e in STYLE_ELEMENTS])
    style_diff = (style_vector[:k] - style_vector[k:]).astype(float)
    style_sum = (style_vector[:k] + style_vector[k:]).astype(float) + 1
    style_diff /= style_sum
    X[:, -k:] = ((style_diff - style_diff.mean(axis=1)[:, None]) / style_diff.std(axis=1)[:, None]).T
    Y = np.zeros(n)
    Y[df["winner"] == "model_a"] = 1.0
    tie_idx = (df["winner"] == "tie") | (df["winner"] == "tie (bothbad)")
    tie_idx[len(tie_idx) // 2:] = False
    Y[tie_idx] = 1.0
    return X, Y, models


def fit_mle_elo(X, Y, models, SCALE=400, INIT_RATING=1000, tol=1e-4):
    """FastChat main, same file: (ratings, style coefficients); `tol` as compute_elo_mle_with_tie's."""
    p = len(models.index)
    lr = linear_model.LogisticRegression(fit_intercept=False, tol=tol, max_iter=100 if tol == 1e-4 else 10000)
    lr.fit(X, Y)
    elo = SCALE * lr.coef_[0] + INIT_RATING
    return pd.Series(elo[:p], index=models.index), lr.coef_[0][p:]


def style_rows(X, Y, k, indices, ties):
    """FastChat main get_bootstrap_result_style_control: the rows of one resample of battle `indices`."""
    nontie = indices[~ties[indices]]
    tie = np.concatenate([indices[ties[indices]], indices[ties[indices]] + k])
    return (np.concatenate([X[nontie], X[nontie], X[tie]]), np.concatenate([Y[nontie], Y[nontie], Y[tie]]))


def styled_votes(n: int, seed: int) -> list[Vote]:
    """Votes whose answers differ in every style feature, so all four columns are kept as FastChat keeps them."""
    rng = random.Random(seed)
    strength = {"m1": 0.6, "m2": 0.0, "m3": -0.3}
    vs = []
    for i in range(n):
        a, b = rng.sample(sorted(strength), 2)
        st = {m: dict(tokens=rng.randint(10, 300), headers=rng.randint(0, 3), lists=rng.randint(0, 6),
                      bold=rng.randint(0, 4)) for m in (a, b)}
        logit = strength[a] - strength[b] + 1.5 * (st[a]["tokens"] - st[b]["tokens"]) / (
            st[a]["tokens"] + st[b]["tokens"] + 1)
        outcome = "tie" if rng.random() < 0.1 else "bad" if rng.random() < 0.05 else (
            "a" if rng.random() < 1 / (1 + math.exp(-logit)) else "b")
        vs.append(Vote(transcript_id=i, model_a=a, model_b=b, outcome=outcome,
                       **{f"{k}_{s}": st[m][k] for s, m in (("a", a), ("b", b)) for k in st[m]}))
    return vs


def vote_sets() -> dict[str, list[Vote]]:
    rng = random.Random(5)
    small = [Vote(transcript_id=i, model_a=a, model_b=b, outcome=rng.choice(["a", "a", "b", "tie", "bad"]))
             for i, (a, b) in enumerate(rng.sample(["x", "y", "z"], 2) for _ in range(40))]
    two = [Vote(transcript_id=i, model_a="m1", model_b="m2", outcome={"t": "tie", "x": "bad"}.get(o, o))
           for i, o in enumerate("aabtx" * 6)]
    sweep = [Vote(transcript_id=i, model_a="p", model_b="q", outcome="a") for i in range(12)] + [
        Vote(transcript_id=12 + i, model_a="q", model_b="r", outcome=o) for i, o in enumerate(("a", "b", "tie"))]
    return {"planted, 15 % ties": planted_votes(300, tie_rate=0.15, seed=3), "three models, both-bad ties": small,
            "two models": two, "a clean sweep": sweep, "styled": styled_votes(200, 1)}


@pytest.mark.parametrize("name", list(vote_sets()))
def test_point_ratings_are_fastchats(name):
    """The plain fit is fschat's compute_elo_mle_with_tie, the style fit FastChat's fit_mle_elo: to 0.25 Elo as
    FastChat runs it (its lbfgs stops at tol 1e-4, a tenth of a point short on the sweep; ours is Newton to 1e-10),
    to 0.001 run to convergence. A tie counted otherwise, a penalty of another size or none moves them by points
    (without the penalty the sweep's p is rated infinitely above q)."""
    vs = vote_sets()[name]
    ours = arena.fit(vs)["elo"]
    theirs, converged = compute_elo_mle_with_tie(battles(vs)), compute_elo_mle_with_tie(battles(vs), tol=1e-12)
    assert set(ours) == set(theirs.index)
    for m in ours:
        assert ours[m] == pytest.approx(theirs[m], abs=0.25) and ours[m] == pytest.approx(converged[m], abs=1e-3), m
    if name == "styled":  # every feature differs somewhere: all four columns (FastChat divides by a zero std)
        styled = arena.fit(vs, style_control=True)
        assert list(styled["style"]) == list(arena.STYLE)  # in FastChat's order
        for tol, elo_abs, coef_abs in ((1e-4, 0.25, 1e-3), (1e-12, 1e-3, 1e-6)):
            elo, coef = fit_mle_elo(*construct_style_matrices(battles(vs)), tol=tol)
            for m in styled["elo"]:
                assert styled["elo"][m] == pytest.approx(elo[m], abs=elo_abs), (tol, m)
            assert list(styled["style"].values()) == pytest.approx(list(coef), abs=coef_abs), tol


def _draws(n: int, boots: int, seed: int) -> list[np.ndarray]:
    """The votes leaderboard(resample="votes", seed=seed) draws in each round: n of n with replacement, as
    pandas' DataFrame.sample(frac=1.0, replace=True) draws FastChat's (uniform, RandomState.choice)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(boots)]


def test_bootstrap_on_the_same_draws_gives_fastchats_intervals():
    """Each round's resample given to FastChat's fit (plain: get_bootstrap_result with compute_elo_mle_with_tie;
    style: get_bootstrap_result_style_control with fit_mle_elo): the 2.5 and 97.5 percentiles agree to 0.1 Elo.
    Any other weighting of a resampled vote, tie rule, penalty or percentile would fail by far more."""
    boots = 120
    for vs, style in ((vote_sets()["planted, 15 % ties"], False), (styled_votes(160, 2), True)):
        board = {r["model"]: r for r in arena.leaderboard(vs, style_control=style, boots=boots, resample="votes",
                                                          seed=7)}
        df = battles(vs)
        if style:
            X, Y, models = construct_style_matrices(df)
            ties = np.asarray((df["winner"] == "tie") | (df["winner"] == "tie (bothbad)"))
            samples = pd.DataFrame([fit_mle_elo(*style_rows(X, Y, len(vs), idx, ties), models)[0]
                                    for idx in _draws(len(vs), boots, 7)])
        else:
            samples = pd.DataFrame([compute_elo_mle_with_tie(df.iloc[idx]) for idx in _draws(len(vs), boots, 7)])
        assert set(board) == set(samples.columns) and len(board) >= 2, (style, sorted(board))  # no empty loop
        for m, row in board.items():
            assert row["low"] == pytest.approx(samples[m].quantile(0.025), abs=0.1), (style, m)
            assert row["high"] == pytest.approx(samples[m].quantile(0.975), abs=0.1), (style, m)


def _order_band(values: np.ndarray, q: float, z: float = 3.29) -> tuple[float, float]:
    """Where the q-quantile of the distribution `values` were drawn from lies (distribution-free, z = 3.29: 99.9 %),
    widened by √2 for the noise of the other estimate it is compared with: the order statistics
    n·q ± z·√2·√(n·q·(1 − q))."""
    s = np.sort(values[~np.isnan(values)])
    half = z * math.sqrt(2 * len(s) * q * (1 - q))
    return s[max(int(len(s) * q - half), 0)], s[min(math.ceil(len(s) * q + half), len(s) - 1)]


def test_bootstrap_intervals_lie_where_fastchats_own_random_draws_put_them():
    """FastChat's bootstrap as it runs (its own RandomState through pandas' sample, 400 rounds) and ours (400 rounds,
    another generator): each of our interval ends lies in the distribution-free band of FastChat's same percentile.
    The votes come three to a round, each round's three alike (as a 4-model round's three votes share a winner):
    resampled by round, as leaderboard does by default, the intervals are √3 wider than FastChat's vote bootstrap
    and fail the same check (test_arena says why rounds are resampled)."""
    boots = 400
    small = vote_sets()["three models, both-bad ties"]
    vs = [Vote(**{**v.model_dump(), "transcript_id": i}) for i, v in enumerate(small) for _ in range(3)]
    np.random.seed(42)
    theirs = get_bootstrap_result(battles(vs), compute_elo_mle_with_tie, boots)
    bands = {m: (_order_band(theirs[m].to_numpy(), 0.025), _order_band(theirs[m].to_numpy(), 0.975))
             for m in theirs.columns}
    ours = {r["model"]: r for r in arena.leaderboard(vs, boots=boots, resample="votes", seed=0)}
    assert set(ours) == set(bands) == {"x", "y", "z"}, sorted(ours)  # every model checked, not an empty loop
    for m, row in ours.items():
        (lo, hi) = bands[m]
        assert lo[0] <= row["low"] <= lo[1] and hi[0] <= row["high"] <= hi[1], (m, row, bands[m])
    by_round = {r["model"]: r for r in arena.leaderboard(vs, boots=boots, resample="rounds", seed=0)}
    assert set(by_round) == set(bands), sorted(by_round)
    for m, row in by_round.items():  # the band has the power to tell: every end of every interval is outside it
        (lo, hi) = bands[m]
        assert row["low"] < lo[0] and row["high"] > hi[1], (m, row, bands[m])
