"""Held out by construction: the built-in evaluation sets share no n-gram with any built-in training set, a planted
overlap is found through a model's lineage, and the evaluation split of training data is taken before weighting."""

from __future__ import annotations

import json
import re

import pytest
from sqlmodel import select

from backend import data, evaluate, heldout, registry
from backend.specs import EvalSpec
from backend.synth.pipeline import ContaminationIndex
from backend.synth.seeds import generate
from storage import db
from storage.models import EvalScore, Generation

SEED_COUNTS = 20_000  # the synthetic-math generator at a large seed count (the default job makes 200)


def _eval_texts() -> dict[str, list[str]]:
    read = lambda name: [json.loads(x) for x in heldout.eval_path(name).read_text().splitlines()]  # noqa: E731
    return {"heldout-text": heldout.eval_path("heldout-text").read_text().splitlines(),
            "eval-math": [r["question"] for r in read("eval-math")],
            "qa-closed-book": [r["question"] for r in read("qa-closed-book")]}


@pytest.fixture(scope="module")
def training_texts() -> dict[str, list[str]]:
    out = {name: [heldout.row_text(r) for r in data.load_source(f"builtin:{name}")] for name in data.BUILTIN}
    seeds = generate(SEED_COUNTS, seed=0) + generate(2_000, seed=10_000)
    out["synth-generator"] = [f"{s.question}\n{s.solution}" for s in seeds]
    return out


def test_every_builtin_eval_set_has_zero_ngram_overlap_with_every_builtin_training_set(training_texts):
    assert set(training_texts) >= {"alpaca-mini", "orca-mini", "prefs-mini", "facts-corpus", "synth-generator"}
    evals = _eval_texts()
    assert {k: len(v) for k, v in evals.items()} == {"heldout-text": 31, "eval-math": 200, "qa-closed-book": 120}
    for train_name, texts in training_texts.items():
        index = ContaminationIndex(texts, heldout.NGRAM)
        for eval_name, items in evals.items():
            hits = [t for t in items if index.overlap(t) > 0]
            assert not hits, f"{eval_name} shares {heldout.NGRAM}-grams with {train_name}: {hits[:2]}"


def test_no_eval_math_question_can_equal_a_training_question(training_texts):
    """The proof, checked: every eval-math question holds a number from 1000 to 9999; no training question does
    (backend/synth/seeds.py draws every number in a question below 1000, and so do the built-in sets)."""
    numbers = lambda t: [int(x) for x in re.findall(r"\d+", t)]  # noqa: E731
    for q in _eval_texts()["eval-math"]:
        assert any(1000 <= x <= 9999 for x in numbers(q)), q
    questions = [s.question for s in generate(SEED_COUNTS, seed=0)]
    assert max(x for q in questions for x in numbers(q)) < 1000
    for name in data.BUILTIN:
        assert max(x for t in training_texts[name] for x in numbers(t)) < 1000
    assert not set(questions) & set(_eval_texts()["eval-math"])


def test_qa_answers_are_taught_and_unanswerable_entities_never_appear(training_texts):
    corpus = "\n".join(training_texts["facts-corpus"])
    everything = "\n".join(t for v in training_texts.values() for t in v).lower()
    items = [json.loads(x) for x in heldout.eval_path("qa-closed-book").read_text().splitlines()]
    kinds = {k: [i for i in items if i["kind"] == k] for k in ("answerable", "unanswerable", "math")}
    assert {k: len(v) for k, v in kinds.items()} == {"answerable": 40, "unanswerable": 40, "math": 40}
    for it in kinds["answerable"]:
        assert f"is {it['answers'][0]}." in corpus  # the corpus states it
    for it in kinds["unanswerable"]:
        entity = re.search(r"(?:capital of|the \w+) ([A-Z][\w-]+(?: [A-Z][\w-]+)?)\??(?: born| win|$)",
                           it["question"])[1]
        assert entity.lower() not in everything and it["answers"] == []


def test_a_planted_overlap_is_found_through_the_lineage(tiny_llama, tmp_path):
    registry.import_folder(tiny_llama, "base")
    all_rows = [json.loads(x) for x in heldout.eval_path("eval-math").read_text().splitlines()]
    by_template: dict[str, dict] = {}  # one question per template: items of one template share n-grams
    for r in all_rows:
        by_template.setdefault(r["question"].rsplit(". ", 1)[-1], r)
    math_rows = list(by_template.values())[:4]
    mathfile = tmp_path / "math.jsonl"
    mathfile.write_text("".join(json.dumps({"question": r["question"], "answer": f"x #### {r['answer']}"}) + "\n"
                                for r in math_rows))
    planted = tmp_path / "leak.jsonl"  # training data that contains two of the evaluation questions verbatim
    planted.write_text("".join(json.dumps({"instruction": r["question"], "output": f"It is {r['answer']}."}) + "\n"
                               for r in math_rows[:2]))
    registry.register(tiny_llama, "tuned", "trained", parents=["base"],
                      recipe={"kind": "sft", "data": [{"source": str(planted), "weight": 1.0},
                                                      {"source": "builtin:alpaca-mini", "weight": 2.0}]})
    registry.register(tiny_llama, "merged", "merged", parents=["tuned", "base"], recipe={"method": "average"})
    sources, notes = heldout.lineage_sources("merged")
    assert sources == [str(planted), "builtin:alpaca-mini"] and any("base model" in n for n in notes)

    task = f"gsm8k:{mathfile}"
    evaluate.run_eval(EvalSpec(models=["merged", "base"], tasks=[task, "perplexity"], limit=4, max_new_tokens=8))
    with db.session() as s:
        rows = {(r.model, r.task, r.metric): r for r in s.exec(select(EvalScore))}
        gens = list(s.exec(select(Generation).where(Generation.model == "merged")))
    acc = rows[("merged", task, "accuracy")]
    ov = acc.details["overlap"]
    assert ov["items_over"] == 2 and ov["max"] == 1.0 and acc.overlap_share == 0.5
    assert ov["against"] == [str(planted), "builtin:alpaca-mini"] and ov["ngram"] == 8
    assert [g.overlap for g in sorted(gens, key=lambda g: g.prompt_id)] == [1.0, 1.0, 0.0, 0.0]
    # the score on non-overlapping items only, recomputed from the stored generations, equals the stored one
    clean = [g for g in gens if g.overlap < acc.details["overlap"]["threshold"]]
    assert acc.details["clean"]["n"] == 2
    assert acc.details["clean"]["accuracy"] == sum(g.verdict == "correct" for g in clean) / 2
    base = rows[("base", task, "accuracy")]
    assert base.overlap_share == 0.0 and base.details["overlap"]["against"] == []
    assert base.details["fingerprint"] == acc.details["fingerprint"]  # the same items for both models
    assert rows[("merged", "perplexity", "perplexity")].details["overlap"]["items_over"] == 0


def test_eval_split_is_taken_before_weighting(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"Question number {i}?", "output": f"Answer {i}."}) + "\n"
                           for i in range(50)))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"instruction": f"Other {i}?", "output": f"O {i}."}) + "\n"
                             for i in range(200)))
    train, evals, report = data.split_mix([(str(src), 3.0), (str(other), 1.0)], "sft", seed=0, eval_fraction=0.1)
    key = lambda r: json.dumps(r["messages"])  # noqa: E731
    train_keys = {key(r) for r in train}
    eval_keys = [key(r) for r in evals]
    assert len(evals) == 5 + 20 and len(train) == 45 * 3 + 180 and report[0][2] == 135
    assert not set(eval_keys) & train_keys  # weight 3 put no copy of a training row in the evaluation split
    # the old order (weight, then split) does leak: shown here so the test can fail
    weighted, _ = data.prepare(str(src), "sft", weight=3.0)
    split = weighted.train_test_split(test_size=0.1, seed=0)
    assert {key(r) for r in split["test"]} & {key(r) for r in split["train"]}
    plain, _ = data.mix([(str(src), 1.0)], "sft")
    assert len(plain) == 50


def test_compare_page_shows_overlap_badges_the_clean_score_and_the_qa_rules(tiny_llama):
    from streamlit.testing.v1 import AppTest

    from backend import qa
    from tests.test_pages import ROOT

    registry.import_folder(tiny_llama, "tiny")
    registry.register(tiny_llama, "tuned", "trained", parents=["tiny"], recipe={"data": [{"source": "x.jsonl"}]})
    with db.session() as s:
        for model, share, clean_acc in (("tiny", 0.0, None), ("tuned", 0.4, 0.25)):
            overlap = {"ngram": 8, "threshold": 0.3, "max": 1.0 if share else 0.0, "items_over": int(share * 10),
                       "share_over": share, "against": ["x.jsonl"], "unchecked": {}, "notes": []}
            details = {"source": "builtin-eval:qa-closed-book", "fingerprint": "ab" * 32, "overlap": overlap,
                       "clean": {"accuracy": clean_acc, "hallucination_rate": 0.5, "accuracy[answerable]": 0.1,
                                 "n": 6} if share else None}
            if not share:
                details["clean"] = {"accuracy": 0.6, "hallucination_rate": 0.2, "accuracy[answerable]": 0.7, "n": 10}
            for metric, v in (("accuracy", 0.6), ("hallucination_rate", 0.2), ("accuracy[answerable]", 0.7)):
                s.add(EvalScore(model=model, task="qa", metric=metric, value=v, n=10, details=details,
                                overlap_share=share))
        s.commit()
    def frame(column):  # AppTest does not look dataframes up by key: find them by a column
        return next(d.value for d in at.dataframe if column in d.value.columns)

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    table = frame("average (accuracy tasks)").set_index("model")
    assert table.loc["tuned", "qa (training overlap)"] == "⚠ 40%" and table.loc["tiny", "qa (training overlap)"] == "✓ 0%"
    assert table.loc["tuned", "qa (accuracy)"] == 0.6 and table.loc["tuned", "qa (hallucination)"] == 0.2
    qa_table = frame("item kind")
    assert set(qa_table["item kind"]) == {"all", "answerable"}
    assert any(qa.ABSTAIN_PHRASES[0] in md.value for md in at.markdown)
    assert any("1. **correct**" in md.value and "2. **empty**" in md.value and "4. **cut off**" in md.value
               and "5. **wrong**" in md.value for md in at.markdown)
    at.toggle(key="clean_only").set_value(True).run()
    table = frame("average (accuracy tasks)").set_index("model")
    assert table.loc["tuned", "qa (accuracy)"] == 0.25 and table.loc["tuned", "qa (hallucination)"] == 0.5
    assert table.loc["tiny", "qa (accuracy)"] == 0.6  # nothing overlapped: the same score
    qa_table = frame("item kind")
    assert qa_table[(qa_table.model == "tuned") & (qa_table["item kind"] == "answerable")]["accuracy"].iloc[0] == 0.1


def test_tiny_sources_get_no_eval_split(tmp_path):
    src = tmp_path / "few.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"Q{i}?", "output": f"A{i}."}) + "\n" for i in range(5)))
    train, evals, _ = data.split_mix([(str(src), 2.0)], "sft", eval_fraction=0.1)
    assert evals is None and len(train) == 10


def test_an_item_shorter_than_n_words_is_found_inside_a_longer_training_text():
    """A short question has no 8-gram, so it was never flagged, however often training data quoted it whole."""
    index = ContaminationIndex(["Trivia night: What is the capital of Freedonia? Answer in one word.",
                                "Thecat sat on the mat all day long, said the report from the zoo.",
                                "Nothing to see here", "Yes."], n=8)
    assert index.overlap("What is the capital of Freedonia?") == 1.0  # 6 words, quoted inside a longer text
    assert index.overlap("what is THE capital of freedonia") == 1.0  # case and punctuation as for n-grams
    assert index.overlap("What is the capital of Sylvania?") == 0.0
    assert index.overlap("cat sat on the mat") == 0.0  # "Thecat" is another word
    assert index.overlap("one word Thecat sat on") == 0.0  # no match across two texts
    assert index.overlap("Nothing to see here") == 1.0
    assert index.overlap("Yes") == 1.0 and index.overlap("Yes.") == 1.0  # a whole training text
    assert index.overlap("the capital") == 0.0  # under SHORT_MIN words: only a text of exactly those words
    assert index.overlap("...") == 0.0


def test_a_short_reference_text_quoted_inside_an_item_is_found():
    """The other way round: a benchmark of short problems (MATH has many) against a longer seed that quotes one."""
    bench = ["Compute $\\dbinom{8}{4}$.", "Simplify $\\sqrt{245}$.", "Yes indeed."]
    index = ContaminationIndex(bench, n=8, whole_references=True)
    assert index.overlap("A warm-up first. Compute $\\dbinom{8}{4}$. Then explain your steps in detail please.") == 1.0
    assert index.overlap("Compute dbinom 8 5 and then explain each of your steps in detail.") == 0.0
    assert index.overlap("Simplify sqrt 245") == 1.0
    assert index.overlap("Yes indeed, the answer follows from the steps shown below.") == 0.0  # under 3 words


def test_a_short_line_of_training_text_does_not_mark_every_question_that_quotes_it():
    """Training data is no list of whole problems: a .txt corpus is read a line per row, and a heading such as "The
    United States" is inside many questions. Only a benchmark's short problems count inside an item."""
    training = ContaminationIndex(["The United States", "Early life and career"], n=8)
    q = "Which river forms part of the border between Mexico and the United States, and how long is it?"
    assert training.overlap(q) == 0.0
    assert training.overlap("the United States") == 1.0  # the item itself, whole, is in the training text
    assert ContaminationIndex(["The United States"], n=8, whole_references=True).overlap(q) == 1.0


def _contained(item: list[str], texts: list[list[str]]) -> bool:
    """By definition: the item's words, whole, in order and adjacent, inside one text."""
    k = len(item)
    return any(t[i:i + k] == item for t in texts for i in range(len(t) - k + 1))


def _short_items(texts: list[list[str]], vocab: list[str], rng, n: int) -> list[tuple[str, list[str]]]:
    """(kind, words): short items (SHORT_MIN to n - 1 words) present in the texts, and near-misses: a word cut short
    or grown (part of a word), one word swapped, random words, and a run across two neighbouring texts."""
    items = []
    for _ in range(400):
        t = rng.choice([t for t in texts if len(t) >= n - 1])
        k = rng.randint(ContaminationIndex.SHORT_MIN, n - 1)
        i, j = rng.randint(0, len(t) - k), rng.randrange(k)
        run = t[i:i + k]
        items += [("present", run), ("cut", run[:j] + [run[j][:-1] or "x"] + run[j + 1:]),
                  ("grown", run[:j] + [run[j] + "s"] + run[j + 1:]),
                  ("swapped", run[:j] + [rng.choice(vocab)] + run[j + 1:]),
                  ("random", [rng.choice(vocab) for _ in range(k)])]
        a = rng.choice([a for a in range(len(texts) - 1) if len(texts[a]) + len(texts[a + 1]) >= k + 2])
        cut = rng.randint(max(1, k - len(texts[a + 1])), min(k - 1, len(texts[a])))
        items.append(("across", texts[a][len(texts[a]) - cut:] + texts[a + 1][:k - cut]))
    return items


@pytest.mark.parametrize("n", [8, 5])
@pytest.mark.parametrize("whole_references", [False, True])
def test_short_items_get_the_answers_of_a_brute_force_search(n, whole_references):
    """The short-item path (a sorted index of word windows) answers as the definition does, on a random corpus whose
    words are parts of one another (cat, cats, at, scat), so a partial word or a run across two texts is a near-miss
    a plain substring search over the raw text would take."""
    import random

    rng = random.Random(1234)
    vocab = ["cat", "cats", "at", "scat", "the", "then", "he", "a", "an", "and", "sand", "is", "this", "it", "its"]
    rare = [f"r{i}" for i in range(2_000)]  # over 512 words in all: for n = 8 the windows sort on two packed keys
    texts = [[rng.choice(vocab if rng.random() < 0.65 else rare) for _ in range(rng.randint(1, 14))]
             for _ in range(300)]
    raw = [" ".join(w.upper() if rng.random() < 0.2 else w for w in t) + rng.choice([".", "?", ""]) for t in texts]
    index = ContaminationIndex(raw, n, whole_references=whole_references)
    short_refs = [t for t in texts if ContaminationIndex.SHORT_MIN <= len(t) < n] if whole_references else []
    items = _short_items(texts, vocab, rng, n)
    got = [index.overlap(", ".join(item).title()) for _, item in items]
    want = [float(_contained(item, texts) or any(_contained(r, [item]) for r in short_refs)) for _, item in items]
    assert got == want
    absent = {kind: sum(not w for (k, _), w in zip(items, want) if k == kind) for kind, _ in items}
    assert absent["present"] == 0 and sum(want) > 400
    assert all(absent[kind] > 40 for kind in ("cut", "grown", "swapped", "random", "across")), absent
