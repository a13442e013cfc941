"""Closed-book QA with abstention: the verdict rules, file validation, per-kind scores, and the optional judge
against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import select

from backend import evalscore, evaluate, qa, registry
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore, Generation


@pytest.mark.parametrize("output, answers, kind, verdict", [
    ("The capital of Norway is Oslo.", ["Oslo"], "answerable", "correct"),
    ("brasilia", ["Brasília"], "answerable", "correct"),  # accents and case normalised
    ("It is Buenos-Aires!", ["Buenos Aires"], "answerable", "correct"),  # punctuation -> spaces
    ("I'm not sure, but I think Oslo.", ["Oslo"], "answerable", "correct"),  # a hedged right answer counts
    ("Oslofjord city", ["Oslo"], "answerable", "wrong"),  # whole words only
    ("The capital is Bergen.", ["Oslo"], "answerable", "wrong"),
    ("I don't know.", ["Oslo"], "answerable", "abstained"),
    ("I do not know of a country called Veltravia.", [], "unanswerable", "abstained"),
    ("Veltravia does not exist.", [], "unanswerable", "abstained"),
    ("The capital of Veltravia is Velton.", [], "unanswerable", "wrong"),  # a confident falsehood
    ("", [], "unanswerable", "empty"),  # said nothing: neither an answer nor an abstention (s20)
    ("12 times 7 is 84. The answer is 84.", ["84"], "math", "correct"),
    ("The answer is 80.", ["84"], "math", "wrong"),
    ("I don't know how to solve this, maybe 80.", ["84"], "math", "abstained"),
    ("Let me think about the eggs.", ["84"], "math", "abstained"),  # no number stated: no claim
])
def test_verdict_rules(output, answers, kind, verdict):
    assert qa.classify(output, answers, kind) == verdict


def test_scores_by_kind():
    verdicts = ["correct", "wrong", "abstained", "abstained", "wrong", "correct", "correct"]
    kinds = ["answerable", "answerable", "answerable", "unanswerable", "unanswerable", "math", "math"]
    s = qa.scores_by_kind(verdicts, kinds)
    assert s["accuracy"] == pytest.approx(3 / 7) and s["hallucination_rate"] == pytest.approx(2 / 7)
    assert s["abstention_rate"] == pytest.approx(2 / 7) and s["precision"] == pytest.approx(3 / 5)
    assert s["accuracy[answerable]"] == pytest.approx(1 / 3) and s["precision[answerable]"] == 0.5
    assert s["hallucination_rate[unanswerable]"] == 0.5 and s["abstention_rate[unanswerable]"] == 0.5
    assert s["accuracy[math]"] == 1.0 and s["precision[math]"] == 1.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows, message", [
    ([{"id": 1, "question": "q?", "answers": ["a"]}], "line 1: missing answerable"),
    ([{"id": 1, "question": "q?", "answerable": True}], "line 1: missing answers"),
    ([{"id": 1, "question": "q?", "answers": [], "answerable": True}], "line 1: answers is empty"),
    ([{"id": 1, "question": "q?", "answers": ["a"], "answerable": True},
      {"id": 1, "question": "r?", "answers": [], "answerable": False}], "line 2: duplicate id '1'"),
    ([{"id": 1, "question": "q?", "answers": "a", "answerable": True}], "answers must be a list"),
])
def test_bad_qa_files_fail_clearly_and_store_nothing(tiny_llama, tmp_path, rows, message):
    registry.import_folder(tiny_llama, "tiny")
    bad = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(qa.QAError, match=message):
        qa.load_items(bad)
    with pytest.raises(evaluate.EvalError, match=message):  # checked before any model loads or task runs
        evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity", f"qa:{bad}"], limit=2))
    with db.session() as s:
        assert not list(s.exec(select(EvalScore)))


def test_builtin_qa_run_stores_verdicts_and_kinds(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    prompts_seen = []

    def fake_generate(tok, model, prompts, max_new_tokens, **k):
        prompts_seen.extend(prompts)
        out = []
        for p in prompts:
            if "Solve the problem" in p:
                out.append(("The answer is 3.", 5, False))
            elif "Germany" in p:
                out.append(("Berlin", 1, False))
            elif "Veltravia" in p:
                out.append(("I don't know.", 3, False))
            else:
                out.append(("Paris", 1, False))
        return out

    monkeypatch.setattr(evalscore, "generate", fake_generate)
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["qa"], limit=30))
    with db.session() as s:
        gens = list(s.exec(select(Generation)))
        scores = {r.metric: r for r in s.exec(select(EvalScore))}
    assert len(gens) == 30 and {g.item_kind for g in gens} == {"answerable", "unanswerable", "math"}
    assert sum(g.item_kind == "math" for g in gens) == 10  # a small limit still covers every kind
    assert any("say you don't know" in p for p in prompts_seen) and any("I don't know" in p for p in prompts_seen)
    by = {g.prompt: g for g in gens}
    for country, verdict in (("Germany", "correct"), ("France", "correct"), ("Italy", "wrong")):
        g = next(g for q, g in by.items() if country in q)
        assert (g.verdict, g.correct, g.hallucination) == (verdict, verdict == "correct", verdict == "wrong")
    velt = next(g for q, g in by.items() if "Veltravia" in q)
    assert (velt.verdict, velt.answered, velt.hallucination) == ("abstained", False, False)
    others = [g for g in gens if g.item_kind == "unanswerable" and "Veltravia" not in g.prompt]
    assert all(g.verdict == "wrong" and g.hallucination for g in others)  # "Paris" for an invented place
    expected = qa.scores_by_kind([g.verdict for g in gens], [g.item_kind for g in gens])
    assert {m: r.value for m, r in scores.items()} == pytest.approx(expected)
    assert scores["accuracy"].details["graded_by"] == "rules"
    assert scores["accuracy"].details["source"] == "builtin-eval:qa-closed-book"


class _Judge(BaseHTTPRequestHandler):
    mode = "ok"
    prompts: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        type(self).prompts.append(prompt)
        if self.mode == "slow":
            time.sleep(2)
        graded = prompt.split("Reply to grade: ")[1].split("\n\n")[0]
        reply = "CORRECT" if "Reference answers: Oslo" in prompt and "Oslo" in graded else \
            "ABSTAINED" if "know" in graded else "WRONG"
        if self.mode == "junk":
            reply = "Well, it depends."
        data = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the slow case: the client gave up, as it should
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Judge.prompts = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_grades_and_its_verdicts_are_stored(tiny_llama, tmp_path, monkeypatch, judge_server):
    registry.import_folder(tiny_llama, "tiny")
    f = _write(tmp_path / "qa.jsonl", [
        {"id": "a", "question": "Which city is the capital of Norway?", "answers": ["Oslo"], "answerable": True},
        {"id": "b", "question": "Which city is the capital of Veltravia?", "answers": [], "answerable": False},
        {"id": "c", "question": "Which city is the capital of Quendor?", "answers": [], "answerable": False}])
    replies = {"a": "The seat of government is Oslo, I believe", "b": "Nobody would know that", "c": "Velton"}
    monkeypatch.setattr(evalscore, "generate", lambda tok, model, prompts, n, **k: [
        (replies["a" if "Norway" in p else "b" if "Veltravia" in p else "c"], 3, False) for p in prompts])
    spec = EvalSpec(models=["tiny"], tasks=[f"qa:{f}"], judge_url=judge_server, judge_model="grader",
                    judge_timeout=1)
    evaluate.run_eval(spec)
    with db.session() as s:
        gens = {g.prompt_id: g for g in s.exec(select(Generation))}
        acc = next(r for r in s.exec(select(EvalScore)) if r.metric == "accuracy")
    assert {k: g.judge_verdict for k, g in gens.items()} == {"a": "correct", "b": "abstained", "c": "wrong"}
    assert {k: g.verdict for k, g in gens.items()} == {"a": "correct", "b": "abstained", "c": "wrong"}
    assert acc.value == pytest.approx(1 / 3) and acc.details["graded_by"].startswith("judge grader at http://")
    # the rules say "b" is wrong (no abstention phrase): the judge disagrees on one of three
    assert acc.details["judge_agrees_with_rules"] == pytest.approx(2 / 3)
    assert len(_Judge.prompts) == 3 and qa.NO_REFERENCE in _Judge.prompts[1] + _Judge.prompts[2]

    for mode, message in (("junk", "is not CORRECT, WRONG or ABSTAINED"), ("slow", "cannot reach .* within 1 s")):
        _Judge.mode = mode
        try:
            with pytest.raises(evaluate.EvalError, match=message):
                evaluate.run_eval(spec.model_copy(update={"tasks": [f"qa:{f}"], "models": ["tiny"]}))
        finally:
            _Judge.mode = "ok"
    with db.session() as s:  # the failed runs added nothing
        assert len(list(s.exec(select(Generation)))) == 3
    down = spec.model_copy(update={"judge_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(evaluate.EvalError, match="judge: cannot reach http://127.0.0.1:9/v1"):
        evaluate.run_eval(down)


def test_cli_eval_runs_qa_and_prints_per_kind_scores(tiny_llama, capsys):
    from backend.__main__ import main

    registry.import_folder(tiny_llama, "tiny")
    assert main(["eval", "tiny", "--tasks", "qa", "--limit", "3", "--max-new-tokens", "8", "--device", "cpu",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "hallucination_rate[unanswerable]" in out and "accuracy[math]" in out
    with db.session() as s:
        gens = list(s.exec(select(Generation)))
    assert sorted(g.item_kind for g in gens) == ["answerable", "math", "unanswerable"]
    assert main(["eval", "tiny", "--tasks", "qa", "--judge-url", "http://127.0.0.1:9/v1"]) == 2  # no judge model
