"""lm-evaluation-harness as an evaluation task: the local tasks end to end through the eval job, a cross-check of
lm-eval's multiple-choice scoring against our own, generation scoring on known answers, clear errors, the H6 preset."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from backend import evaluate, lmeval, registry
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore
from tests.needs import need_module

need_module("lm_eval", "lm-eval is not installed (requirements.txt)")
MC_FILE = lmeval.TASK_DIR / "data" / "truthfulqa_mini.jsonl"


@pytest.fixture
def tiny(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    return tiny_llama


def _rows() -> list[EvalScore]:
    with db.session() as s:
        return list(s.exec(select(EvalScore)))


def test_local_tasks_through_the_eval_job(tiny, tmp_path, monkeypatch):
    import datasets.config

    # the datasets cache this job sees is this test's own, empty: the shared one gains files from other processes
    # (other tests, other runs) while the job runs, which failed a comparison of it before and after
    cache = tmp_path / "datasets_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    for name, path in (("HF_DATASETS_CACHE", cache), ("DOWNLOADED_DATASETS_PATH", cache / "downloads"),
                       ("EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")):
        monkeypatch.setattr(datasets.config, name, path)
    res = evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["lm-eval:dus_truthfulqa_mini", "lm-eval:dus_gsm8k_mini"],
                                     limit=4, max_new_tokens=8))
    rows = {(r.task, r.metric): r for r in _rows()}
    assert res["scores"] == len(rows) == 8
    for metric in ("acc", "acc_norm"):
        r = rows[("lm-eval:dus_truthfulqa_mini", metric)]
        assert 0 <= r.value <= 1 and r.value * 4 == round(r.value * 4) and r.n == 4  # a share of 4 items
        assert r.details["lm_eval"]["tasks"]["dus_truthfulqa_mini"]["local"] is True
    for metric in ("exact_match", "exact_match_flexible_extract"):
        r = rows[("lm-eval:dus_gsm8k_mini", metric)]
        assert 0 <= r.value <= 1 and r.n == 4
    assert rows[("lm-eval:dus_gsm8k_mini", "exact_match")].details["lm_eval"]["tasks"]["dus_gsm8k_mini"][
        "num_fewshot"] == 5
    assert 0 <= rows[("lm-eval:dus_truthfulqa_mini", "acc_stderr")].value <= 0.5
    # local tasks build their splits in memory: nothing written to the datasets cache
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == []


def test_multiple_choice_agrees_with_our_own_scoring(tiny):
    """Two implementations, one file: lm-eval's loglikelihood requests vs backend/evaluate.py's choice_logprob."""
    tok, model = evaluate._load("tiny")
    rows = [json.loads(x) for x in MC_FILE.read_text().splitlines()][:16]  # lm-eval's limit takes the first items
    ours = evaluate.multiple_choice(tok, model, rows)
    theirs = lmeval.run_lm_eval(tiny, "dus_truthfulqa_mini", 16, keep_samples=True)
    assert theirs.n == 16 and 0 < ours["acc"] < 1  # a random model: some right, some wrong, so agreement means something
    assert theirs.scores["acc"] == pytest.approx(ours["acc"]) and theirs.scores["acc_norm"] == pytest.approx(
        ours["acc_norm"])
    for sample in theirs.samples["dus_truthfulqa_mini"]:  # per choice: the same log-likelihood
        ctx = sample["arguments"][0][0]
        mine = [evaluate.choice_logprob(tok, model, ctx, " " + c) for c in sample["doc"]["choices"]]
        assert [ll for ll, _ in sample["filtered_resps"]] == pytest.approx(mine, abs=1e-4)


def test_generation_task_scores_known_answers(tiny, monkeypatch):
    """The YAML's '#### n' filters and exact_match on answers we control, over the whole test split (no limit):
    items 0, 1 mod 4 right (0 mod 4 written with a thousands comma), 2, 3 mod 4 wrong."""
    from lm_eval.models.huggingface import HFLM

    def answer(self, requests, disable_tqdm=False):
        out = []
        for req in requests:
            gold, i = int(req.doc["answer"].split("#### ")[1]), int(req.doc["id"].rsplit("-", 1)[1])
            value = f"{gold:,}" if i % 4 == 0 else gold if i % 4 == 1 else gold + 1
            out.append(f" Multiply and add.\n#### {value}")
        return out

    monkeypatch.setattr(HFLM, "generate_until", answer)
    res = lmeval.run_lm_eval(tiny, "dus_gsm8k_mini", None, max_new_tokens=8)
    test = (lmeval.TASK_DIR / "data" / "gsm8k_mini_test.jsonl").read_text().splitlines()
    assert res.n == len(test) == 200  # limit None: every item, and n says so
    assert res.scores["exact_match"] == 0.5 and res.scores["exact_match_flexible_extract"] == 0.5


def test_unknown_task_fails_the_job_with_no_rows(tiny):
    with pytest.raises(ValueError) as err:
        evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["perplexity", "lm-eval:no_such_task"], limit=2))
    msg = str(err.value)
    assert "no_such_task" in msg and "dus_truthfulqa_mini" in msg and "h6" in msg and "internet" in msg
    assert not [r for r in _rows() if r.task.startswith("lm-eval")]


def test_hub_task_offline_says_it_needs_the_internet(tiny, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as without a network, but without retries
    with pytest.raises(lmeval.LmEvalError, match=r"arc_easy.*Hugging Face Hub.*internet"):
        lmeval.run_lm_eval(tiny, "arc_easy", 2)


def test_h6_preset_names_real_tasks_and_metrics():
    from lm_eval.tasks._yaml_loader import load_yaml

    assert [(t, k) for t, k, _ in lmeval.expand("h6")] == [("arc_challenge", 25), ("hellaswag", 10), ("mmlu", 5),
                                                          ("truthfulqa_mc2", 0), ("winogrande", 5), ("gsm8k", 5)]
    assert lmeval.expand("dus_gsm8k_mini") == [("dus_gsm8k_mini", None, None)]
    for name, _, metric in lmeval.expand("h6"):
        manager, local = lmeval.resolve(name)
        assert not local
        cfg = load_yaml(manager.task_index[name].yaml_path)
        listed = [m["metric"] for m in cfg.get("metric_list") or cfg.get("aggregate_metric_list") or []]
        assert metric in listed, (name, listed)
    keys = {f"{t}/{m}" for t, _, m in lmeval.H6}
    assert all(set(v) <= keys for v in lmeval.PAPER_H6.values())  # published numbers line up with our keys


def test_h6_preset_runs_each_task_with_its_few_shot_count(tiny, monkeypatch):
    import lm_eval

    calls = []

    def fake(model, tasks, num_fewshot, limit, **kw):
        name = tasks[0]
        calls.append((name, num_fewshot, limit))
        value = {"arc_challenge": 0.5, "hellaswag": 0.25, "mmlu": 0.75, "truthfulqa_mc2": 0.5, "winogrande": 1.0,
                 "gsm8k": 0.0}[name]
        row = {"alias": name, "acc,none": value, "acc_stderr,none": 0.1, "acc_norm,none": value,
               "exact_match,strict-match": value, "exact_match,flexible-extract": 0.9}
        return {"results": {name: row}, "n-samples": {name: {"original": 9, "effective": 3}}}

    monkeypatch.setattr(lmeval, "resolve", lambda name: (None, False))
    monkeypatch.setattr(lmeval, "_load_tasks", lambda manager, name, local: [name])
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake)
    res = lmeval.run_lm_eval(tiny, "h6", 3)
    assert calls == [(t, k, 3) for t, k, _ in lmeval.H6]
    assert res.scores["gsm8k/exact_match"] == 0.0 and res.scores["mmlu/acc"] == 0.75
    assert res.scores["h6_average"] == pytest.approx((0.5 + 0.25 + 0.75 + 0.5 + 1.0 + 0.0) / 6) and res.n == 18
    assert "arc_challenge/acc_stderr" not in res.scores and res.scores["winogrande/acc_stderr"] == 0.1


def test_task_data_is_remade_identically_and_true():
    from backend.lm_eval_tasks import make_data

    data = lmeval.TASK_DIR / "data"
    mc = make_data.truthfulqa_rows()
    shots, test, source = make_data.gsm8k_rows()
    for rows, name in ((mc, "truthfulqa_mini.jsonl"), (shots, "gsm8k_mini_fewshot.jsonl"),
                       (test, "gsm8k_mini_test.jsonl")):
        assert "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) == (data / name).read_text(), name
    assert source == "data/eval-math.jsonl"
    by_q = {r["question"]: r for r in mc}
    aus = by_q["What is the capital of Australia?"]
    assert aus["choices"][aus["answer"]] == "Canberra" and "Sydney" in aus["choices"]  # the misconception is a lure
    seven = by_q.get("What is 7 times 8?") or next(r for r in mc if " times " in r["question"])
    a, b = map(int, seven["question"][8:-1].split(" times "))
    assert seven["choices"][seven["answer"]] == str(a * b) and len(set(seven["choices"])) == 4
    assert all(s["answer"].rsplit("#### ", 1)[1].lstrip("-").isdigit() for s in shots) and len(shots) == 8


def test_h6_scores_mmlu_as_the_leaderboards_mean_of_subjects(tiny, monkeypatch):
    """The Open LLM Leaderboard (v1), whose numbers PAPER_H6 holds, averaged MMLU's subjects unweighted; lm-eval
    0.4's `mmlu` group weights them by size. Two subjects, 10 items all right and 30 all wrong: 0.5, not 0.25."""
    import lm_eval

    def fake(model, tasks, num_fewshot, limit, **kw):
        name = tasks[0]
        row = {"alias": name, "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.5,
               "exact_match,strict-match": 0.5}
        if name != "mmlu":
            return {"results": {name: row}, "n-samples": {name: {"original": 9, "effective": 3}}}
        return {"results": {"mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.05},
                            "mmlu_stem": {"acc,none": 0.25, "acc_stderr,none": 0.05},
                            "mmlu_algebra": {"acc,none": 1.0, "acc_stderr,none": 0.0},
                            "mmlu_anatomy": {"acc,none": 0.0, "acc_stderr,none": 0.2}},
                "n-samples": {"mmlu_algebra": {"original": 10, "effective": 10},
                              "mmlu_anatomy": {"original": 30, "effective": 30}}}

    monkeypatch.setattr(lmeval, "resolve", lambda name: (None, False))
    monkeypatch.setattr(lmeval, "_load_tasks", lambda manager, name, local: [name])
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake)
    res = lmeval.run_lm_eval(tiny, "h6", None)
    assert res.scores["mmlu/acc"] == 0.5 and res.scores["mmlu/acc_stderr"] == pytest.approx(0.2 / 2)
    assert "unweighted mean of 2 subjects" in res.details["tasks"]["mmlu"]["average"]
    assert "size-weighted group figure: 0.25" in res.details["tasks"]["mmlu"]["average"]
    assert res.scores["h6_average"] == pytest.approx((0.5 * 5 + 0.5) / 6)
    alone = lmeval.run_lm_eval(tiny, "mmlu", None)  # lm-eval's own task keeps lm-eval's own figure
    assert alone.scores["acc"] == 0.25
