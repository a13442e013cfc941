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


# Review s20 (second pass): a rate's basis said another way, a basis that is a number of things, a pick of its group

BASIS_SPELLINGS = [  # a rate's basis abbreviated, pluralised or said in another word: the same rate
    ("Apples cost $3 per pound. How much do 4 pounds cost?", "Apples cost $3 per lb. What do 4 pounds cost?"),
    ("Apples cost $3 per pound. How much do 4 pounds cost?", "Apples are $3 a lb. What do 4 pounds cost?"),
    ("Tom earns $15 per hour. How much does he earn in 8 hours?",
     "Tom makes $15 an hr. How much does he earn in 8 hours?"),
    ("Tom earns $15 per hour. How much does he earn in 8 hours?",
     "Tom earns $15 per hours worked. How much does he earn in 8 hours?"),
    ("The printer prints 30 pages a minute. How many pages in 5 minutes?",
     "The printer prints 30 pages per min. How many pages in 5 minutes?"),
    ("He pays $120 a year. How much does he pay in 3 years?", "He pays $120 per annum. How much in 3 years?"),
    ("Tickets are $5 per person. How much do 4 people pay?", "Tickets are $5 a head. How much do 4 people pay?"),
    ("Ann swims once a week. How many times does she swim in 52 weeks?",
     "Ann swims once a wk. How many times does she swim in 52 weeks?"),
    ("Ann swims every wk. How many times does she swim in 52 weeks?",
     "Ann swims once a week. How many times does she swim in 52 weeks?"),
]

GROUP_BASES = [  # a price per dozen (or hundred) said as a price each: a twelfth (a hundredth) of it, refused
    ("He buys two dozen eggs for $3 a dozen. How much does he pay?",
     "He buys 24 eggs for $3 each. How much does he pay?", {3}),
    ("He buys 3 dozen eggs at $4 per dozen. How much does he pay?",
     "He buys 36 eggs at $4 apiece. How much does he pay?", {4}),
    ("Flyers cost $5 per hundred. How much do 300 flyers cost?",
     "Flyers cost $5 each. How much do 300 flyers cost?", {5}),
    ("Ann swims once a week. How many times does she swim in 52 weeks?",  # "once" a rate, not "once she swims"
     "Ann swims once a mo. How many times does she swim in 52 weeks?", {1}),
    ("Apples cost $3 per lb. How much do 4 pounds cost?",  # the table maps spellings, not one unit to another
     "Apples cost $3 per kg. How much do 4 pounds cost?", {3}),
]

PICKS_OF_ANOTHER_GROUP = [  # "one of the N" where the original picks from no group of N, or says a thing of all N
    ("Each of the 3 friends gets 4 apples; a boy from the group also gets 2. How many apples in all?",
     "One of the 3 friends gets 4 apples; a boy from the group also gets 2. How many apples in all?", {1}),
    ("Tom takes a key from the 5 on the hook. Each of the 3 doors opens with it. How many doors can he open?",
     "Tom takes a key from the 5 on the hook. One of the 3 doors opens with it. How many doors can he open?", {1}),
    # "Either of the 2 roads is 5 km long" says it of both roads (10 km in all); "one of the 2" of one road alone
    ("Either of the 2 roads is 5 km long. How long are the roads together?",
     "One of the 2 roads is 5 km long. How long are the roads together?", {1}),
    ("Any of the 4 boxes holds 6 pens. How many pens do the boxes hold?",
     "One of the 4 boxes holds 6 pens. How many pens do the boxes hold?", {1}),
    # a sentence that opens with a quote starts a sentence too (was a pick: passed)
    ('"Any of the 4 boxes holds 6 pens," says Tom. How many pens do the boxes hold?',
     '"One of the 4 boxes holds 6 pens," says Tom. How many pens do the boxes hold?', {1}),
]

PICKS_OF_THE_SAME_GROUP = [  # a pick of the same group, its count in digits or words: passes
    ("Tom takes a key from the 5 on the hook. Each of the 3 doors opens with it. How many doors can he open?",
     "Tom takes one of the 5 keys on the hook. Each of the 3 doors opens with it. How many doors can he open?"),
    ("Tom picks any of the five doors. What is the chance he wins?",
     "Tom picks one of the 5 doors. What is the chance he wins?"),
    ("Sam draws a card out of the 52 in the deck. What is the chance it is an ace?",
     "Sam draws one of the 52 cards in the deck. What is the chance it is an ace?"),
]


@pytest.mark.parametrize("original, rephrased", [*BASIS_SPELLINGS, *PICKS_OF_THE_SAME_GROUP])
def test_a_basis_spelled_another_way_or_a_pick_of_the_same_group_passes(original, rephrased):
    assert quantities.changed(original, rephrased) == set()
    rephrase.check_question(Seed("s", "c", 1, original, "", ""), rephrased)


@pytest.mark.parametrize("original, rephrased, refused", [*GROUP_BASES, *PICKS_OF_ANOTHER_GROUP])
def test_a_price_per_dozen_as_each_or_a_pick_of_another_group_is_refused(original, rephrased, refused):
    assert quantities.changed(original, rephrased) == {Fraction(x) for x in refused}
    with pytest.raises(rephrase.RephraseError, match="changed number"):
        rephrase.check_question(Seed("s", "c", 1, original, "", ""), rephrased)


def test_a_rates_basis_is_read_as_one_word_and_a_picks_group_by_its_count():
    per = [(q.value, q.per) for q in quantities.quantities(
        "$3 per lb, $15 an hr, 30 pages per min, $120 per annum, $5 a head, $2 per hours, $4 a dozen, once a wk")]
    assert per == [(3, "pound"), (15, "hour"), (30, "minute"), (120, "year"), (5, "person"), (2, "hour"),
                   (4, "dozen"), (12, ""), (1, "week")]  # 12: "a dozen" itself
    picks = [(q.value, q.group) for q in quantities.quantities(
        "one of the 5 marbles, one of the twenty-five boxes, one of the 2 dozen eggs, one of the boys") if q.pick]
    assert picks == [(1, 5), (1, 25), (1, 24), (1, None)]
