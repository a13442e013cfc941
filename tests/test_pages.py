"""Page tests with Streamlit's AppTest: the pages build the same specs, write job rows, and show what jobs made."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend import registry, runner

ROOT = Path(__file__).resolve().parent.parent


def app(page: str | None = None) -> AppTest:
    """app.py run on `page` (the default page without one). The page is chosen before the first run, so the Build
    page is not drawn first (~0.05 s of CPU a call): a page's own url_path is its file name, which is how AppTest
    names a page before its first run; a page given one of its own would need the run first."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if page:
        at.switch_page(f"pages/{page}")
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def test_build_page_without_models_offers_the_builtin_import():
    at = app()
    assert "No model is registered yet" in at.info[0].value
    at.button(key="import_builtin").click().run()
    jobs = runner.list_jobs()
    assert [(j.kind, j.spec["target"], j.status) for j in jobs] == [("import", "builtin", "queued")]


def test_build_page_offers_only_valid_m_and_follows_it(tiny):
    at = app()
    slider = at.select_slider(key="m")
    assert list(slider.options) == ["1", "2"]  # 1 <= m < n/2 for n = 6
    assert slider.value == 2  # nearest to n/4, SOLAR's ratio
    assert metric(at, "Layers n → s") == "6 → 8"
    assert len(at.get("plotly_chart")) == 1
    slider.set_value(1).run()
    assert metric(at, "Layers n → s") == "6 → 10"
    assert at.text_input(key="name").value == "tiny-dus-m1"


def test_build_button_queues_the_spec_and_shows_the_result(tiny):
    at = app()
    at.select_slider(key="m").set_value(1).run()
    at.button(key="build").click().run()
    (job,) = runner.list_jobs()
    assert job.kind == "upscale" and job.status == "queued"
    assert job.spec["base"] == "tiny" and job.spec["m"] == 1 and job.spec["name"] == "tiny-dus-m1"
    runner.worker(once=True)
    at.run()
    assert not at.exception
    assert registry.get("tiny-dus-m1").num_layers == 10
    assert any("succeeded" in s.value for s in at.success)
    assert any("Lineage: tiny → **tiny-dus-m1**" in c.value for c in at.caption)


def test_llama_pro_and_slices_on_the_build_page(tiny):
    at = app()
    at.radio(key="method").set_value("llama-pro").run()
    assert list(at.selectbox(key="groups").options) == ["1", "2", "3", "6"]
    at.selectbox(key="groups").set_value(3).run()
    assert metric(at, "Layers n → s") == "6 → 9"
    at.radio(key="method").set_value("slices").run()
    assert not at.exception
    assert metric(at, "Layers n → s") == "6 → 8"  # the dus default as rows [0, 4) + [2, 6): m = 2, as for dus
    assert any("half-open" in c.value for c in at.caption)


def test_bad_name_is_explained_on_the_page(tiny):
    at = app()
    at.text_input(key="name").set_value("bad name!").run()
    assert any("use ASCII letters" in e.value for e in at.error)


def test_models_page_lists_chats_and_deletes(tiny):
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    run_upscale(UpscaleSpec(base="tiny", m=2, name="tiny-big"))
    at = app("models.py")
    df = at.dataframe[0].value
    assert list(df["name"]) == ["tiny", "tiny-big"] and list(df["layers"]) == [6, 8]
    assert at.selectbox(key="model").value == "tiny-big"
    assert any("Lineage" in md.value and "tiny-big" in md.value for md in at.markdown)
    at.chat_input(key="chat_input").set_value("hello").run()
    assert not at.exception
    assert len(at.chat_message) == 2 and at.chat_message[1].name == "assistant"
    assert any("tokens/s" in c.value for c in at.caption)
    from backend import registry
    from backend.chat import load, stream_reply

    reply = "".join(stream_reply(load(registry.get("tiny-big").path), [{"role": "user", "content": "hello"}],
                                 max_new_tokens=96))  # what the page got (greedy, the page's default length)
    said = any("only whitespace" in c.value for c in at.caption)
    assert said == (not reply.strip())  # a blank reply is explained, a real one is not
    # delete needs the confirmation box
    assert at.button(key="delete").disabled
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert registry.get("tiny-big") is None
    assert list(at.dataframe[0].value["name"]) == ["tiny"]


def test_import_of_a_bad_target_is_refused_with_its_reason_before_it_is_queued(tiny, tmp_path):
    at = app("models.py")
    at.text_input(key="import_target").set_value(str(tmp_path / "nothing-here")).run()
    at.button(key="import").click().run()
    assert not runner.list_jobs()
    assert any(e.value.startswith("Not queued:") and "is not a folder, a .gguf file or a Hub id" in e.value
               for e in at.error), [e.value for e in at.error]


def test_jobs_page_shows_jobs(tiny):
    from backend.specs import UpscaleSpec

    runner.submit(UpscaleSpec(base="tiny", m=2))
    at = app("jobs.py")
    df = at.dataframe[0].value
    assert list(df["status"]) == ["queued"] and list(df["kind"]) == ["upscale"]
    assert any("No job worker is running" in w.value for w in at.warning)


def test_train_page_previews_data_and_queues_the_spec(tiny):
    at = app("train.py")
    assert any("text layout, 200 rows" in e.label for e in at.expander)  # cpt default: the built-in corpus
    at.radio(key="kind").set_value("sft").run()
    assert any("alpaca layout" in e.label for e in at.expander)
    at.number_input(key="max_steps").set_value(4).run()
    assert at.button(key="launch").label == "Launch SFT"  # the kind's name, whatever widgets come before it
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert job.kind == "sft" and job.spec["max_steps"] == 4 and job.spec["model"] == "tiny"
    assert job.spec["data"] == [{"source": "builtin:alpaca-mini", "weight": 1.0, "sample_by": "line"}]


def test_train_page_preselects_the_workspace_trackers_and_sends_the_choice(tiny, monkeypatch):
    monkeypatch.setenv("DUS_REPORT_TO", "tensorboard")
    at = app("train.py")
    assert at.multiselect(key="report_to").value == ["tensorboard"]
    at.multiselect(key="report_to").set_value(["tensorboard", "mlflow"]).run()
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert job.spec["report_to"] == ["tensorboard", "mlflow"]
    monkeypatch.setenv("DUS_REPORT_TO", "tensorbored")
    at = app("train.py")
    assert any("unknown tracker tensorbored" in w.value for w in at.warning)
    assert at.multiselect(key="report_to").value == []


def test_train_page_explains_a_file_that_fits_no_layout(tiny, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    at = app("train.py")
    at.radio(key="kind").set_value("dpo").run()
    at.session_state["sources_dpo"] = {"edited_rows": {0: {"source": str(bad)}}, "added_rows": [],
                                       "deleted_rows": []}
    at.run()
    assert any("missing chosen, rejected" in e.value for e in at.error)
    assert at.button(key="launch").disabled


def test_monitor_page_draws_the_recovery_view_from_metric_rows(tiny):
    from backend.specs import CptSpec, DataSource
    from storage import db
    from storage.models import JobMetric

    job = runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))
    with db.session() as s:
        for step, name, value in [(0, "reference_eval_loss", 4.0), (0, "eval_loss", 6.0), (1, "loss", 5.5),
                                  (2, "loss", 5.0), (10, "eval_loss", 4.5)]:
            s.add(JobMetric(job_id=job.id, step=step, name=name, value=value))
        s.commit()
    at = app("monitor.py")
    charts = at.get("plotly_chart")
    titles = [c.proto.spec for c in charts]
    assert any("Recovery" in t for t in titles) and any('"loss"' in t for t in titles)
    recovery = next(t for t in titles if "Recovery" in t)
    assert "4.000" in recovery and "[6.0,4.5]" in recovery.replace(" ", "")


def test_synth_page_makes_pairs_and_inspects_them():
    at = app("synth.py")
    assert any("No synthetic pairs yet" in i.value for i in at.info)
    at.number_input(key="num_seeds").set_value(24).run()
    at.button(key="make_pairs").click().run()
    (job,) = runner.list_jobs()
    assert job.kind == "synth-math" and job.spec["num_seeds"] == 24 and job.spec["rephraser"] == "rules"
    runner.worker(once=True)
    at.run()
    assert not at.exception
    assert metric(at, "verified") == "24" and metric(at, "failed") == "0"
    assert at.number_input(key="f_page").label.startswith("Page (of 3; 24 pairs match)")
    assert len(at.get("plotly_chart")) == 2  # question and answer length histograms
    # reject the first pair by hand: counted, kept out of the exports
    first_reject = next(b for b in at.button if b.key and b.key.startswith("reject_"))
    first_reject.click().run()
    assert metric(at, "rejected by hand") == "1"
    at.button(key="export").click().run()
    assert any("23 pairs" in s.value for s in at.success)
    at.number_input(key="f_page").set_value(3).run()
    shown = [m.value for m in at.markdown if "level" in m.value and "answer `" in m.value]
    assert len(shown) == 4 and not any("rejected by hand" in v for v in shown)  # 24 pairs: page 3 holds 21–24
    at.multiselect(key="f_state").set_value(["rejected"]).run()  # one page now: page 3 falls back to page 1
    assert at.number_input(key="f_page").label.startswith("Page (of 1; 1 pair matches)")
    assert at.number_input(key="f_page").value == 1
    (shown,) = [m.value for m in at.markdown if "level" in m.value and "answer `" in m.value]
    assert ":gray-badge[rejected by hand]" in shown and "_rejected by hand_" not in shown  # said once
    # the rules rephraser's chosen answers end "So the final answer is …", the originals "The answer is …"
    gap = next(m.value for m in at.markdown if m.value.startswith("Chosen answers are longer"))
    assert "in 23 of 23 pairs (100%)" in gap and "**systematic**" in gap  # the hand-rejected pair left out
    at.text_input(key="f_search").set_value("no question says this").run()  # nothing matches: said, not blank
    assert at.number_input(key="f_page").label.startswith("Page (of 1; 0 pairs match)")
    assert any("No pair matches these filters" in i.value for i in at.info)


def test_synth_page_saves_the_papers_mixes():
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=10))
    at = app("synth.py")
    at.button(key="save_presets").click().run()
    assert not at.exception
    mixes = {d.name: d.provenance for d in pipeline.list_datasets("mix")}
    assert set(mixes) == {"sft-v1", "sft-v2", "sft-v3", "sft-v4", "dpo-v1", "dpo-v2"}
    assert [s["source"] for s in mixes["sft-v3"]["sources"]] == ["builtin:alpaca-mini", "builtin:orca-mini",
                                                                 "dataset:synth-math-instruct"]
    assert mixes["dpo-v2"]["for"] == "dpo"


def test_compare_page_merges_and_shows_scores_and_the_length_control(tiny, tiny_llama, tokenizer_dir, tmp_path):
    from storage import db
    from storage.models import EvalScore, Generation
    from tests.conftest import make_llama

    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5), "tiny-b")
    at = app("compare.py")
    assert any("No scores yet" in i.value for i in at.info)
    at.selectbox(key="merge_method").set_value("slerp").run()
    at.button(key="merge").click().run()
    (job,) = runner.list_jobs()
    assert job.kind == "merge" and job.spec["method"] == "slerp" and job.spec["models"] == ["tiny", "tiny-b"]
    runner.worker(once=True)
    job = runner.get(job.id)
    assert job.status == "succeeded", job.error
    merged = registry.get(job.result["model"])
    assert merged.kind == "merged" and merged.parents == ["tiny", "tiny-b"]
    with db.session() as s:
        for model, acc in (("tiny", 0.25), ("tiny-b", 0.5), (merged.name, 0.75)):
            s.add(EvalScore(model=model, task="synth-math", metric="accuracy", value=acc, n=4))
            s.add(EvalScore(model=model, task="perplexity", metric="perplexity", value=300.0, n=100))
        for i in range(20):  # A is longer and wrong more often on long answers
            s.add(Generation(model="tiny", task="synth-math", prompt_id=str(i), prompt="q", reference="1",
                             output="x", tokens=5, words=40 if i < 15 else 5, answered=True, correct=i % 2 == 0,
                             hallucination=i % 2 == 1 and i < 15))
            s.add(Generation(model="tiny-b", task="synth-math", prompt_id=str(i), prompt="q", reference="1",
                             output="x", tokens=5, words=40 if i < 5 else 5, answered=True, correct=True,
                             hallucination=i % 2 == 1 and i < 5))
        s.commit()
    at.run()
    assert not at.exception
    df = next(d.value for d in at.dataframe if "model" in d.value.columns)
    row = df[df["model"] == merged.name].iloc[0]
    assert row["synth-math (accuracy)"] == 0.75 and row["average (accuracy tasks)"] == 0.75
    assert row["made from"] == "tiny + tiny-b"
    assert any("Hallucination rate A − B: raw" in md.value for md in at.markdown)


def test_side_by_side_chat_answers_votes_and_ranks(tiny_llama_untied, tokenizer_dir, tmp_path):
    from backend import arena
    from tests.conftest import make_llama

    # untied: a tied random model repeats the prompt's last token ("\n"), and answers that show nothing take no vote
    registry.import_folder(tiny_llama_untied, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5, tie=False), "tiny-b")
    at = app("arena.py")
    assert at.multiselect(key="arena_models").value == ["tiny", "tiny-b"]
    at.slider(key="arena_max_new").set_value(8).run()
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception
    captions = [c.value for c in at.caption if "tokens" in c.value]
    assert len(captions) == 2 and all(c == "8 tokens · timings after the vote" for c in captions)  # blind round
    at.button(key="vote_a").click().run()
    (v,) = arena.votes()
    assert {v.model_a, v.model_b} == {"tiny", "tiny-b"} and (v.outcome, v.tokens_a) == ("a", 8)
    board = at.dataframe[0].value
    assert list(board["model"]) == [v.model_a, v.model_b] and board["score"].iloc[0] > board["score"].iloc[1]
    at.checkbox(key=f"flag_{v.transcript_id}_tiny-b").check().run()
    from storage import db
    from storage.models import ChatTranscript

    with db.session() as s:
        assert s.get(ChatTranscript, v.transcript_id).answers["tiny-b"]["hallucination"] is True


def test_no_page_has_a_bare_expression_that_streamlit_magic_would_print():
    """Streamlit's magic writes the value of a bare non-call expression: `st.error(x) if bad else st.write(y)` showed a
    stray "None" under every side-by-side answer."""
    import ast

    root = Path(__file__).resolve().parent.parent
    found = []
    for f in [root / "app.py", *sorted((root / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Expr) and not isinstance(node.value, (ast.Call, ast.Await, ast.Yield)) and not (
                    isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                found.append(f"{f.name}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert found == []


def test_compare_page_shows_h6_scores_beside_the_published_numbers(tiny):
    from backend import lmeval
    from storage import db
    from storage.models import EvalScore

    with db.session() as s:
        s.add(EvalScore(model="tiny", task="lm-eval:h6", metric="arc_challenge/acc_norm", value=0.25, n=10))
        s.add(EvalScore(model="tiny", task="lm-eval:h6", metric="h6_average", value=0.3, n=10))
        s.commit()
    at = app("compare.py")
    df = next(d.value for d in at.dataframe if "arc_challenge/acc_norm" in d.value.columns)
    ours = df[df["model"] == "tiny"].iloc[0]
    assert ours["arc_challenge/acc_norm"] == 0.25 and ours["h6_average"] == 0.3
    (name, published), = lmeval.PAPER_H6.items()
    paper = df[df["model"] == f"{name} (published, %)"].iloc[0]
    assert paper["hellaswag/acc_norm"] == published["hellaswag/acc_norm"]


def test_evaluation_fans_out_one_job_per_model_with_the_scores_of_one_job(tiny, tokenizer_dir, tmp_path):
    from sqlmodel import select

    from backend import evaluate
    from backend.specs import EvalSpec
    from storage import db
    from storage.models import EvalScore
    from tests.conftest import make_llama

    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "b", seed=5), "tiny-b")
    at = app("compare.py")
    at.multiselect(key="eval_tasks").set_value(["perplexity"]).run()
    at.number_input(key="eval_limit").set_value(3).run()
    assert at.toggle(key="eval_fan_out").value  # on by default with several models
    at.button(key="evaluate").click().run()
    jobs = sorted(runner.list_jobs(), key=lambda j: j.id)
    assert [(j.kind, j.spec["models"]) for j in jobs] == [("eval", ["tiny"]), ("eval", ["tiny-b"])]
    runner.worker(once=True, slots=2)
    assert [runner.get(j.id).status for j in jobs] == ["succeeded", "succeeded"]
    with db.session() as s:
        rows = s.exec(select(EvalScore)).all()
    fanned = {(r.model, r.metric): r.value for r in rows}
    evaluate.run_eval(EvalSpec(models=["tiny", "tiny-b"], tasks=["perplexity"], limit=3))  # one job, both models
    with db.session() as s:
        newer = s.exec(select(EvalScore).where(EvalScore.id > max(r.id for r in rows))).all()
    one = {(r.model, r.metric): r.value for r in newer}
    assert fanned.keys() == one.keys() and len(one) >= 2
    assert all(abs(fanned[k] - one[k]) <= 1e-6 * abs(one[k]) for k in one), (fanned, one)
    at.run()
    assert not at.exception
