"""Seed problems: a built-in generator (the offline stand-in for the MATH data set), and importers for MATH- and
GSM8K-format files.

SOLAR took its seeds from MATH only, to stay clear of benchmarks such as GSM8K. The generator makes problems with a
worked solution and a final answer that it computed itself, deterministic by seed, across categories and levels
(1 = one step, small numbers; 3 = several steps, larger numbers).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

from backend.data import json_reason
from backend.synth.answers import extract_answer, format_number, to_number

CATEGORIES = ("arithmetic", "fractions_percentages", "linear_equations", "rate", "age", "money", "geometry",
              "counting")


REPEATS_TO_GIVE_UP = 1000  # generate(): repeats in a row after which a category and level counts as spent


class SeedError(ValueError):
    pass


@dataclass(frozen=True)
class Seed:
    id: str
    category: str
    level: int
    question: str
    solution: str  # worked solution ending in the final answer
    answer: str  # canonical final answer
    source: str = "generator"

    def to_dict(self) -> dict:
        return asdict(self)


def _finish(steps: list[str], answer: Fraction) -> tuple[str, str]:
    text = format_number(answer)
    return " ".join(steps) + f" The answer is \\boxed{{{text}}}.", text


def _arithmetic(rng: random.Random, level: int):
    hi = (12, 50, 200)[level - 1]
    a, b, c = rng.randint(2, hi), rng.randint(2, hi), rng.randint(2, 12)
    if level == 1:
        op = rng.choice(["+", "-", "×"])
        value = {"+": a + b, "-": a - b, "×": a * b}[op]
        return f"What is {a} {op} {b}?", _finish([f"{a} {op} {b} = {value}."], Fraction(value))
    value = a * c + b
    steps = [f"First multiply: {a} × {c} = {a * c}.", f"Then add {b}: {a * c} + {b} = {value}."]
    if level == 3:
        d = rng.randint(2, 9)
        steps.append(f"Finally subtract {d}: {value} - {d} = {value - d}.")
        return f"Compute {a} × {c} + {b} - {d}.", _finish(steps, Fraction(value - d))
    return f"Compute {a} × {c} + {b}.", _finish(steps, Fraction(value))


def _fractions(rng: random.Random, level: int):
    if level == 1:
        p, n = rng.choice([10, 20, 25, 50, 75]), rng.randint(1, 20) * 20
        value = Fraction(p, 100) * n
        return f"What is {p}% of {n}?", _finish([f"{p}% of {n} is {p}/100 × {n} = {format_number(value)}."], value)
    da, db = rng.randint(2, 9), rng.randint(2, 9)  # proper fractions: never a whole number such as 3/3
    a, b = Fraction(rng.randint(1, da - 1), da), Fraction(rng.randint(1, db - 1), db)
    if level == 2:
        value = a + b
        return (f"Add the fractions {a} and {b}. Give the answer in lowest terms.",
                _finish([f"With a common denominator, {a} + {b} = {format_number(value)}."], value))
    price, off = rng.randint(4, 40) * 5, rng.choice([10, 15, 20, 25, 30, 40])
    value = Fraction(price) * (100 - off) / 100
    return (f"A jacket costs ${price}. It is on sale for {off}% off. What is the sale price in dollars?",
            _finish([f"The discount is {off}% of {price} = {format_number(Fraction(price * off, 100))}.",
                     f"The sale price is {price} - {format_number(Fraction(price * off, 100))} = "
                     f"{format_number(value)}."], value))


def _linear(rng: random.Random, level: int):
    x, a = rng.randint(-10 if level == 3 else 1, 12), rng.randint(2, 9)
    b = rng.randint(1, 30)
    if level == 1:
        return f"Solve for x: x + {b} = {x + b}.", _finish([f"Subtract {b} from both sides: x = {x}."], Fraction(x))
    c = a * x + b
    steps = [f"Subtract {b} from both sides: {a}x = {c - b}.", f"Divide by {a}: x = {x}."]
    if level == 3:  # a·x + b = d·x + e with a > d
        a = rng.randint(4, 9)
        d = rng.randint(2, a - 1)
        e = (a - d) * x + b
        return (f"Solve for x: {a}x + {b} = {d}x + {e}.",
                _finish([f"Subtract {d}x from both sides: {a - d}x + {b} = {e}.",
                         f"Subtract {b}: {a - d}x = {e - b}.", f"Divide by {a - d}: x = {x}."], Fraction(x)))
    return f"Solve for x: {a}x + {b} = {c}.", _finish(steps, Fraction(x))


def _rate(rng: random.Random, level: int):
    speed, hours = rng.randint(3, 12) * 5, rng.randint(2, 6)
    if level == 1:
        return (f"A car travels at {speed} km per hour for {hours} hours. How many kilometres does it travel?",
                _finish([f"Distance = speed × time = {speed} × {hours} = {speed * hours} km."],
                         Fraction(speed * hours)))
    workers, days = rng.randint(2, 6), rng.randint(2, 8)
    more = workers * rng.randint(2, 3)
    value = Fraction(workers * days, more)
    return (f"{workers} workers build a wall in {days} days. Working at the same rate, how many days would {more} "
            "workers need?", _finish([f"The job takes {workers} × {days} = {workers * days} worker-days.",
                                      f"{more} workers need {workers * days} / {more} = {format_number(value)} days."],
                                     value))


def _age(rng: random.Random, level: int):
    child, gap = rng.randint(3, 15), rng.randint(20, 35)
    if level == 1:
        return (f"Maria is {child} years old. Her mother is {gap} years older. How old is her mother?",
                _finish([f"{child} + {gap} = {child + gap}."], Fraction(child + gap)))
    k = rng.randint(2, 4)
    years = rng.randint(2, 10)
    parent = k * child
    return (f"A father is {k} times as old as his son. The son is {child}. How old will the father be in {years} "
            "years?", _finish([f"The father is {k} × {child} = {parent} now.",
                               f"In {years} years he will be {parent} + {years} = {parent + years}."],
                              Fraction(parent + years)))


def _money(rng: random.Random, level: int):
    n, price = rng.randint(2, 12), rng.randint(2, 20)
    if level == 1:
        return (f"Pencils cost ${price} each. How much do {n} pencils cost in dollars?",
                _finish([f"{n} × {price} = {n * price}."], Fraction(n * price)))
    paid = (n * price // 10 + 1 + rng.randint(0, 3)) * 10
    return (f"Sam buys {n} notebooks at ${price} each and pays with ${paid}. How much change does he get?",
            _finish([f"The notebooks cost {n} × {price} = {n * price}.",
                     f"The change is {paid} - {n * price} = {paid - n * price}."], Fraction(paid - n * price)))


def _geometry(rng: random.Random, level: int):
    w, h = rng.randint(2, 20), rng.randint(2, 20)
    if level == 1:
        return (f"A rectangle is {w} cm wide and {h} cm long. What is its area in square centimetres?",
                _finish([f"Area = {w} × {h} = {w * h}."], Fraction(w * h)))
    if level == 2:
        return (f"A rectangle is {w} m wide and {h} m long. What is its perimeter in metres?",
                _finish([f"Perimeter = 2 × ({w} + {h}) = {2 * (w + h)}."], Fraction(2 * (w + h))))
    a, b = rng.choice([(3, 4), (5, 12), (6, 8), (8, 15), (9, 12), (7, 24)])
    c = math.isqrt(a * a + b * b)
    return (f"A right triangle has legs of length {a} and {b}. How long is the hypotenuse?",
            _finish([f"By Pythagoras, c² = {a}² + {b}² = {a * a + b * b}, so c = {c}."], Fraction(c)))


def _counting(rng: random.Random, level: int):
    n = rng.randint(3, 7 if level < 3 else 9)
    if level == 1:
        shirts, pants = rng.randint(2, 6), rng.randint(2, 6)
        return (f"You have {shirts} shirts and {pants} pairs of trousers. How many different outfits of one shirt "
                "and one pair of trousers can you make?",
                _finish([f"{shirts} × {pants} = {shirts * pants}."], Fraction(shirts * pants)))
    k = rng.randint(2, min(3, n - 1))
    if level == 2:
        return (f"In how many ways can {n} people stand in a line?",
                _finish([f"{n}! = {math.factorial(n)}."], Fraction(math.factorial(n))))
    return (f"How many ways are there to choose {k} students from a class of {n}?",
            _finish([f"C({n}, {k}) = {n}! / ({k}! × {n - k}!) = {math.comb(n, k)}."], Fraction(math.comb(n, k))))


GENERATORS: dict[str, Callable] = {"arithmetic": _arithmetic, "fractions_percentages": _fractions,
                                   "linear_equations": _linear, "rate": _rate, "age": _age, "money": _money,
                                   "geometry": _geometry, "counting": _counting}


def generate(n: int, seed: int = 0, categories: list[str] | None = None, levels: list[int] | None = None) -> list[Seed]:
    """`n` distinct problems, the same for the same arguments; categories and levels cycle so every one is
    covered."""
    cats = categories or list(CATEGORIES)
    lv = levels or [1, 2, 3]
    bad = [c for c in cats if c not in GENERATORS]
    if bad:
        raise SeedError(f"Unknown categories {bad}; choose from {', '.join(CATEGORIES)}.")
    if any(level not in (1, 2, 3) for level in lv):
        raise SeedError("levels are 1, 2 or 3.")
    out: list[Seed] = []
    seen: set[str] = set()
    # Each problem once: a category and level draws from a small space (7 people in a line, a 6-8-10 triangle), so
    # 1000 draws held 213 repeats, the same pair trained on several times. A repeat is skipped and drawing goes on
    # (the problems before it stay as they were); a category and level that gave REPEATS_TO_GIVE_UP repeats in a
    # row is spent and passed over, and a choice too narrow for n distinct problems is refused.
    cells = [(c, level) for level in lv for c in cats]
    repeats = dict.fromkeys(cells, 0)
    i = 0
    while len(out) < n:
        cat, level = cats[i % len(cats)], lv[(i // len(cats)) % len(lv)]
        if repeats[cat, level] < REPEATS_TO_GIVE_UP:
            rng = random.Random(f"{seed}-{i}")
            question, (solution, answer) = GENERATORS[cat](rng, level)
            if question in seen:
                repeats[cat, level] += 1
            else:
                repeats[cat, level] = 0
                seen.add(question)
                out.append(Seed(f"gen-{seed}-{i}", cat, level, question, solution, answer))
        elif min(repeats.values()) >= REPEATS_TO_GIVE_UP:
            raise SeedError(f"The chosen categories and levels give only {len(out)} distinct problems, not {n}: "
                            "add categories or levels, or ask for fewer seeds.")
        i += 1
    return out


def read_records(path: Path, label: str) -> list[tuple[int, dict]]:
    """(number, record) of a JSON Lines file (its line) or a .json array (its position): seed and benchmark files."""
    path = Path(path)
    if not path.exists():
        raise SeedError(f"Seed file {path} does not exist.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as exc:
            raise SeedError(f"{label} is not valid JSON: {exc}")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise SeedError(f"{label}, line {n}, column {exc.colno}: not valid JSON ({json_reason(exc)}).")
    if not rows:
        raise SeedError(f"{label} holds no records.")
    return rows


def _need(label: str, n: int, row: dict, fields: tuple[str, ...], fmt: str) -> None:
    """`n`: the record's line in a JSONL file, its position in a JSON array."""
    if not isinstance(row, dict):
        raise SeedError(f"{label}, record {n}: expected an object with {', '.join(fields)}.")
    missing = [f for f in fields if f not in row]
    if missing:
        raise SeedError(f"{label}, record {n}: missing {', '.join(missing)} — a {fmt} record has "
                        f"{', '.join(fields)}.")
    # a number or list where text belongs raised a TypeError, not an error naming the file and record
    wrong = [f for f in fields if not isinstance(row[f], str)]
    if wrong:
        raise SeedError(f"{label}, record {n}: {', '.join(wrong)} must be text — a {fmt} record's "
                        f"{', '.join(fields)} are strings.")


def _uid(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def import_math(path: Path, label: str | None = None) -> list[Seed]:
    """MATH-format records: problem, level ("Level 3"), type, solution with \\boxed{answer}. `label` names the
    file in errors (default its name; the page passes the uploaded file's name, not the stored one)."""
    label = label or Path(path).name
    seeds = []
    for n, row in read_records(path, label):
        _need(label, n, row, ("problem", "solution"), "MATH")
        answer = extract_answer(row["solution"]) if "\\boxed" in row["solution"] else None
        if not answer:
            raise SeedError(f"{label}, record {n}: the solution has no \\boxed{{…}} final answer.")
        level = (str(row.get("level", "Level 1")).split() or ["1"])[-1]  # "" or no level: level 1
        seeds.append(Seed(_uid("math", row["problem"]), str(row.get("type", "math")).lower().replace(" ", "_"),
                          int(level) if level.isdigit() else 1, row["problem"], row["solution"], answer, "MATH"))
    return seeds


def import_gsm8k(path: Path, label: str | None = None) -> list[Seed]:
    """GSM8K-format records: question, answer whose last line is '#### n'. `label`: as for import_math."""
    label = label or Path(path).name
    seeds = []
    for n, row in read_records(path, label):
        _need(label, n, row, ("question", "answer"), "GSM8K")
        if "####" not in row["answer"]:
            raise SeedError(f"{label}, record {n}: the answer does not end with '#### <number>'.")
        final = row["answer"].rsplit("####", 1)[1].strip()
        if to_number(final) is None:
            raise SeedError(f"{label}, record {n}: final answer {final!r} is not a number.")
        solution = row["answer"].rsplit("####", 1)[0].strip() + f" The answer is \\boxed{{{final}}}."
        seeds.append(Seed(_uid("gsm8k", row["question"]), "word_problem", 1, row["question"], solution, final,
                          "GSM8K"))
    return seeds


def load_seeds(source: str, n: int | None = None, seed: int = 0, categories=None, levels=None,
               label: str | None = None) -> list[Seed]:
    """'generator' (n problems), or a MATH / GSM8K file (the format is recognised from its fields). `label` names
    the file in errors: an upload is stored as '<content hash>-<name>', which the user never chose."""
    if source == "generator":
        return generate(n or 100, seed, categories, levels)
    label = label or Path(source).name
    rows = read_records(Path(source), label)
    first = rows[0][1] if rows else {}
    load = import_math if isinstance(first, dict) and "problem" in first else import_gsm8k
    # a problem the file holds twice (the same id: a hash of its text) is one seed, not two identical pairs
    unique: dict[str, Seed] = {}
    for s in load(Path(source), label):
        unique.setdefault(s.id, s)
    seeds = list(unique.values())
    if levels:
        seeds = [s for s in seeds if s.level in levels]
    return seeds[:n] if n else seeds
