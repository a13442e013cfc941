"""Review s22, odds and ends: the length-controlled check binned by words beside charts in tokens, a round that took a
second vote, and a recipe stage a cut-off Run never queued shown with an empty state."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from backend import analysis, arena, recipe, runner
from backend.answerstats import Record
from tests.recipe_rows import cut_off_run
from tests.test_recipe import text


# ---------------------------------------------------------------- 1. the length check in the charts' unit

def long_in_tokens() -> list[Record]:
    """40 items. A answers 30 of them at length (40 tokens), B 10 (items 30–39); the rest are 8 tokens. Each model
    errs on half of its long answers (the even items) and on none of its short ones, so A's raw rate is 25 points
    higher, all of it length. In words the answers are 3 or 12 long for both models alike (by item, whatever the
    tokens: digits and symbols are many tokens to a word)."""
    out = []
    for i in range(40):
        words = 3 if (i // 2) % 2 == 0 else 12
        for m, long_ in (("A", i < 30), ("B", i >= 30)):
            wrong = long_ and i % 2 == 0
            out.append(Record(m, words, not wrong, wrong, prompt_id=str(i), tokens=40 if long_ else 8,
                              verdict="wrong" if wrong else "correct"))
    return out


def by_hand(recs: list[Record], unit: str, n_bins: int, boots: int, seed: int = 0):
    """The length-controlled gap recomputed here, not through the function: pooled quantile edges, half-open bins
    (the last closed), per-bin rate gaps weighted by the pooled bin sizes; the same item resamples."""
    keys = sorted({r.prompt_id for r in recs}, key=str)
    a = [next(r for r in recs if r.model == "A" and r.prompt_id == k) for k in keys]
    b = [next(r for r in recs if r.model == "B" and r.prompt_id == k) for k in keys]
    la, lb = (np.array([getattr(r, unit) for r in x], dtype=float) for x in (a, b))
    edges = np.unique(np.quantile(np.concatenate([la, lb]), np.linspace(0, 1, n_bins + 1)))
    k = len(edges) - 1
    bin_of = lambda x: np.minimum(np.searchsorted(edges, x, side="right") - 1, k - 1)  # noqa: E731
    ba, bb = bin_of(la), bin_of(lb)
    ha, hb = (np.array([r.hallucination for r in x], dtype=float) for x in (a, b))

    def gap(sel):
        num = den = 0.0
        for j in range(k):
            ia, ib = sel[ba[sel] == j], sel[bb[sel] == j]
            if len(ia) and len(ib):
                num += (len(ia) + len(ib)) * (ha[ia].mean() - hb[ib].mean())
                den += len(ia) + len(ib)
        return num / den if den else np.nan

    point = gap(np.arange(len(keys)))
    idx = np.random.default_rng(seed).integers(0, len(keys), (boots, len(keys)))
    draws = np.array([gap(row) for row in idx])
    return k, point, draws[~np.isnan(draws)], la.mean(), lb.mean()


def test_the_length_check_bins_by_tokens_when_every_answer_has_a_count():
    """Binned by words, the check read the raw gap, +0.25, "within 2 bins of answer length in words", beside the
    length model and charts of the same answers in tokens, where the gap is all length. In tokens both models err on
    half of their long answers and on none of the short ones: 0 within the bins."""
    recs = long_in_tokens()
    strat = analysis.length_controlled(recs, "A", "B", n_bins=2, boots=300)
    assert strat["unit"] == "tokens"
    k, point, draws, mean_a, mean_b = by_hand(recs, "tokens", 2, 300)
    tail = analysis.expanded_tail(40)
    assert strat["bins"] == k == 2  # edges 8, 24, 40: [8, 24) and [24, 40]
    assert strat["raw_diff"] == pytest.approx(0.25)
    assert strat["length_controlled_diff"] == pytest.approx(point, abs=1e-12) and point == pytest.approx(0, abs=1e-12)
    assert strat["length_controlled_ci"] == pytest.approx((np.percentile(draws, tail),
                                                          np.percentile(draws, 100 - tail)))
    assert (strat["mean_length_a"], strat["mean_length_b"]) == (mean_a, mean_b) == (32.0, 16.0)
    assert (strat["mean_words_a"], strat["mean_words_b"]) == (7.5, 7.5)
    # in words (the old binning) the same answers read the whole raw gap: bins 3 and 12 words, 0.3 and 0.2 within
    assert by_hand(recs, "words", 2, 300)[1] == pytest.approx(0.25)


def test_the_length_check_falls_back_to_words_when_an_answer_has_no_token_count():
    """Rows stored before token counts (tokens 0) are binned by words, for both models, and the result says so."""
    recs = long_in_tokens()
    recs[1] = Record("B", 3, True, False, prompt_id="0", tokens=0, verdict="correct")  # an older row
    strat = analysis.length_controlled(recs, "A", "B", n_bins=2, boots=300)
    assert strat["unit"] == "words"
    k, point, draws, mean_a, mean_b = by_hand(recs, "words", 2, 300)
    tail = analysis.expanded_tail(40)
    assert strat["bins"] == k == 2 and strat["length_controlled_diff"] == pytest.approx(point) == pytest.approx(0.25)
    assert strat["length_controlled_ci"] == pytest.approx((np.percentile(draws, tail),
                                                          np.percentile(draws, 100 - tail)))
    assert (strat["mean_length_a"], strat["mean_length_b"]) == (mean_a, mean_b)


# ---------------------------------------------------------------- 2. one vote per round

def test_a_round_takes_one_vote_and_a_second_is_refused_in_words():
    """The page read `voted` from the database, but vote_round took a second vote on the round (another tab open
    on it, a script): "A is better" and then "B is better" both counted."""
    answers = {m: {"text": t, "tokens": 1} for m, t in (("m1", "4"), ("m2", "5"))}
    t = arena.save_transcript("2+2?", {}, answers, positions=["m2", "m1"], blind=True)
    arena.vote(t.id, "m2", "m1", "b")
    for again in (lambda: arena.vote(t.id, "m2", "m1", "a"), lambda: arena.vote_round(t.id, "tie")):
        with pytest.raises(ValueError, match=rf"^round {t.id} was already voted on \(Model B \(m1\) is better than "
                                             r"Model A \(m2\)\): a round takes one vote\. Send the prompt again"):
            again()
    assert [(v.model_a, v.model_b, v.outcome) for v in arena.votes()] == [("m2", "m1", "b")]
    # a wrong argument is still said as such, before the refusal
    with pytest.raises(ValueError, match="outcome must be"):
        arena.vote(t.id, "m2", "m1", "maybe")


def test_a_three_model_round_says_its_best_vote_when_refusing_another():
    answers = {m: {"text": "4", "tokens": 1} for m in ("m1", "m2", "m3")}
    t = arena.save_transcript("2+2?", {}, answers, positions=["m1", "m2", "m3"], blind=True)
    assert len(arena.vote_round(t.id, "m3")) == 2
    with pytest.raises(ValueError, match=r"already voted on \(Model C \(m3\) is best\)"):
        arena.vote_round(t.id, "m1")
    tied = arena.save_transcript("2+2?", {}, answers, positions=["m1", "m2", "m3"], blind=True)
    arena.vote_round(tied.id, "tie")
    with pytest.raises(ValueError, match=r"already voted on \(a tie\)"):
        arena.vote(tied.id, "m1", "m2", "a")
    assert len(arena.votes()) == 5  # 2 for the best, 3 for the tie: nothing more


def _round_on_the_page(tiny_llama):
    """A blind round of two models, open on the Arena page (its address names it): (the round, the page)."""
    from streamlit.testing.v1 import AppTest

    from backend import registry
    from tests.test_review_s21_arena import APP

    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama, "tiny-b")
    answers = {m: {"text": "4", "tokens": 1, "first_token_s": 0.1, "tokens_per_s": 5.0} for m in ("tiny", "tiny-b")}
    t = arena.save_transcript("2+2?", {}, answers, positions=["tiny", "tiny-b"], blind=True)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["round"] = str(t.id)
    at.run()
    at.switch_page("pages/arena.py").run()
    return t, at


def test_the_page_shows_the_refusal_and_the_vote_on_record(tiny_llama, monkeypatch):
    """Two tabs on one round, both clicking at once: the page reads `voted` at the top of the run, the other tab's
    vote lands after it, and the click is refused by vote_round; the page shows why and the vote on record."""
    t, at = _round_on_the_page(tiny_llama)
    assert not at.exception, at.exception
    real, reads = arena.voted, []

    def voted(round_id: int) -> bool:  # the other tab votes just after this run read "no vote yet"
        reads.append(round_id)
        if len(reads) == 1:
            arena.vote(t.id, "tiny", "tiny-b", "a")
            return False
        return real(round_id)
    monkeypatch.setattr(arena, "voted", voted)
    at.button(key="vote_b").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Vote recorded. Model A was **tiny** · Model B was **tiny-b**"]
    assert [w.value for w in at.warning if "already voted" in w.value] == [
        f"round {t.id} was already voted on (Model A (tiny) is better than Model B (tiny-b)): a round takes one "
        "vote. Send the prompt again (or Regenerate) for a new round to vote on."]
    assert [(v.model_a, v.model_b, v.outcome) for v in arena.votes()] == [("tiny", "tiny-b", "a")]


def test_a_click_on_a_round_another_tab_voted_on_says_it_was_not_counted(tiny_llama):
    """The walk: tab 2 open on round 1, tab 1 votes "A is better", then tab 2 clicks "B is better": its run read the
    round voted, drew no buttons, and said only "Vote recorded" (tab 1's); the click was dropped without a word."""
    t, at = _round_on_the_page(tiny_llama)
    arena.vote(t.id, "tiny", "tiny-b", "a")  # the other tab
    at.button(key="vote_b").click().run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if "not counted" in w.value] == [
        f"Your click was not counted: round {t.id} was already voted on (Model A (tiny) is better than Model B "
        "(tiny-b)): a round takes one vote. Send the prompt again (or Regenerate) for a new round to vote on."]
    assert [(v.model_a, v.model_b, v.outcome) for v in arena.votes()] == [("tiny", "tiny-b", "a")]
    at.run()  # the next run (no click): no warning
    assert not [w for w in at.warning if "not counted" in w.value]


# ---------------------------------------------------------------- 4. a stage a cut-off Run never queued

def test_a_stage_a_cut_off_run_never_queued_says_so(tiny_llama, monkeypatch, capsys):
    """The run's rows are written before its jobs are queued; a Run cut off on its third job left the other stages'
    rows without a job, and their state read "" (the page's status cell blank, `recipe runs` "-")."""
    d, run, _ = cut_off_run(tiny_llama, monkeypatch)
    states = {r.stage: (r.job_id, recipe.stage_state(r, j)) for r, j in recipe.stages(run.id)}
    never = {s for s, (job, _) in states.items() if job is None and s != "base"}
    assert never >= {"sft-b", "avg"} and all(s.startswith("eval:") or s in ("sft-b", "avg") for s in never)
    assert {states[s][1] for s in never} == {"not queued (the run was cut off: run the recipe again to queue it)"}
    assert states["base"][1] == "given" and {states[s][1] for s in ("upscaled", "sft-a")} == {"queued"}
    from backend.cli.recipe import print_runs

    capsys.readouterr()
    print_runs(1, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"{len(never)} not queued")
    (avg,) = [ln for ln in lines if ln.split()[0] == "avg"]
    assert "merge      not queued      -" in avg  # was "merge      -"
    assert lines[-1] == "  not queued: the run was cut off: run the recipe again to queue it"
    from backend.recipe.graph import run_graph

    dot = run_graph(run.id)  # the graph's box said "merge · run", as if it were to be run
    assert 'label="avg\\nmerge · not queued\\n' in dot and 'label="upscaled\\nupscale · queued"' in dot
    # and what it says to do works: planned again, the run queues the stages it never queued, and takes up its jobs
    [q] = recipe.plan_text(text(d))
    status = {n.stage: n.status for n in q.nodes}
    assert {status[s] for s in never} == {"run"} and {status[s] for s in ("upscaled", "sft-a")} == {"in-flight"}


def test_a_stage_queued_as_its_run_was_cut_off_shows_its_job(tiny_llama, monkeypatch):
    """The walk: a Run killed 0.4 s in had queued sft-b's job (job 58, later succeeded) but not yet written it into the
    stage's row: the stage read "not queued (… run the recipe again)" for ever, and `recipe cancel` missed the job."""
    from backend.recipe.state import NOT_QUEUED
    from tests.test_recipe import smoke

    d = smoke(tiny_llama)
    [p] = recipe.plan_text(text(d))
    real, made = runner.submit, []

    def submit(spec, **kw):  # the third job is queued, then the Run is cut off before its row names it
        made.append(real(spec, **kw).id)
        if len(made) == 3:
            raise KeyboardInterrupt
        return runner.get(made[-1])
    monkeypatch.setattr(runner, "submit", submit)
    with pytest.raises(KeyboardInterrupt):
        recipe.submit(p, text(d))
    [run] = recipe.runs()
    third = runner.get(made[2])
    rows = {r.stage: (r, j) for r, j in recipe.stages(run.id)}
    [(row, job)] = [(r, j) for r, j in rows.values() if r.output == third.spec["name"]]
    assert row.job_id is None and job is not None and job.id == third.id  # found by the model it makes
    assert recipe.stage_state(row, job) == "queued"
    assert sorted(recipe.cancellable(run.id)) == made  # and `recipe cancel` finds it
    assert NOT_QUEUED in {recipe.stage_state(r, j) for r, j in rows.values()}  # the stages after it: not queued


# ---------------------------------------------------------------- 5. a recipe stage's kind in the wrong case

def test_a_recipe_stage_kind_in_the_wrong_case_gets_a_suggestion():
    """A job spec's `kind: SFT` was answered "did you mean 'sft'?", a recipe stage's only with the list of kinds."""
    from backend.recipe.spec import RecipeError, load_recipe

    text = yaml.safe_dump({"kind": "recipe", "name": "r", "base": "b",
                           "stages": [{"name": "a", "kind": "SFT", "model": "base", "data": [{"source": "x.jsonl"}]}]})
    with pytest.raises(RecipeError) as e:
        load_recipe(text)
    assert str(e.value) == ("stages[0].kind: 'SFT' is not a stage kind (did you mean 'sft'?); choose one of: cpt, "
                            "sft, dpo, merge, synth-math, eval.")


# ---------------------------------------------------------------- 6. the built-in imported twice

def test_importing_the_builtin_again_says_it_was_registered_already(tiny_llama):
    """import_builtin returns the model it imported before; the CLI printed "registered SmolLM2-135M-Instruct" again,
    read as a second copy made."""
    from backend import registry
    from storage.models import ModelRecord
    from tests.test_review_cli import add, cli

    add(ModelRecord(name=registry.BUILTIN_NAME, path=str(tiny_llama), num_layers=6, num_parameters=65312))
    rc, out, err = cli("models", "import", "builtin")
    assert rc == 0, err
    assert out == f"already registered {registry.BUILTIN_NAME}: 6 layers, 65,312 parameters at {tiny_llama}\n"
    assert [r.name for r in registry.list_models()] == [registry.BUILTIN_NAME]


def test_the_builtin_imported_again_after_its_folder_went_is_said_registered(tiny_llama, tmp_path, monkeypatch,
                                                                            capsys):
    """import_builtin deletes a row whose folder is gone and imports again; SQLite gives the new row the deleted
    row's id (no AUTOINCREMENT: max(rowid)+1), so comparing ids alone read a re-import as 'already registered'."""
    import shutil

    from backend import registry
    from backend.__main__ import main

    gone = tmp_path / "gone"
    shutil.copytree(tiny_llama, gone)
    registry.register(gone, registry.BUILTIN_NAME, "base", source="builtin", recipe={"import": "builtin"})
    shutil.rmtree(gone)  # its folder is gone: import_builtin deletes the row and imports again

    def reimport(progress=None):  # the GGUF conversion replaced by a copy of the tiny model (same path as the real)
        registry.delete(registry.BUILTIN_NAME, force=True)
        return registry.import_folder(tiny_llama, registry.BUILTIN_NAME)
    monkeypatch.setattr(registry, "import_builtin", reimport)
    capsys.readouterr()
    assert main(["models", "import", "builtin"]) == 0
    assert capsys.readouterr().out.startswith(f"registered {registry.BUILTIN_NAME}: ")  # was "already registered"


def test_two_tabs_voting_at_once_take_one_vote():
    """vote_round checked for a vote, then inserted: two clicks landing together both passed the check and both
    votes counted (the review's proof). The round is now claimed in the vote's transaction."""
    import threading

    from backend import arena

    answers = {m: {"text": t, "tokens": 1} for m, t in (("m1", "4"), ("m2", "5"))}
    t = arena.save_transcript("2+2?", {}, answers, positions=["m1", "m2"], blind=True)
    gate, real = threading.Barrier(2, timeout=10), arena._refuse_if_voted
    calls = []

    def check(s, t):  # both tabs have read "no vote yet" before either writes
        real(s, t)
        calls.append(t.id)
        if len(calls) <= 2:
            gate.wait()
    arena._refuse_if_voted = check
    errors = []
    try:
        ths = [threading.Thread(target=lambda o=o: _try(arena.vote_round, t.id, o, errors)) for o in ("m1", "m2")]
        [th.start() for th in ths]
        [th.join() for th in ths]
    finally:
        arena._refuse_if_voted = real
    outcomes = [(v.model_a, v.model_b, v.outcome) for v in arena.votes()]
    assert len(outcomes) == 1, f"one round, {len(outcomes)} votes: {outcomes}; refusals: {errors}"
    assert len(errors) == 1 and errors[0].startswith(f"round {t.id} was already voted on (")


def _try(fn, *args):
    *args, errors = args
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        errors.append(str(exc))


# ---------------------------------------------------------------- 7. the schema check without Alembic

def test_the_schema_check_finds_what_alembic_finds(workspace):
    """db._missing read the schema with Alembic's compare_metadata in every process (a quarter of a second of each
    command's start); one catalogue query now answers the same: every table and column a database lacks."""
    import sqlite3

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from storage import db

    eng = db.init_db()
    with eng.connect() as conn:
        assert db._missing(conn) == []
    con = sqlite3.connect(workspace / "studio.db")
    con.executescript('DROP INDEX ix_jobs_after; ALTER TABLE jobs DROP COLUMN "after"; ALTER TABLE models DROP COLUMN '
                      "job_id; DROP TABLE votes;")
    con.close()
    with eng.connect() as conn:
        ours = db._missing(conn)
        theirs = [d for d in compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
                  if isinstance(d, tuple) and d[0] in ("add_table", "add_column", "add_index")]
    # the dropped index too (session 26: an older database gains the indexes the models declare)
    assert sorted(ours) == [("add_column", "jobs", "after"), ("add_column", "models", "job_id"),
                            ("add_index", "jobs", "ix_jobs_after"), ("add_table", "votes")]

    def said(d):  # Alembic's diffs: ("add_column", schema, table, Column), ("add_table", Table), ("add_index", Index)
        if d[0] == "add_column":
            return "add_column", d[2], d[3].name
        if d[0] == "add_index":
            return "add_index", d[1].table.name, d[1].name
        return "add_table", d[1].name

    # a new table's own indexes come with it (create_all), as ours leaves them out
    assert sorted(ours) == sorted(said(d) for d in theirs if not (d[0] == "add_index" and d[1].table.name == "votes"))
