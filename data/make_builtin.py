"""Make the small built-in data sets, so the embedded defaults train offline (no data set hub here).

    .venv/bin/python data/make_builtin.py     # rewrites data/*.txt|jsonl deterministically

They are template-generated from a table of capitals and from arithmetic whose answers are computed: tiny, but
true, and in the layouts of the paper's sets (Alpaca-GPT4, OpenOrca, UltraFeedback-style preferences). Real runs
should point at real files or Hub ids.

The evaluation sets are held out BY CONSTRUCTION (tests/test_heldout.py checks zero n-gram overlap):
  heldout-text.txt        facts about chemical elements and planets, which no training set mentions (perplexity)
  eval-math.jsonl         word problems with their own templates, names and a four-digit number in every question;
                          every number in a training question (built-in sets and backend/synth/seeds.py at any seed
                          count) is below 1000, so no evaluation question can equal a training question
  qa-closed-book.jsonl    closed-book QA: capitals the facts corpus teaches (answerable), questions about invented
                          places and people it never mentions (unanswerable: the right reply is to abstain), and
                          eval-math problems that invite "I don't know"
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


# ---------------------------------------------------------------- held-out evaluation sets

ELEMENTS = [("Hydrogen", "H", 1), ("Helium", "He", 2), ("Lithium", "Li", 3), ("Carbon", "C", 6),
            ("Nitrogen", "N", 7), ("Oxygen", "O", 8), ("Sodium", "Na", 11), ("Magnesium", "Mg", 12),
            ("Aluminium", "Al", 13), ("Silicon", "Si", 14), ("Sulfur", "S", 16), ("Chlorine", "Cl", 17),
            ("Potassium", "K", 19), ("Calcium", "Ca", 20), ("Iron", "Fe", 26), ("Copper", "Cu", 29),
            ("Zinc", "Zn", 30), ("Silver", "Ag", 47), ("Tin", "Sn", 50), ("Gold", "Au", 79), ("Mercury", "Hg", 80),
            ("Lead", "Pb", 82), ("Uranium", "U", 92)]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
INVENTED_PLACES = ["Veltravia", "Quendor", "Marosia", "Tethland", "Ostrevia", "Kalvennia", "Drummarch", "Pellucia",
                   "Savrinne", "Ulmerath", "Corvantis", "Blenmoor", "Itharia", "Zorvask", "Feldmarra", "Oskerun",
                   "Naveltia", "Gravemont", "Luthany", "Pirrandel"]
INVENTED_PEOPLE = [("Orla Brenstock", "chemist"), ("Idris Vantongeren", "explorer"), ("Mabel Quorrington", "poet"),
                   ("Teodor Illescu-Varn", "architect"), ("Signe Halvorsk", "composer"),
                   ("Ambrose Kettlewick", "astronomer"), ("Yuna Farrowdale", "painter"),
                   ("Cassius Drennmoor", "engineer"), ("Perpetua Vollendt", "botanist"),
                   ("Lorcan Ashbury-Teal", "novelist")]
PEOPLE_QUESTIONS = ["In which year was the {role} {name} born?", "Which prize did the {role} {name} win first?"]
# Names for eval-math: none of them appears in backend/synth/seeds.py or the built-in sets.
MATH_NAMES = ["Priya", "Tomasz", "Lena", "Oluwaseun", "Ingrid", "Mateo", "Keiko", "Farid"]


def eval_math(rng: random.Random) -> tuple[str, int]:
    """One held-out word problem; every question holds a number from 1000 to 9999 (never in training questions)."""
    name = rng.choice(MATH_NAMES)
    kind = rng.randrange(6)
    if kind == 0:
        a, b = rng.randint(1000, 4999), rng.randint(1000, 4999)
        return (f"{name}'s orchard has {a} apple trees and {b} pear trees. How many fruit trees grow in the "
                "orchard altogether?", a + b)
    if kind == 1:
        a = rng.randint(3000, 9999)
        b = rng.randint(1000, a - 1)
        return (f"A warehouse stored {a} crates until a lorry took away {b} of them. How many crates remain in "
                "the warehouse?", a - b)
    if kind == 2:
        k, n = rng.choice([6, 12, 18, 24]), rng.randint(1000, 3000)
        return (f"Every carton holds {k} eggs. {name}'s farm packs {n} full cartons in a week. How many eggs does "
                "the farm pack that week?", k * n)
    if kind == 3:
        a, d = rng.randint(1000, 2500), rng.randint(3, 9)
        return (f"A ferry carries {a} passengers across the bay every day. How many passengers does it carry in "
                f"{d} days?", a * d)
    if kind == 4:
        k = rng.randint(2, 6)
        q = rng.randint(-(-1000 // k), 1600)
        return (f"{name} shares {k * q} stickers equally among {k} albums. How many stickers go into each "
                "album?", q)
    a = rng.randint(1000, 5000)
    return (f"The odometer of {name}'s van read {a} kilometres in spring and {a + (b := rng.randint(100, 3999))} "
            "kilometres in autumn. How far did the van travel between the two readings?", b)


def heldout_sets() -> dict[str, list]:
    rng = random.Random(5_2026_11)  # its own generator: the training files above do not change
    text = [f"{name} carries the chemical symbol {sym}, and each of its atoms holds {num} "
            f"proton{'s' if num > 1 else ''} in the nucleus." for name, sym, num in ELEMENTS]
    text += [f"Counting outward from the Sun, {p} is the {ORDINALS[i]} planet of the solar system."
             for i, p in enumerate(PLANETS)]
    math = []
    for i in range(240):
        question, answer = eval_math(rng)
        math.append({"id": f"evalmath-{i}", "question": question, "answer": str(answer)})
    qa = [{"id": f"qa-cap-{i}", "question": f"In the present day, which city serves as the capital of {country}?",
           "answers": [capital], "answerable": True, "kind": "answerable"}
          for i, (country, capital) in enumerate(CAPITALS)]
    qa += [{"id": f"qa-place-{i}", "question": f"In the present day, which city serves as the capital of {place}?",
            "answers": [], "answerable": False, "kind": "unanswerable"} for i, place in enumerate(INVENTED_PLACES)]
    qa += [{"id": f"qa-person-{i}-{j}", "question": q.format(role=role, name=name), "answers": [],
            "answerable": False, "kind": "unanswerable"}
           for i, (name, role) in enumerate(INVENTED_PEOPLE) for j, q in enumerate(PEOPLE_QUESTIONS)]
    qa += [{"id": f"qa-math-{i}", "question": m["question"], "answers": [m["answer"]], "answerable": True,
            "kind": "math"} for i, m in enumerate(math[200:240])]  # items the eval-math task's default limit skips
    return {"heldout-text.txt": text, "eval-math.jsonl": math[:200], "qa-closed-book.jsonl": qa}


def write_heldout() -> None:
    for name, rows in heldout_sets().items():
        body = ("\n".join(rows) + "\n" if name.endswith(".txt")
                else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        (HERE / name).write_text(body)


if __name__ == "__main__":
    main()
    write_heldout()
