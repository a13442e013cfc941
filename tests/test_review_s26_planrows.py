"""The recipe plan's warning of a stage that will log no held-out loss (s26): (1) SFT and DPO stages too, each said
in its own words (CPT: no recovery curve; SFT / DPO: no eval loss); (2) rows counted from the sources where that is
cheap (a registered set's count, a built-in's or a local JSON Lines / .txt file's lines), so a 5-row file with no
budget is warned of as a budget of 5 rows was."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from backend import data, data_files, recipe
from backend.recipe import state
from storage import db
from storage.models import DatasetRecord

ALPACA = {"instruction": "Add.", "input": "2 plus 3", "output": "5"}
PREF = {"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": "6"}


def _jsonl(path: Path, row: dict, n: int) -> Path:
    path.write_text("".join(json.dumps({**row, "n": i}) + "\n" for i in range(n)))
    return path


def _recipe(base: Path, stages: list[dict], budget: dict | None = None) -> str:
    d = {"kind": "recipe", "name": "rows", "base": str(base), "upscale": {"method": "dus", "m": 2},
         "stages": stages}
    if budget:
        d["budget"] = budget
    return yaml.safe_dump(d, sort_keys=False)


def _stage(name: str, kind: str, source: str, **extra) -> dict:
    return {"name": name, "kind": kind, "model": "upscaled", "data": [{"source": source}], "max_steps": 2,
            "max_length": 32, **extra}


def test_counted_rows_counts_what_datasets_reads_and_stops_early(tmp_path):
    rows = tmp_path / "t.jsonl"
    rows.write_text('{"text": "a"}\n\n{"text": "b"}\n   \n{"text": "c"}')  # blank lines are no rows; no final \n
    assert len(data.load_source(str(rows))) == 3
    assert data_files.counted_rows(rows) == 3
    assert data_files.counted_rows(_jsonl(tmp_path / "big.jsonl", ALPACA, 50), stop=10) == 10
    assert data_files.counted_rows(tmp_path / "big.jsonl") == 50
    one = tmp_path / "one.jsonl"
    one.write_text('{"data": [{"text": "a"}, {"text": "b"}]}\n')  # one object may wrap its rows: not counted
    assert data_files.counted_rows(one) is None
    text = tmp_path / "t.txt"
    text.write_text("one\n\ntwo\nthree\n")
    assert data_files.counted_rows(text) == 3 and data_files.counted_rows(text, "document") == 1
    assert data_files.counted_rows(text, "paragraph") is None
    old_mac = tmp_path / "mac.txt"
    old_mac.write_bytes(b"one\rtwo\rthree\r")  # splitlines cuts at \r: never counted short as one line
    assert data_files.counted_rows(old_mac) is None
    assert data_files.counted_rows(tmp_path / "x.csv") is None


def test_held_out_shortfall_counts_the_rows_a_source_has(tmp_path):
    five = str(_jsonl(tmp_path / "five.jsonl", ALPACA, 5))
    assert state.held_out_shortfall({"data": [{"source": five}]}) == (
        "fewer than 10 rows to hold out (five.jsonl has 5 rows)")
    assert state.held_out_shortfall({"data": [{"source": five}], "max_rows": 100}) == (
        "fewer than 10 rows to hold out (five.jsonl has 5 rows)")
    three = str(_jsonl(tmp_path / "three.jsonl", ALPACA, 3))
    two = {"data": [{"source": "builtin:alpaca-mini"}, {"source": three}], "max_rows": 6}
    assert state.held_out_shortfall(two, "budget ") == (
        "fewer than 10 rows to hold out (9 in all: 6 of builtin:alpaca-mini (budget max_rows 6), 3 in three.jsonl)")
    two["max_rows"] = 7  # 10 rows in all: split_mix holds a share out
    assert state.held_out_shortfall(two) is None
    book = tmp_path / "book.txt"
    book.write_text("".join(f"line {i}\n" for i in range(40)))
    assert state.held_out_shortfall({"data": [{"source": str(book), "sample_by": "document"}]}) == (
        "fewer than 10 rows to hold out (book.txt has 1 row)")  # the whole file one row
    assert state.held_out_shortfall({"data": [{"source": str(book)}]}) is None  # a line a row: 40
    assert state.held_out_shortfall({"data": [{"source": "builtin:alpaca-mini"}]}) is None  # 200 rows
    assert state.held_out_shortfall({"data": [{"source": five}, {"source": "owner/hub-set"}]}) is None  # unknown
    assert state.held_out_shortfall({"data": [{"source": five}], "eval_data": {"source": five}}) is None
    with db.session() as s:
        s.add(DatasetRecord(name="tiny-sft", kind="sft", path=five, rows=4))
        s.commit()
    assert state.source_rows("dataset:tiny-sft") == 4  # the registry's count, not the file's
    assert state.held_out_shortfall({"data": [{"source": "dataset:tiny-sft"}]}) == (
        "fewer than 10 rows to hold out (dataset:tiny-sft has 4 rows)")


def test_the_plan_warns_of_sft_and_dpo_stages_too(tiny_llama):
    stages = [_stage("cpt", "cpt", "builtin:facts-corpus"), _stage("sft", "sft", "builtin:alpaca-mini"),
              _stage("dpo", "dpo", "builtin:prefs-mini")]
    [p] = recipe.plan_text(_recipe(tiny_llama, stages, {"max_rows": 8}))
    fix = "give it eval_data or more rows (max_rows 10 or more)."
    assert p.notes() == [
        f"stage cpt will log no held-out loss, so no recovery curve: fewer than 10 rows to hold out (budget max_rows "
        f"8); {fix}",
        f"stage sft will log no eval loss: fewer than 10 rows to hold out (budget max_rows 8); {fix}",
        f"stage dpo will log no eval loss: fewer than 10 rows to hold out (budget max_rows 8); {fix}"]
    [q] = recipe.plan_text(_recipe(tiny_llama, [_stage("sft", "sft", "builtin:alpaca-mini", eval_fraction=0.0)]))
    assert q.notes() == ["stage sft will log no eval loss: nothing held out (eval_fraction 0, no eval_data); give it "
                         "eval_data or an eval_fraction above 0."]


def test_the_plan_warns_of_a_small_file_without_a_budget(tiny_llama, tmp_path):
    sft = str(_jsonl(tmp_path / "tiny-sft.jsonl", ALPACA, 5))
    dpo = str(_jsonl(tmp_path / "tiny-dpo.jsonl", PREF, 12))
    [p] = recipe.plan_text(_recipe(tiny_llama, [_stage("sft", "sft", sft), _stage("dpo", "dpo", dpo)]))
    assert p.notes() == ["stage sft will log no eval loss: fewer than 10 rows to hold out (tiny-sft.jsonl has 5 "
                         "rows); give it eval_data or more rows (10 or more in all)."]
    assert "  note: " + p.notes()[0] in p.lines()  # `recipe plan` prints it
