"""Synthetic math, review 18: the changed-number check reads the quantities words state. A count "one" ("3 apples"
→ "one apple") and "once" ("3 times a week" → "once a week") were never read, so a change to 1 passed, while a
pronoun "one" ("no one", "one of the boys", "which one", "the one who", "at once") must stay unread; "3 below zero"
read 3 and 0, "half a dozen" 1/2 and 12, "a dozen and a half" 12.5; "a pair", "a couple", "3 pairs" (6 things),
coins ("3 dimes" = 30 cents) and "doubled" were not read. Each case is checked both ways: the change is refused,
the faithful rephrasing passes."""

from __future__ import annotations

from fractions import Fraction

import pytest

from backend.synth import quantities


CHANGED = [  # (seed question, rephrased question, the new quantity the error names)
    # a count "one X" for the original's "a X" is a rewording only while no stated quantity was dropped for it
    ("3 pears cost $6. How much is a pear?", "One pear costs $6. How much is it?", "1"),
    ("A pen costs $2. How much do 3 pens cost?", "Pens cost $2 each. How much does one pen cost?", "1"),
    ("A single pen costs $2. How much do 3 pens cost?", "A single pen costs $2. How much does 1 pen cost?", "1"),
    ("3 cans of soup cost $6.", "One can of soup costs $6.", "1"),  # "can" after "one" read as the verb
    # "3 pairs" may become "6 socks", "a pair" "one pair": the other way of counting, not any number anywhere
    ("Sam has 2 pairs of socks.", "Sam has 4 pairs of socks.", "4"),
    ("Sam buys a pair of shoes and 3 hats.", "Sam buys a pair of shoes and 1 hat.", "1"),
    ("I have 3 apples.", "I have one apple.", "1"),  # passed: a lone "one" was never read
    ("He ran 3 laps.", "He ran just one lap.", "1"),
    ("He has 3 apples and eats 2.", "He has 3 apples and eats one.", "1"),
    ("A pen costs $2. How much do 3 pens cost?", "A pen costs $2. How much does one pen cost?", "1"),
    ("He visits 3 times a week.", "He visits once a week.", "1"),  # passed: "once" was never read
    ("He tried 2 times.", "He tried only once.", "1"),
    ("It is 3 below zero.", "It is 3 degrees.", "3"),  # passed: the sign was lost, 3 and 0 were read
    ("The temperature is 5 degrees.", "The temperature is 5 degrees below zero.", "-5"),
    ("He has 3 shoes.", "He has a pair of shoes.", "2"),  # passed: "a pair" was not read
    ("He met 3 friends.", "He met a couple of friends.", "2"),
    ("She bought 10 eggs.", "She bought half a dozen eggs.", "6"),  # read as 1/2 and 12
    ("She bought a dozen and a half eggs.", "She bought 12.5 eggs.", "12.5"),  # passed: read as 12 + 1/2
    ("She bought one and a half dozen eggs.", "She bought 1.5 eggs.", "1.5"),  # passed: "dozen" was dropped
    ("He pays with 3 dimes.", "He pays with 4 dimes.", "0.4"),
    ("A pen costs a quarter.", "A pen costs 30 cents.", "0.3"),
    ("The price tripled.", "The price doubled.", "2"),  # passed: "doubled" / "tripled" were not read
]
SAME = [  # the same quantities, or a word that is no quantity
    ("You can see that 3 boxes hold 12 pens.", "One can see that 3 boxes hold 12 pens."),  # "one can of" counts
    ("One of the boys has 3 apples.", "One of the boys has three apples."),
    ("Nobody has 3 apples.", "No one has 3 apples."),  # refused once "one" is read: "no one" is nobody
    ("He buys 3 pens immediately.", "He buys 3 pens at once."),
    ("When he buys 3 pens, he pays $6.", "Once he buys 3 pens, he pays $6."),
    ("The boy who has 3 apples wins.", "The one who has 3 apples wins."),
    ("Is the red pen at $2 or the blue pen at $3 cheaper?", "Which one is cheaper, the red pen at $2 or the blue "
                                                            "one at $3?"),
    ("Pens cost $2. Which pen is cheapest?", "Pens cost $2. Which is the cheapest one?"),
    ("The boys pass the 3 balls to each other.", "The boys pass the 3 balls to one another."),
    ("A pen costs $2. How much do 3 pens cost?", "One pen costs $2. How much do three pens cost?"),
    ("Apples cost $3 per pound.", "Apples cost $3 for one pound."),
    ("Each ticket costs $4.", "One ticket costs $4."),
    ("He has 3 apples and eats 1.", "He has three apples and eats one."),
    ("There is a single red ball and 4 blue balls.", "There is only one red ball and 4 blue balls."),
    ("Ann is 5 years older than her brother, who is 7.", "Ann's brother is 7; she is 5 years older than that one."),
    ("He tried once.", "He tried 1 time."),
    ("Once a week he runs 3 miles.", "He runs 3 miles once a week."),
    ("It is 3 below zero.", "It is -3 degrees."),  # refused: -3 was not among 3 and 0
    ("It is -3 degrees.", "It is 3 degrees below zero."),
    ("It is 5 °F below zero.", "It is negative five degrees Fahrenheit."),
    ("It is 4 degrees above zero.", "It is 4 degrees."),
    ("He has 2 shoes.", "He has a pair of shoes."),
    ("He has a pair of shoes.", "He has 2 shoes."),  # refused: "a pair" is 2
    ("She has one pair of socks.", "She has a pair of socks."),
    ("She has 3 pairs of socks.", "She has 6 socks."),
    ("A couple of boys each have 3 apples.", "Two boys each have 3 apples."),
    ("She bought 6 eggs.", "She bought half a dozen eggs."),
    ("She bought half a dozen eggs.", "She bought 6 eggs."),
    ("She bought a half dozen eggs.", "She bought 6 eggs."),
    ("She bought 18 eggs.", "She bought a dozen and a half eggs."),
    ("She bought 18 eggs.", "She bought one and a half dozen eggs."),
    ("She bought 18 eggs.", "She bought 1 1/2 dozen eggs."),
    ("She bought a dozen eggs.", "She bought 12 eggs."),
    ("A pen costs a quarter.", "A pen costs 25 cents."),
    ("A pen costs 25 cents.", "A pen costs a quarter."),
    ("A pen costs $0.25.", "A pen costs a quarter."),
    ("He pays with 3 quarters.", "He pays with 75 cents."),
    ("He pays with 3 dimes.", "He pays with 30 cents."),
    ("He pays with 30 cents.", "He pays with three dimes."),
    ("He pays with a nickel and 2 pennies.", "He pays with 5 cents and 2 cents."),
    ("Ann is twice as old as Bo.", "Ann is 2 times as old as Bo."),
    ("Ann is 3 times as old as Bo.", "Ann is thrice as old as Bo."),
    ("The price doubled to $8.", "The price became twice as much, $8."),
    ("What is half of 80?", "What is 1/2 of 80?"),
    ("Pencils cost $10 each. How much do 2 pencils cost?", "Each one costs ten dollars. Which one is cheaper?"),
]


# the cases run through test_review_s17_synth's two tests of the check (the same test, its notation cases beside these)


@pytest.mark.parametrize("text, values", [
    ("Three apples and one orange.", [3, 1]),
    ("No one knows which one of the 2 boys left at once.", [2]),
    ("It is 7 degrees Celsius below zero.", [-7]),
    ("half a dozen, a dozen and a half, 2 dozen", [6, 18, 24]),
    ("a pair of socks, 3 dimes, a penny", [2, Fraction(3, 10), Fraction(1, 100)]),
])
def test_the_values_words_state(text, values):
    assert [q.value for q in quantities.quantities(text) if not q.loose] == [Fraction(v) for v in values]
