"""Side-by-side chat records and the leaderboard: Bradley–Terry scores with bootstrap intervals, and a
length-controlled variant (a length-difference covariate, as Chatbot Arena's style control does), so a model
that wins only by answering longer loses that edge."""

from __future__ import annotations

import math

import numpy as np
from sqlmodel import select

from storage import db
from storage.models import ChatTranscript, Vote

OUTCOMES = ("a", "b", "tie", "bad")


def save_transcript(prompt: str, settings: dict, answers: dict) -> ChatTranscript:
    with db.session() as s:
        t = ChatTranscript(prompt=prompt, settings=settings, answers=answers)
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


def vote(transcript_id: int, model_a: str, model_b: str, outcome: str) -> Vote:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}.")
    with db.session() as s:
        t = s.get(ChatTranscript, transcript_id)
        if t is None or model_a not in t.answers or model_b not in t.answers:
            raise ValueError("both models must have answered in this transcript.")
        v = Vote(transcript_id=transcript_id, model_a=model_a, model_b=model_b, outcome=outcome,
                 tokens_a=t.answers[model_a].get("tokens", 0), tokens_b=t.answers[model_b].get("tokens", 0))
        s.add(v)
        s.commit()
        s.refresh(v)
        return v


def votes() -> list[Vote]:
    with db.session() as s:
        return list(s.exec(select(Vote).order_by(Vote.id)))


def _design(vs: list[Vote], models: list[str], length_control: bool):
    """Rows (x, y, weight) for logistic regression: x has +1 for A, −1 for B (first model is the reference, left
    out), plus the normalised length difference when length is controlled. Ties count half a win each way."""
    idx = {m: i for i, m in enumerate(models)}
    xs, ys, ws = [], [], []
    for v in vs:
        x = np.zeros(len(models) - 1 + (1 if length_control else 0))
        if idx[v.model_a] > 0:
            x[idx[v.model_a] - 1] += 1
        if idx[v.model_b] > 0:
            x[idx[v.model_b] - 1] -= 1
        if length_control:
            total = v.tokens_a + v.tokens_b
            x[-1] = (v.tokens_a - v.tokens_b) / total if total else 0.0
        if v.outcome == "a":
            outcomes = [(1.0, 1.0)]
        elif v.outcome == "b":
            outcomes = [(0.0, 1.0)]
        else:  # tie or both bad
            outcomes = [(1.0, 0.5), (0.0, 0.5)]
        for y, w in outcomes:
            xs.append(x)
            ys.append(y)
            ws.append(w)
    return np.array(xs), np.array(ys), np.array(ws)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Weighted logistic regression by Newton's method (a small ridge keeps perfect separations finite)."""
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (w * (y - p)) - l2 * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def leaderboard(vs: list[Vote] | None = None, *, length_control: bool = False, boots: int = 200,
                seed: int = 0) -> list[dict]:
    """Bradley–Terry strengths on the Elo scale (400·log10 odds, mean 1000) with 95% bootstrap intervals."""
    vs = votes() if vs is None else vs
    models = sorted({v.model_a for v in vs} | {v.model_b for v in vs})
    if len(models) < 2:
        return []

    def scores(sample: list[Vote]) -> np.ndarray:
        x, y, w = _design(sample, models, length_control)
        beta = _fit(x, y, w)
        theta = np.concatenate([[0.0], beta[: len(models) - 1]])
        elo = 400 / math.log(10) * theta
        return elo - elo.mean() + 1000

    point = scores(vs)
    rng = np.random.default_rng(seed)
    samples = np.array([scores([vs[i] for i in rng.integers(0, len(vs), len(vs))]) for _ in range(boots)])
    counts = {m: sum(m in (v.model_a, v.model_b) for v in vs) for m in models}
    rows = [{"model": m, "score": float(point[i]), "low": float(np.percentile(samples[:, i], 2.5)),
             "high": float(np.percentile(samples[:, i], 97.5)), "votes": counts[m]} for i, m in enumerate(models)]
    return sorted(rows, key=lambda r: -r["score"])
