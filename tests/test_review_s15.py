"""Fifteenth session: a prompt's BOS as lm-eval encodes it, what `jobs list` says each job makes, a running job's
seconds on the Jobs page, the synthetic-math page's first free name."""

from __future__ import annotations

import math

import pytest
import torch

from backend import chat, evaljob, evaluate, registry, runner
from storage import db
from backend.specs import CptSpec, DataSource, SftSpec, SynthMathSpec
from tests.test_pages import app
from tests.test_review_cli import cli


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


# ---- 1. a base model without a chat template is prompted after its BOS, as lm-eval and its pretraining did ---------

@pytest.fixture
def bos_tok(tiny_llama):
    """The fixture's tokenizer made Llama-like: its post-processor puts the BOS before every text, and it has no chat
    template (a base model: TinyLlama, Llama 2, Mistral)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A",
                                                       special_tokens=[(tok.bos_token, tok.bos_token_id)])
    tok.chat_template = None
    return tok


def test_encode_puts_the_tokenizers_bos_before_a_prompt_once(bos_tok, tiny_llama):
    from transformers import AutoTokenizer

    transcript = chat.build_prompt(bos_tok, [{"role": "user", "content": "Half of ten?"}])
    assert transcript == "user: Half of ten?\nassistant:"
    ids = chat.encode(bos_tok, transcript).input_ids
    assert ids[0] == bos_tok.bos_token_id and ids[1:] == bos_tok(transcript, add_special_tokens=False).input_ids
    assert chat.added_before(bos_tok, transcript) == [bos_tok.bos_token]
    templated = f"{bos_tok.bos_token}user\nHalf of ten?"  # a chat template writes the BOS itself: not a second one
    assert chat.encode(bos_tok, templated).input_ids.count(bos_tok.bos_token_id) == 1
    assert chat.added_before(bos_tok, templated) == []
    plain = AutoTokenizer.from_pretrained(tiny_llama)  # a tokenizer that adds nothing: as before
    assert chat.encode(plain, transcript).input_ids == plain(transcript, add_special_tokens=False).input_ids
    assert chat.added_before(plain, transcript) == []


def test_evaluation_generates_and_scores_choices_after_the_bos(bos_tok, tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    seen = []
    real = model.generate

    def generate(**kw):
        seen.append(kw["input_ids"])
        return real(**kw)

    model.generate = generate
    evaluate.generate(bos_tok, model, ["Half of ten?", "Twelve times seven is what number?"], max_new_tokens=2)
    first = [row[int((row == bos_tok.pad_token_id).sum())] for row in seen[0]]  # after the left padding
    assert first == [bos_tok.bos_token_id] * 2  # was the "u" of "user:": no BOS at all

    context, choice = evaluate.MC_CONTEXT.format(question="Half of ten?"), " five"
    ids = [bos_tok.bos_token_id] + bos_tok(context + choice, add_special_tokens=False).input_ids
    n = len(ids) - 1 - len(bos_tok(context, add_special_tokens=False).input_ids)
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    want = sum(logp[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))
    assert math.isclose(evaluate.choice_logprob(bos_tok, model, context, choice), want, rel_tol=1e-5)


def test_a_scores_settings_say_the_bos_came_before_the_prompt(bos_tok, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.specs import EvalSpec

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    spec = EvalSpec(models=["tiny"], limit=2)
    mc, qa = (evaluate.TaskSet(task="mc", kind="mc", source="", items=[]),
              evaluate.TaskSet(task="qa", kind="qa", source="", items=[]))
    bos = bos_tok.bos_token
    assert evaluate.settings(mc, spec, bos_tok, model)["prompt"] == f"{bos} Question: {{question}}\nAnswer: {{choice}}"
    assert evaluate.settings(qa, spec, bos_tok, model)["prompt"] == \
        f"{bos} transcript (no chat template: backend/chat.py build_prompt), ends at a new role line"
    plain = AutoTokenizer.from_pretrained(tiny_llama)  # ChatML, whose text starts with the BOS: unchanged settings
    assert evaluate.settings(mc, spec, plain, model)["prompt"] == "Question: {question}\nAnswer: {choice}"
    assert evaluate.settings(qa, spec, plain, model)["prompt"].startswith("chat template sha256:")


# ---- 2. `jobs list` says what each job makes, as the pages' "→ output" ------------------------------------------

def test_jobs_list_names_what_each_job_makes(tiny):
    cpt = runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))  # name: null
    sft = runner.submit(SftSpec(model="tiny", name="smol-sft-v2", data=[DataSource(source="builtin:alpaca-mini")]))
    rc, out, _ = cli("jobs", "list")
    lines = {int(line.split()[0]): line.split()[4] for line in out.splitlines()}
    assert rc == 0 and lines == {cpt.id: "tiny-cpt", sft.id: "smol-sft-v2"}  # was each job's message alone


# ---- 3. Jobs: a running job's seconds so far ----------------------------------------------------------------------

def test_jobs_page_shows_a_running_jobs_seconds_so_far(tiny):
    job = runner.submit(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))
    queued = runner.submit(CptSpec(model="tiny", name="later", data=[DataSource(source="builtin:facts-corpus")]))
    from datetime import timedelta

    from storage.models import utcnow

    runner._update(job.id, status="running", started=utcnow() - timedelta(seconds=90))
    runner._update(queued.id, started=utcnow() - timedelta(days=1))  # resumed: queued again after a first run
    rows = app("jobs.py").dataframe[0].value.set_index("id")["seconds"]
    assert 89 <= rows[job.id] < 200  # was blank until the job ended
    assert math.isnan(rows[queued.id])  # not the 86,400 s since its first run began


# ---- 4. Synthetic math: the first name offered is one no queued job makes either ---------------------------------

def test_synth_page_offers_a_name_no_queued_job_makes():
    job = runner.submit(SynthMathSpec(num_seeds=4))  # queued, nothing registered yet
    at = app("synth.py")
    assert at.text_input(key="synth_name").value == "synth-math-2"  # was synth-math, then refused for job 1
    assert not at.button(key="make_pairs").disabled
    assert runner.get(job.id).status == "queued"


# ---- 5. QA: an answer in a script written without spaces is found inside the reply ------------------------------

@pytest.mark.parametrize("reply,answer", [("首都は東京です。", "東京"), ("中国的首都是北京。", "北京"),
                                          ("เมืองหลวงของไทยคือกรุงเทพ", "กรุงเทพ")])
def test_qa_finds_an_answer_in_a_spaceless_script_inside_the_reply(reply, answer):
    from backend import qa

    assert qa.classify(reply, [answer], "answerable") == "correct"  # was "wrong": no spaces around it
    assert qa.classify(reply, ["大阪"], "answerable") == "wrong"


def test_qa_still_matches_latin_answers_as_whole_words():
    from backend import qa

    assert qa.classify("A Tokyoite would say so.", ["Tokyo"], "answerable") == "wrong"
    assert qa.classify("It is Tokyo.", ["Tokyo"], "answerable") == "correct"


# ---- 6. the hallucination-against-length chart keeps its plot with many long-named models -------------------------

def test_hallucination_length_legend_goes_aside_with_many_long_names():
    from pages.figures import LABEL_CHARS, hallucination_length_figure

    models = [f"smollm2-135m-instruct-dus-m6-cpt-sft-v{i}-dpo" for i in range(6)]
    curves = {"observed": [{"model": m, "tokens": 10 + i, "rate": 0.5, "n": 4} for i, m in enumerate(models)],
              "fitted": [{"model": m, "tokens": t, "rate": 0.4} for m in models for t in (5, 50)]}
    fig = hallucination_length_figure(curves, models=models)
    assert fig.layout.legend.orientation == "v" and fig.layout.height >= 120 + 20 * 12  # was under it, height 360
    assert all(len(t.name) <= LABEL_CHARS + len(" (observed)") for t in fig.data)
    assert {t.hovertext if isinstance(t.hovertext, str) else t.hovertext[0] for t in fig.data} == set(models)
    two = hallucination_length_figure({"observed": curves["observed"][:1], "fitted": []}, models=models[:1])
    assert two.layout.legend.orientation == "h" and two.layout.height == 360


# ---- 7. `recipe run` again after Ctrl-C stopped the first: the stages behind the interrupted one are made anew -----

# Its test (a recipe rerun after an interrupted stage makes and scores every stage) ran the smoke recipe whole, as
# tests/test_recipe.py's end-to-end test does: it is now that test's first run (session 21, to keep the suite short).


@pytest.mark.parametrize("reply,answer,verdict", [
    ("答えは二十です", "二", "wrong"),  # a numeral inside a longer one is not that number
    ("答えは二です", "二", "correct"),
    ("首都はTokyoです。", "Tokyo", "correct"),  # a Latin word inside Japanese text: the change of script bounds it
    ("明治維新は1868年", "1868", "correct"),
    ("नमस्ते दुनिया", "नमस्ते", "correct"),
    ("约2万", "2", "wrong"), ("3千人", "3", "wrong"), ("12万", "2万", "wrong"), ("2万です", "2万", "correct"),
    ("Paris\u200b", "Paris", "correct"), ("\ufeffParis", "Paris", "correct"), ("✔\ufe0fParis", "Paris", "correct")])
def test_qa_words_across_scripts(reply, answer, verdict):
    from backend import qa

    assert qa.classify(reply, [answer], "answerable") == verdict


def test_qa_normalising_keeps_the_marks_of_kana_and_indic_letters():
    from backend import qa

    assert qa.normalise("です。") == "です"  # was 'てす': the voicing mark was dropped as an accent
    assert qa.normalise("नमस्ते") == "नमस्ते"  # was 'नमस त': its vowel sign and virama taken for punctuation
    assert qa.normalise("Crème Brûlée, Ελλάδα! Москва́") == "creme brulee ελλαδα москва"
    assert qa.classify("パンです", ["バン"], "answerable") == "wrong"  # pan is not ban


# ---- 8. the final review's findings -------------------------------------------------------------------------------

def test_two_sources_of_the_same_rows_still_hold_rows_out_and_none_is_trained_on(tmp_path):
    import json

    from backend import data

    rows = [{"text": f"Fact number {i} about depth up-scaling."} for i in range(20)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))  # the same rows in another order
    train, held, _ = data.split_mix([(str(a), 1.0), (str(b), 1.0)], "cpt", eval_fraction=0.1)
    assert held is not None and len(held) == 2  # was None: each source's picks were trained on by the other; and
    assert len(set(held["text"])) == len(held) and not set(held["text"]) & set(train["text"])  # not twice the share
    few = [{"text": "Only row one here."}, {"text": "Only row two here."}] * 3  # two sources of the same two rows
    a.write_text("".join(json.dumps(r) + "\n" for r in few))
    b.write_text("".join(json.dumps(r) + "\n" for r in few[::-1]))
    train, held, _ = data.split_mix([(str(a), 1.0), (str(b), 1.0)], "cpt", eval_fraction=0.1)
    assert len(set(held["text"])) == 1 and len(set(train["text"])) == 1  # not "every row was held out"


def test_two_unnamed_imports_of_one_folder_are_one_job_and_a_training_may_wait_for_it(tiny_llama):
    from backend.specs import ImportSpec

    job = runner.submit(ImportSpec(target=str(tiny_llama)))  # no name: known by the one it will register
    assert job.spec["name"] == tiny_llama.name
    with pytest.raises(ValueError, match=f"Job {job.id} \\(import, queued\\) will register a model named"):
        runner.submit(ImportSpec(target=str(tiny_llama)))  # was queued, then failed: "already registered"
    sft = runner.submit(SftSpec(model=tiny_llama.name, data=[DataSource(source="builtin:alpaca-mini")]),
                        after=job.id)  # was refused: no model, no job making it
    assert sft.after == job.id


def test_an_evaluation_that_found_no_model_is_queued_again_when_its_stage_was_resumed_meanwhile(tiny, monkeypatch):
    from backend.specs import EvalSpec

    stage = runner.submit(SftSpec(model="tiny", name="made-later", data=[DataSource(source="builtin:alpaca-mini")]))
    ev = runner.submit(EvalSpec(models=["made-later"], tasks=["perplexity"], limit=2, skip_missing=True),
                       waits=[stage.id])
    runner._update(stage.id, status="failed", error="out of memory")
    real = evaluate.missing_models

    def resumed_as_it_starts(models):  # the user resumes the stage while the evaluation's process starts
        if runner.get(stage.id).status == "failed":
            runner.resume(stage.id)
        return real(models)

    monkeypatch.setattr(evaljob, "missing_models", resumed_as_it_starts)
    assert runner.execute(ev.id) == 1  # "none of the models to evaluate exists"
    assert runner.get(ev.id).status == "queued"  # was failed for good: the resumed stage's model never scored


def test_the_builtin_import_queues_while_a_worker_of_another_machine_is_alive(tiny_llama):
    from backend.specs import ImportSpec
    from storage.models import WorkerBeat, utcnow

    registry.import_folder(tiny_llama, registry.BUILTIN_NAME)  # stands in for the built-in, imported already
    with db.session() as s:  # a worker on another machine: paths are not looked at here, names are
        s.add(WorkerBeat(host="machine-b", pid=1, seen=utcnow()))
        s.commit()
    job = runner.submit(ImportSpec(target="builtin"))  # the Models page's default: was refused, "already registered"
    assert job.status == "queued" and job.spec["name"] is None


def test_the_compare_sentence_says_how_rough_its_interval_is_below_twenty_items():
    from backend import analysis
    from tests.test_review_cutoff import five_cut_off

    res = analysis.compare(five_cut_off(), "A", "B")  # 15 shared items
    assert "With 15 shared items the interval is rough" in res["sentence"]  # was a "95 % CI" said plainly
    assert res["sentence"].index("is rough") < res["sentence"].index("items left out")
    from backend.analysis import _few_items_note

    assert _few_items_note(20) == ""
