"""Make the data files of the two local lm-evaluation-harness tasks, deterministically, from the built-in data.

    .venv/bin/python -m backend.lm_eval_tasks.make_data      # rewrites backend/lm_eval_tasks/data/*.jsonl

dus_truthfulqa_mini (TruthfulQA-mc1 style): one true answer among false ones, read from data/facts-corpus.txt (the
capitals and arithmetic facts the built-in training sets teach). As in TruthfulQA, a wrong answer is often the
"imitative falsehood" people repeat — Sydney for Australia, Toronto for Canada, 7 + 8 for 7 times 8 — not only a
random one. It measures whether taught facts stuck, so it is NOT held out from the built-in training data.

dus_gsm8k_mini (GSM8K style, generation, "#### n" answers): the test split is data/eval-math.jsonl, the built-in
held-out math set (word problems with a four-digit number in every question, outside the problem space of the
training generator backend/synth/seeds.py; data/make_builtin.py says why). The few-shot split holds worked solutions
from that generator (seed 0, integer answers), as GSM8K's few-shot examples come from its train split.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "data"
FACTS = ROOT / "data" / "facts-corpus.txt"
EVAL_MATH = ROOT / "data" / "eval-math.jsonl"
# The city people wrongly name as the capital (the largest or best-known one); TruthfulQA's "imitative falsehoods".
MISCONCEPTIONS = {"Australia": "Sydney", "Canada": "Toronto", "Brazil": "Rio de Janeiro", "Turkey": "Istanbul",
                  "Switzerland": "Zurich", "Nigeria": "Lagos", "Morocco": "Casablanca", "New Zealand": "Auckland",
                  "India": "Mumbai", "China": "Shanghai", "Vietnam": "Ho Chi Minh City"}
CAPITAL = re.compile(r"^The capital of (.+?) is (.+?)\. ")
ARITH = re.compile(r"In digits: (\d+) (times|plus|minus) (\d+) = (-?\d+)\.$")
N_CHOICES = 4


def _with_answer(rng: random.Random, question: str, right: str, wrong: list[str]) -> dict:
    choices = [right] + wrong[: N_CHOICES - 1]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(right)}


def truthfulqa_rows() -> list[dict]:
    rng = random.Random(2312_15166)
    lines = FACTS.read_text().splitlines()
    capitals = [m.groups() for m in map(CAPITAL.match, lines) if m]
    cities = [c for _, c in capitals]
    cap_rows = []
    for country, capital in capitals:
        others = rng.sample([c for c in cities if c != capital], N_CHOICES)
        lure = MISCONCEPTIONS.get(country)
        wrong = ([lure] if lure else []) + [c for c in others if c != lure]
        cap_rows.append(_with_answer(rng, f"What is the capital of {country}?", capital, wrong))
    seen, math_rows = set(), []
    for m in filter(None, map(ARITH.search, lines)):
        a, op, b, value = int(m[1]), m[2], int(m[3]), int(m[4])
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        confused = {"times": a + b, "plus": a * b, "minus": b - a}[op]  # the wrong operation, or the wrong order
        wrong = [str(w) for w in dict.fromkeys([confused, value + 1, value - 1, value + 10]) if w != value]
        math_rows.append(_with_answer(rng, f"What is {a} {op} {b}?", str(value), wrong))
    rows = []  # interleaved, so the first `limit` items of any small limit hold both kinds
    for i in range(max(len(cap_rows), len(math_rows))):
        rows += cap_rows[i:i + 1] + math_rows[i:i + 1]
    return rows


def gsm8k_rows() -> tuple[list[dict], list[dict], str]:
    """(few-shot rows, test rows, where the test rows came from)."""
    from backend.synth.seeds import generate

    shots = []
    for s in generate(40, seed=0, categories=["rate", "age", "money", "geometry", "counting"], levels=[2, 3]):
        if re.fullmatch(r"-?\d+", s.answer) and len(shots) < 8:
            steps = s.solution.rsplit(" The answer is", 1)[0]
            shots.append({"question": s.question, "answer": f"{steps}\n#### {s.answer}"})
    if EVAL_MATH.exists():
        test = [json.loads(x) for x in EVAL_MATH.read_text().splitlines() if x.strip()]
        source = "data/eval-math.jsonl"
    else:  # the built-in held-out set is missing: the generator's evaluation seed, as backend/evaluate.py once used
        test = [s.to_dict() for s in generate(200, seed=10_000) if re.fullmatch(r"-?\d+", s.answer)]
        source = "backend/synth/seeds.py generate(200, seed=10_000)"
    return shots, [{"id": r["id"], "question": r["question"], "answer": f"#### {r['answer']}"} for r in test], source


def write(rows: list[dict], name: str) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> None:
    write(truthfulqa_rows(), "truthfulqa_mini.jsonl")
    shots, test, source = gsm8k_rows()
    write(shots, "gsm8k_mini_fewshot.jsonl")
    write(test, "gsm8k_mini_test.jsonl")
    print(f"wrote {OUT}: gsm8k test rows from {source}")


if __name__ == "__main__":
    main()
