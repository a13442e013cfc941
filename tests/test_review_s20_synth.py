"""Review s20, synthetic math: the changed-quantity check lets through the same quantity said another way (a pick
from a group, coins by their face value) and refuses a rate said per another thing (a frequency, a price per pair
turned per sock); the rules rephraser's cache key carries the rules' version."""

from __future__ import annotations

from fractions import Fraction

import pytest

from backend.specs import SynthMathSpec
from backend.synth import pipeline, quantities, rephrase
from backend.synth.seeds import Seed
from tests.test_synth import run

SAME = [  # the same quantities said another way: no changed value
    ("Tom picks any of the 3 doors. What is the chance he wins?",
     "Tom picks one of the 3 doors. What is the chance he wins?"),
    ("Tom can open either of the 2 boxes. How many ways are there?",
     "Tom can open one of the 2 boxes. How many ways are there?"),
    ("Sam takes a marble from the 5 in the bag. What is the chance it is red?",
     "Sam takes one of the 5 marbles in the bag. What is the chance it is red?"),
    ("Sam has 3 dimes. How much money does he have?", "Sam has 3 coins of 10 cents. How much money does he have?"),
    ("Sam has 3 dimes and 2 nickels. How much money does he have?",
     "Sam has three 10-cent coins and two 5-cent coins. How much money does he have?"),
    ("Sam has 4 coins worth 25 cents each. How much money does he have?",
     "Sam has 4 coins of $0.25. How much money does he have?"),
    ("Ann swims once a week. How many times does she swim in 52 weeks?",
     "Ann swims once every week. How many times does she swim in 52 weeks?"),
    ("Ann swims twice a week. How many times does she swim in 52 weeks?",
     "Ann swims two times a week. How many times does she swim in 52 weeks?"),
    ("Ann buys 3 pairs of socks at $2 each. How much does she pay?",
     "Ann buys 6 socks at $2 a pair. How much does she pay?"),
    ("Ann buys 3 pairs of socks at $2 each. How much does she pay?",
     "Ann buys 3 pairs of socks for $2 apiece. How much does she pay?"),
    ("Pens cost $2 each. How much do 3 pens cost?", "Each pen costs $2. What do 3 pens cost?"),
    ("Tom earns $15 per hour and works 8 hours a day. How much does he earn in a day?",
     "Tom makes $15 an hour and works 8 hours each day. What does he earn in a day?"),
]

CHANGED = [  # (original, rephrased, the values the check refuses): a changed count, frequency or price basis
    ("Sam ate 2 of the 5 apples. How many are left?", "Sam ate one of the 5 apples. How many are left?", {1}),
    ("Each of the 3 boys gets 2 apples. How many apples?", "One of the 3 boys gets 2 apples. How many apples?", {1}),
    ("Tom picks any of the 3 doors. What is the chance he wins?",
     "Tom picks one of the 4 doors. What is the chance he wins?", {1, 4}),  # the pick of another group
    ("Sam has 3 dimes. How much money does he have?", "Sam has 10 cents. How much money does he have?",
     {Fraction(1, 10)}),
    ("Sam has 3 dimes. How much money does he have?", "Sam has 4 coins of 10 cents. How much money does he have?",
     {Fraction(2, 5)}),
    ("Sam has 3 dimes and 2 nickels. How much money does he have?",
     "Sam has 3 coins of 5 cents and 2 coins of 10 cents. How much money does he have?",
     {Fraction(3, 20), Fraction(1, 5)}),
    ("Ann swims once a week. How many times does she swim in 52 weeks?",
     "Ann swims once a month. How many times does she swim in 52 weeks?", {1}),
    ("Ann swims 3 times a week. How many times does she swim in 52 weeks?",
     "Ann swims 3 times a month. How many times does she swim in 52 weeks?", {3}),
    ("Tom earns $15 per hour. How much does he earn in 8 hours?",
     "Tom earns $15 a day. How much does he earn in 8 hours?", {15}),
    ("Ann buys 3 pairs of socks at $2 each. How much does she pay?",
     "Ann buys 6 socks at $2 each. How much does she pay?", {2}),
    ("Ann buys 3 pairs of socks at $2 a pair. How much does she pay?",
     "Ann buys 6 socks at $2 apiece. How much does she pay?", {2}),
    ("Ann buys 3 pairs of socks. Each pair costs $2. How much does she pay?",
     "Ann buys 6 socks. They cost $2 each. How much does she pay?", {2}),
]


@pytest.mark.parametrize("original, rephrased", SAME)
def test_the_same_quantity_said_another_way_passes(original, rephrased):
    assert quantities.changed(original, rephrased) == set()
    rephrase.check_question(Seed("s", "c", 1, original, "", ""), rephrased)  # raises on a refusal


@pytest.mark.parametrize("original, rephrased, refused", CHANGED)
def test_a_changed_count_frequency_or_price_basis_is_refused(original, rephrased, refused):
    assert quantities.changed(original, rephrased) == {Fraction(x) for x in refused}
    with pytest.raises(rephrase.RephraseError, match="changed number"):
        rephrase.check_question(Seed("s", "c", 1, original, "", ""), rephrased)


def test_coins_by_face_value_are_the_coins_amount():
    assert [(q.value, q.counts, q.money) for q in quantities.quantities("3 coins of 10 cents")] == [
        (Fraction(3, 10), (Fraction(3),), True)]
    assert [q.value for q in quantities.quantities("two 25-cent coins and 3 coins worth $1 each")] == [
        Fraction(1, 2), Fraction(3)]


def test_a_rates_basis_is_read():
    per = [(q.value, q.per) for q in quantities.quantities(
        "Ann swims once a week, reads 20 pages per day and buys 3 pairs of socks at $2 each; a hat costs $5.")]
    assert per == [(1, "week"), (20, "day"), (3, ""), (2, "pair"), (5, "hat")]


def test_the_rules_version_follows_the_rule_tables(monkeypatch):
    before = rephrase._rules_version()
    assert rephrase.RulesRephraser(0).settings == {"variant_seed": 0, "rules": before}
    monkeypatch.setattr(rephrase, "_SYNONYMS", [*rephrase._SYNONYMS, ("buys", "purchases")])
    assert rephrase._rules_version() != before


def test_a_cache_of_other_rules_is_not_reused(tmp_path, monkeypatch):
    """A rephrasing cached by older rules is redone, not handed back: its key holds the rules' version."""
    calls = []

    class Counting(rephrase.RulesRephraser):
        def rephrase(self, seeds):
            calls.append(len(seeds))
            return super().rephrase(seeds)

    def killed(*a, **k):
        raise KeyboardInterrupt

    seed = Seed("s", "c", 1, "What is 2 + 3?", "2 + 3 = 5. The answer is \\boxed{5}", "5")
    key = rephrase.cache_key(seed, rephrase.RulesRephraser(0))
    monkeypatch.setattr(rephrase, "RULES_VERSION", "other-rules")
    assert rephrase.cache_key(seed, rephrase.RulesRephraser(0)) != key

    monkeypatch.setattr(pipeline, "make_rephraser", lambda spec: Counting(spec.seed))
    save = pipeline.save_dataset
    monkeypatch.setattr(pipeline, "save_dataset", killed)  # a first run stopped after its cache is written
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, num_seeds=6)
    monkeypatch.setattr(pipeline, "save_dataset", save)
    monkeypatch.setattr(rephrase, "RULES_VERSION", "newer-rules")  # the rules changed since
    messages = []
    pipeline.run_synth_math(SynthMathSpec(out=str(tmp_path / "out"), num_seeds=6),
                            progress=lambda f, m: messages.append(m))
    assert calls == [6, 6] and "0 already rephrased" in messages[0]
