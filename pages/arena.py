"""Blind side-by-side chat: 2–4 models answer the same prompt at once (streaming) under the labels Model A, B…,
in an order shuffled every round; names, timings and speeds are revealed after the vote (speed would give a model
away by its size). Vote, flag hallucinations, and read the leaderboard (Bradley–Terry, plain and style-controlled)
with its position-bias check."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from backend import arena, evaldevice, registry
from backend.chat import answer_all
from pages.common import current_model, drop_deleted, model_names, via_app
from pages.figures import leaderboard_figure, position_bias_figure
from storage import db
from storage.models import ChatTranscript

via_app(__file__)
st.title("Side-by-side chat")
names = model_names()
if len(names) < 2:
    st.info("Register at least two models (for example the built-in one and a model up-scaled from it).")
    st.stop()

# a model chosen here and deleted since (another tab, the CLI) dropped out of the choice without a word: the next
# prompt then said only "Choose at least two models", or went to the models left
if gone := drop_deleted("arena_models", names):
    st.warning(f"{gone} of the next round.")
# bound to the address (?arena_models=…&arena_models=…): a reload starts a fresh session, which chose the last two
# models again whatever the round on screen had been made with
models = st.multiselect("Models (2–4)", names, default=names[-2:], max_selections=4, key="arena_models",
                        bind="query-params")
c1, c2, c3, c4 = st.columns(4)
max_new = c1.slider("Max new tokens", 8, 512, 96, key="arena_max_new")
temperature = c2.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.0, 0.05, key="arena_temp")
top_p = c3.slider("top-p", 0.1, 1.0, 1.0, 0.05, key="arena_top_p")
show_names = c4.toggle("Show names", key="arena_show_names",
                       help="For debugging: names stay visible before the vote, and votes cast this way are not "
                            "blind, so the leaderboard leaves them out.")


def run_round(prompt: str, chosen: list[str]) -> int | None:
    """Generate with every model at once, shown in a fresh random order; the script thread only redraws what the
    generation threads wrote. None, with the reason on the page, when a model is gone or cannot be loaded."""
    # Regenerate reruns the round's models: one deleted since raised AttributeError ('NoneType' … 'path') as a
    # traceback, and a folder removed under a registered model raised from the loader
    recs = {m: registry.get(m) for m in chosen}
    if gone := [m for m, r in recs.items() if r is None]:
        st.error(f"Not run: {', '.join(gone)} {'was' if len(gone) == 1 else 'were'} deleted since (another tab or "
                 "the command line). Choose the models again above and send the prompt.")
        return None
    lms: dict = {}
    refused = None
    try:
        for m, r in recs.items():
            lms[m] = current_model(r.path, m, beside=tuple(lms))
    except evaldevice.DeviceError as exc:  # said outside the handler: its traceback holds the round's frame
        refused = str(exc)
    except Exception as exc:  # noqa: BLE001 - a folder moved or deleted since import: say so, no traceback
        st.error(f"Not run: a model cannot be loaded: {exc}")
        return None
    if refused is not None:
        st.error(f"Not run: a model cannot be loaded: {refused}")
        # The models loaded before the refused one were held here, so the page cache's retry could not free them
        # (it let the cache go, not this round), and dropped on return their memory stayed reserved by PyTorch's
        # allocator, taken from every other process (a training job in the worker) until a page next loaded a
        # model. Let go of them and give their memory back now.
        lms.clear()
        evaldevice.release_memory()
        return None
    order = arena.shuffle_positions(chosen)
    shown = dict(zip(order, arena.labels(len(order))))
    live = answer_all(lms, [{"role": "user", "content": prompt}], max_new_tokens=max_new, temperature=temperature,
                      top_p=top_p)
    boxes = {m: col.empty() for m, col in zip(order, st.columns(len(order)))}
    while True:
        for m in order:
            text = arena.visible(live[m].text) if live[m].text else "…"
            boxes[m].markdown(f"**{m if show_names else shown[m]}**\n\n{text}")
        if all(a.done for a in live.values()):
            break
        time.sleep(0.1)
    answers = {m: {"text": a.text, "error": a.error, "tokens": a.stats.new_tokens,
                   "first_token_s": a.stats.first_token_s, "seconds": a.stats.total_s,
                   "tokens_per_s": a.stats.tokens_per_s, "hallucination": False} for m, a in live.items()}
    settings = {"max_new_tokens": max_new, "temperature": temperature, "top_p": top_p}
    return arena.save_transcript(prompt, settings, answers, positions=order, blind=not show_names).id


def count(n: int, noun: str) -> str:
    """"1 round", "2 rounds": the caption read "1 blind pairwise votes from 1 rounds"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def board_table(board: list[dict]) -> pd.DataFrame:
    """The leaderboard with its interval as one column: the two ends, or why there is none (a bootstrap over one
    vote gave low = high = the rating, which read as certainty)."""
    return pd.DataFrame([{"model": r["model"], "score": round(r["score"], 1),
                          "95 % interval": r["no_interval"] or f"{r['low']:.1f} – {r['high']:.1f}",
                          "votes": r["votes"], "rounds": r["rounds"]} for r in board])


def show_round(made: int) -> None:
    """The round on screen, kept in the session and in the address (?round=12): a reload starts a fresh session, and
    the round, saved but known only to the old one, was lost before its vote."""
    st.session_state["arena_round"] = made
    st.query_params["round"] = str(made)


VOTE_KEYS = ("vote_a", "vote_b", "vote_tie", "vote_bad", "vote_best")  # the vote buttons below


def cast(vote) -> None:
    """Record the vote, then draw the round again from the database. arena.vote_round refuses a round that has a
    vote already (another tab voted on it since this one was drawn): its words are shown under the vote on record."""
    try:
        vote()
    except ValueError as e:
        st.session_state["arena_refused"] = str(e)
    st.rerun()


def round_from_address() -> int | None:
    """The round named in the address, when the session holds none (after a reload); its names stay hidden until
    its vote as before. None, with a word when it is not a round, when the address names none."""
    given = st.query_params.get("round")
    if not given:
        return None
    with db.session() as s:
        t = s.get(ChatTranscript, int(given)) if given.isdigit() else None
    if t is None:
        st.warning(f"The address names round {given!r}, which is not in the database (deleted, or another "
                   "workspace): send a prompt for a new round.")
        del st.query_params["round"]
        return None
    st.session_state["arena_round"] = t.id
    return t.id


prompt = st.chat_input("One prompt for every model…", key="arena_prompt")
if prompt and len(models) >= 2:
    if (made := run_round(prompt, models)) is not None:
        show_round(made)
        st.rerun()
elif prompt:
    st.warning("Choose at least two models.")

round_id = st.session_state.get("arena_round") or round_from_address()
if not round_id and (last := arena.last_unvoted_round()) is not None:
    # the address can lose the round too (a first visit that went through app.py, a new tab): offer the newest
    # round while nobody has voted on it or made another; opening it shows it as blind as before
    st.info(f"Round {last.id} ({len(last.answers)} models, {last.prompt[:60]!r}"
            f"{'…' if len(last.prompt) > 60 else ''}) has no vote yet.")
    if st.button(f"Open round {last.id}", key="arena_open_last"):
        show_round(last.id)
        st.rerun()
if round_id:
    with db.session() as s:
        t = s.get(ChatTranscript, round_id)
    order = t.positions or list(t.answers)
    label = dict(zip(order, arena.labels(len(order))))
    # from the database, not the session: a round opened again after a reload must not take a second vote
    voted = arena.voted(round_id)
    no_vote = arena.no_answer_words(t)  # an error, or a reply that shows nothing: no answer to judge
    # A round made blind stays blind until its vote: the vote is stored as blind, so turning "Show names" on
    # afterwards must not reveal the names (it applies to the next round).
    reveal = voted or not t.blind
    if show_names and t.blind and not voted:
        st.caption("This round was made blind: its names show after the vote. 'Show names' applies to the next "
                   "round.")
    st.markdown(f"> {t.prompt}")
    for col, m in zip(st.columns(len(order)), order):
        a = t.answers[m]
        with col:
            st.markdown(f"**{label[m]}: {m}**" if reveal else f"**{label[m]}**")
            if a.get("error"):  # a statement, not an expression: Streamlit's magic would print its value (None)
                # ContextTooLong names its model ("too long for wide8"): said as "this model" until the names show
                st.error(a["error"] if reveal else arena.without_names(a["error"], order))
            else:
                st.markdown(arena.visible(a["text"]))
            if reveal:
                st.caption(f"{a['tokens']} tokens · first token {a['first_token_s'] or 0:.2f} s · "
                           f"{a['tokens_per_s']:.1f} tokens/s")
            else:
                st.caption(f"{a['tokens']} tokens · timings after the vote")
            flagged = st.checkbox("hallucination", value=a.get("hallucination", False), key=f"flag_{round_id}_{m}")
            if flagged != a.get("hallucination", False):
                arena.flag_hallucination(round_id, m, flagged)
    if st.button("Regenerate", key="regenerate") and (made := run_round(t.prompt, order)) is not None:
        show_round(made)
        st.rerun()
    if refused := st.session_state.pop("arena_refused", None):  # cast(): clicked as another tab voted
        st.warning(refused)
    elif voted and any(st.session_state.get(k) for k in VOTE_KEYS):  # clicked on a round another tab had voted on
        # since this one drew it: this run reads it voted and draws no buttons, so the click reached no cast() and
        # the page said only "Vote recorded" (another tab's)
        st.warning(f"Your click was not counted: {arena.already_voted(t)}")
    if voted:
        st.success("Vote recorded. " + " · ".join(f"{label[m]} was **{m}**" for m in order))
    elif no_vote:
        # arena.vote_round refuses it too: a vote here counted an error, or 96 newlines, as a lost (or won) answer
        st.warning(f"No vote on this round: {no_vote}, so there is nothing to compare. Regenerate the round or send "
                   "another prompt.")
    elif len(order) == 2:
        v1, v2, v3, v4 = st.columns(4)
        for col, (text, outcome) in zip((v1, v2, v3, v4), (("A is better", "a"), ("B is better", "b"),
                                                            ("Tie", "tie"), ("Both bad", "bad"))):
            if col.button(text, key=f"vote_{outcome}"):
                cast(lambda: arena.vote(round_id, order[0], order[1], outcome))
    else:
        # Nothing chosen in advance, and a fresh choice each round: a preselected "Model A" (or the last round's
        # pick) turned a careless click into a vote for a screen position.
        choice = st.radio("Best answer", [label[m] for m in order] + ["tie", "all bad"], horizontal=True,
                          index=None, key=f"best_{round_id}")
        if st.button("Vote", key="vote_best", disabled=choice is None):
            by_label = {label[m]: m for m in order}
            cast(lambda: arena.vote_round(round_id, by_label.get(choice, "bad" if choice == "all bad" else "tie")))

st.subheader("Leaderboard")
all_votes = arena.votes()
blind_votes = [v for v in all_votes if v.blind]
# votes cast on an error or on a reply that shows nothing before vote_round refused them (older databases): said,
# and left out of every figure
on_errors = len(arena.votes_on_errors())
on_errors_note = (f" Left out: {count(on_errors, 'vote')} on an answer that was an error or showed nothing (cast "
                  "before such rounds were refused)." if on_errors else "")
if not blind_votes:
    # with the next step: the prompt box sits at the window's foot, far below this line on a tall page
    st.caption("No blind votes yet: type a prompt in the box at the foot of the page, read the answers, then vote "
               "for the better one; the leaderboard appears with the first blind vote."
               + (f" (Left out: {count(len(all_votes), 'vote')} cast with names shown.)" if all_votes else "")
               + on_errors_note)
    st.stop()
control = st.toggle("Style control", value=True, key="style_control",
                    help="Answer length and markdown (headers, lists, bold) enter as covariates, as Chatbot "
                         "Arena's style control does: a model that wins only by answering longer or with more "
                         "formatting loses that edge.")
board = arena.leaderboard(blind_votes, style_control=control)
st.dataframe(board_table(board), hide_index=True, key="leaderboard")
st.plotly_chart(leaderboard_figure(board, "Style-controlled" if control else "Plain"), key="leaderboard_chart")
rounds = len({v.transcript_id for v in blind_votes})
notes = arena.fit(blind_votes, style_control=True) if control else None
st.caption(f"{count(len(blind_votes), 'blind pairwise vote')} from {count(rounds, 'round')}; 95 % intervals from "
           f"resampling rounds (a 3–4-model round gives several votes from one judgement), shown from "
           f"{arena.MIN_ROUNDS} rounds of a model on. Ties and both-bad count as one win each way."
           + (f" Left out: {count(len(all_votes) - len(blind_votes), 'vote')} cast with names shown."
              if len(all_votes) > len(blind_votes) else "") + on_errors_note)
if notes:
    st.caption("Style coefficients (log10-odds per standard deviation): "
               + (", ".join(f"{k} {v:+.2f}" for k, v in notes["style"].items()) or "none")
               + ("; " + "; ".join(notes["notes"]) if notes["notes"] else ""))
bias = arena.position_bias(blind_votes)
if bias:
    st.plotly_chart(position_bias_figure(bias), key="position_bias")
