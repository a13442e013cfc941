"""Data loaders for the local lm-evaluation-harness tasks (named by `custom_dataset: !function loaders.NAME`).

lm-eval resolves `!function` next to the YAML file, so the data files are found from any working directory, and
`datasets.Dataset.from_list` builds the splits in memory: no Hub access and no Arrow cache under ~/.cache.
Every row is checked as it is read (_read): lm-eval scores whatever it is given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

DATA = Path(__file__).resolve().parent / "data"
REMAKE = "run .venv/bin/python -m backend.lm_eval_tasks.make_data"
FINAL_ANSWER = re.compile(r"(?s).*#### -?[0-9][0-9.,]*")  # what the gsm8k metric and strict-match filter read


def _mc_problem(row: dict) -> str | None:
    choices, answer = row.get("choices"), row.get("answer")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "question must be non-empty text."
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        return "choices must be a list of at least two non-empty strings."
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        return f"answer must be the index of the right choice, 0 to {len(choices) - 1}; got {answer!r}."
    return None


def _gsm8k_problem(row: dict) -> str | None:
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "question must be non-empty text."
    if not isinstance(row.get("answer"), str) or not FINAL_ANSWER.fullmatch(row["answer"].strip()):
        return f"answer must be text ending in '#### n', n a number; got {row.get('answer')!r:.60}."
    return None


NESTED = "nested too deeply (arrays and objects about 1,000 inside each other)."  # Python's json: RecursionError


def json_lines(text: str, check: Callable[[int, object], str | None],
               fault: Callable[[int | None, str | None, Exception | None], Exception]) -> list[tuple[int, object]]:
    """(line, value) of each line of JSON Lines `text` (blank lines and a leading byte-order mark left out), each
    checked by `check(line, value)` (what is wrong with it, if anything: an object is the caller's to ask for; the
    line lets a caller say where an id was first seen). `fault(line, problem, error)` is the caller's exception, in
    its own words: for a line that is not JSON (problem None, error json's JSONDecodeError, whose colno and msg say
    where and why), one that nests too deep for Python's json (problem NESTED, error the RecursionError it raised),
    one that fails `check` (its problem, error None), and for text of no rows (line None).

    The one JSON Lines reader of the studio: the local tasks' files (_read), an evaluation's mc: and gsm8k: files
    (backend/evaltasks.py, through read_json_lines), QA files (backend/qa.py load_items) and seed and benchmark
    files (backend/synth/seeds.py read_records). This module imports nothing of the studio, as lm-eval loads it
    from its file."""
    rows = []
    for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fault(n, None, exc) from None
        except RecursionError as exc:
            raise fault(n, NESTED, exc) from None
        if problem := check(n, row):
            raise fault(n, problem, None)
        rows.append((n, row))
    if not rows:
        raise fault(None, None, None)
    return rows


def read_json_lines(path: Path, check: Callable[[object], str | None],
                    fault: Callable[[int | None, str | None], Exception]) -> list[dict]:
    """The values of JSON Lines file `path` (UTF-8, with or without its byte-order mark), read by json_lines:
    `check(value)` what is wrong with one, `fault(line, problem)` the caller's exception (problem None: the line is
    not JSON; line None: the file has no rows)."""
    return [row for _, row in json_lines(path.read_text(encoding="utf-8-sig"), lambda n, row: check(row),
                                         lambda n, problem, error: fault(n, problem))]


def _read(path: Path, check) -> list[dict]:
    """The rows of one data file, each checked by `check` (what is wrong with a row, if anything). lm-eval scores
    what it is given: a row without its answer index scored as wrong (acc 0.0 ± 0.0 over rows like it), and an
    empty file failed with "IndexError: Invalid key: 0 is out of bounds for size 0", naming neither file nor fix."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {REMAKE}")

    def fault(n: int | None, problem: str | None) -> ValueError:
        if n is None:
            return ValueError(f"{path.name} has no rows: {REMAKE}")
        return ValueError(f"{path.name}, line {n}: {problem} ({REMAKE})" if problem else
                          f"{path.name}, line {n}: not valid JSON ({REMAKE}).")

    return read_json_lines(path, lambda row: check(row) if isinstance(row, dict) else
                           f"expected an object; got {type(row).__name__}.", fault)


def _splits(check, **files: str):
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(_read(DATA / name, check))
                                 for split, name in files.items()})


def truthfulqa_mini(**_):  # lm-eval passes the task metadata as keyword arguments
    return _splits(_mc_problem, test="truthfulqa_mini.jsonl")


def gsm8k_mini(**_):
    return _splits(_gsm8k_problem, train="gsm8k_mini_fewshot.jsonl", test="gsm8k_mini_test.jsonl")


# task -> (row check, its test split's file): the rows lm-eval scores, in its order (its `limit` takes the first)
TEST_FILES = {"dus_truthfulqa_mini": (_mc_problem, "truthfulqa_mini.jsonl"),
              "dus_gsm8k_mini": (_gsm8k_problem, "gsm8k_mini_test.jsonl")}


# task -> its few-shot split's file: the examples in every prompt, so part of how a score was measured
FEWSHOT_FILES = {"dus_gsm8k_mini": "gsm8k_mini_fewshot.jsonl"}

GENERATION_TASKS = {"dus_gsm8k_mini"}  # the local tasks that generate: the evaluation's token cap acts on them


def test_rows(task: str) -> list[dict] | None:
    """The checked test rows of a local task (None for any other name): the evaluation job fingerprints the items
    it scores with them, and reads them before any model loads."""
    if task not in TEST_FILES:
        return None
    check, name = TEST_FILES[task]
    return _read(DATA / name, check)
