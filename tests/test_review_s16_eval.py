"""Review of the evaluation path (session 16): the SOLAR preset's evaluation, GSM8K references, the local lm-eval
tasks' data files, and what an lm-eval score records about its items and its token cap."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from backend import evaluate, heldout, lmeval, registry
from backend.lm_eval_tasks import loaders
from backend.recipe import presets
from backend.specs import EvalSpec
from tests.needs import need_module

need_module("lm_eval", "lm-eval is not installed (requirements.txt)")


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_solar_preset_evaluates_h6_as_the_paper_ran_it():
    """The six tasks named one by one ran with their YAML's few-shot count (ARC, HellaSwag, MMLU, Winogrande
    0-shot), no H6 average, and 1000 items of sets the paper scored whole."""
    ev = yaml.safe_load(presets.preset("solar-10.7b"))["eval"]
    assert ev["tasks"] == ["lm-eval:h6"]
    assert [(t, k) for name in ev["tasks"] for t, k, _ in lmeval.expand(name.split(":", 1)[1])] == [
        ("arc_challenge", 25), ("hellaswag", 10), ("mmlu", 5), ("truthfulqa_mc2", 0), ("winogrande", 5), ("gsm8k", 5)]
    assert ev["limit"] >= 10_042  # HellaSwag's validation split, the largest of the six


def test_gsm8k_answers_without_a_numeric_final_answer_are_refused(tmp_path):
    """Such a row's reference was '' or the whole solution: every reply scored 'wrong' (a hallucination)."""
    good = [{"question": "3 + 4?", "answer": "3 + 4 = 7\n#### 7"}, {"question": "1000 + 5?", "answer": "#### 1,005"},
            {"question": "2 + 2?", "answer": 4}]
    ts = evaluate.task_set(f"gsm8k:{_write(tmp_path / 'good.jsonl', good)}", 10)
    assert [ref for _, _, ref in ts.items] == ["7", "1,005", "4"]
    for bad, shown in (("", "''"), ("3 + 6 = 9 ####", "'3 + 6 = 9 ####'"),
                       ("3 + 1 = 4. The answer is 4.", "'3 + 1 = 4. The answer is 4.'")):
        f = _write(tmp_path / "bad.jsonl", [good[0], {"question": "q?", "answer": bad}])
        with pytest.raises(evaluate.EvalError, match=re.escape(f"bad.jsonl, line 2: answer must end in '#### n' "
                                                               f"with n a number (or be the number); got {shown}.")):
            evaluate.task_set(f"gsm8k:{f}", 10)


def test_local_lm_eval_data_files_are_checked(tmp_path, monkeypatch):
    """A row without its answer index scored 0 (acc 0.0 ± 0.0); an empty file failed with an IndexError."""
    monkeypatch.setattr(loaders, "DATA", tmp_path)
    (tmp_path / "gsm8k_mini_fewshot.jsonl").write_text(json.dumps({"question": "q", "answer": "1\n#### 1"}) + "\n")
    q = {"question": "What is the capital of France?", "choices": ["Paris", "Rome"]}
    cases = [("truthfulqa_mini.jsonl", [q], "truthfulqa_mini.jsonl, line 1: answer must be the index of the right "
                                            "choice, 0 to 1; got None."),
             ("truthfulqa_mini.jsonl", [{**q, "answer": "A"}], "line 1: answer must be the index"),
             ("truthfulqa_mini.jsonl", [{**q, "answer": 0}, {**q, "choices": ["Paris"], "answer": 0}],
              "line 2: choices must be a list of at least two non-empty strings."),
             ("truthfulqa_mini.jsonl", ["", ""], "truthfulqa_mini.jsonl has no rows"),
             ("gsm8k_mini_test.jsonl", [{"question": "q", "answer": "no final answer"}],
              "gsm8k_mini_test.jsonl, line 1: answer must be text ending in '#### n'")]
    for name, rows, message in cases:
        _write(tmp_path / name, rows)
        load = loaders.truthfulqa_mini if name.startswith("truthfulqa") else loaders.gsm8k_mini
        with pytest.raises(ValueError, match=re.escape(message)):
            load()
    # the job reads them before any model loads
    _write(tmp_path / "truthfulqa_mini.jsonl", [q])
    with pytest.raises(ValueError, match="line 1: answer must be the index"):
        evaluate.task_set("lm-eval:dus_truthfulqa_mini", 5)


def test_lm_eval_scores_record_their_items_and_token_cap(tiny_llama):
    """Every lm-eval score stored the fingerprint of an empty list (the same for every task and limit), 0 items, and
    settings {"limit"} only: neither the token cap of the local generation task nor the model's generation_config
    max_new_tokens, which outranks lm-eval's max_length (the tiny model's 8 tokens whatever the cap)."""
    from sqlmodel import select

    from storage import db
    from storage.models import EvalScore

    mc = [json.loads(x) for x in (lmeval.TASK_DIR / "data" / "truthfulqa_mini.jsonl").read_text().splitlines()]
    tq, gsm = evaluate.task_set("lm-eval:dus_truthfulqa_mini", 3), evaluate.task_set("lm-eval:dus_gsm8k_mini", 3)
    assert tq.items == mc[:3] and len(gsm.items) == 3 and gsm.items[0]["id"] == "evalmath-0"
    assert tq.texts == gsm.texts == []  # no overlap measured: the badge stays "not measured", never "✓ 0%"
    tok, model = evaluate.evaldevice.load_model(tiny_llama)
    s8, s64 = (evaluate.settings(gsm, EvalSpec(models=["x"], tasks=[gsm.task], max_new_tokens=n), tok, model)
               for n in (8, 64))
    shots = hashlib.sha256((lmeval.TASK_DIR / "data" / "gsm8k_mini_fewshot.jsonl").read_bytes()).hexdigest()[:16]
    assert s8 == {"limit": 40, "max_gen_toks": 8, "generation_config": {"max_new_tokens": 8},
                  "fewshot": {"dus_gsm8k_mini": f"sha256:{shots}"}}  # its few-shot file is in every prompt
    assert s64["max_gen_toks"] == 64
    plain = evaluate.settings(tq, EvalSpec(models=["x"], tasks=[tq.task]), tok, model)
    assert "max_gen_toks" not in plain and "fewshot" not in plain  # zero-shot: scores stored before stay alike

    registry.import_folder(tiny_llama, "tiny")
    evaluate.run_eval(EvalSpec(models=["tiny"], tasks=["lm-eval:dus_truthfulqa_mini"], limit=3))
    with db.session() as s:
        row = next(r for r in s.exec(select(EvalScore)) if r.metric == "acc")
    assert row.details["fingerprint"] == heldout.fingerprint(mc[:3]) != heldout.fingerprint([])
    assert row.details["items"] == 3 and row.details["overlap"] is None and row.n == 3


def test_the_cpu_device_note_names_the_batch(tiny_llama):
    """Sampled answers (samples > 1, consistency) are other answers in another batch under the same seed; the CUDA
    note stored with each score named its batch, the CPU note ("CPU: float32") did not."""
    shape = evaluate.evaldevice.model_shape(tiny_llama)
    assert evaluate.evaldevice.plan(shape, cuda=False, batch_size=3).note == "CPU: float32, batch 3"
    assert evaluate.evaldevice.plan(shape, cuda=False).note == "CPU: float32, batch 8"
    assert evaluate.evaldevice.plan(shape, cuda=True, free_bytes=8 * 2 ** 30, device="cpu").note == (
        "CPU: float32, batch 8 (CUDA ignored: device=cpu)")
    tok, model = evaluate.evaldevice.load_model(tiny_llama)
    prompts = [f"What is {a} plus {a + 1}?" for a in range(6)]
    one, six = (evaluate.generate(tok, model, prompts, 8, sample=True, seed=1, batch_size=b) for b in (1, 6))
    assert one == evaluate.generate(tok, model, prompts, 8, sample=True, seed=1, batch_size=1)  # seeded
    assert one != six  # but not the same answers in another batch


def test_blank_perplexity_texts_are_no_items(tmp_path):
    """A blank text has no token to score but counted in the row's n and overlap share; a file of blank texts was
    accepted and failed only after the models loaded."""
    mixed = _write(tmp_path / "mixed.jsonl", [{"text": "The quick brown fox."}, {"text": ""}, {"text": "A dog."}])
    ts = evaluate.task_set(f"perplexity:{mixed}", 10)
    assert ts.items == ts.texts == ["The quick brown fox.", "A dog."]
    blank = _write(tmp_path / "blank.jsonl", [{"text": ""}, {"text": " \n"}])
    with pytest.raises(evaluate.EvalError, match="the first 2 rows have no text to score"):
        evaluate.task_set(f"perplexity:{blank}", 10)
