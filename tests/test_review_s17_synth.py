"""Synthetic math, review 17: the changed-number check reads quantities as values (a mixed number, a fraction, a
percent, cents, a sign), a boxed mixed number is its value, and the generator's categories keep their shares at
large n with every answer recomputed here from the question's text alone."""

from __future__ import annotations

import collections
import math
import random
import re
from fractions import Fraction

import pytest

from backend.synth.answers import extract_answer, same_answer, to_number
from backend.synth.rephrase import RephraseError, RulesRephraser, check_question
from backend.synth.seeds import CATEGORIES, GENERATORS, Seed, generate


def _check(question: str, rephrased: str) -> None:
    check_question(Seed("s", "c", 1, question, "", "1"), rephrased)


# ---------------------------------------------------------------- the changed-number check

CHANGED = [  # (seed question, rephrased question, the new quantity the error names)
    ("Add 2 1/2 cups of flour.", "Add 1 1/2 cups of flour.", "1.5"),  # read as 2, 1, 2 this passed
    ("Add 2 1/2 cups of flour.", "Add 2 cups of flour.", "2"),
    ("Add the fractions 3/4 and 2/5.", "Add the fractions 3/5 and 2/4.", "0.5, 0.6"),  # the same four digits
    ("Solve for x: x + 5 = -3.", "Solve for x: x + 5 = 3.", "3"),  # the sign was dropped
    ("The temperature is -3 degrees.", "The temperature is 3 degrees.", "3"),
    ("A jacket costs $40. It is 25% off.", "A jacket costs $40. It is $25 off.", "25"),
    ("It is 25% off.", "It is 30% off.", "0.3"),
    ("A pen costs $1.50.", "A pen costs 1 dollar and 60 cents.", "1.6"),
    ("Pencils cost $10 each.", "Pencils cost eleven dollars each.", "11"),  # words were never read
    ("There are twenty-five boxes.", "There are 20 boxes.", "20"),  # "twenty-five" allowed 20 and 5
    ("He is 3 times as old.", "He is twice as old.", "2"),
    ("A third of 90 students pass.", "A quarter of 90 students pass.", "0.25"),
]
SAME = [  # the same quantities in another notation
    ("Add 1 1/2 cups of flour.", "Add 1.5 cups of flour."),
    ("Add 1 1/2 cups of flour.", "Add one and a half cups of flour."),
    ("Add one and a half cups of flour.", "Add 1 1/2 cups of flour."),  # "1 1/2" was refused as 2
    ("Pour 1 1/2 cups.", "Pour 3/2 cups."),
    ("Add 3/4 cup.", "Add 0.75 cup."),
    (r"What is $\frac{3}{4}$ of 20?", "What is three-fourths of 20?"),
    ("Two thirds of 90 students pass.", "2/3 of 90 students pass."),
    ("What is 50% of 80?", "What is 0.5 of 80?"),
    ("What is half of 80?", "What is 50% of 80?"),
    ("It is 25% off.", "It is 25 percent off."),
    ("A pen costs $1.50.", "A pen costs 1 dollar and 50 cents."),
    ("A pen costs 50 cents.", "A pen costs $0.50."),
    ("A pen costs $1.50.", "A pen costs 150 cents."),
    ("Solve for x: 5x + 3 = 2x + -6.", "Solve for x: 5x + 3 = 2x - 6."),
    ("What is 12 - 3?", "What is 12 + (-3)?"),
    ("The temperature is -3 degrees.", "The temperature is negative three degrees."),
    ("What is 12/4?", "What is 12 divided by 4?"),
    ("The third worker earns $5.", "The 3rd worker earns $5."),
    ("Pencils cost $10 each. How much do 2 pencils cost?", "Each one costs ten dollars. Which one is cheaper?"),
]


from tests.test_review_s18_quantities import CHANGED as CHANGED_IN_WORDS, SAME as SAME_IN_WORDS  # noqa: E402
from tests.test_review_s19_synth import CHANGED as CHANGED_19, SAME as SAME_19  # noqa: E402


@pytest.mark.parametrize("question, rephrased, new", CHANGED + CHANGED_IN_WORDS + CHANGED_19)
def test_a_changed_quantity_is_refused_in_any_notation(question, rephrased, new):
    with pytest.raises(RephraseError, match=f"has {re.escape(new)}, which the original has neither"):
        _check(question, rephrased)


@pytest.mark.parametrize("question, rephrased", SAME + SAME_IN_WORDS + SAME_19)
def test_the_same_quantity_in_another_notation_passes(question, rephrased):
    _check(question, rephrased)


def test_a_boxed_mixed_number_is_its_value():
    """to_number dropped the space: "2 1/2" read 21/2, so a reply of 10.5 matched an answer of 2 1/2."""
    assert [to_number(t) for t in ("2 1/2", "-1 3/4", "2\\frac{1}{2}", "12 1/2%", "1 000", "3/2")] == [
        Fraction(5, 2), Fraction(-7, 4), Fraction(5, 2), Fraction(1, 8), Fraction(1000), Fraction(3, 2)]
    assert same_answer("2 1/2", "2.5") and not same_answer("2 1/2", "10.5")


# ---------------------------------------------------------------- the generator

F = r"(\d+/\d+)"


ORACLE = [  # (question pattern, answer from the matched numbers): each template recomputed from its text alone
    (r"What is (\d+) \+ (\d+)\?", lambda a, b: a + b), (r"What is (\d+) - (\d+)\?", lambda a, b: a - b),
    (r"What is (\d+) × (\d+)\?", lambda a, b: a * b), (r"What is (\d+) ÷ (\d+)\?", lambda a, b: a / b),
    (r"Compute (\d+) × (\d+) \+ (\d+)\.", lambda a, c, b: a * c + b),
    (r"Compute (\d+) × (\d+) \+ (\d+) - (\d+)\.", lambda a, c, b, d: a * c + b - d),
    (r"What is (\d+)% of (\d+)\?", lambda p, n: p * n / 100), (rf"What is {F} of (\d+)\?", lambda f, n: f * n),
    (r"What percentage of (\d+) is (\d+)\?", lambda w, p: 100 * p / w),
    (rf"Add the fractions {F} and {F}\. Give the answer in lowest terms\.", lambda a, b: a + b),
    (rf"Subtract {F} from {F}\. Give the answer in lowest terms\.", lambda b, a: a - b),
    (rf"Multiply the fractions {F} and {F}\. Give the answer in lowest terms\.", lambda a, b: a * b),
    (r"An? [a-z]+ costs \$(\d+)\. It is on sale for (\d+)% off\. What is the sale price in dollars\?",
     lambda p, o: p * (1 - o / 100)),
    (r"A village had (\d+) people\. Its population grew by (\d+)%\. How many people live there now\?",
     lambda n, p: n * (1 + p / 100)),
    (r"A price of \$(\d+) is cut by (\d+)%, and the new price is then cut by (\d+)%\. What is the final price in "
     r"dollars\?", lambda p, a, b: p * (1 - a / 100) * (1 - b / 100)),
    (r"Solve for x: x \+ (\d+) = (-?\d+)\.", lambda b, c: c - b), (r"Solve for x: x - (\d+) = (-?\d+)\.",
                                                                      lambda b, c: c + b),
    (r"Solve for x: (\d+)x = (-?\d+)\.", lambda a, c: c / a),
    (r"Solve for x: (\d+)x \+ (\d+) = (-?\d+)\.", lambda a, b, c: (c - b) / a),
    (r"Solve for x: (\d+)x - (\d+) = (-?\d+)\.", lambda a, b, c: (c + b) / a),
    (r"Solve for x: (\d+)x \+ (\d+) = (\d+)x \+ (\d+)\.", lambda a, b, d, e: (e - b) / (a - d)),
    (r"Solve for x: (\d+)x \+ (\d+) = (\d+)x - (\d+)\.", lambda a, b, d, e: (-e - b) / (a - d)),
    (r"An? [a-z]+ travels at (\d+) km per hour for (\d+) hours\. How many kilometres does it travel\?",
     lambda s, h: s * h),
    (r"An? [a-z ]+ makes (\d+) [a-z]+ per minute\. How many [a-z]+ does it make in (\d+) minutes\?",
     lambda p, m: p * m),
    (r"\w+ drives (\d+) km in (\d+) hours\. What is the average speed in km per hour\?", lambda d, h: d / h),
    (r"(\d+) workers [a-z ]+ in (\d+) days\. Working at the same rate, how many days would (\d+) workers need\?",
     lambda w, d, m: w * d / m),
    (r"Two trains leave the same station at the same time in opposite directions, one at (\d+) km per hour and "
     r"the other at (\d+) km per hour\. After how many hours are they (\d+) km apart\?", lambda a, b, d: d / (a + b)),
    (r"One pipe fills a \w+ in (\d+) hours and another fills it in (\d+) hours\. How many hours do the two pipes "
     r"take to fill it together\?", lambda a, b: 1 / (1 / a + 1 / b)),
    (r"A cyclist leaves town riding at (\d+) km per hour\. (\d+) hours later a car follows on the same road at "
     r"(\d+) km per hour\. How many hours after it starts does the car catch up\?", lambda s, h, f: s * h / (f - s)),
    (r"\w+ is (\d+) years old\. \w+'s \w+ is (\d+) years older\. How old is the \w+\?", lambda c, g: c + g),
    (r"\w+ is (\d+) years old\. How old was \w+ (\d+) years ago\?", lambda c, y: c - y),
    (r"\w+'s \w+ is (\d+) times as old as \w+\. \w+ is (\d+)\. How old will the \w+ be in (\d+) years\?",
     lambda k, c, y: k * c + y),
    (r"The ages of \w+ and \w+ add up to (\d+)\. \w+ is (\d+) years older than \w+\. How old is \w+\?",
     lambda t, g: (t + g) / 2),
    (r"[A-Z][a-z]+ cost \$(\d+) each\. How much do (\d+) [a-z]+ cost in dollars\?", lambda p, n: p * n),
    (r"\w+ has \$(\d+) and spends \$(\d+)\. How many dollars are left\?", lambda h, s: h - s),
    (r"\w+ buys (\d+) [a-z]+ at \$(\d+) each and pays with \$(\d+)\. How much change does \w+ get\?",
     lambda n, p, paid: paid - n * p),
    (r"\w+ buys (\d+) [a-z]+ at \$(\d+) each and (\d+) [a-z]+ at \$(\d+\.\d\d) each\. How much does \w+ spend in "
     r"dollars\?", lambda n, p, m, q: n * p + m * q),
    (r"\w+ has \$(\d+) saved and saves \$(\d+) more each week\. A [a-z ]+ costs \$(\d+)\. After how many weeks can "
     r"\w+ buy it\?", lambda s, w, c: (c - s) / w),
    (r"A rectangle is (\d+) c?m wide and (\d+) c?m long\. What is its area in square \w+\?", lambda w, h: w * h),
    (r"A square has sides of (\d+) c?m\. What is its area in square \w+\?", lambda s: s * s),
    (r"A triangle has a base of (\d+) c?m and a height of (\d+) c?m\. What is its area in square \w+\?",
     lambda b, h: b * h / 2),
    (r"A rectangle is (\d+) c?m wide and (\d+) c?m long\. What is its perimeter in \w+\?", lambda w, h: 2 * w + 2 * h),
    (r"A triangle has sides of (\d+) c?m, (\d+) c?m and (\d+) c?m\. What is its perimeter in \w+\?",
     lambda a, b, c: a + b + c),
    (r"A rectangle has an area of (\d+) square \w+ and a width of (\d+) c?m\. How long is it in \w+\?",
     lambda a, w: a / w),
    (r"A box is (\d+) c?m long, (\d+) c?m wide and (\d+) c?m high\. What is its volume in cubic \w+\?",
     lambda a, b, c: a * b * c),
    (r"A right triangle has legs of length (\d+) and (\d+)\. How long is the hypotenuse\?",
     lambda a, b: math.isqrt(int(a * a + b * b))),
    (r"A right triangle has a hypotenuse of length (\d+) and one leg of length (\d+)\. How long is the other leg\?",
     lambda c, a: math.isqrt(int(c * c - a * a))),
    (r"You have (\d+) shirts and (\d+) pairs of trousers\. How many different outfits of one shirt and one pair of "
     r"trousers can you make\?", lambda a, b: a * b),
    (r"A café offers (\d+) starters, (\d+) main courses and (\d+) desserts\. How many different meals of one "
     r"starter, one main course and one dessert are there\?", lambda a, b, c: a * b * c),
    (r"A fair die with (\d+) faces is rolled (\d+) times\. How many different sequences of results are possible\?",
     lambda s, r: s ** int(r)),
    (r"In how many ways can (\d+) [a-z ]+\?", lambda n: math.prod(range(1, int(n) + 1))),
    (r"A [a-z ]+ of (\d+) members elects (.+), no member holding two posts\. In how many ways can it be done\?",
     lambda n, roles: math.prod(range(int(n) - len(re.split(r", | and ", roles)) + 1, int(n) + 1))),
    (r"In how many ways can (\d+) of (\d+) different [a-z]+ be placed in a row on a shelf\?",
     lambda k, n: math.factorial(int(n)) // math.factorial(int(n - k))),
    (r"How many codes of (\d+) characters can be made from (\d+) different symbols if no symbol is used twice\?",
     lambda k, n: math.factorial(int(n)) // math.factorial(int(n - k))),
    (r"How many ways are there to choose (\d+) [a-z]+ from an? [a-z]+ of (\d+)\?",
     lambda k, n: math.factorial(int(n)) // (math.factorial(int(k)) * math.factorial(int(n - k)))),
    (r"At a meeting, each of (\d+) people shakes hands once with every other person\. How many handshakes are "
     r"there\?", lambda n: sum(range(int(n)))),
    (r"How many diagonals does a convex polygon with (\d+) sides have\?", lambda n: n * (n - 3) / 2),
]


def independent_answer(question: str) -> Fraction:
    for pattern, answer in ORACLE:
        m = re.fullmatch(pattern, question)
        if m:
            args = [Fraction(x) if re.fullmatch(r"-?[\d./]+", x) else x for x in m.groups()]
            return Fraction(answer(*args))
    raise AssertionError(f"no template reads {question!r}")


def test_every_generated_answer_matches_an_independent_computation():
    seeds = generate(3000, seed=7)
    templates = collections.Counter()
    for s in seeds:
        assert to_number(s.answer) == independent_answer(s.question), s
        assert same_answer(extract_answer(s.solution), s.answer), s  # the worked solution ends in its answer
        templates[next(p for p, _ in ORACLE if re.fullmatch(p, s.question))] += 1
    assert len(templates) == len(ORACLE)  # every template was drawn and checked


def test_the_category_mix_keeps_its_shares_at_large_n():
    """Skipping a repeat to the next turn starved the small spaces: 5000 seeds were 25% arithmetic, 24.2% linear
    equations, 2.4% rate and 0.9% counting (rate held 190 problems in all, counting 43)."""
    seeds = generate(5000, seed=0)
    assert len({s.question for s in seeds}) == 5000
    by_cat = collections.Counter(s.category for s in seeds)
    assert set(by_cat) == set(CATEGORIES) and all(v == 625 for v in by_cat.values()), by_cat
    by_cell = collections.Counter((s.category, s.level) for s in seeds)
    assert min(by_cell.values()) >= 208 and max(by_cell.values()) <= 209, by_cell
    assert generate(5000, seed=0) == seeds and generate(300, seed=0) == seeds[:300]  # deterministic, a prefix
    assert [s.question for s in generate(50, seed=1)] != [s.question for s in seeds[:50]]
    assert max(int(x) for s in seeds for x in re.findall(r"\d+", s.question)) < 1000  # make_builtin.py's proof


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_and_level_offers_thousands_of_problems(category):
    for level in (1, 2, 3):
        draws = {GENERATORS[category](random.Random(f"space-{i}"), level)[0] for i in range(4000)}
        assert len(draws) >= 1500, (category, level, len(draws))


def test_the_rules_rephrasing_of_every_generated_problem_passes_the_number_check():
    from backend.synth.problems import ITEMS

    rules = RulesRephraser(0)
    for s in generate(2400, seed=5):
        check_question(s, s.question)
        q = rules.question(s.question)
        check_question(s, q)
        # reads as a sentence (review 18): 13 % of these read "what number of of", "years older than her than Elif",
        # "apiece of 59 people", "saves $24 more apiece week", "Given that Stickers …", ", After how many weeks …"
        assert not re.search(r"number of (?:of|can|do|does|did|is|are|will|more|remain)\b|than her than|apiece "
                             r"(?:of|week|day|month|year)\b", q), q
        capitals = "|".join([i.capitalize() for i in ITEMS] + ["After", "One", "Two", "Twice", "Together", "Now"])
        assert not re.search(rf"(?:Given that|,| and) (?:{capitals})\b", q), q
        assert not re.search(rf"(?:First|Next|Then|After that|Finally), (?:{capitals})\b", rules.solution(s.solution))


@pytest.mark.parametrize("question, rephrased", [
    ("Stickers cost $8 apiece. How many can Sam buy with $24?",
     "Given that stickers cost $8 apiece, how many can Sam buy with $24?"),
    ("How many of the 30 students passed?", "How many of the 30 students passed?"),
    ("At a meeting, each of 59 people shakes hands once with every other person. How many handshakes are there?",
     "Given that at a meeting, each of 59 people shakes hands once with every other person, what number of "
     "handshakes are there?"),
    ("Pens cost $5 each. How many pens can Sam buy with $20?",
     "Given that pens cost $5 apiece, what number of pens can Sam buy with $20?"),  # "Pens" before review 19
    ("Ruth is 25 years older than Elif. How old is Ruth?", "Given that Ruth is 25 years older than Elif, how old is "
                                                           "Ruth?"),
])
def test_the_rules_rephraser_swaps_words_only_where_the_sentence_takes_them(question, rephrased):
    assert RulesRephraser(0).question(question) == rephrased


def test_odd_text_is_read_without_an_error():
    """Whatever a model replies, the check says what is new (a RephraseError) or passes: it never fails itself."""
    odd = "third percent cents +cents cents 2 12/4.minus  1/0 -0x++2percent 9$\\frac{1}{2}9and "
    with pytest.raises(RephraseError):
        _check("What is 1 + 1?", odd)
    _check("one and", "one and")


def test_a_template_less_rephraser_ends_its_reply_where_it_writes_the_next_turn(tokenizer_dir):
    """A base model rephrasing reads the "user: …\\nassistant:" transcript and writes the next turn itself; SOLUTION's
    pattern swallowed that turn, and a verified pair stored it as SFT data. generate() is asked to stop at a new
    role line and the reply is cut there; the settings say so (replies cached before are not reused)."""
    import torch
    from transformers import AutoTokenizer

    from backend.chat import LoadedModel
    from backend.synth.rephrase import ModelRephraser
    from backend.synth.seeds import Seed

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = None
    run_on = (" QUESTION: What is 2 + 4?\nSOLUTION: 2 + 4 = 6. The answer is \\boxed{6}.\nuser: Rephrase this. "
              "Problem: What is 3 + 4?\nassistant: QUESTION: What is 3 + 4?\nSOLUTION: The answer is \\boxed{7}.")
    seen = {}

    class Base:
        device = torch.device("cpu")

        def generate(self, input_ids, attention_mask=None, **kw):
            seen.update(kw)
            add = torch.tensor([tok(run_on, add_special_tokens=False).input_ids] * input_ids.shape[0])
            return torch.cat([input_ids, add], 1)

    r = object.__new__(ModelRephraser)
    r.lm, r.max_new_tokens, r.temperature = LoadedModel("base", Base(), tok), 384, 0.0
    seed = Seed("s", "arithmetic", 1, "What is 2 + 4?", "2 + 4 = 6. The answer is \\boxed{6}.", "6")
    ((question, solution),) = r.rephrase([seed])
    assert question == "What is 2 + 4?" and solution == "2 + 4 = 6. The answer is \\boxed{6}."
    assert seen["stop_strings"] == ["\nuser:", "\nassistant:", "\nsystem:"]


@pytest.mark.parametrize("question, rephrased, passes", [
    ("What is the 3rd term of 2, 4, 6, 8?", "What is the 5th term of 2, 4, 6, 8?", False),  # passed: "5th" loose
    ("What is the third term of 2, 4, 6, 8?", "What is the 3rd term of 2, 4, 6, 8?", True),
    ("Add 2 1/2 cups of flour.", "Add 2 and 1/2 cups of flour.", True),  # was refused: "2 and 1/2" is 5/2
    ("Add 2 1/2 cups of flour.", "Add 2 and 1/3 cups of flour.", False),
])
def test_places_and_whole_and_fraction_read_as_written(question, rephrased, passes):
    try:
        _check(question, rephrased)
        got = True
    except RephraseError:
        got = False
    assert got == passes
