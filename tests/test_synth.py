"""Synthetic math data: generator, importers, rephrasers (rules, a real HTTP endpoint), verification,
contamination, exports in trl's formats, hand rejection, mixes, and a DPO job on the result."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from backend import data
from backend.specs import DataSource, DpoSpec, SynthMathSpec
from backend.synth import pipeline
from backend.synth.answers import extract_answer, same_answer, to_number
from backend.synth.seeds import CATEGORIES, SeedError, generate, import_math, load_seeds


def independent_answer(category: str, level: int, q: str) -> Fraction:
    """Recompute each generated problem's answer from its text alone (one reading per template, in
    tests/test_review_s17_synth.py since the templates grew)."""
    from tests.test_review_s17_synth import independent_answer as from_text

    return from_text(q)


def test_generator_answers_match_an_independent_computation():
    seeds = generate(480, seed=3)
    assert {s.category for s in seeds} == set(CATEGORIES) and {s.level for s in seeds} == {1, 2, 3}
    for s in seeds:
        assert to_number(s.answer) == independent_answer(s.category, s.level, s.question), s
        assert same_answer(extract_answer(s.solution), s.answer), s  # the worked solution ends in its answer
    assert generate(20, seed=3) == seeds[:20] and generate(20, seed=4) != seeds[:20]


@pytest.mark.parametrize("a, b, same", [("0.5", "1/2", True), ("50%", "0.5", True), ("\\frac{1}{2}", "1/2", True),
                                        ("$1,250", "1250", True), ("89.25", "357/4", True), ("3", "4", False),
                                        ("x=3", "3", False)])
def test_numeric_equivalence(a, b, same):
    assert same_answer(a, b) is same


def test_importers_read_math_and_gsm8k(tmp_path):
    math_file = tmp_path / "math.jsonl"
    math_file.write_text(json.dumps({"problem": "Find $\\frac{1}{2}+\\frac{1}{4}$.", "level": "Level 2",
                                     "type": "Prealgebra", "solution": "We get $\\boxed{\\frac{3}{4}}$."}) + "\n")
    (s,) = import_math(math_file)
    assert (s.answer, s.level, s.category, s.source) == ("\\frac{3}{4}", 2, "prealgebra", "MATH")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 apples and buys 4. How many?",
                               "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}) + "\n")
    (g,) = load_seeds(str(gsm))
    assert g.answer == "7" and g.source == "GSM8K" and "\\boxed{7}" in g.solution


@pytest.mark.parametrize("content, message", [
    ('{"problem": "x"}\n', "record 1: missing solution"),
    ('{"problem": "x", "solution": "no box"}\n', "no \\\\boxed"),
    ('{"problem": "x", "solution": "\\\\boxed{1}"}\n{oops\n', "line 2, column 2: not valid JSON"),
    ('{"question": "q", "answer": "no hashes"}\n', "does not end with '#### <number>'"),
    ('\n\n', "holds no records"),
])
def test_malformed_seed_files_get_clear_errors(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(SeedError, match=message):
        load_seeds(str(bad))


def run(tmp_path, **kw) -> dict:
    return pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "out"), **kw))


def read_jsonl(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_alignment_tuples_are_built_exactly_from_the_pairs(tmp_path):
    result = run(tmp_path, num_seeds=60)
    assert result["verified"] == 60 and result["rows"] == 60
    total, pairs = pipeline.query_pairs(pipeline.get_dataset("synth-math-pairs").id, page_size=100)
    align = read_jsonl(pipeline.get_dataset("synth-math-alignment").path)
    instruct = read_jsonl(pipeline.get_dataset("synth-math-instruct").path)
    assert total == len(align) == len(instruct) == 60
    for p, a, i in zip(pairs, align, instruct):
        assert a == {"prompt": p.new_question, "chosen": p.new_solution, "rejected": p.solution}
        assert i == {"messages": [{"role": "user", "content": p.new_question},
                                  {"role": "assistant", "content": p.new_solution}]}
        assert p.new_question != p.question  # the rules rephraser really rephrases
    assert sum(p.new_solution != p.solution for p in pairs) == 60
    # trl-ready: the data layer recognises both layouts
    assert data.preview("dataset:synth-math-alignment", "dpo")["layout"] == "preference"
    assert data.preview("dataset:synth-math-instruct", "sft")["layout"] == "messages"


class Sabotage:
    """Changes the final answer of every third seed: verification must catch it."""

    name = "sabotage"

    def rephrase(self, seeds):
        out = []
        for i, s in enumerate(seeds):
            sol = s.solution
            if int(s.id.rsplit("-", 1)[1]) % 3 == 0:
                sol = sol.replace(f"\\boxed{{{s.answer}}}", "\\boxed{999999}")
            out.append((s.question + " (reworded)", sol))
        return out


def test_verification_catches_an_answer_changing_rephrase(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Sabotage())
    result = run(tmp_path, num_seeds=30)
    assert (result["verified"], result["failed"]) == (20, 10)
    dsid = pipeline.get_dataset("synth-math-pairs").id
    total, failed = pipeline.query_pairs(dsid, states=["failed"], page_size=50)
    assert total == 10 and all("answer changed: 999999" in p.reason for p in failed)
    assert len(read_jsonl(pipeline.get_dataset("synth-math-alignment").path)) == 20
    assert all("999999" not in r["chosen"] for r in read_jsonl(pipeline.get_dataset("synth-math-alignment").path))


def test_rephrasings_are_cached_and_a_rerun_skips_them(tmp_path, monkeypatch):
    calls = []
    from backend.synth.rephrase import RulesRephraser

    class Counting(RulesRephraser):
        def rephrase(self, seeds):
            calls.append(len(seeds))
            return super().rephrase(seeds)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Counting())
    save = pipeline.save_dataset
    monkeypatch.setattr(pipeline, "save_dataset", killed)  # stopped before it registers anything: its folder
    with pytest.raises(KeyboardInterrupt):  # holds only its own files, so the rerun (a resumed job) may go on
        run(tmp_path, num_seeds=20)
    monkeypatch.setattr(pipeline, "save_dataset", save)
    assert sum(calls) == 20
    messages = []
    pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "out"), num_seeds=25),
                            progress=lambda f, m: messages.append(m))
    assert sum(calls) == 25 and "20 already rephrased" in messages[0]


def test_contamination_check_flags_benchmark_overlap(tmp_path):
    seeds = generate(12, seed=0)
    bench = tmp_path / "gsm8k_test.jsonl"
    bench.write_text(json.dumps({"question": seeds[3].question, "answer": "#### 0"}) + "\n")
    result = run(tmp_path, num_seeds=12, benchmark=str(bench), overlap_threshold=0.5)
    assert result["flagged"] >= 1 and result["rows"] == 12 - result["flagged"]
    dsid = pipeline.get_dataset("synth-math-pairs").id
    _, flagged = pipeline.query_pairs(dsid, states=["flagged"])
    assert seeds[3].id in [p.seed_id for p in flagged] and all(p.overlap >= 0.5 for p in flagged)
    assert pipeline.export("synth-math-pairs", include_flagged=True)["rows"] == 12


def test_hand_rejection_is_recorded_and_kept_out_of_exports(tmp_path):
    run(tmp_path, num_seeds=10)
    dsid = pipeline.get_dataset("synth-math-pairs").id
    _, pairs = pipeline.query_pairs(dsid)
    pipeline.reject_by_hand(pairs[0].id)
    assert pipeline.counts(dsid)["rejected"] == 1
    out = pipeline.export("synth-math-pairs")
    assert out["rows"] == 9
    assert pairs[0].new_question not in [r["prompt"] for r in read_jsonl(pipeline.get_dataset("synth-math-alignment")
                                                                         .path)]
    total, rejected = pipeline.query_pairs(dsid, states=["rejected"])
    assert total == 1 and rejected[0].id == pairs[0].id
    assert pipeline.query_pairs(dsid, states=["verified"])[0] == 9


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append((body["model"], self.headers.get("Authorization")))
        prompt = body["messages"][0]["content"]
        question = prompt.split("Problem: ", 1)[1].split("\nSolution: ")[0]
        solution = prompt.split("\nSolution: ", 1)[1]
        content = "I cannot help." if "×" in question else f"QUESTION: Please answer: {question}\n" \
                                                          f"SOLUTION: Working: {solution}"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *a):
        pass


def test_openai_compatible_rephraser_over_real_http(tmp_path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MY_KEY", "sk-test")
    try:
        result = run(tmp_path, num_seeds=16, rephraser=f"openai:http://127.0.0.1:{server.server_port}/v1",
                     api_model="served-model", api_key_env="MY_KEY")
    finally:
        server.shutdown()
    assert len(_Handler.seen) == 16 and set(_Handler.seen) == {("served-model", "Bearer sk-test")}
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("synth-math-pairs").id, page_size=50)
    refused = [p for p in pairs if "×" in p.question]  # the arithmetic ones (16 seeds hold two or more)
    assert refused and all(p.status == "failed" and "QUESTION" in p.reason for p in refused)
    ok = [p for p in pairs if p not in refused]
    assert ok and len(pairs) == 16  # every pair checked below, one way or the other
    assert all(p.status == "verified" and p.new_question.startswith("Please answer:") for p in ok)
    assert result["verified"] == len(ok)


def test_unreachable_endpoint_fails_pairs_with_the_reason(tmp_path):
    result = run(tmp_path, num_seeds=3, rephraser="openai:http://127.0.0.1:9/v1", api_model="m")
    assert result["failed"] == 3
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("synth-math-pairs").id)
    assert len(pairs) == 3 and all("cannot reach" in p.reason for p in pairs)


def test_mixes_expand_with_weights(tmp_path):
    run(tmp_path, num_seeds=20)
    pipeline.save_mix("sft-v4", [("builtin:alpaca-mini", 1.0), ("dataset:synth-math-instruct", 0.5)], "sft")
    ds, report = data.mix([("mix:sft-v4", 1.0)], "sft")
    assert [(s, n) for s, _, n in report] == [("builtin:alpaca-mini", 200), ("dataset:synth-math-instruct", 10)]
    assert len(ds) == 210
    with pytest.raises(ValueError, match="fit no layout usable for dpo"):
        pipeline.save_mix("bad", [("dataset:synth-math-instruct", 1.0)], "dpo")


def test_a_dpo_job_trains_on_math_alignment_made_here(tmp_path, tiny_llama):
    from backend import registry
    from backend.training import run_train

    run(tmp_path, num_seeds=24)
    registry.import_folder(tiny_llama, "tiny")
    result = run_train(DpoSpec(model="tiny", data=[DataSource(source="dataset:synth-math-alignment")],
                               max_steps=3, max_length=96, eval_fraction=0.0, name="tiny-math-dpo"))
    assert result["global_step"] == 3 and registry.get("tiny-math-dpo").parents == ["tiny"]


def test_a_registered_model_rephrases_and_bad_replies_fail_with_the_reason(tmp_path, tiny_llama):
    from backend import registry

    registry.import_folder(tiny_llama, "tiny")
    result = run(tmp_path, num_seeds=3, rephraser="model:tiny", batch_size=3)
    # a random tiny model cannot follow the reply format: every pair fails, with that reason, none exported
    assert result["failed"] == 3 and result["rows"] == 0
    _, pairs = pipeline.query_pairs(pipeline.get_dataset("synth-math-pairs").id)
    assert len(pairs) == 3 and all("QUESTION: … SOLUTION:" in p.reason for p in pairs)
    assert pipeline.get_dataset("synth-math-pairs").provenance["rephraser"] == "model:tiny"


def test_the_length_gap_counts_pairs_whose_chosen_answer_is_longer(tmp_path):
    """Word counts set by hand on 10 exported pairs: chosen longer in 8 (by 3 words), shorter in 1 (by 2), as long
    in 1; a hand-rejected pair is left out, as the export leaves it out. Sign test: 8 of 9, two-sided."""
    from scipy.stats import binomtest

    from storage import db
    from storage.models import SynthPair

    run(tmp_path, num_seeds=11)
    dsid = pipeline.get_dataset("synth-math-pairs").id
    with db.session() as s:
        pairs = s.exec(pipeline.select(SynthPair).where(SynthPair.dataset_id == dsid).order_by(SynthPair.id)).all()
        assert len(pairs) == 11 and all(p.status == "verified" for p in pairs)
        for p, chosen in zip(pairs, [13] * 8 + [8, 10, 40]):
            p.a_words, p.new_a_words = 10, chosen
            s.add(p)
        s.commit()
        rejected = pairs[10].id
    pipeline.reject_by_hand(rejected)  # its 40 words must not count
    g = pipeline.length_gap(dsid)
    assert (g["pairs"], g["longer"], g["shorter"], g["same"]) == (10, 8, 1, 1)
    assert g["mean_diff"] == pytest.approx((8 * 3 - 2) / 10) and g["rejected_words"] == pytest.approx(10)
    assert g["sign_test_p"] == pytest.approx(binomtest(8, 9).pvalue)


def test_the_rules_rephraser_keeps_the_context_before_the_question_that_points_to_it():
    from backend.synth.rephrase import RulesRephraser

    q = RulesRephraser().question("A rectangle is 16 cm wide and 3 cm long. What is its area in square centimetres?")
    assert q == "Given that a rectangle is 16 cm wide and 3 cm long, what is its area in square centimetres?"
