"""The user review of the arena leaderboard and the Jobs page: no bootstrap interval where the rounds cannot support
one (one vote gave a 95 % interval of zero width), plural-correct captions, the style note said once, the position
counts clear of the whiskers; a queued job says which job keeps the worker busy; the Jobs table names what each job
makes and keeps "created" and "seconds" in view; an evaluation's "done:" message has no "kept 0"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend import arena, registry, runner
from storage import db
from storage.models import Job, Vote, WorkerBeat, utcnow

ROOT = Path(__file__).resolve().parent.parent


def rounds(outcomes: str) -> list[Vote]:
    """One two-model round per outcome letter (a, b or t for a tie), m1 on the left."""
    return [Vote(transcript_id=i, model_a="m1", model_b="m2", outcome={"t": "tie"}.get(o, o), position_a=0,
                 position_b=1, blind=True) for i, o in enumerate(outcomes)]


def app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(f"pages/{page}").run()
    assert not at.exception, at.exception
    return at


def test_one_vote_gives_a_rating_but_no_interval():
    board = arena.leaderboard(rounds("a"), boots=50)
    assert [r["model"] for r in board] == ["m1", "m2"]
    assert board[0]["score"] > 1100 and board[1]["score"] < 900  # the rating itself stays
    for r in board:  # before: low = high = score, a 95 % interval of zero width
        assert (r["low"], r["high"], r["rounds"]) == (None, None, 1)
        assert r["no_interval"] == "too few rounds for an interval: 1 of at least 20"
    short = arena.leaderboard(rounds("ab" * 9 + "a"), boots=50)  # 19 rounds: one short
    assert all(r["low"] is None and "19 of at least 20" in r["no_interval"] for r in short)
    by_votes = arena.leaderboard(rounds("ab" * 3), boots=50, resample="votes")
    assert by_votes[0]["no_interval"] == "too few votes for an interval: 6 of at least 20"


def test_enough_rounds_that_disagree_give_an_interval_around_the_rating():
    board = arena.leaderboard(rounds("aab" * 10), boots=100)  # 30 rounds, m1 wins two of three
    assert [r["model"] for r in board] == ["m1", "m2"]  # both rows checked below (an empty board passed before)
    for r in board:
        assert r["no_interval"] is None and r["rounds"] == 30
        assert r["low"] < r["score"] < r["high"] and r["high"] - r["low"] > 50


def test_rounds_that_all_went_one_way_give_no_zero_width_interval():
    """Every resample of 25 wins for m1 is the same 25 wins: the bootstrap cannot vary the fit."""
    board = arena.leaderboard(rounds("a" * 25), boots=50)
    for r in board:
        assert r["low"] is None and r["high"] is None and r["rounds"] == 25
        assert r["no_interval"].startswith("no interval: every resample of its rounds gave the same rating")
    assert arena.leaderboard(rounds("a" * 24 + "t"), boots=50)[0]["low"] is not None  # one tie: it varies


def test_a_model_in_few_rounds_gets_no_interval_beside_ones_that_have_it():
    vs = rounds("aab" * 10) + [Vote(transcript_id=100, model_a="m3", model_b="m1", outcome="a", blind=True)]
    rows = {r["model"]: r for r in arena.leaderboard(vs, boots=50)}
    assert rows["m3"]["no_interval"] == "too few rounds for an interval: 1 of at least 20"
    assert rows["m1"]["rounds"] == 31 and rows["m1"]["low"] < rows["m1"]["high"]


def test_style_features_without_any_difference_are_named_in_one_note():
    fit = arena.fit(rounds("ab"), style_control=True)
    assert fit["style"] == {}
    assert fit["notes"] == ["tokens, headers, lists, bold: no difference between the answers in any vote, so left out"]


@pytest.fixture
def two_models(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama, "tiny-b")


def _blind_round(best: str) -> None:
    t = arena.save_transcript("2 + 2?", {}, {"tiny": {"text": "4", "tokens": 1}, "tiny-b": {"text": "5", "tokens": 1}},
                              positions=["tiny", "tiny-b"], blind=True)
    arena.vote_round(t.id, best)


def _chart(at: AppTest, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)


def test_arena_page_after_one_vote(two_models):
    _blind_round("tiny")
    at = app("arena.py")
    table = at.dataframe[0].value
    assert list(table.columns) == ["model", "score", "95 % interval", "votes", "rounds"]
    assert table["95 % interval"].tolist() == ["too few rounds for an interval: 1 of at least 20"] * 2
    captions = [c.value for c in at.caption]
    assert any(c.startswith("1 blind pairwise vote from 1 round;") for c in captions), captions
    style = next(c for c in captions if c.startswith("Style coefficients"))
    assert style.count("no difference") == 1 and style.count("left out") == 1
    board = _chart(at, "leaderboard_chart")
    (bar,) = board["data"]  # no whisker trace: no zero-width whiskers
    assert "error_y" not in bar and "error_x" not in bar
    assert board["layout"]["title"]["text"].endswith(" (no intervals: see the table)")
    bias = _chart(at, "position_bias")
    assert "text" not in bias["data"][0]  # the counts left the bars' feet, where "0/1" sat on Model B's whisker…
    notes = {a["text"]: a for a in bias["layout"]["annotations"]}
    high_b = arena.position_bias(arena.votes())[1]["high"]
    assert notes["0/1"]["y"] == pytest.approx(high_b) and notes["0/1"]["yanchor"] == "bottom"  # …for its top
    assert notes["1/1"]["y"] == pytest.approx(1.0)


def test_arena_page_draws_intervals_once_every_model_has_its_rounds(two_models):
    for i in range(21):
        _blind_round("tiny" if i % 3 else "tiny-b")
    at = app("arena.py")
    table = at.dataframe[0].value
    assert all(" – " in cell for cell in table["95 % interval"]), table
    assert table["rounds"].tolist() == [21, 21]
    assert any(c.value.startswith("21 blind pairwise votes from 21 rounds;") for c in at.caption)
    bar, whiskers = _chart(at, "leaderboard_chart")["data"]
    assert whiskers["x"] == bar["x"] and min(whiskers["error_y"]["array"]) > 0


def _job(kind: str, status: str, spec: dict | None = None, **fields) -> Job:
    with db.session() as s:
        job = Job(kind=kind, spec=spec or {"kind": kind}, status=status,
                  message=fields.pop("message", runner.WAITING), **fields)
        s.add(job)
        s.commit()
        s.refresh(job)
        return job


def _merge_spec(method: str) -> dict:
    return {"kind": "merge", "models": ["base", "base-cpt"], "method": method, "name": f"base_base-cpt-{method}"}


def test_a_queued_job_says_which_job_keeps_the_worker_busy():
    from backend.runner import job_message

    sft = _job("sft", "running", message="step 3/6")
    first = _job("eval", "queued", {"kind": "eval", "models": ["base"]})  # device jobs: they wait for the sft job
    second = _job("eval", "queued", {"kind": "eval", "models": ["base-cpt"]})
    chained = _job("dpo", "queued", after=sft.id, message=f"waiting for job {sft.id}")
    jobs = runner.active_jobs()
    assert job_message(first, jobs, alive=True) == f"queued: the worker is busy with job {sft.id} (sft)"
    assert job_message(second, jobs, alive=True) == (f"queued: the worker is busy with job {sft.id} (sft); "
                                                     f"job {first.id} goes first")
    assert job_message(chained, jobs, alive=True) == f"waiting for job {sft.id}"  # its own reason stands
    # no worker alive: the plain words, beside the page's no-worker banner
    assert job_message(second, jobs, alive=False) == "waiting for the worker"
    idle = [j for j in jobs if j.id != sft.id]
    assert job_message(first, idle, alive=True) == "queued: the worker starts it next"
    failed = _job("import", "failed", error="no such folder", message="failed")
    assert job_message(failed, jobs, alive=True) == "failed: no such folder"
    assert job_message(sft, jobs, alive=True) == "step 3/6"


def test_jobs_page_names_outputs_and_fits_the_table():
    sft = _job("sft", "running", {"kind": "sft", "model": "base", "name": "base-sft"}, message="step 3/6")
    _job("merge", "queued", _merge_spec("average-0.5-0.5"))
    _job("merge", "queued", _merge_spec("slerp0.5"))
    _job("eval", "succeeded", {"kind": "eval", "models": ["base"]}, message="done: scores 26, seconds 3")
    with db.session() as s:  # a worker that beat just now: alive and busy with the sft job
        s.add(WorkerBeat(host="elsewhere", pid=1, seen=utcnow()))
        s.commit()
    at = app("jobs.py")
    table = at.dataframe[0].value
    assert list(table.columns) == ["id", "kind", "output", "status", "progress", "message", "created", "seconds"]
    # two merges of one pair tell apart: long names are cut in the middle, keeping the method at the end
    assert table["output"].tolist() == ["scores of base", "base_base-cpt-slerp0.5", "base_base-cpt…verage-0.5-0.5",
                                        "base-sft"]
    # a merge is a light job (runner/lanes.py): it runs beside the training, not after it
    assert table["message"][2] == f"queued: the worker starts it next, beside job {sft.id} (sft)"
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["id"]["pinned"] is True
    assert config["message"]["width"] <= 240 and config["output"]["width"] <= 240
    at.selectbox(key="job").set_value(sft.id + 1).run()  # the status box says the same
    assert [p.proto.text for p in at.get("progress")] == [
        f"Job {sft.id + 1} (merge): queued: the worker starts it next, beside job {sft.id} (sft)"]


def test_an_evaluation_says_kept_scores_in_words_and_not_when_none(monkeypatch):
    results = iter([{"scores": 26, "kept": 0, "seconds": 3.5}, {"scores": 26, "kept": 6, "seconds": 2.0}])
    monkeypatch.setattr(runner.child, "work_function", lambda kind: lambda spec, out, progress: next(results))
    spec = {"kind": "eval", "models": ["base"]}
    fresh, resumed = _job("eval", "queued", spec), _job("eval", "queued", spec)
    assert runner.execute(fresh.id) == 0 and runner.execute(resumed.id) == 0
    assert runner.get(fresh.id).message == "done: scores 26, seconds 3.5"  # was "…, kept 0, …"
    assert runner.get(resumed.id).message == "done: scores 26, 6 scores kept from its earlier run, seconds 2.0"


def test_the_running_job_is_named_behind_more_than_a_hundred_newer_finished_ones():
    """The message read the 100 newest jobs (list_jobs): a long run followed by 101 finished jobs was missed, and a
    queued job said the worker would start it next (review finding)."""
    from backend.runner import job_message

    sft = _job("sft", "running", message="step 3/6")
    for _ in range(101):
        _job("merge", "succeeded", message="done")
    queued = _job("merge", "queued", _merge_spec("average"))
    assert job_message(queued, alive=True) == f"queued: the worker starts it next, beside job {sft.id} (sft)"


def test_jobs_list_on_the_command_line_says_what_the_jobs_page_says(capsys):
    """`jobs list` printed the stored "waiting for the worker" while a worker was busy with another job, and a failed
    job's "failed" without its reason: the page and the CLI now share runner.job_message."""
    from backend.__main__ import main

    sft = _job("sft", "running", message="step 3/6")
    queued = _job("merge", "queued", _merge_spec("average"))
    failed = _job("import", "failed", error="no such folder", message="failed")
    with db.session() as s:  # a worker that beat just now: alive and busy with the sft job
        s.add(WorkerBeat(host="elsewhere", pid=1, seen=utcnow()))
        s.commit()
    main(["jobs", "list"])
    lines = {int(line.split()[0]): line for line in capsys.readouterr().out.splitlines()}
    assert lines[queued.id].endswith(f"queued: the worker starts it next, beside job {sft.id} (sft)")
    assert lines[failed.id].endswith("failed: no such folder")


def test_a_workers_job_runs_at_a_lower_priority_than_the_dashboard(monkeypatch):
    """A training job took both cores at the dashboard's priority and slowed every page render; a worker's job now
    runs at $DUS_JOB_NICE (default 10), which its own processes inherit. A bad value stops the worker at start."""
    import os
    import signal

    def niceness_of_a_started_job() -> int:
        job = _job("eval", "running", {"kind": "eval", "models": ["nothing"]})
        proc = runner.start_child(job)
        try:
            return os.getpriority(os.PRIO_PROCESS, proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert niceness_of_a_started_job() == max(10, os.nice(0))
    monkeypatch.setenv("DUS_JOB_NICE", "15")
    assert niceness_of_a_started_job() == max(15, os.nice(0))
    monkeypatch.setenv("DUS_JOB_NICE", "-5")
    with pytest.raises(ValueError, match="DUS_JOB_NICE='-5': give a niceness from 0"):
        runner.worker(once=True)


def test_a_new_model_without_its_rounds_leaves_the_others_whiskers_drawn():
    """One model short of its rounds took every model's whisker off the leaderboard chart."""
    from pages.figures import leaderboard_figure

    board = [{"model": "old-a", "score": 1100.0, "low": 1060.0, "high": 1130.0},
             {"model": "new", "score": 1000.0, "low": None, "high": None},
             {"model": "old-b", "score": 900.0, "low": 870.0, "high": 950.0}]
    bar, whiskers = leaderboard_figure(board, "Plain").data
    assert list(bar.x) == ["old-a", "new", "old-b"] and "error_y" not in bar.to_plotly_json()
    assert list(whiskers.x) == ["old-a", "old-b"] and list(whiskers.y) == [1100.0, 900.0]
    assert list(whiskers.error_y.array) == [30.0, 50.0] and list(whiskers.error_y.arrayminus) == [40.0, 30.0]
    assert leaderboard_figure(board, "Plain").layout.title.text == "Plain (1 without an interval: see the table)"
