"""Review s21, side-by-side chat: an error under a blind label named its model, a round with an error could be voted
on (and such votes counted on the leaderboard), and a reload lost the unvoted round and the model choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend import arena, registry
from storage import db
from storage.models import Vote
from tests.conftest import make_llama

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def arena_page(query_params: dict | None = None) -> AppTest:
    """The arena page in a fresh session (a reload), with the address's query parameters."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query_params or {})
    at.run()
    at.switch_page("pages/arena.py").run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def two(tiny_llama_untied, tokenizer_dir, tmp_path):
    # untied: a tied random model repeats the prompt's last token ("\n"), and answers that show nothing take no vote
    registry.import_folder(tiny_llama_untied, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5, tie=False), "tiny-b")


def heads(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**Model ")]


def test_an_error_under_a_blind_label_does_not_name_the_model_and_the_round_takes_no_vote(two):
    at = arena_page()
    at.chat_input(key="arena_prompt").set_value("x " * 200).run()  # past the tiny models' context of 128 tokens
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and all(e.startswith("the last message is too long for this model: ") for e in errors)
    assert not any("tiny" in e for e in errors), errors  # was "… too long for tiny-b: …" under "Model A"
    assert heads(at) == ["**Model A**", "**Model B**"]
    # no vote buttons, and the reason said
    assert not [b for b in at.button if b.key and b.key.startswith("vote_")]
    (said,) = [w.value for w in at.warning if w.value.startswith("No vote on this round")]
    assert "Model A, Model B gave no answer" in said
    round_id = at.session_state["arena_round"]
    for attempt in (lambda: arena.vote_round(round_id, "tie"), lambda: arena.vote(round_id, "tiny", "tiny-b", "a")):
        with pytest.raises(ValueError, match=f"round {round_id} cannot be voted on: Model ., Model . gave no answer"):
            attempt()
    assert arena.votes() == [] and arena.votes_on_errors() == []


def test_without_names_says_this_model_where_a_name_stands_alone():
    text = "the last message is too long for tiny2: see /w/models/tiny2/config.json; tiny-b and tiny are fine."
    assert arena.without_names(text, ["tiny", "tiny2"]) == (
        "the last message is too long for this model: see /w/models/this model/config.json; tiny-b and this model "
        "are fine.")
    assert arena.without_names("the last message is too long for b.", ["a", "b"]) == \
        "the last message is too long for this model."  # "message" keeps its a


def test_a_vote_is_refused_on_an_error_and_kept_between_two_answers():
    ok, err = {"text": "4", "tokens": 1, "error": None}, {"text": "", "tokens": 0, "error": "generation failed: x"}
    t = arena.save_transcript("2+2?", {}, {"m1": ok, "m2": ok, "m3": err}, positions=["m1", "m2", "m3"], blind=True)
    with pytest.raises(ValueError, match="cannot be voted on: Model C gave no answer"):
        arena.vote_round(t.id, "m1")  # m1 "beat" an answer that is an error
    with pytest.raises(ValueError, match="Model C gave no answer"):
        arena.vote(t.id, "m2", "m3", "a")
    v = arena.vote(t.id, "m1", "m2", "b")  # two real answers of the round can still be compared
    assert (v.model_a, v.model_b, v.outcome) == ("m1", "m2", "b") and arena.voted(t.id)


def _vote_row(t, a: str, b: str, outcome: str) -> None:
    """A vote written as vote_round wrote it before it refused errors (an older database)."""
    with db.session() as s:
        s.add(Vote(transcript_id=t.id, model_a=a, model_b=b, outcome=outcome, position_a=t.positions.index(a),
                   position_b=t.positions.index(b), blind=True))
        s.commit()


def test_votes_on_an_error_already_in_the_database_are_left_out_of_the_leaderboard(two):
    """The walk's database: one real round (tiny beat tiny2), then a round whose three answers were all
    ContextTooLong, voted "Model A is best": wide8 1312, tiny 1000, tiny2 688 on the leaderboard."""
    ok, err = {"text": "4", "tokens": 1, "error": None}, {"text": "", "tokens": 0, "error": "the last message is …"}
    good = arena.save_transcript("q", {}, {"tiny": ok, "tiny2": ok}, positions=["tiny", "tiny2"], blind=True)
    _vote_row(good, "tiny", "tiny2", "a")
    bad = arena.save_transcript("x " * 9, {}, {"wide8": err, "tiny": err, "tiny2": err},
                                positions=["wide8", "tiny", "tiny2"], blind=True)
    _vote_row(bad, "wide8", "tiny", "a")
    _vote_row(bad, "wide8", "tiny2", "a")
    board = {r["model"]: r["score"] for r in arena.leaderboard(blind_only=True, style_control=True)}
    assert set(board) == {"tiny", "tiny2"}  # was wide8 1311.8, tiny 1000.0, tiny2 688.2
    assert board["tiny"] == pytest.approx(2000 - board["tiny2"]) and board["tiny"] > 1000
    assert [v.transcript_id for v in arena.votes()] == [good.id]
    assert [v.transcript_id for v in arena.votes_on_errors()] == [bad.id, bad.id]
    at = arena_page()
    assert list(at.dataframe[0].value["model"]) == ["tiny", "tiny2"]
    assert any("Left out: 2 votes on an answer that was an error" in c.value for c in at.caption)


def test_a_reload_finds_the_unvoted_round_and_the_model_choice_again(two, tiny_llama_untied):
    registry.import_folder(tiny_llama_untied, "tiny-c")  # the default choice is the last two: tiny-b, tiny-c
    at = arena_page()
    at.multiselect(key="arena_models").set_value(["tiny", "tiny-c"]).run()
    # the browser writes a bound widget's value into the address (Streamlit's frontend does it; AppTest has none)
    at.query_params["arena_models"] = ["tiny", "tiny-c"]
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    round_id = at.session_state["arena_round"]
    assert at.query_params == {"arena_models": ["tiny", "tiny-c"], "round": str(round_id)}

    again = arena_page(at.query_params)  # a reload: a fresh session with the same address
    assert again.multiselect(key="arena_models").value == ["tiny", "tiny-c"]  # was tiny-b, tiny-c
    assert again.session_state["arena_round"] == round_id  # was: no round on the page
    assert heads(again) == ["**Model A**", "**Model B**"]  # names still hidden before the vote
    assert not any("tokens/s" in c.value for c in again.caption)
    again.button(key="vote_b").click().run()
    (v,) = arena.votes()
    assert (v.transcript_id, v.outcome) == (round_id, "b")
    assert any("Model B was **" in s.value for s in again.success)

    third = arena_page(again.query_params)  # reloaded after the vote: shown as voted, no second vote
    assert not [b for b in third.button if b.key and b.key.startswith("vote_")]
    assert any(s.value.startswith("Vote recorded.") for s in third.success)
    assert len(arena.votes()) == 1


def test_a_page_without_the_address_offers_the_newest_unvoted_round(two):
    at = arena_page()
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    round_id = at.session_state["arena_round"]
    fresh = arena_page()  # a new tab, or an address that lost ?round=
    assert any(i.value.startswith(f"Round {round_id} (2 models, 'What is 2 + 2?') has no vote yet") for i in fresh.info)
    fresh.button(key="arena_open_last").click().run()
    assert fresh.session_state["arena_round"] == round_id and fresh.query_params["round"] == str(round_id)
    assert heads(fresh) == ["**Model A**", "**Model B**"]
    fresh.button(key="vote_tie").click().run()
    assert not [i for i in arena_page().info if "has no vote yet" in i.value]  # voted: offered no more
