"""Review of the evaluation path (session 12): ways a score could mislead. A model evaluated by its folder path is
checked against its lineage's training data as by its name; the overlap check compares training and evaluation
text in one Unicode form; perplexity on a data source scores each row's text, not a Python repr of its turns;
every score records how it was run (limit, token cap, samples, prompt format, the model's own decoding settings)."""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata

import pytest
from sqlmodel import select

from backend import evalscore, evaluate, heldout, registry
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore

HELD = heldout.eval_path("heldout-text").read_text().splitlines()


def _trained_on(tiny_llama, tmp_path, rows: list[dict], name: str = "tuned"):
    """A registered base and a model trained on `rows` (a JSONL file) in its own folder; returns that folder."""
    registry.import_folder(tiny_llama, "base")
    data = tmp_path / f"{name}-data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    folder = tmp_path / name
    shutil.copytree(tiny_llama, folder)
    registry.register(folder, name, "trained", parents=["base"],
                      recipe={"kind": "cpt", "data": [{"source": str(data), "weight": 1.0}]})
    return folder, data


def test_a_model_evaluated_by_its_folder_path_is_checked_against_its_lineages_training_data(tiny_llama, tmp_path):
    folder, data = _trained_on(tiny_llama, tmp_path, [{"text": t} for t in HELD[:3]])
    evaluate.run_eval(EvalSpec(models=[str(folder)], tasks=["perplexity"], limit=4))
    with db.session() as s:
        row = s.exec(select(EvalScore).where(EvalScore.metric == "perplexity")).one()
    ov = row.details["overlap"]
    assert ov["against"] == [str(data)] and ov["notes"] == ["base: base model, its pretraining data is not known here"]
    assert ov["items_over"] == 3 and row.overlap_share == 0.75
    assert heldout.lineage_sources("tuned") == heldout.lineage_sources(str(folder))


LINE = HELD[2]  # "Lithium carries the chemical symbol Li, and each of its atoms holds 3 protons in the nucleus."
ACCENTED = "The café in Zürich served crème brûlée and a piña colada to every guest on Sunday."


@pytest.mark.parametrize("trained, evaluated", [
    (LINE.replace("chemical", "chem\u00adi\u00adcal").replace("nucleus", "nu\u00adcleus"), LINE),  # soft hyphens
    (LINE.replace("symbol", "sym\u200bbol").replace("protons", "pro\u200btons"), LINE),  # zero-width spaces
    (LINE.replace("3", "\uff13"), LINE),  # a full-width digit
    ("The \ufb01rst ﬂoor of the museum holds ﬁfty maps of the old city walls.",  # PDF ligatures ﬁ ﬂ
     "The first floor of the museum holds fifty maps of the old city walls."),
    (unicodedata.normalize("NFD", ACCENTED), unicodedata.normalize("NFC", ACCENTED)),  # decomposed accents
    ("The long street called Hauptstraße runs through the old town to the river.",  # case folding: ß is ss
     "The long street called Hauptstrasse runs through the old town to the river."),
], ids=["soft-hyphen", "zero-width-space", "full-width-digit", "ligature", "decomposed-accent", "sharp-s"])
def test_the_same_sentence_in_another_unicode_form_is_found_in_the_training_data(tiny_llama, tmp_path, trained,
                                                                                 evaluated):
    _trained_on(tiny_llama, tmp_path, [{"text": trained}])
    assert heldout.training_index("tuned").overlap(evaluated) == 1.0
    assert heldout.training_index("tuned").overlap(HELD[5]) == 0.0


def test_perplexity_on_a_data_source_scores_each_rows_text(tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Name element {i}."},
                                                      {"role": "assistant", "content": HELD[i]}]}) + "\n"
                             for i in range(3)))
    ts = evaluate.task_set(f"perplexity:{chats}", 2)
    assert ts.items == [f"Name element {i}.\n\n{HELD[i]}" for i in range(2)] and ts.texts == ts.items
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Which element is number 3?", "output": HELD[2]}) + "\n")
    assert evaluate.task_set(f"perplexity:{alpaca}", 5).items == [f"Which element is number 3?\n\n{HELD[2]}"]
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"id": 7, "text": HELD[0]}) + "\n")
    assert evaluate.task_set(f"perplexity:{text}", 5).items == [HELD[0]]


def test_perplexity_on_rows_with_no_text_says_what_to_give(tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"label": 3, "score": 0.5}) + "\n")
    with pytest.raises(evaluate.EvalError) as err:
        evaluate.task_set(f"perplexity:{odd}", 5)
    assert str(err.value).startswith(f"perplexity:{odd}: Columns ['label', 'score'] fit no layout usable for cpt")
    assert str(err.value).endswith("Perplexity scores the text of each row: give a .txt file or rows with a text "
                                   "column.")


def test_each_score_records_how_it_was_run(tiny_llama, tmp_path):
    """Token limit, samples and prompt format beside the items' fingerprint: the same items under another cap or
    another prompt are another measurement, and the row must say which."""
    registry.import_folder(tiny_llama, "chat")
    plain = tmp_path / "plain"  # the same weights with no chat template: prompted as a transcript
    shutil.copytree(tiny_llama, plain)
    (plain / "chat_template.jinja").unlink()
    gen = json.loads((plain / "generation_config.json").read_text())  # and a repetition penalty, as Qwen2.5 ships
    (plain / "generation_config.json").write_text(json.dumps({**gen, "repetition_penalty": 1.05, "do_sample": True}))
    registry.import_folder(plain, "plain")
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "2+2?", "choices": ["4", "5"], "answer": 0}) + "\n")
    evaluate.run_eval(EvalSpec(models=["chat", "plain"], tasks=["synth-math", "perplexity", f"mc:{mc}"], limit=2,
                               samples=2, max_new_tokens=8))
    with db.session() as s:
        got = {(r.model, r.task): r.details["settings"] for r in s.exec(select(EvalScore))}
    template = (tiny_llama / "chat_template.jinja").read_text()
    digest = hashlib.sha256(template.encode()).hexdigest()[:16]
    math = {"limit": 2, "max_new_tokens": 8, "decoding": "greedy", "samples": 2,
            "sampling": {"temperature": 0.8, "top_p": 0.95}, "batch": 8}
    assert got[("chat", "synth-math")] == {**math, "prompt": f"chat template sha256:{digest}",
                                           "generation_config": {}}
    # do_sample and temperature are generate()'s to set; the penalty acts on the "greedy" answers: said so
    assert got[("plain", "synth-math")] == {**math, "prompt": "transcript (no chat template: backend/chat.py "
                                                              "build_prompt), ends at a new role line",
                                            "generation_config": {"repetition_penalty": 1.05}}
    # scored in rolling windows as lm-eval scores it, the window the model's 128 positions (session 25: a text was
    # cut at max_length 256, which these settings said)
    assert got[("chat", "perplexity")] == got[("plain", "perplexity")] == {"limit": 2, "scoring": evalscore.ROLLING,
                                                                           "window": 128}
    assert got[("chat", f"mc:{mc}")] == {"limit": 2, "prompt": "Question: {question}\nAnswer: {choice}"}
