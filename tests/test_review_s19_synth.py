"""Synthetic math, review 19: backend/synth/pipeline.py split into contamination / datasets / pairs beside the job,
every name the pages, the CLI, the runner and the benchmarks read still reached through pipeline; the rules rephraser
lower-cases a noun it moves inside a sentence ("Given that Pens cost …") but keeps a name, "I" and an acronym; the
changed-number check reads multipliers one way ("3 and a half million" was 3.5, "a hundred and a half" 100.5),
keeps a pair count counted as things ("3 pairs" → "6 socks … one sock" was refused), reads "once a week" as "every
week" rewritten, a coin count as no money ("3 dimes" → "$3" passed) and "one of the 5" as a count ("ate 2 of the
5" → "ate one of the 5" passed). The CHANGED and SAME cases run through test_review_s17_synth's two tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from backend.synth import quantities
from backend.synth.rephrase import RulesRephraser
from backend.synth.seeds import Seed

CHANGED = [  # (seed question, rephrased question, the new quantity the error names)
    # a multiplier after "N and a half" multiplies it, and a half after a multiplier is half of it
    ("The city has 3 and a half million people.", "The city has 3.5 people.", "3.5"),  # passed: million dropped
    ("The city has 3 and a half million people.", "The city has 4 and a half million people.", "4500000"),
    ("The city has 3 and a half million people.", "The city has 3 million people.", "3000000"),
    ("It costs $2.5 million.", "It costs $2.5.", "2.5"),  # passed: "2.5 million" read 2.5
    ("She bought a hundred and a half pens.", "She bought 100.5 pens.", "100.5"),  # passed: read 100.5
    # "3 pairs" may become "6 socks … one sock" only while every other quantity is kept
    ("3 pairs of socks and 2 hats cost $12. What does each sock cost?", "6 socks cost $12. What does one sock cost?",
     "1"),
    ("3 pairs of socks cost $12. What does each sock cost?", "6 pairs of socks cost $12. What does one sock cost?",
     "1, 6"),
    # "once a week" is "every week" or "weekly" rewritten, not "every other week", "every 2 weeks" or another period
    ("He runs 3 miles every other week.", "He runs 3 miles once a week.", "1"),
    ("He runs 3 miles every 2 weeks.", "He runs 3 miles once a week.", "1"),
    ("He runs 3 miles every day.", "He runs 3 miles once a week.", "1"),
    ("He runs every week and swims 3 times a week.", "He runs once a week and swims once a week.", "1"),
    ("He runs every week and swims every day.", "He runs once a week and swims once a week.", "1"),
    # a coin count is a count, never an amount of money
    ("He pays with 3 dimes.", "He pays with $3.", "3"),  # passed: the count stayed an allowed value
    ("He pays with 3 dimes.", "He pays with 3 dollars.", "3"),
    ("He pays with 3 dimes.", "He pays with 3 cents.", "0.03"),
    # "one of" counts
    ("He had 5 apples and ate 2 of the 5.", "He had 5 apples and ate one of the 5.", "1"),  # passed: a pronoun
    ("Two of the 5 boys left. How many stayed?", "One of the 5 boys left. How many stayed?", "1"),
    ("Each of the 5 boys has 3 apples.", "One of the 5 boys has 3 apples.", "1"),
]
SAME = [  # the same quantities, or a word that is no quantity
    ("The city has 3,500,000 people.", "The city has 3 and a half million people."),
    ("The city has 3,500,000 people.", "The city has 3.5 million people."),
    ("It costs $2,500,000.", "It costs $2.5 million."),  # refused: 2.5
    ("The farm has 2,500 hens.", "The farm has two and a half thousand hens."),  # refused: 5/2
    ("The town has 500,000 people.", "The town has half a million people."),  # refused: 1/2 and 1000000
    ("She bought 150 pens.", "She bought a hundred and a half pens."),  # refused: 100.5
    ("She bought 1,500 pens.", "She bought a thousand and a half pens."),
    ("She bought 18 eggs.", "She bought a dozen and a half eggs."),
    ("3 pairs of socks cost $12. What does each sock cost?", "6 socks cost $12. What does one sock cost?"),  # refused
    ("He runs 3 miles every week.", "He runs 3 miles once a week."),  # refused: 1
    ("She waters the plant daily, 2 cups each time.", "She waters the plant once a day, 2 cups each time."),
    ("He pays with 3 dimes.", "He pays with dimes, 3 of them."),
    ("He pays with 3 dimes.", "He pays with 30 cents."),
    ("One of the 5 boys left.", "Of the 5 boys, one left."),
    ("Nobody has 3 apples.", "No one has 3 apples."),
]


@pytest.mark.parametrize("text, values", [
    ("3 and a half million, a hundred and a half, a million and a half", [3500000, 150, 1500000]),
    ("half a million, a quarter million, 2.5 million, 1 1/2 dozen", [500000, 250000, 2500000, 18]),
    ("ate one of the 5, which one of the 2", [1, 5, 2]),
])
def test_multipliers_and_one_of_read_one_way(text, values):
    assert [q.value for q in quantities.quantities(text) if not q.loose] == [Fraction(v) for v in values]


# ---------------------------------------------------------------- the rules rephraser's capitals

@pytest.mark.parametrize("question, rephrased", [
    ("Pens cost $2 each. How many pens can Sam buy with $10?",  # "Given that Pens cost …"
     "Given that pens cost $2 apiece, what number of pens can Sam buy with $10?"),
    ("Sam has 3 apples. How many apples does he have?", "Given that Sam has 3 apples, what number of apples does he "
                                                        "have?"),
    ("Rose picks 3 roses. How many roses did Rose pick?",  # written in lower case too, but a name mid-sentence
     "Given that Rose picks 3 roses, what number of roses did Rose pick?"),
    ("NASA buys 3 rockets. How many rockets are there?", "Given that NASA buys 3 rockets, what number of rockets are "
                                                         "there?"),
    ("I have 3 apples. How many apples do I have?", "Given that I have 3 apples, what number of apples do I have?"),
])
def test_a_moved_sentence_lower_cases_a_noun_but_not_a_name(question, rephrased):
    assert RulesRephraser(0).question(question) == rephrased


def test_the_seed_solution_tells_a_noun_from_a_name():
    """A word the question writes only at a sentence's start is read in the solution too: "pens" there."""
    seed = Seed("s", "arithmetic", 1, "Pens cost $2 each. What do 3 cost?",
                "Pens cost $2 each. So 3 pens cost 3 * 2 = 6 dollars. The answer is \\boxed{6}.", "6")
    ((question, solution),) = RulesRephraser(0).rephrase([seed])
    assert question == "Given that pens cost $2 apiece, what do 3 cost?"
    assert solution.startswith("First, pens cost $2 each. Finally, so 3 pens cost")


# ---------------------------------------------------------------- the split of pipeline.py

def test_pipeline_still_reaches_every_name_its_importers_read():
    """pages/synth.py, pages/train.py, backend/__main__.py, backend/runner.py, backend/heldout.py and the benchmarks
    read these through pipeline; each is the one object its new module defines."""
    from backend.synth import contamination, datasets, pairs, pipeline

    homes = {contamination: ["ContaminationIndex", "_WordWindows", "canonical", "ngrams", "words"],
             datasets: ["DatasetError", "PushFailed", "RUN_FILES", "get_dataset", "list_datasets", "save_dataset",
                        "save_mix", "paper_mixes", "save_paper_mixes", "dataset_users", "delete_dataset",
                        "check_not_orphaned_dataset"],
             pairs: ["export", "holds_export", "push_to_hub", "_pushable_export", "query_pairs", "reject_by_hand",
                     "HAND_REJECTED", "counts", "length_gap", "length_histograms", "LENGTH_BIN", "exported_digest"]}
    for module, names in homes.items():
        for name in names:
            assert getattr(pipeline, name) is getattr(module, name), name
    for name in ("run_synth_math", "check_synth_free", "load_benchmark", "verify", "make_rephraser", "select", "db",
                 "SynthPair"):
        assert hasattr(pipeline, name), name
    assert issubclass(pipeline.PushFailed, pipeline.DatasetError)


def test_every_synth_module_keeps_under_the_house_size():
    folder = Path(__file__).resolve().parents[1] / "backend" / "synth"
    sizes = {f.name: len(f.read_text().splitlines()) for f in folder.glob("*.py")}
    assert sizes["pipeline.py"] < 300 and max(sizes.values()) < 500, sizes
