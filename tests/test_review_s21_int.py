"""Twenty-first session, integration of the helpers' changes: the Recipe tables write a huge or infinite score as
the models × tasks table does, and a LaTeX export of an infinite one compiles."""
from __future__ import annotations

from backend.recipe import tables
from backend.recipe.tables import Table


def test_recipe_tables_write_a_huge_perplexity_compactly_and_infinity_in_latex():
    assert tables._cell(3.2e17) == "3.2e17"  # was "3.2e+17"
    assert tables._cell(309.7419) == "309.742"  # as before
    assert tables._cell(float("inf")) == "∞"
    assert tables._tex(float("inf")) == r"$\infty$"  # pdflatex has no ∞ in text
    t = Table("t", "T", ["model", "ppl"], [["a", float("inf")], ["b", 3.2e17]])
    assert "| a | ∞ |" in tables.to_markdown(t) and "| b | 3.2e17 |" in tables.to_markdown(t)
    assert tables.to_csv(t).splitlines()[1:] == ["a,inf", "b,3.2e+17"]  # the CSV keeps the exact value


def test_qa_and_seed_files_nested_too_deeply_name_their_line(tmp_path):
    """A bare RecursionError reached the Evaluate and Synthetic-math pages."""
    import pytest

    from backend import qa
    from backend.synth import seeds

    deep = "[" * 100_000 + "]" * 100_000
    good = '{"id": 1, "question": "q?", "answers": ["a"], "answerable": true}'
    (f := tmp_path / "qa.jsonl").write_text(good + "\n" + deep + "\n")
    with pytest.raises(qa.QAError, match=r"^qa.jsonl, line 2: nested too deeply"):
        qa.load_items(f)
    (s := tmp_path / "seeds.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n\n' + deep + "\n")
    with pytest.raises(seeds.SeedError, match=r"^seeds, line 3: nested too deeply .* MATH's \{problem, solution\}"):
        seeds.read_records(s, "seeds")
    (j := tmp_path / "seeds.json").write_text(deep)
    with pytest.raises(seeds.SeedError, match=r"^seeds is nested too deeply"):
        seeds.read_records(j, "seeds")


def test_a_resumed_jobs_seconds_count_every_run(tiny_llama, capsys):
    """The Jobs page's seconds were the latest run's alone: resumed twice, then cancelled, 44.4 s of all its runs."""
    import json
    from datetime import timedelta

    from backend import registry, runner
    from backend.__main__ import main
    from backend.specs import UpscaleSpec
    from storage.models import utcnow
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="again"))
    now = utcnow()
    for ran in (100.0, 20.0):  # two runs that ended, each resumed
        runner._update(job.id, status="interrupted", started=now - timedelta(seconds=ran), finished=now)
        runner.resume(job.id)
    queued = runner.get(job.id)
    assert queued.seconds_before == 120.0 and runner.seconds_all(queued) == 120.0  # queued again: its earlier runs
    runner._update(job.id, status="cancelled", started=now - timedelta(seconds=44.4), finished=now)
    done = runner.get(job.id)
    assert runner.seconds_run(done) == 44.4 and runner.seconds_all(done) == 164.4
    at = app("jobs.py")
    assert at.dataframe[0].value.set_index("id").loc[job.id, "seconds"] == 164.4
    main(["jobs", "show", str(job.id)])
    assert "(this run 44 s; all runs 164 s)" in capsys.readouterr().out
    main(["jobs", "list", "--json"])
    assert [r["seconds"] for r in json.loads(capsys.readouterr().out) if r["id"] == job.id] == [164.4]


def test_of_two_jobs_queued_at_once_under_one_name_the_later_is_withdrawn(tiny_llama, monkeypatch):
    """Two tabs building "twotabs": both passed the check before either row was written; the second failed when it
    ran ("already registered"). Raced here by letting the second skip the check, as it had run before the first's
    row was written."""
    import pytest

    from backend import registry, runner
    from backend.runner import queue
    from backend.specs import UpscaleSpec

    registry.import_folder(tiny_llama, "tiny")
    first = runner.submit(UpscaleSpec(base="tiny", m=1, name="twotabs"))
    monkeypatch.setattr(queue, "check_before_queueing", lambda spec, coming=(): None)
    with pytest.raises(ValueError, match=rf"^Job {first.id} \(upscale, queued\) will register a model named "
                                         r"'twotabs': choose another name\.$"):
        runner.submit(UpscaleSpec(base="tiny", m=2, name="twotabs"))
    assert [(j.id, j.spec["m"]) for j in runner.list_jobs()] == [(first.id, 1)]  # the later row is gone
    other = runner.submit(UpscaleSpec(base="tiny", m=2, name="another"))  # another name queues as before
    assert runner.get(other.id).status == "queued"


def test_the_recipe_page_loads_a_preset_with_the_m_typed(tiny_llama):
    """A 2-layer base loaded into solar-mini was refused "m=8 is out of range" with no field for m (the CLI had --m)."""
    import yaml

    from backend import registry
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    at = app("recipe.py")
    at.selectbox(key="recipe_preset").set_value("solar-mini").run()
    at.text_input(key="recipe_base").set_value("tiny").run()
    at.number_input(key="recipe_m").set_value(1).run()
    at.button(key="recipe_load").click().run()
    assert not at.error
    loaded = yaml.safe_load(at.text_area(key="recipe_yaml").value)
    assert (loaded["base"], loaded["upscale"]["m"]) == ("tiny", 1)


def test_a_clean_perplexity_shows_the_clean_items_error_not_the_whole_sets():
    from backend import scoretable
    from storage import db
    from storage.models import EvalScore

    details = {"overlap": {"items": 2}, "clean": {"perplexity": 40.0, "perplexity_stderr": 4.0, "n": 8}}
    with db.session() as s:
        s.add(EvalScore(model="m", task="perplexity", metric="perplexity", value=50.0, n=10, details=details))
        s.add(EvalScore(model="m", task="perplexity", metric="perplexity_stderr", value=2.5, n=10, details=details))
        s.commit()
    latest = scoretable.latest_scores()
    row = latest[("m", "perplexity", "perplexity")]
    assert scoretable.stderr(latest, row) == 2.5
    assert scoretable.stderr(latest, row, clean=True) == 4.0  # was the whole set's 2.5


def test_a_resumed_job_cancelled_before_it_runs_again_counts_its_one_run(tiny_llama):
    """resume kept the old start: cancelled while queued, the old start to the cancel (an hour of waiting) read as a
    run, on top of the run already counted."""
    from datetime import timedelta

    from backend import registry, runner
    from backend.specs import UpscaleSpec
    from storage.models import utcnow

    registry.import_folder(tiny_llama, "tiny")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="waited"))
    hour_ago = utcnow() - timedelta(hours=1)
    runner._update(job.id, status="interrupted", started=hour_ago - timedelta(seconds=100), finished=hour_ago)
    runner.resume(job.id)
    runner.cancel(job.id)
    done = runner.get(job.id)
    assert runner.seconds_run(done) is None and runner.seconds_all(done) == 100.0  # was 3800


def test_a_seed_file_with_a_nul_byte_says_what_it_is_as_the_train_page_does(tmp_path):
    """It said "not UTF-8 (byte 0x00)", though UTF-8 allows a NUL: the Train page's words name UTF-16 without its mark."""
    import pytest

    from backend.synth import seeds

    (f := tmp_path / "seeds.jsonl").write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "a\x00b"}\n')
    with pytest.raises(seeds.SeedError, match=r"^seeds, line 2, column 16: a NUL byte \(0x00\), which no text holds"):
        seeds.read_records(f, "seeds")


def test_a_recipe_refused_halfway_by_a_name_taken_since_its_checks_is_withdrawn_whole(tiny_llama, monkeypatch):
    """Another tab queued one of its names between recipe.submit's checks and its jobs: the run row stayed, its
    earlier jobs stayed queued, and they ran."""
    import pytest
    from sqlmodel import select

    from backend import recipe, runner
    from backend.specs import UpscaleSpec
    from storage import db
    from storage.models import Job, RecipeRun, RecipeStage
    from tests.test_recipe import smoke, text

    t = text(smoke(tiny_llama))
    [p] = recipe.plan_text(t)
    taken = p.node("sft-b").output
    real, calls = runner.check_before_queueing, []
    to_check = sum(1 for n in p.nodes if n.status == "run" and n.spec is not None)

    def racing_check(spec, coming=()):  # the other tab's row lands just after this recipe's checks passed
        real(spec, coming)
        calls.append(spec)
        if len(calls) == to_check:
            with db.session() as s:
                s.add(Job(kind="upscale", spec=UpscaleSpec(base="x", m=1, name=taken).model_dump(mode="json"),
                          status="queued"))
                s.commit()

    # the recipe's checks alone (recipe.plan calls runner.check_before_queueing); runner.submit keeps its own, the
    # one that finds the name taken after the other tab's row landed
    monkeypatch.setattr("backend.runner.check_before_queueing", racing_check)
    with pytest.raises(ValueError, match=f"will register a model named '{taken}'"):
        recipe.submit(p, t)
    with db.session() as s:
        assert s.exec(select(RecipeRun)).all() == [] and s.exec(select(RecipeStage)).all() == []
        jobs = s.exec(select(Job)).all()
    assert [(j.spec["name"], j.status) for j in jobs if j.status == "queued"] == [(taken, "queued")]  # the other's
    assert {j.status for j in jobs if j.spec.get("name") != taken} <= {"cancelled"}  # this run's, undone
