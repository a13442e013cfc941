"""Blind side-by-side rounds and the leaderboard.

A round shows 2–4 answers under the labels A, B, C… in an order shuffled every round (recorded in
`ChatTranscript.positions`); names are revealed after the vote. The leaderboard is Bradley–Terry fitted as Chatbot
Arena fits it with style control (FastChat `fastchat/serve/monitor/elo_analysis.py`, `construct_style_matrices`
and `fit_mle_elo`; markdown counts as in `add_markdown_info.py`):

- every vote is written twice; a win for A is two A wins, a tie (or "both bad") one A win and one B win;
- model columns are +ln 10 for A and −ln 10 for B, so a coefficient is in log10-odds and Elo = 400·θ + 1000;
- style covariates (answer tokens, markdown headers, list items, bold spans) enter as (a − b) / (a + b + 1),
  each then standardised to mean 0 and standard deviation 1 over all votes;
- the fit is logistic regression without intercept and with sklearn's default L2 penalty (C = 1: ½‖θ‖² added to
  the summed log loss); with all models as columns the ridge also centres the ratings on 1000. The plain
  leaderboard uses the same matrices without style columns: the released FastChat (fschat 0.2.36 on PyPI,
  `compute_elo_mle_with_tie`) fits it so, with the same penalty. FastChat's main branch has since moved its plain
  fit to an unpenalised L-BFGS; the penalty is kept here so that a model that won every vote still gets a finite
  rating (elsewhere it shrinks a rating by under an Elo point at a few dozen votes, by 3–5 at 10–20 lopsided ones).

Unlike FastChat, the bootstrap resamples rounds, not votes: a 3–4-model round yields several pairwise votes from one
judgement, and resampling them one by one would treat them as independent and make the intervals too narrow.
`resample="votes"` is FastChat's bootstrap (`get_bootstrap_result`: n of the n votes drawn with replacement, refitted,
2.5 and 97.5 percentiles): on the same draws its intervals are FastChat's to a tenth of an Elo point.

A model's interval is shown only from MIN_ROUNDS rounds on, and never when every resample gave it the same rating:
with n resampled units the percentile interval is about mean ± 1.96·s·√((n−1)/n)/√n where small samples need
mean ± t(n−1)·s/√n (Hesterberg 2015, "What Teachers Should Know About the Bootstrap", The American Statistician
69(4): the percentile interval is too narrow in small samples by both factors). Their ratio
1.96·√((n−1)/n)/t(n−1, 0.975) is 0.11 at 2 rounds, 0.63 at 5, 0.82 at 10 and 0.91 at 20 (past 0.9 from 18 on):
below 20 rounds the interval would claim far more certainty than the votes hold. After one vote the bootstrap
could only redraw that vote, and showed a 95 % interval of zero width.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata

import numpy as np
from sqlalchemy import update
from sqlmodel import select

from storage import db
from storage.models import ChatTranscript, Vote

OUTCOMES = ("a", "b", "tie", "bad")
STYLE = ("tokens", "headers", "lists", "bold")
LN10 = math.log(10)
MIN_ROUNDS = 20  # a model's rounds (votes, resampling votes) before its interval is shown: see the module docstring
_CODE = re.compile(r"```([^`]*)```")


def labels(n: int) -> list[str]:
    return [f"Model {chr(65 + i)}" for i in range(n)]


def style_counts(text: str) -> dict[str, int]:
    """Markdown headers, list items and bold spans, counted after code blocks are removed (FastChat's regexes)."""
    text = _CODE.sub("", text or "")
    return {"headers": len(re.findall(r"^#{1,6}\s", text, re.MULTILINE)),
            "lists": len(re.findall(r"^\s*\d+\.\s", text, re.MULTILINE))
            + len(re.findall(r"^\s*[-*+]\s", text, re.MULTILINE)),
            "bold": len(re.findall(r"\*\*[^*\n]+\*\*", text)) + len(re.findall(r"__[^_\n]+__", text))}


def shuffle_positions(models: list[str], rng: random.Random | None = None) -> list[str]:
    """The left-to-right order for one round: a fresh shuffle, so no model keeps a side."""
    order = list(models)
    (rng or random.SystemRandom()).shuffle(order)
    return order


def save_transcript(prompt: str, settings: dict, answers: dict, positions: list[str] | None = None,
                    blind: bool = False) -> ChatTranscript:
    positions = list(positions or answers)
    if sorted(positions) != sorted(answers):
        raise ValueError("positions must list every answering model once.")
    with db.session() as s:
        t = ChatTranscript(prompt=prompt, settings=settings, answers=answers, positions=positions, blind=blind)
        s.add(t)
        s.commit()
        s.refresh(t)
        return t


def flag_hallucination(transcript_id: int, model: str, flagged: bool = True) -> None:
    with db.session() as s:
        t = s.get(ChatTranscript, transcript_id)
        answers = dict(t.answers)
        answers[model] = {**answers[model], "hallucination": flagged}
        t.answers = answers
        s.add(t)
        s.commit()


def _make_vote(t: ChatTranscript, model_a: str, model_b: str, outcome: str) -> Vote:
    order = t.positions or list(t.answers)
    sa, sb = (style_counts(t.answers[m].get("text", "")) for m in (model_a, model_b))
    return Vote(transcript_id=t.id, model_a=model_a, model_b=model_b, outcome=outcome,
                tokens_a=t.answers[model_a].get("tokens", 0), tokens_b=t.answers[model_b].get("tokens", 0),
                headers_a=sa["headers"], headers_b=sb["headers"], lists_a=sa["lists"], lists_b=sb["lists"],
                bold_a=sa["bold"], bold_b=sb["bold"], position_a=order.index(model_a),
                position_b=order.index(model_b), blind=t.blind)


def failed_models(t: ChatTranscript) -> list[str]:
    """The round's models, left to right, whose answer is an error (ContextTooLong, a failed generation): they gave
    no answer to judge."""
    return [m for m in (t.positions or list(t.answers)) if (t.answers.get(m) or {}).get("error")]


def no_answer(t: ChatTranscript) -> dict[str, str]:
    """The round's models, left to right, that gave no answer to judge, each with why: "an error" (failed_models)
    or "nothing visible" (an empty reply, or one of whitespace and control characters only: two tiny models' 96
    newlines each took an "A is better" vote and moved the leaderboard to 1188.6 against 811.4). The evaluation
    grades an empty reply as no answer (qa.classify: "empty") too."""
    out = {}
    for m in t.positions or list(t.answers):
        a = t.answers.get(m) or {}
        if a.get("error"):
            out[m] = "an error"
        elif shows_nothing(a.get("text") or ""):
            out[m] = "nothing visible"
    return out


def no_answer_words(t: ChatTranscript, models: list[str] | None = None) -> str | None:
    """Why the round (or, with `models`, a vote between those of its models) takes no vote, by label as a blind page
    shows it: "Model A, Model B gave no answer (an error; nothing visible)"; None when every one of them answered."""
    order = t.positions or list(t.answers)
    gone = {m: why for m, why in no_answer(t).items() if models is None or m in models}
    if not gone:
        return None
    label = dict(zip(order, labels(len(order))))
    return (f"{', '.join(label[m] for m in gone)} gave no answer "
            f"({'; '.join(dict.fromkeys(gone.values()))})")


def without_names(text: str, names: list[str]) -> str:
    """`text` with every one of `names` said as "this model": an error under a blind label named its model ("the
    last message is too long for wide8: …") before the vote. Longest names first (tiny2 before tiny), and only where
    a name stands alone, so that a model called "a" leaves "message" whole."""
    for name in sorted(set(names), key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", "this model", text)
    return text


def voted(transcript_id: int) -> bool:
    """Whether the round has a vote: read from the database, so a reloaded page (a fresh session) knows it too."""
    with db.session() as s:
        return s.exec(select(Vote.id).where(Vote.transcript_id == transcript_id).limit(1)).first() is not None


def last_unvoted_round() -> ChatTranscript | None:
    """The newest round, when it has no vote yet and every model answered: offered again on a page that lost it (a
    reload that cleared the address, a new tab). None when a newer round or its vote has followed."""
    with db.session() as s:
        t = s.exec(select(ChatTranscript).order_by(ChatTranscript.id.desc()).limit(1)).first()
    return None if t is None or no_answer(t) or voted(t.id) else t


def verdict_words(t: ChatTranscript, vs: list[Vote]) -> str:
    """A round's stored votes in words, by label and name (the names show once a round has its vote): "Model B
    (m2) is better than Model A (m1)", "Model C (m3) is best", "a tie", "all bad"."""
    label = dict(zip(order := (t.positions or list(t.answers)), labels(len(order))))
    said = lambda m: f"{label.get(m, m)} ({m})"  # noqa: E731
    if all(v.outcome == "tie" for v in vs):
        return "a tie" if len(vs) > 1 else f"{said(vs[0].model_a)} and {said(vs[0].model_b)} tie"
    if all(v.outcome == "bad" for v in vs):
        return "all bad" if len(vs) > 1 else f"{said(vs[0].model_a)} and {said(vs[0].model_b)} both bad"
    wins = [(v.model_a, v.model_b) if v.outcome == "a" else (v.model_b, v.model_a) for v in vs]
    if len(vs) == 1:
        return f"{said(wins[0][0])} is better than {said(wins[0][1])}"
    if len({w for w, _ in wins}) == 1:
        return f"{said(wins[0][0])} is best"
    return "; ".join(f"{said(w)} over {said(x)}" for w, x in wins)


def vote(transcript_id: int, model_a: str, model_b: str, outcome: str) -> Vote:
    """One pairwise judgement; positions, style counts and blindness are taken from the round."""
    return vote_round(transcript_id, outcome, pair=(model_a, model_b))[0]


def vote_round(transcript_id: int, best: str, pair: tuple[str, str] | None = None) -> list[Vote]:
    """Record a round's judgement as pairwise votes. `best` is a model name (it beat every other model: k − 1
    decisive votes; nothing is said about the others among themselves, so no tie is invented for them), "tie"
    (every pair ties) or "bad" (every pair is both bad). With `pair`, `best` is an outcome a/b/tie/bad for it."""
    with db.session() as s:
        t = s.get(ChatTranscript, transcript_id)
        if t is None:
            raise ValueError(f"no round {transcript_id}.")
        order = t.positions or list(t.answers)
        # A model that gave no answer (an error, or a reply that shows nothing) cannot be judged: FastChat's arena
        # kept its vote buttons after a failed generation, and its leaderboard drops such battles when it cleans the
        # log (see votes()). Refused here, every outcome "both bad" included, so that the page, a script and a test
        # all agree; said by label, as a blind page shows it.
        if why := no_answer_words(t, None if pair is None else list(pair)):
            raise ValueError(f"round {transcript_id} cannot be voted on: {why}, so there is nothing to compare. "
                             "Regenerate the round or send the prompt again.")
        if pair is not None:
            if best not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}.")
            if any(m not in t.answers for m in pair):
                raise ValueError("both models must have answered in this transcript.")
            vs = [_make_vote(t, pair[0], pair[1], best)]
        elif best in ("tie", "bad"):
            vs = [_make_vote(t, x, y, best) for i, x in enumerate(order) for y in order[i + 1:]]
        elif best in order:  # model_a is the one shown further left
            vs = [_make_vote(t, *((best, y) if order.index(best) < order.index(y) else (y, best)),
                             "a" if order.index(best) < order.index(y) else "b") for y in order if y != best]
        else:
            raise ValueError(f"best must be one of {order + ['tie', 'bad']}.")
        # One judgement per round, as Chatbot Arena takes one vote per battle (FastChat's vote_last_response logs
        # the vote, then disables the four buttons): a second vote, from a second tab open on the round or a
        # script, counted the round twice, or both ways ("A is better", then "B is better"). Checked after the
        # arguments, so that a wrong one is said as such.
        _refuse_if_voted(s, t)
        # the round claimed in this transaction, as runner's _transition claims a job: two tabs clicking at once
        # both passed the check above and both rounds' votes counted
        free = [ChatTranscript.id == transcript_id, ChatTranscript.voted == False]  # noqa: E712
        if not s.exec(update(ChatTranscript).where(*free).values(voted=True)).rowcount:
            s.rollback()
            _refuse_if_voted(s, t)
            raise ValueError(f"round {transcript_id} was voted on meanwhile: a round takes one vote.")
        s.add_all(vs)
        s.commit()
        for v in vs:
            s.refresh(v)
        return vs


def _refuse_if_voted(s, t: ChatTranscript) -> None:
    if before := s.exec(select(Vote).where(Vote.transcript_id == t.id).order_by(Vote.id)).all():
        raise ValueError(f"round {t.id} was already voted on ({verdict_words(t, list(before))}): a round takes one "
                         "vote. Send the prompt again (or Regenerate) for a new round to vote on.")


def already_voted(t: ChatTranscript) -> str | None:
    """vote_round's refusal of a round that has its vote, in its words; None while it has none."""
    with db.session() as s:
        try:
            _refuse_if_voted(s, t)
        except ValueError as e:
            return str(e)
    return None


def _votes_by_answer() -> tuple[list[Vote], list[Vote]]:
    """(votes on two answers, votes on no answer), in order. A vote whose either side was an error or showed nothing
    judged no answer; rounds voted so before vote_round refused them are still in older databases (a "best" vote for
    a model whose answer was an error gave it 1312 and its rival 688)."""
    with db.session() as s:
        rows = list(s.exec(select(Vote, ChatTranscript).join(ChatTranscript, Vote.transcript_id == ChatTranscript.id)
                           .order_by(Vote.id)))
    good, bad = [], []
    for v, t in rows:
        (bad if {v.model_a, v.model_b} & set(no_answer(t)) else good).append(v)
    return good, bad


def votes() -> list[Vote]:
    """Every vote on two answers. Votes on an answer that is an error or shows nothing are left out, as FastChat
    leaves out a battle whose log holds an error message (`fastchat/serve/monitor/clean_battle_data.py`: "NETWORK
    ERROR …" and "**API REQUEST ERROR**" are among its IDENTITY_WORDS); votes_on_errors() lists them."""
    return _votes_by_answer()[0]


def votes_on_errors() -> list[Vote]:
    """The votes votes() leaves out: cast on a round where one of the two answers is an error or shows nothing."""
    return _votes_by_answer()[1]


def _design(vs: list[Vote], models: list[str], style_control: bool):
    """FastChat's matrices: rows doubled (first copy then second), Y per its tie rule, style columns standardised.
    Returns X (2n × (p + k)), Y (2n), the style names kept, and notes on any dropped."""
    n, p = len(vs), len(models)
    idx = {m: i for i, m in enumerate(models)}
    xm = np.zeros((n, p))
    rows = np.arange(n)
    xm[rows, [idx[v.model_a] for v in vs]] = LN10
    xm[rows, [idx[v.model_b] for v in vs]] = -LN10
    kept, none, same, cols = [], [], [], []
    if style_control:
        for name in STYLE:
            a = np.array([getattr(v, f"{name}_a") for v in vs], dtype=float)
            b = np.array([getattr(v, f"{name}_b") for v in vs], dtype=float)
            diff = (a - b) / (a + b + 1)
            if diff.std() == 0:  # FastChat would divide by zero here: standardised, the column is undefined
                (none if not diff.any() else same).append(name)
                continue
            cols.append((diff - diff.mean()) / diff.std())
            kept.append(name)
    # one note for each reason: said once per feature, the same words filled a caption four times. A difference
    # that is the same in every vote (one vote: 96 against 12 tokens) is not "no difference"
    notes = ([f"{', '.join(none)}: no difference between the answers in any vote, so left out"] if none else []) + \
        ([f"{', '.join(same)}: the same difference between the answers in every vote ({n} vote"
          f"{'s' if n != 1 else ''}), nothing to fit it from, so left out"] if same else [])
    x = np.hstack([xm, np.array(cols).T]) if cols else xm
    a_won = np.array([v.outcome == "a" for v in vs], dtype=float)
    tie = np.array([v.outcome in ("tie", "bad") for v in vs], dtype=float)
    y = np.concatenate([a_won + tie, a_won])  # a tie is one A win (first copy) and one B win (second copy)
    return np.vstack([x, x]), y, kept, notes


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """Weighted logistic regression with ½·l2‖θ‖² (sklearn's LogisticRegression(C=1, fit_intercept=False)
    objective), by Newton's method: the penalty makes the Hessian positive definite, so a model that won every vote
    still gets a finite rating."""
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (w * (y - p)) - l2 * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def fit(vs: list[Vote], *, style_control: bool = False) -> dict:
    """One Bradley–Terry fit: Elo-scale ratings per model and the style coefficients (log10-odds per standard
    deviation of the normalised difference: how much a judge's preference follows that style feature)."""
    models = sorted({v.model_a for v in vs} | {v.model_b for v in vs})
    x, y, kept, notes = _design(vs, models, style_control)
    beta = _fit(x, y, np.ones(len(y)))
    return {"models": models, "elo": dict(zip(models, 400 * beta[: len(models)] + 1000)),
            "style": dict(zip(kept, beta[len(models):])), "notes": notes}


def leaderboard(vs: list[Vote] | None = None, *, style_control: bool = False, boots: int = 200, seed: int = 0,
                resample: str = "rounds", blind_only: bool = False) -> list[dict]:
    """Ratings on the Elo scale with 95 % bootstrap intervals (percentiles). `resample`: "rounds" (default; all
    votes of a round drawn together) or "votes" (FastChat's, right only when every round is one vote). As in
    FastChat, the style columns are standardised once on all votes and the bootstrap reweights those rows.
    A row's low and high are None, and `no_interval` says why, when the model was in fewer than MIN_ROUNDS rounds
    or every resample rated it the same (see the module docstring); `rounds` counts its resampled units."""
    if resample not in ("rounds", "votes"):
        raise ValueError('resample must be "rounds" or "votes".')
    vs = votes() if vs is None else vs
    if blind_only:
        vs = [v for v in vs if v.blind]
    models = sorted({v.model_a for v in vs} | {v.model_b for v in vs})
    if len(models) < 2:
        return []
    x, y, _, _ = _design(vs, models, style_control)
    point = 400 * _fit(x, y, np.ones(len(y)))[: len(models)] + 1000
    groups = np.array([v.transcript_id for v in vs]) if resample == "rounds" else np.arange(len(vs))
    uniq, inverse = np.unique(groups, return_inverse=True)
    appears = x[: len(vs), : len(models)] != 0  # vote × model
    rng = np.random.default_rng(seed)
    samples = np.full((boots, len(models)), np.nan)
    for i in range(boots):
        drawn = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        w = drawn[inverse].astype(float)  # a vote counts as often as its round (or itself) was drawn
        elo = 400 * _fit(x, y, np.concatenate([w, w]))[: len(models)] + 1000
        present = (appears * (w > 0)[:, None]).any(axis=0)
        samples[i] = np.where(present, elo, np.nan)  # a model absent from the resample has no rating there
    counts = appears.sum(axis=0)
    units = [len(set(inverse[appears[:, j]])) for j in range(len(models))]
    unit = "rounds" if resample == "rounds" else "votes"
    rows = [{"model": m, "score": float(point[j]), **_interval(samples[:, j], units[j], unit), "votes": int(counts[j]),
             "rounds": units[j]} for j, m in enumerate(models)]
    return sorted(rows, key=lambda r: -r["score"])


def _interval(samples: np.ndarray, units: int, unit: str) -> dict:
    """The 95 % percentile interval of one model's bootstrap ratings, or why there is none: too few resampled units
    for the percentile interval to mean 95 % (module docstring), or resamples that all gave the same rating (votes
    that all went one way: redrawing them cannot vary the fit, which is no evidence of certainty)."""
    if units < MIN_ROUNDS:
        return {"low": None, "high": None,
                "no_interval": f"too few {unit} for an interval: {units} of at least {MIN_ROUNDS}"}
    low, high = float(np.nanpercentile(samples, 2.5)), float(np.nanpercentile(samples, 97.5))
    if high - low < 1e-6:
        return {"low": None, "high": None, "no_interval": f"no interval: every resample of its {unit} gave the same "
                                                          "rating (its votes all went one way)"}
    return {"low": low, "high": high, "no_interval": None}


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    return (centre - half, centre + half)


def position_bias(vs: list[Vote]) -> list[dict]:
    """Win rate by screen position over decisive votes (ties and both-bad left out), with Wilson 95 % intervals:
    with names hidden and positions shuffled, every position should win about half of its decisive votes."""
    wins: dict[int, int] = {}
    seen: dict[int, int] = {}
    for v in vs:
        if v.outcome not in ("a", "b") or v.position_a < 0 or v.position_b < 0:
            continue
        for pos in (v.position_a, v.position_b):
            seen[pos] = seen.get(pos, 0) + 1
        winner = v.position_a if v.outcome == "a" else v.position_b
        wins[winner] = wins.get(winner, 0) + 1
    rows = []
    for pos in sorted(seen):
        lo, hi = _wilson(wins.get(pos, 0), seen[pos])
        rows.append({"position": labels(pos + 1)[-1], "wins": wins.get(pos, 0), "decisive": seen[pos],
                     "win_rate": wins.get(pos, 0) / seen[pos], "low": lo, "high": hi})
    return rows


def visible(text: str) -> str:
    """An answer as markdown, or what it holds when nothing of it would show: 96 tokens of newlines (a small or
    badly trained model) drew an empty column beside "96 tokens", which read as an answer lost."""
    if not text:
        return "(empty)"
    if not shows_nothing(text):
        return text
    return (f"_(nothing visible: {len(text)} whitespace or control character{'' if len(text) == 1 else 's'}, "
            f"{text[:12]!r}{'…' if len(text) > 12 else ''})_")


def shows_nothing(text: str) -> bool:
    """Whether `text` draws nothing: empty, or whitespace, controls and format characters (zero-width, BOM) only.
    isprintable() also said so of every character newer than Python's Unicode tables (an emoji of Unicode 15 alone
    read "nothing visible")."""
    return not any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)
