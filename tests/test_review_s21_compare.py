"""The Compare page after walk 21b: one length unit (tokens) on the answer-length charts, so a reply cut off at the
cap that decoded to blank text is not drawn in a "0 words" bin as if empty; honest advice for models that never end
a reply (a higher cap cannot help); the models × tasks table in lineage order; every bad task file's error at once."""

from __future__ import annotations

import json

from sqlmodel import select

from backend import analysis, registry
from backend.analysis import Record
from storage import db
from storage.models import EvalScore, Generation, Job, ModelRecord
from tests.test_pages import app


def chart(at, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)


def add_run(model: str, run: str, tokens: int, n: int = 10, cut: bool = True, task: str = "qa") -> None:
    """`n` replies of one run; cut off: `tokens` long (the cap) and decoded to blank text (a tiny tokenizer's)."""
    with db.session() as s:
        for i in range(n):
            s.add(Generation(model=model, task=task, prompt_id=str(i), prompt="q", reference="Paris",
                             output="" if cut else "Paris is it", tokens=tokens, words=0 if cut else 3,
                             answered=not cut, correct=not cut and i % 2 == 0, hallucination=not cut and i % 2 == 1,
                             verdict="cut off" if cut else ("correct" if i % 2 == 0 else "wrong"), truncated=cut,
                             run=run, item_kind="answerable"))
        s.add(EvalScore(model=model, task=task, metric="accuracy", value=0.0, n=n, run=run))
        s.commit()


# ---- 1. one unit: tokens; a cut-off reply is as long as the cap, not "0 words" ---------------------------------------

def test_a_blank_cut_off_reply_is_binned_at_its_token_length_not_as_0_words():
    recs = [Record(model="up", words=0, correct=False, hallucination=False, prompt_id=str(i), tokens=48,
                   verdict="cut off") for i in range(4)]
    recs += [Record(model="talk", words=w, correct=True, hallucination=False, prompt_id=str(i), tokens=2 * w,
                    verdict="correct") for i, w in enumerate([3, 4, 5, 6])]
    recs.append(Record(model="talk", words=0, correct=False, hallucination=False, prompt_id="9", tokens=1,
                       verdict="empty"))  # ended at once: 0 long whatever end token it generated
    assert analysis.length_unit(recs) == "tokens"
    assert analysis.lengths(recs, "tokens").tolist() == [48] * 4 + [6, 8, 10, 12, 0]
    rows = analysis.by_length_bin(recs, 2, "tokens")
    # the cut-off replies are left out of the accuracy bins (session 25: they stated no answer), the empty one in at 0
    assert [(r["model"], r["range"], r["n"]) for r in rows] == [("talk", "0–7 tokens", 2), ("talk", "8–12 tokens", 3)]
    # rows stored without token counts: words, as before
    assert analysis.length_unit([Record(model="a", words=3, correct=True, hallucination=False)]) == "words"


def test_the_compare_pages_length_charts_are_in_tokens_like_the_length_plot(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add_run("up", "r1", 48)
    add_run("talk", "r2", 12, cut=False)
    at = app("compare.py")
    assert not at.exception, at.exception
    box, acc = chart(at, "len_box"), chart(at, "bin_acc")
    assert box["layout"]["title"]["text"] == "Answer length (tokens)"
    assert acc["layout"]["xaxis"]["title"]["text"] == "answer length (tokens)"
    # was "0 words": read as 10 empty replies; cut off on every reply, "up" has no accuracy line now (session 25: a
    # cut-off reply stated no answer), and its box stands at the cap
    assert [t["name"] for t in acc["data"]] == ["talk"]
    assert next(t for t in box["data"] if t["name"] == "up")["median"] == [48]  # was 0
    assert not any("0 words" in x for t in acc["data"] for x in t["x"])


# ---- 2. cut off at every cap: a higher cap will not help ------------------------------------------------------------

def test_caps_all_cut_off_and_the_advice_claim_only_what_the_runs_show():
    rows = [("up", 10, 10, 48), ("up", 10, 10, 96), ("cpt", 10, 10, 48), ("sft", 10, 4, 48), ("sft", 10, 10, 64)]
    caps = analysis.caps_all_cut_off(rows)
    assert caps == {"cpt": [48], "sft": [64], "up": [48, 96]}
    text = analysis.cut_off_advice({"up": [48, 96]})
    assert text.startswith("Cut off on every reply at each cap tried (up at 48 and 96 tokens): such a model does "
                           "not end its replies")
    assert "a higher Max new tokens (eval --max-new-tokens) will not help" in text and "continue pretraining" in text
    once = analysis.cut_off_advice({"cpt": [48]})
    assert once.startswith("Cut off on every reply, at one cap so far (cpt at 48 tokens)")
    assert "will not help" not in once and "Evaluate again with a higher" in once
    both = analysis.cut_off_advice({"a": [48], "b": [48], "up": [48, 96]})  # grouped by their caps
    assert "(up at 48 and 96 tokens)" in both and "(a, b at 48 tokens)" in both


def test_the_page_says_a_model_cut_off_at_two_caps_never_ends_its_replies(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add_run("up", "r1", 48)
    add_run("up", "r2", 96)  # evaluated again at a higher cap: cut off throughout again
    add_run("talk", "r3", 12, cut=False)
    at = app("compare.py")
    assert not at.exception, at.exception
    (warned,) = [w.value for w in at.warning if w.value.startswith("Cut off by the token limit")]
    assert "up 100%" in warned
    assert "To let them finish" not in warned  # the old advice, which cannot help here
    # one sentence in the warning, what the model needs in the table under it (walk 23d: the advice was 20 lines)
    assert warned.endswith("1 model cut off on every reply, at 48 and 96 tokens: cut off at each cap tried, it does "
                           "not end its replies, so a higher Max new tokens (eval --max-new-tokens) will not help: it needs training (what "
                           "each needs: the table below).")
    (row,) = next(d.value for d in at.dataframe if list(d.value.columns[:2]) == ["model", "cut off"]).to_dict("records")
    assert row["at cap (tokens)"] == "48, 96"
    assert row["what to do"].startswith("Continue pretraining, then SFT, and evaluate it again: it does not end")


def test_the_no_verdict_sentence_gets_the_advice_beside_it(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    add_run("a-up", "r1", 48)
    add_run("b-up", "r2", 48)
    at = app("compare.py")
    assert not at.exception, at.exception
    assert any(m.value.startswith("**No verdict") for m in at.markdown)
    # beside it, a pointer to the advice (the table under the cut-off warning), not the advice again (walk 23d)
    assert ("a-up and b-up: cut off on every reply; what to do is in the table under the cut-off warning above."
            in [c.value for c in at.caption])


# ---- 3. the models × tasks table in lineage order ------------------------------------------------------------------

LINEAGE = [("tiny", []), ("solar-up", ["tiny"]), ("solar-cpt", ["solar-up"]), ("solar-sft-b", ["solar-cpt"]),
           ("solar-sft-a", ["solar-cpt"]), ("solar-dpo", ["solar-sft-b"]), ("merge-x", ["solar-dpo", "solar-sft-a"]),
           ("another-base", [])]  # a second base imported last: a base, so before the up-scaled model


def test_the_models_by_tasks_table_reads_in_lineage_order(tiny_llama):
    for name, _ in LINEAGE:
        registry.import_folder(tiny_llama, name)
    with db.session() as s:
        for name, parents in LINEAGE:
            rec = s.exec(select(ModelRecord).where(ModelRecord.name == name)).one()
            rec.parents = parents
            s.add(rec)
            s.add(EvalScore(model=name, task="synth-math", metric="accuracy", value=0.5, n=10))
        s.add(EvalScore(model="gone", task="synth-math", metric="accuracy", value=0.5, n=10))  # deleted: last
        s.commit()
    at = app("compare.py")
    assert not at.exception, at.exception
    table = at.dataframe[0].value  # the models × tasks table, the page's first
    assert list(table["model"]) == ["tiny", "another-base", "solar-up", "solar-cpt", "solar-sft-b", "solar-sft-a",
                                    "solar-dpo", "merge-x", "gone"]  # was by name: another-base, gone, merge-x, …
    bars = chart(at, "bar_synth-math")
    assert list(bars["data"][0]["y"])[:3] == ["tiny", "another-base", "solar-up"]  # the charts in the same order


# ---- 4. every bad task file's error at once -----------------------------------------------------------------------

def test_the_evaluate_form_shows_every_bad_task_files_error(tiny_llama, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    good = json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": 1})
    for name in ("bad1", "bad2"):
        (tmp_path / f"{name}.jsonl").write_text(good + "\n{bad\n")
    at = app("compare.py")
    at.multiselect(key="eval_models").set_value(["tiny"]).run()
    at.text_input(key="eval_more").set_value(f"mc:{tmp_path / 'bad1.jsonl'} mc:{tmp_path / 'bad2.jsonl'}").run()
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Not queued:\n- bad1.jsonl, line 2: not valid JSON.\n"
                                           "- bad2.jsonl, line 2: not valid JSON."]
    with db.session() as s:
        assert s.exec(select(Job)).all() == []  # nothing queued
