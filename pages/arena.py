"""Side-by-side chat: 2–4 models answer the same prompt at once (streaming), with tokens, latency and tokens/s;
vote, flag hallucinations, and read the leaderboard (Bradley–Terry, plain and length-controlled)."""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend import arena, registry
from backend.chat import answer_all
from pages.common import cached_model, model_names, via_app
from pages.figures import PALETTE
from storage import db
from storage.models import ChatTranscript

via_app(__file__)
st.title("Side-by-side chat")
names = model_names()
if len(names) < 2:
    st.info("Register at least two models (for example the built-in one and a model up-scaled from it).")
    st.stop()

models = st.multiselect("Models (2–4)", names, default=names[-2:], max_selections=4, key="arena_models")
c1, c2, c3 = st.columns(3)
max_new = c1.slider("Max new tokens", 8, 512, 96, key="arena_max_new")
temperature = c2.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.0, 0.05, key="arena_temp")
top_p = c3.slider("top-p", 0.1, 1.0, 1.0, 0.05, key="arena_top_p")


def run_round(prompt: str) -> int:
    """Generate with every model at once; the script thread only redraws what the generation threads wrote."""
    lms = {m: cached_model(registry.get(m).path, m) for m in models}
    live = answer_all(lms, [{"role": "user", "content": prompt}], max_new_tokens=max_new, temperature=temperature,
                      top_p=top_p)
    cols = st.columns(len(models))
    boxes = {m: col.empty() for m, col in zip(models, cols)}
    while True:
        for m in models:
            boxes[m].markdown(f"**{m}**\n\n{live[m].text or '…'}")
        if all(a.done for a in live.values()):
            break
        time.sleep(0.1)
    answers = {m: {"text": a.text, "error": a.error, "tokens": a.stats.new_tokens,
                   "first_token_s": a.stats.first_token_s, "seconds": a.stats.total_s,
                   "tokens_per_s": a.stats.tokens_per_s, "hallucination": False} for m, a in live.items()}
    settings = {"max_new_tokens": max_new, "temperature": temperature, "top_p": top_p}
    return arena.save_transcript(prompt, settings, answers).id


prompt = st.chat_input("One prompt for every model…", key="arena_prompt")
if prompt and len(models) >= 2:
    st.session_state["arena_round"] = run_round(prompt)
    st.rerun()
elif prompt:
    st.warning("Choose at least two models.")

round_id = st.session_state.get("arena_round")
if round_id:
    with db.session() as s:
        t = s.get(ChatTranscript, round_id)
    st.markdown(f"> {t.prompt}")
    shown = list(t.answers)
    cols = st.columns(len(shown))
    for col, m in zip(cols, shown):
        a = t.answers[m]
        with col:
            st.markdown(f"**{m}**")
            if a.get("error"):  # a statement, not an expression: Streamlit's magic would print its value (None)
                st.error(a["error"])
            else:
                st.write(a["text"] or "(empty)")
            st.caption(f"{a['tokens']} tokens · first token {a['first_token_s'] or 0:.2f} s · "
                       f"{a['tokens_per_s']:.1f} tokens/s")
            flagged = st.checkbox("hallucination", value=a.get("hallucination", False), key=f"flag_{round_id}_{m}")
            if flagged != a.get("hallucination", False):
                arena.flag_hallucination(round_id, m, flagged)
    if st.button("Regenerate", key="regenerate"):
        models = shown
        st.session_state["arena_round"] = run_round(t.prompt)
        st.rerun()
    voted = st.session_state.get("voted", set())
    if round_id in voted:
        st.success("Vote recorded.")
    elif len(shown) == 2:
        a, b = shown
        v1, v2, v3, v4 = st.columns(4)
        for col, (label, outcome) in zip((v1, v2, v3, v4), (("A is better", "a"), ("B is better", "b"),
                                                             ("Tie", "tie"), ("Both bad", "bad"))):
            if col.button(label, key=f"vote_{outcome}"):
                arena.vote(round_id, a, b, outcome)
                st.session_state["voted"] = voted | {round_id}
                st.rerun()
    else:
        best = st.radio("Best answer", shown + ["tie", "all bad"], horizontal=True, key="best")
        if st.button("Vote", key="vote_best"):
            for i, x in enumerate(shown):  # one pairwise judgement per pair of models
                for y in shown[i + 1:]:
                    outcome = "a" if best == x else "b" if best == y else ("bad" if best == "all bad" else "tie")
                    arena.vote(round_id, x, y, outcome)
            st.session_state["voted"] = voted | {round_id}
            st.rerun()

st.subheader("Leaderboard")
all_votes = arena.votes()
if len(all_votes) < 1:
    st.caption("No votes yet.")
    st.stop()
control = st.toggle("Control for answer length", key="length_control",
                    help="Adds the length difference as a covariate (Chatbot Arena's style control): a model that "
                         "wins only by answering longer loses that edge.")
board = arena.leaderboard(all_votes, length_control=control)
st.dataframe(pd.DataFrame(board).round(1), hide_index=True, key="leaderboard")
fig = go.Figure(go.Bar(x=[r["model"] for r in board], y=[r["score"] for r in board],
                       error_y=dict(type="data", symmetric=False, array=[r["high"] - r["score"] for r in board],
                                    arrayminus=[r["score"] - r["low"] for r in board]),
                       marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(board))]))
fig.update_layout(height=320, yaxis_title="Bradley–Terry (Elo scale)", margin=dict(l=10, r=10, t=20, b=60))
st.plotly_chart(fig, key="leaderboard_chart")
st.caption(f"{len(all_votes)} pairwise votes; 95% bootstrap intervals.")
