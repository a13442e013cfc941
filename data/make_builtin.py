"""Make the small built-in data sets, so the embedded defaults train offline (no data set hub here).

    .venv/bin/python data/make_builtin.py     # rewrites data/*.txt|jsonl deterministically

They are template-generated from a table of capitals and from arithmetic whose answers are computed: tiny, but
true, and in the layouts of the paper's sets (Alpaca-GPT4, OpenOrca, UltraFeedback-style preferences). Real runs
should point at real files or Hub ids.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"), ("Brazil", "Brasília"),
    ("Argentina", "Buenos Aires"), ("Australia", "Canberra"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Poland", "Warsaw"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Mexico", "Mexico City"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("South Korea", "Seoul"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Czechia", "Prague"), ("Denmark", "Copenhagen"),
    ("Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"), ("Nigeria", "Abuja"),
    ("Morocco", "Rabat"), ("Indonesia", "Jakarta"), ("New Zealand", "Wellington"), ("Cuba", "Havana"),
    ("Iceland", "Reykjavik"),
]
WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
         11: "eleven", 12: "twelve"}
SYSTEM = "You are a helpful assistant. Answer briefly and correctly."


def arithmetic(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    op = rng.choice(["times", "plus", "minus"])
    value = {"times": a * b, "plus": a + b, "minus": a - b}[op]
    return f"{a} {op} {b}", value, f"{WORDS[a]} {op} {WORDS[b]}"


def main() -> None:
    rng = random.Random(2312_15166)
    corpus, alpaca, orca, prefs = [], [], [], []
    for country, capital in CAPITALS:
        corpus.append(f"The capital of {country} is {capital}. {capital} is the largest administrative centre of "
                      f"{country}, and the government of {country} meets in {capital}.")
        alpaca.append({"instruction": f"What is the capital of {country}?", "input": "",
                       "output": f"The capital of {country} is {capital}."})
        orca.append({"system_prompt": SYSTEM, "question": f"Name the capital city of {country}.",
                     "response": f"{capital} is the capital of {country}."})
        wrong = rng.choice([c for k, c in CAPITALS if k != country])
        prefs.append({"prompt": f"What is the capital of {country}?", "chosen": f"The capital of {country} is "
                      f"{capital}.", "rejected": f"The capital of {country} is {wrong}."})
    for _ in range(160):
        expr, value, spoken = arithmetic(rng)
        corpus.append(f"{spoken.capitalize()} is {value}. In digits: {expr} = {value}.")
        alpaca.append({"instruction": "Compute the result.", "input": f"{expr}", "output": f"{expr} = {value}."})
        orca.append({"system_prompt": SYSTEM, "question": f"What is {spoken}?", "response": f"{spoken.capitalize()}"
                     f" is {value}."})
        off = rng.choice([-10, -2, -1, 1, 2, 10])
        prefs.append({"prompt": f"What is {expr}?", "chosen": f"{expr} = {value}.",
                      "rejected": f"{expr} = {value + off}."})
    (HERE / "facts-corpus.txt").write_text("\n".join(corpus) + "\n")
    for name, rows in (("alpaca-mini", alpaca), ("orca-mini", orca), ("prefs-mini", prefs)):
        rng.shuffle(rows)
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()
