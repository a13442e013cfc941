"""Multiple choice scored as lm-eval's HFLM scores it (session 17), every number checked against lm-eval's own code
run on the tiny model: a context longer than the model reads loses tokens from the left, whitespace that ends a
context moves onto the choice, acc_norm divides by the choice's own length, and what lm-eval cannot score (an empty
choice, a choice longer than the model reads) is refused with the reason rather than scored as something else."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from backend import evaluate
from tests.needs import need_module

need_module("lm_eval", "lm-eval is not installed (requirements.txt)")
LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 4)  # ~150 tokens: the model reads 128


@pytest.fixture(scope="module")
def model(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


@pytest.fixture(scope="module", params=["plain", "bos"])
def tok(request, tiny_llama):
    """The fixture's tokenizer (no BOS), and one made Llama-like: its post-processor puts the BOS before every text."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    if request.param == "bos":
        tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A",
                                                           special_tokens=[(tok.bos_token, tok.bos_token_id)])
    return tok


def _hflm(tok, model):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, batch_size=1)


def test_choice_logprob_is_lm_evals_loglikelihood(tok, model):
    """lm-eval's loglikelihood (lm_eval/api/model.py _encode_pair, models/huggingface.py _loglikelihood_tokens) on
    the same pairs. Before: the long context was scored whole, past the 128 positions the model reads (-34.12
    where lm-eval gives -34.07), and "Answer: " + "Paris" kept its space in the context (-28.6 against -34.4)."""
    from lm_eval.api.instance import Instance

    lm = _hflm(tok, model)
    assert lm.max_length == evaluate.context_length(tok, model) == 128
    pairs = [(evaluate.MC_CONTEXT.format(question="Half of ten?"), " five"),
             (evaluate.MC_CONTEXT.format(question=LONG), " the lazy dog"),
             ("Answer: ", "Paris"), ("Answer:\n", "Paris"), ("Question: what?\n\n", " eighty four")]
    assert len(tok(pairs[1][0] + pairs[1][1]).input_ids) > 129  # so the left truncation is exercised
    theirs = [ll for ll, _ in lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=p, idx=0)
                                                for p in pairs], disable_tqdm=True)]
    ours = [evaluate.choice_logprob(tok, model, c, x) for c, x in pairs]
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_mc_items_are_lm_evals_acc_and_acc_norm(tokenizer_dir, model):
    """The same rows as an lm-eval multiple_choice task (the mc task's prompt, " choice" after it), run by
    simple_evaluate: per item the same log-likelihoods, acc and acc_norm (process_results divides by the choice's
    length without the space lm-eval puts before it), on rows where acc and acc_norm pick differently and one
    question is longer than the model reads."""
    import datasets
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"question": "What is half of ten?", "choices": ["five", "Paris", "eighty four", "a"], "answer": 3},
            {"question": LONG, "choices": ["dog", "fox jumps", "Solar"], "answer": 1},
            {"question": "Twelve times seven?", "choices": ["eighty four", "84", "seven"], "answer": 1},
            {"question": "Which layers are stacked?", "choices": ["two copies", "none", "32"], "answer": 1}]
    task = ConfigurableTask(config={
        "task": "s17_mc", "output_type": "multiple_choice", "test_split": "test",
        "custom_dataset": lambda **_: datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}),
        "doc_to_text": evaluate.MC_CONTEXT.replace("{question}", "{{question}}"), "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer", "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]})
    res = simple_evaluate(model=_hflm(tok, model), tasks=[task], log_samples=True, verbosity="ERROR")
    samples = sorted(res["samples"]["s17_mc"], key=lambda s: s["doc_id"])
    ours = evaluate.mc_items(tok, model, rows)
    assert [(bool(s["acc"]), bool(s["acc_norm"])) for s in samples] == ours
    assert ours == [(True, False), (False, True), (True, False), (False, False)]  # acc and acc_norm differ
    for s, row in zip(samples, rows):
        context = evaluate.MC_CONTEXT.format(question=row["question"])
        assert [ll for ll, _ in s["filtered_resps"]] == pytest.approx(
            [evaluate.choice_logprob(tok, model, context, " " + c) for c in row["choices"]], abs=1e-4)
    scores = evaluate.multiple_choice(tok, model, rows)
    assert (scores["acc"], scores["acc_norm"]) == pytest.approx((res["results"]["s17_mc"]["acc,none"],
                                                                 res["results"]["s17_mc"]["acc_norm,none"]))


def test_context_length_is_found_as_lm_eval_finds_it():
    from lm_eval.models.utils import resolve_max_length
    from transformers import GPT2Config, LlamaConfig, PretrainedConfig

    none = PretrainedConfig()
    cases = [(LlamaConfig(max_position_embeddings=96), 512), (GPT2Config(n_positions=64), None),
             (PretrainedConfig(n_ctx=40), None), (none, 77), (none, int(1e30)), (none, None),
             (SimpleNamespace(text_config=LlamaConfig(max_position_embeddings=300), n_positions=1200), None)]
    for cfg, tok_max in cases:
        tok = SimpleNamespace(model_max_length=tok_max)
        assert evaluate.context_length(tok, SimpleNamespace(config=cfg)) == resolve_max_length(cfg, tok), cfg


def test_what_lm_eval_cannot_score_is_refused_with_the_reason(tokenizer_dir, model, tmp_path):
    """An empty choice: lm-eval's acc_norm divides its log-likelihood by 0 (-inf: it never wins); here it was divided
    by 1, so the space before it, a few nats over one character, won acc_norm. A choice longer than the model reads
    (lm-eval asserts), a context adding no token (-inf: it lost unsaid), a question that is no text ("None")."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    path = tmp_path / "mc.jsonl"
    for row, words in [({"question": "q?", "choices": ["five", ""], "answer": 0}, "line 2: choice 1 is empty"),
                       ({"question": None, "choices": ["a", "b"], "answer": 0}, "line 2: question must be"),
                       ({"question": " ", "choices": ["a", "b"], "answer": 0}, "line 2: question must be")]:
        path.write_text(json.dumps({"question": "ok?", "choices": ["a", "b"], "answer": 1}) + "\n" + json.dumps(row))
        with pytest.raises(evaluate.EvalError, match=words):
            evaluate.task_set(f"mc:{path}", 10)
    with pytest.raises(evaluate.EvalError, match="129 tokens, more than the 128 the model reads"):
        evaluate.choice_logprob(tok, model, "Answer:", " " + "x" * 128)
    with pytest.raises(evaluate.EvalError, match="adds no token"):
        evaluate.choice_logprob(tok, model, "Answer:", "")


def test_a_template_less_models_answer_ends_where_it_writes_the_next_turn(tiny_llama, tmp_path):
    """A base model (no chat template) reads a transcript with no end-of-turn token and runs on into a made-up next
    turn; the last number of that run-on was taken for its answer. generate() now asks transformers to stop at a
    new role line (stop_strings) and cuts the reply there; such a reply is not "cut off"."""
    import shutil

    import torch
    from transformers import AutoTokenizer

    from backend import evaluate

    folder = tmp_path / "base"
    shutil.copytree(tiny_llama, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tok = AutoTokenizer.from_pretrained(folder)
    assert not tok.chat_template
    run_on = " 12\nuser: What is 3 + 4?\nassistant: 7"
    seen = {}

    class Scripted:
        device = torch.device("cpu")
        generation_config = None

        def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
            seen.update(kw)
            new = tok(run_on, add_special_tokens=False).input_ids[:max_new_tokens]
            return torch.cat([input_ids, torch.tensor([new] * len(input_ids))], 1)

    (text, n, cut), = evaluate.generate(tok, Scripted(), ["What is 3 × 4?"], max_new_tokens=len(
        tok(run_on, add_special_tokens=False).input_ids))
    assert text == "12" and not cut
    assert seen["stop_strings"] == ["\nuser:", "\nassistant:", "\nsystem:"] and seen["tokenizer"] is tok
