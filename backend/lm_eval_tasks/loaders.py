"""Data loaders for the local lm-evaluation-harness tasks (named by `custom_dataset: !function loaders.NAME`).

lm-eval resolves `!function` next to the YAML file, so the data files are found from any working directory, and
`datasets.Dataset.from_list` builds the splits in memory: no Hub access and no Arrow cache under ~/.cache.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _splits(**files: str):
    import datasets

    out = {}
    for split, name in files.items():
        path = DATA / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run .venv/bin/python -m backend.lm_eval_tasks.make_data")
        out[split] = datasets.Dataset.from_list([json.loads(x) for x in path.read_text().splitlines() if x.strip()])
    return datasets.DatasetDict(out)


def truthfulqa_mini(**_):  # lm-eval passes the task metadata as keyword arguments
    return _splits(test="truthfulqa_mini.jsonl")


def gsm8k_mini(**_):
    return _splits(train="gsm8k_mini_fewshot.jsonl", test="gsm8k_mini_test.jsonl")
