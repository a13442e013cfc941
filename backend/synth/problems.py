"""The built-in problem generator's templates: one function per category, `(rng, level) -> (question, (solution,
answer))`, every answer computed here from the drawn numbers, never typed.

Each category and level holds several templates over wide ranges, so that every one offers thousands of distinct
problems: with two or three templates over small ranges, rate and counting held 190 and 43 problems in all, and
5000 distinct seeds were 25% arithmetic and 0.9% counting, not the eighth each that the round robin meant.
Every number in a question stays below 1000: data/make_builtin.py's held-out math set relies on it (a four-digit
number in each of its questions), and so do its names, none of which appears here.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Callable

from backend.synth.answers import format_number

NAMES = ["Sam", "Maria", "Ali", "Chen", "Nora", "Ben", "Zoe", "Omar", "Ruth", "Ivan", "Hana", "Luis", "Grace",
         "Tariq", "Elif", "Jonas", "Amara", "Pablo", "Mei", "Kofi"]
ITEMS = ["pencils", "erasers", "notebooks", "apples", "stickers", "tickets", "cups", "candles", "markers", "muffins"]
# primitive Pythagorean triples with a hypotenuse under 100; multiples give the rest
TRIPLES = [(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (12, 35, 37), (9, 40, 41), (28, 45, 53),
           (11, 60, 61), (16, 63, 65), (33, 56, 65), (48, 55, 73), (13, 84, 85), (36, 77, 85), (39, 80, 89),
           (65, 72, 97)]


def _finish(steps: list[str], answer: Fraction) -> tuple[str, str]:
    text = format_number(answer)
    return " ".join(steps) + f" The answer is \\boxed{{{text}}}.", text


def _money_text(x: Fraction) -> str:
    """$12, $2.50: a price with its cents."""
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.2f}"


def arithmetic(rng: random.Random, level: int):
    if level == 1:
        op = rng.choice(["+", "-", "×", "÷"])
        if op in "+-":
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            value = a + b if op == "+" else a - b
        elif op == "×":
            a, b = rng.randint(2, 20), rng.randint(2, 20)
            value = a * b
        else:  # a ÷ b that divides exactly
            value, b = rng.randint(2, 20), rng.randint(2, 20)
            a = value * b
        return f"What is {a} {op} {b}?", _finish([f"{a} {op} {b} = {format_number(Fraction(value))}."],
                                                 Fraction(value))
    hi = (50, 200)[level - 2]
    a, b, c = rng.randint(2, hi), rng.randint(2, hi), rng.randint(2, 12)
    value = a * c + b
    steps = [f"First multiply: {a} × {c} = {a * c}.", f"Then add {b}: {a * c} + {b} = {value}."]
    if level == 3:
        d = rng.randint(2, 9)
        steps.append(f"Finally subtract {d}: {value} - {d} = {value - d}.")
        return f"Compute {a} × {c} + {b} - {d}.", _finish(steps, Fraction(value - d))
    return f"Compute {a} × {c} + {b}.", _finish(steps, Fraction(value))


def _proper(rng: random.Random, hi: int = 12) -> Fraction:
    d = rng.randint(2, hi)
    return Fraction(rng.randint(1, d - 1), d)  # proper: never a whole number such as 3/3


def fractions(rng: random.Random, level: int):
    if level == 1:
        kind = rng.randrange(3)
        if kind == 0:
            p, n = rng.randrange(5, 100, 5), rng.randint(1, 49) * 20
            value = Fraction(p, 100) * n
            return f"What is {p}% of {n}?", _finish([f"{p}% of {n} is {p}/100 × {n} = {format_number(value)}."],
                                                    value)
        if kind == 1:
            f = _proper(rng)
            n = f.denominator * rng.randint(1, 80)
            value = f * n
            return (f"What is {f} of {n}?", _finish([f"{n} ÷ {f.denominator} = {n // f.denominator}, and "
                                                     f"{n // f.denominator} × {f.numerator} = {value}."], value))
        whole = rng.choice([20, 25, 40, 50, 80, 100, 200, 250, 400, 500])
        p = rng.choice([p for p in range(5, 100, 5) if whole * p % 100 == 0])
        part = whole * p // 100
        return (f"What percentage of {whole} is {part}?",
                _finish([f"{part} / {whole} = {format_number(Fraction(part, whole))} = {p}%."], Fraction(p)))
    if level == 2:
        a, b = _proper(rng), _proper(rng)
        kind = rng.randrange(3)
        if kind == 0:
            value = a + b
            return (f"Add the fractions {a} and {b}. Give the answer in lowest terms.",
                    _finish([f"With a common denominator, {a} + {b} = {format_number(value)}."], value))
        if kind == 1:
            a, b = max(a, b), min(a, b)
            if a == b:
                b = Fraction(b.numerator, b.denominator + 1)
            value = a - b
            return (f"Subtract {b} from {a}. Give the answer in lowest terms.",
                    _finish([f"With a common denominator, {a} - {b} = {format_number(value)}."], value))
        value = a * b
        return (f"Multiply the fractions {a} and {b}. Give the answer in lowest terms.",
                _finish([f"Multiply the numerators and the denominators: {a} × {b} = {format_number(value)}."],
                        value))
    kind = rng.randrange(3)
    if kind == 0:
        item = rng.choice(["jacket", "lamp", "bicycle", "backpack", "kettle", "chair", "guitar", "tent"])
        price, off = rng.randint(4, 80) * 5, rng.choice([10, 15, 20, 25, 30, 40, 50])
        cut = Fraction(price * off, 100)
        value = price - cut
        return (f"A {item} costs ${price}. It is on sale for {off}% off. What is the sale price in dollars?",
                _finish([f"The discount is {off}% of {price} = {format_number(cut)}.",
                         f"The sale price is {price} - {format_number(cut)} = {format_number(value)}."], value))
    if kind == 1:
        people, p = rng.randint(1, 45) * 20, rng.choice([5, 10, 15, 20, 25, 50])
        grew = Fraction(people * p, 100)
        return (f"A village had {people} people. Its population grew by {p}%. How many people live there now?",
                _finish([f"The growth is {p}% of {people} = {format_number(grew)}.",
                         f"Now {people} + {format_number(grew)} = {format_number(people + grew)} live there."],
                        people + grew))
    price, p, q = rng.randint(1, 20) * 20, rng.choice([10, 20, 25, 50]), rng.choice([10, 20, 25, 50])
    first = Fraction(price * (100 - p), 100)
    value = first * (100 - q) / 100
    return (f"A price of ${price} is cut by {p}%, and the new price is then cut by {q}%. What is the final price "
            "in dollars?", _finish([f"After the first cut: {price} × {100 - p}/100 = {format_number(first)}.",
                                    f"After the second: {format_number(first)} × {100 - q}/100 = "
                                    f"{format_number(value)}."], value))


def linear(rng: random.Random, level: int):
    if level == 1:
        x, b = rng.randint(1, 50), rng.randint(1, 99)
        kind = rng.randrange(3)
        if kind == 0:
            return f"Solve for x: x + {b} = {x + b}.", _finish([f"Subtract {b} from both sides: x = {x}."],
                                                                Fraction(x))
        if kind == 1:
            return f"Solve for x: x - {b} = {x}.", _finish([f"Add {b} to both sides: x = {x} + {b} = {x + b}."],
                                                            Fraction(x + b))
        a = rng.randint(2, 12)
        return f"Solve for x: {a}x = {a * x}.", _finish([f"Divide both sides by {a}: x = {x}."], Fraction(x))
    x, a, b = rng.randint(-10 if level == 3 else 1, 30), rng.randint(2, 12), rng.randint(1, 60)
    if level == 3:  # a·x + b = d·x + e with a > d
        a = rng.randint(4, 12)
        d = rng.randint(2, a - 1)
        e = (a - d) * x + b
        right = f"{d}x + {e}" if e >= 0 else f"{d}x - {-e}"  # "2x - 6", not "2x + -6"
        return (f"Solve for x: {a}x + {b} = {right}.",
                _finish([f"Subtract {d}x from both sides: {a - d}x + {b} = {e}.",
                         f"Subtract {b}: {a - d}x = {e - b}.", f"Divide by {a - d}: x = {x}."], Fraction(x)))
    if rng.randrange(2):
        c = a * x - b
        return (f"Solve for x: {a}x - {b} = {c}.",
                _finish([f"Add {b} to both sides: {a}x = {c + b}.", f"Divide by {a}: x = {x}."], Fraction(x)))
    c = a * x + b
    return (f"Solve for x: {a}x + {b} = {c}.",
            _finish([f"Subtract {b} from both sides: {a}x = {c - b}.", f"Divide by {a}: x = {x}."], Fraction(x)))


def rate(rng: random.Random, level: int):
    if level == 1:
        kind = rng.randrange(3)
        if kind == 0:
            vehicle = rng.choice(["car", "bus", "train", "truck", "motorbike"])
            speed, hours = rng.randint(2, 24) * 5, rng.randint(2, 8)
            return (f"A {vehicle} travels at {speed} km per hour for {hours} hours. How many kilometres does it "
                    "travel?", _finish([f"Distance = speed × time = {speed} × {hours} = {speed * hours} km."],
                                       Fraction(speed * hours)))
        if kind == 1:
            machine, unit = rng.choice([("printer", "pages"), ("pump", "litres"), ("bottling machine", "bottles"),
                                        ("bakery oven", "rolls")])
            per, minutes = rng.randint(3, 40), rng.randint(2, 20)
            return (f"A {machine} makes {per} {unit} per minute. How many {unit} does it make in {minutes} "
                    "minutes?", _finish([f"{per} × {minutes} = {per * minutes}."], Fraction(per * minutes)))
        speed, hours = rng.randint(2, 24) * 5, rng.randint(2, 8)  # the distance stays below 1000
        name = rng.choice(NAMES)
        return (f"{name} drives {speed * hours} km in {hours} hours. What is the average speed in km per hour?",
                _finish([f"Speed = distance ÷ time = {speed * hours} ÷ {hours} = {speed}."], Fraction(speed)))
    if level == 2:
        job = rng.choice(["build a wall", "paint a house", "dig a ditch", "harvest a field", "pave a path"])
        workers, days = rng.randint(2, 12), rng.randint(2, 20)
        more = rng.choice([m for m in range(2, 61) if m != workers and workers * days % m == 0] or [workers * days])
        value = Fraction(workers * days, more)
        return (f"{workers} workers {job} in {days} days. Working at the same rate, how many days would {more} "
                "workers need?", _finish([f"The job takes {workers} × {days} = {workers * days} worker-days.",
                                          f"{more} workers need {workers * days} / {more} = {format_number(value)} "
                                          "days."], value))
    kind = rng.randrange(3)
    if kind == 0:
        s1, s2, hours = rng.randint(2, 24) * 5, rng.randint(2, 24) * 5, rng.randint(2, 8)
        apart = (s1 + s2) * hours
        while apart >= 1000:
            hours -= 1
            apart = (s1 + s2) * hours
        return (f"Two trains leave the same station at the same time in opposite directions, one at {s1} km per hour "
                f"and the other at {s2} km per hour. After how many hours are they {apart} km apart?",
                _finish([f"They separate at {s1} + {s2} = {s1 + s2} km per hour.",
                         f"{apart} ÷ {s1 + s2} = {hours} hours."], Fraction(hours)))
    if kind == 1:
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        tank = rng.choice(["tank", "pool", "cistern", "barrel"])
        value = Fraction(a * b, a + b)
        return (f"One pipe fills a {tank} in {a} hours and another fills it in {b} hours. How many hours do the two "
                "pipes take to fill it together?",
                _finish([f"Together they fill 1/{a} + 1/{b} = {format_number(Fraction(1, a) + Fraction(1, b))} of "
                         f"it per hour.", f"So they take 1 ÷ {format_number(Fraction(a + b, a * b))} = "
                                          f"{format_number(value)} hours."], value))
    slow, gap, head = rng.randint(2, 12) * 5, rng.randint(1, 8) * 5, rng.randint(1, 6)
    fast = slow + gap
    value = Fraction(slow * head, gap)
    return (f"A cyclist leaves town riding at {slow} km per hour. {head} hours later a car follows on the same road "
            f"at {fast} km per hour. How many hours after it starts does the car catch up?",
            _finish([f"The cyclist's lead is {slow} × {head} = {slow * head} km.",
                     f"The car closes it at {fast} - {slow} = {gap} km per hour.",
                     f"{slow * head} ÷ {gap} = {format_number(value)} hours."], value))


def age(rng: random.Random, level: int):
    name = rng.choice(NAMES)
    if level == 1:
        child = rng.randint(3, 15)
        if rng.randrange(2):
            relative, gap = rng.choice(["mother", "father", "aunt", "uncle"]), rng.randint(18, 40)
            return (f"{name} is {child} years old. {name}'s {relative} is {gap} years older. How old is the "
                    f"{relative}?", _finish([f"{child} + {gap} = {child + gap}."], Fraction(child + gap)))
        years = rng.randint(1, child - 1)
        return (f"{name} is {child} years old. How old was {name} {years} years ago?",
                _finish([f"{child} - {years} = {child - years}."], Fraction(child - years)))
    if level == 2:
        parent = rng.choice(["father", "mother", "grandmother", "grandfather"])
        child, k, years = rng.randint(3, 15), rng.randint(2, 5), rng.randint(2, 20)
        now = k * child
        return (f"{name}'s {parent} is {k} times as old as {name}. {name} is {child}. How old will the {parent} "
                f"be in {years} years?", _finish([f"The {parent} is {k} × {child} = {now} now.",
                                                   f"In {years} years: {now} + {years} = {now + years}."],
                                                  Fraction(now + years)))
    other = rng.choice([n for n in NAMES if n != name])
    younger, gap = rng.randint(2, 40), rng.randint(2, 30)
    total = 2 * younger + gap
    return (f"The ages of {name} and {other} add up to {total}. {name} is {gap} years older than {other}. How old "
            f"is {name}?", _finish([f"Twice {other}'s age is {total} - {gap} = {total - gap}, so {other} is "
                                    f"{younger}.", f"{name} is {younger} + {gap} = {younger + gap}."],
                                   Fraction(younger + gap)))


def money(rng: random.Random, level: int):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    n, price = rng.randint(2, 15), rng.randint(2, 25)
    if level == 1:
        if rng.randrange(2):
            return (f"{item.capitalize()} cost ${price} each. How much do {n} {item} cost in dollars?",
                    _finish([f"{n} × {price} = {n * price}."], Fraction(n * price)))
        has, spent = rng.randint(20, 500), rng.randint(1, 19)
        spent = has * spent // 20
        return (f"{name} has ${has} and spends ${spent}. How many dollars are left?",
                _finish([f"{has} - {spent} = {has - spent}."], Fraction(has - spent)))
    if level == 2:
        paid = (n * price // 10 + 1 + rng.randint(0, 3)) * 10
        return (f"{name} buys {n} {item} at ${price} each and pays with ${paid}. How much change does {name} get?",
                _finish([f"The {item} cost {n} × {price} = {n * price}.",
                         f"The change is {paid} - {n * price} = {paid - n * price}."], Fraction(paid - n * price)))
    if rng.randrange(2):
        other = rng.choice([i for i in ITEMS if i != item])
        m, cents = rng.randint(2, 9), rng.choice([25, 50, 75])
        p2 = rng.randint(1, 9) + Fraction(cents, 100)
        total = n * price + m * p2
        return (f"{name} buys {n} {item} at ${price} each and {m} {other} at ${_money_text(p2)} each. How much does "
                f"{name} spend in dollars?",
                _finish([f"The {item} cost {n} × {price} = {n * price}.",
                         f"The {other} cost {m} × {_money_text(p2)} = {format_number(m * p2)}.",
                         f"Together: {n * price} + {format_number(m * p2)} = {format_number(total)}."], total))
    weekly, weeks = rng.randint(3, 40), rng.randint(2, 20)
    start = rng.randint(0, 5) * 10
    cost = start + weekly * weeks  # at most 850
    thing = rng.choice(["bicycle", "game console", "telescope", "guitar", "camera"])
    return (f"{name} has ${start} saved and saves ${weekly} more each week. A {thing} costs ${cost}. After how many "
            f"weeks can {name} buy it?", _finish([f"{name} still needs {cost} - {start} = {cost - start}.",
                                                   f"{cost - start} ÷ {weekly} = {weeks} weeks."], Fraction(weeks)))


def geometry(rng: random.Random, level: int):
    w, h = rng.randint(2, 30), rng.randint(2, 30)
    unit = rng.choice(["cm", "m"])
    units = {"cm": "centimetres", "m": "metres"}[unit]
    square = f"square {units}"
    if level == 1:
        kind = rng.randrange(3)
        if kind == 0:
            return (f"A rectangle is {w} {unit} wide and {h} {unit} long. What is its area in {square}?",
                    _finish([f"Area = {w} × {h} = {w * h}."], Fraction(w * h)))
        if kind == 1:
            return (f"A square has sides of {w} {unit}. What is its area in {square}?",
                    _finish([f"Area = {w} × {w} = {w * w}."], Fraction(w * w)))
        value = Fraction(w * h, 2)
        return (f"A triangle has a base of {w} {unit} and a height of {h} {unit}. What is its area in {square}?",
                _finish([f"Area = {w} × {h} / 2 = {format_number(value)}."], value))
    if level == 2:
        kind = rng.randrange(3)
        if kind == 0:
            return (f"A rectangle is {w} {unit} wide and {h} {unit} long. What is its perimeter in {units}?",
                    _finish([f"Perimeter = 2 × ({w} + {h}) = {2 * (w + h)}."], Fraction(2 * (w + h))))
        if kind == 1:
            c = rng.randint(max(w, h) - min(w, h) + 1, w + h - 1)  # the triangle inequality holds
            return (f"A triangle has sides of {w} {unit}, {h} {unit} and {c} {unit}. What is its perimeter in "
                    f"{units}?", _finish([f"Perimeter = {w} + {h} + {c} = {w + h + c}."], Fraction(w + h + c)))
        return (f"A rectangle has an area of {w * h} {square} and a width of {w} {unit}. How long is it in {units}?",
                _finish([f"Length = area ÷ width = {w * h} ÷ {w} = {h}."], Fraction(h)))
    kind = rng.randrange(3)
    if kind == 2:
        d = rng.randint(2, 9)
        return (f"A box is {w} {unit} long, {h} {unit} wide and {d} {unit} high. What is its volume in cubic "
                f"{units}?", _finish([f"Volume = {w} × {h} × {d} = {w * h * d}."], Fraction(w * h * d)))
    a, b, c = rng.choice(TRIPLES)
    k = rng.randint(1, max(1, 300 // c))
    a, b, c = (a * k, b * k, c * k) if rng.randrange(2) else (b * k, a * k, c * k)
    if kind == 0:
        return (f"A right triangle has legs of length {a} and {b}. How long is the hypotenuse?",
                _finish([f"By Pythagoras, c² = {a}² + {b}² = {a * a + b * b}, so c = {c}."], Fraction(c)))
    return (f"A right triangle has a hypotenuse of length {c} and one leg of length {a}. How long is the other leg?",
            _finish([f"By Pythagoras, b² = {c}² - {a}² = {c * c - a * a}, so b = {b}."], Fraction(b)))


def counting(rng: random.Random, level: int):
    if level == 1:
        kind = rng.randrange(3)
        if kind == 0:
            shirts, pants = rng.randint(2, 30), rng.randint(2, 30)
            return (f"You have {shirts} shirts and {pants} pairs of trousers. How many different outfits of one "
                    "shirt and one pair of trousers can you make?",
                    _finish([f"{shirts} × {pants} = {shirts * pants}."], Fraction(shirts * pants)))
        if kind == 1:
            a, b, c = rng.randint(2, 15), rng.randint(2, 15), rng.randint(2, 15)
            return (f"A café offers {a} starters, {b} main courses and {c} desserts. How many different meals of one "
                    "starter, one main course and one dessert are there?",
                    _finish([f"{a} × {b} × {c} = {a * b * c}."], Fraction(a * b * c)))
        sides, rolls = rng.choice([2, 4, 6, 8, 10, 12, 20]), rng.randint(2, 4)
        return (f"A fair die with {sides} faces is rolled {rolls} times. How many different sequences of results "
                "are possible?", _finish([f"{sides} to the power {rolls} = {sides ** rolls}."],
                                         Fraction(sides ** rolls)))
    n = rng.randint(4, 99)
    if level == 2:
        kind = rng.randrange(4)
        if kind == 0:
            n = rng.randint(3, 12)
            thing = rng.choice(["people stand in a line", "books be arranged on a shelf",
                                "runners finish a race with no ties", "children sit on a bench"])
            return (f"In how many ways can {n} {thing}?", _finish([f"{n}! = {math.factorial(n)}."],
                                                                  Fraction(math.factorial(n))))
        if kind == 1:
            k = rng.randint(2, 4)
            group = rng.choice(["club", "committee", "choir", "chess club", "rowing team", "drama society",
                                "student council", "book club"])
            roles = ["a president", "a secretary", "a treasurer", "an archivist"][:k]
            said = ", ".join(roles[:-1]) + f" and {roles[-1]}"
            value = math.perm(n, k)
            return (f"A {group} of {n} members elects {said}, no member holding two posts. In how many ways can it "
                    "be done?", _finish([f"{' × '.join(str(n - i) for i in range(k))} = {value}."],
                                        Fraction(value)))
        if kind == 2:
            k = rng.randint(2, 4)
            value = math.perm(n, k)
            things = rng.choice(["books", "photos", "trophies", "plants", "vases"])
            return (f"In how many ways can {k} of {n} different {things} be placed in a row on a shelf?",
                    _finish([f"{' × '.join(str(n - i) for i in range(k))} = {value}."], Fraction(value)))
        k = rng.randint(2, 5)
        symbols = rng.randint(max(k, 4), 36)
        value = math.perm(symbols, k)
        return (f"How many codes of {k} characters can be made from {symbols} different symbols if no symbol is used "
                "twice?", _finish([f"{' × '.join(str(symbols - i) for i in range(k))} = {value}."], Fraction(value)))
    k = rng.randint(2, min(6, n - 1))
    kind = rng.choices(range(3), weights=(4, 1, 1))[0]  # handshakes and diagonals offer a hundred problems each
    if kind == 0:
        what = rng.choice([("students", "a class"), ("toppings", "a menu"), ("players", "a squad"),
                           ("books", "a shelf"), ("songs", "a playlist"), ("paintings", "a collection")])
        return (f"How many ways are there to choose {k} {what[0]} from {what[1]} of {n}?",
                _finish([f"C({n}, {k}) = {n}! / ({k}! × {n - k}!) = {math.comb(n, k)}."], Fraction(math.comb(n, k))))
    if kind == 1:
        return (f"At a meeting, each of {n} people shakes hands once with every other person. How many handshakes "
                "are there?", _finish([f"C({n}, 2) = {n} × {n - 1} / 2 = {math.comb(n, 2)}."],
                                      Fraction(math.comb(n, 2))))
    value = n * (n - 3) // 2
    return (f"How many diagonals does a convex polygon with {n} sides have?",
            _finish([f"{n} × ({n} - 3) / 2 = {value}."], Fraction(value)))


GENERATORS: dict[str, Callable] = {"arithmetic": arithmetic, "fractions_percentages": fractions,
                                   "linear_equations": linear, "rate": rate, "age": age, "money": money,
                                   "geometry": geometry, "counting": counting}
CATEGORIES = tuple(GENERATORS)
