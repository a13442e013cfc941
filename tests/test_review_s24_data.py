"""Review session 24, data items left alone before: a .gz data file known by its suffix wherever a path is judged
(a recipe's plan, an evaluation's task check), a seed upload kept when its read fails for a reason that is not the
file's, the paper's mixes checked row by row as `datasets mix` is, and counts said "1 row", not "1 rows"."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from backend import data, uploads
from backend.evaltasks import EvalError, check_task, task_set
from backend.recipe.spec import RecipeError
from backend.synth import seeds
from backend.synth.datasets import DatasetError, get_dataset, save_dataset, save_mix, save_paper_mixes
from backend.words import plural
from tests.test_pages import app
from tests.test_review_s13_recipe import one_stage, plan_of

ALPACA = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(4)]


def _gz(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


# ---------------------------------------------------------------- 1. .gz data files known by their suffix

def test_one_test_of_a_data_file_by_its_name_knows_the_gz_forms():
    assert [data.names_data_file(n) for n in ("x.jsonl.gz", "X.JSONL.GZ", "d/x.csv.gz", "x.txt.gz", "x.JSONL")] \
        == [True] * 5
    assert [data.names_data_file(n) for n in ("x.parquet.gz", ".jsonl.gz", "x.gz", "owner/name", "x.tsv")] \
        == [False] * 5
    assert not data.hub_id("data/x.jsonl.gz") and data.hub_id("owner/name")


@pytest.mark.parametrize("source", ["missing.jsonl.gz", "data/missing.CSV.GZ"])
def test_a_recipes_missing_gz_data_file_is_said_missing(tiny_llama, source):
    """Was "'missing.jsonl.gz' is not builtin:NAME, … a file or a Hub id", and data/missing.csv.gz a Hub id (the
    plan then said the Hub cannot be reached): their suffix is .gz, which DATA_SUFFIXES (.jsonl.gz …) never equals."""
    with pytest.raises(RecipeError) as refused:
        plan_of(one_stage(tiny_llama, source))
    assert str(refused.value) == f"stage sft.data[0].source: data file {source} does not exist."


def test_a_recipes_present_gz_data_file_is_read_row_by_row(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gz(tmp_path / "sft.jsonl.gz", ALPACA)
    plan = plan_of(one_stage(tiny_llama, "sft.jsonl.gz"))
    assert [n.stage for n in plan.nodes] == ["base", "sft"]
    _gz(tmp_path / "bad.jsonl.gz", [*ALPACA, {"instruction": "Say 5.", "output": None}])
    with pytest.raises(RecipeError, match=r"^stage sft\.data\[0\]\.source: .*bad\.jsonl\.gz.* row 5"):
        plan_of(one_stage(tiny_llama, "bad.jsonl.gz"))


def test_an_eval_tasks_missing_gz_file_is_refused_when_checked_and_a_present_one_read(tmp_path):
    """A missing perplexity:x.jsonl.gz passed the check (queued, failed in its turn); mc:x.jsonl.gz said only
    "not UTF-8 text"."""
    with pytest.raises(EvalError, match=r"missing\.jsonl\.gz does not exist"):
        check_task(f"perplexity:{tmp_path / 'missing.jsonl.gz'}", 5)
    with pytest.raises(EvalError, match=r"missing\.jsonl\.gz does not exist"):
        check_task(f"mc:{tmp_path / 'missing.jsonl.gz'}", 5)
    texts = _gz(tmp_path / "texts.jsonl.gz", [{"text": f"line {i} of text"} for i in range(3)])
    check_task(f"perplexity:{texts}", 5)
    assert task_set(f"perplexity:{texts}", 5).texts == ["line 0 of text", "line 1 of text", "line 2 of text"]
    mc = _gz(tmp_path / "mc.jsonl.gz", [{"question": "2+2?", "choices": ["3", "4"], "answer": 1}])
    with pytest.raises(EvalError) as refused:
        check_task(f"mc:{mc}", 5)
    assert str(refused.value) == (f"mc:{mc}: mc.jsonl.gz is gzip-compressed, and mc tasks read plain JSON Lines "
                                  "files: decompress it (gunzip mc.jsonl.gz) and give the .jsonl.")


def test_a_recipes_eval_of_a_missing_gz_task_file_is_refused_when_planned(tiny_llama):
    d = one_stage(tiny_llama, "builtin:alpaca-mini")
    d["eval"] = {"tasks": ["perplexity:missing.txt.gz"], "limit": 5}
    with pytest.raises(RecipeError, match=r"missing\.txt\.gz does not exist"):
        plan_of(d)


def test_a_gz_benchmark_file_is_refused_not_read_as_lines_of_bytes(tmp_path):
    from backend.synth.pipeline import load_benchmark

    bench = _gz(tmp_path / "bench.jsonl.gz", [{"question": "What is 2+2?"}])
    with pytest.raises(DatasetError, match=r"bench\.jsonl\.gz is gzip-compressed: decompress it"):
        load_benchmark(str(bench))  # was a list of garbled "questions": nothing flagged, nothing said


# ---------------------------------------------------------------- 2. a seed upload kept when the reader fails

GSM8K = json.dumps({"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"}) + "\n"


def test_count_seeds_tells_the_files_fault_from_the_readers(tmp_path, monkeypatch):
    good = tmp_path / "good.jsonl"
    good.write_text(GSM8K)
    assert seeds.count_seeds(good, "good.jsonl") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(seeds.SeedError, match="bad.jsonl, record 1: missing answer"):  # the file's: may be removed
        seeds.count_seeds(bad, "bad.jsonl")
    for failure in (OSError(5, "Input/output error"), MemoryError()):
        def failing(*a, exc=failure, **k):
            raise exc

        monkeypatch.setattr(seeds, "read_records", failing)
        with pytest.raises(data.ReaderFailed) as refused:  # the reader's: the upload is kept
            seeds.count_seeds(good, "good.jsonl")
        assert str(refused.value).startswith(f"Reading good.jsonl failed, not for anything in the file "
                                             f"({type(failure).__name__}")


def _stored() -> list[str]:
    return sorted(p.name for p in uploads.uploads_dir().glob("*"))


def test_a_seed_upload_whose_read_fails_not_for_the_file_is_kept_and_said(monkeypatch):
    """Only SeedError was caught: an OSError or MemoryError while reading the upload was a traceback on the page."""
    def failing(*a, **k):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(seeds, "read_records", failing)
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    at.file_uploader(key="seed_upload").set_value(("mine.jsonl", GSM8K.encode(), "application/json")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (warning,) = [w.value for w in at.warning if "mine.jsonl" in w.value]
    assert warning.startswith("Reading mine.jsonl failed, not for anything in the file (OSError: [Errno 5] "
                              "Input/output error)") and warning.endswith("mine.jsonl is kept (press R to read it "
                                                                          "again).")
    assert len(_stored()) == 1  # kept
    monkeypatch.undo()  # the reader works again: the kept file is read (never cached as refused)
    at.run()
    assert not [w for w in at.warning if "mine.jsonl" in w.value], [w.value for w in at.warning]
    assert "mine.jsonl: 1 seed problem." in [c.value for c in at.caption]
    assert len(_stored()) == 1


# ---------------------------------------------------------------- 3. save_mix checks every member's rows

def test_a_mix_with_a_bad_row_is_refused_and_nothing_saved(tmp_path):
    """save_mix (the paper's mixes) checked only the layout: a bad row was saved as a mix refused at every use."""
    f = tmp_path / "mostly.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [*ALPACA, {"instruction": "Say 5.", "output": None}]))
    with pytest.raises(DatasetError) as refused:
        save_mix("m", [("builtin:alpaca-mini", 1.0), (str(f), 1.0)], "sft")
    assert "mostly.jsonl" in str(refused.value) and "row 5" in str(refused.value), str(refused.value)
    assert get_dataset("m") is None
    assert save_mix("m", [("builtin:alpaca-mini", 1.0)], "sft").name == "m"  # a good one is saved


def test_the_paper_mixes_are_checked_row_by_row(tmp_path):
    f = tmp_path / "instruct.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                 + "\n" + json.dumps({"messages": [{"role": "user", "content": None}]}) + "\n")
    save_dataset("p-instruct", "synth-instruct", str(f), 2, {})
    g = tmp_path / "alignment.jsonl"
    g.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    save_dataset("p-alignment", "synth-alignment", str(g), 1, {})
    with pytest.raises(DatasetError, match=r"dataset:p-instruct.*row 2") as refused:
        save_paper_mixes("p-pairs")
    # every mix is checked before any is saved: saved one by one, sft-v1 and sft-v2 stayed and the rest did not
    assert [n for n in ("sft-v1", "sft-v2", "sft-v3", "sft-v4", "dpo-v1", "dpo-v2") if get_dataset(n)] == []
    assert str(refused.value).startswith("Mix sft-v3: dataset:p-instruct, row 2"), str(refused.value)
    assert "None of the paper's mixes" in str(refused.value) and "was saved" in str(refused.value)


# ---------------------------------------------------------------- 4. "1 row", not "1 rows"

def test_plural_says_one_of_a_thing():
    assert [plural(n, "row") for n in (0, 1, 2, 1200)] == ["0 rows", "1 row", "2 rows", "1,200 rows"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


def test_counts_of_one_are_said_in_the_singular(tmp_path, capsys):
    from backend.__main__ import main
    from backend.synth.datasets import delete_dataset
    from pages.common import result_words

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(ALPACA[0]) + "\n")
    main(["datasets", "preview", str(one), "--for", "sft", "-n", "1"])
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{one}: alpaca layout for sft, 1 row; columns")
    save_dataset("taken", "sft", str(one), 1, {})
    with pytest.raises(DatasetError, match=r"already named 'taken' \(1 row at "):
        save_dataset("taken", "sft", str(tmp_path / "other.jsonl"), 1, {})
    assert delete_dataset("taken").startswith("deleted the sft data set taken (1 row)")
    assert result_words({"global_step": 1, "files": 1}) == "1 step, 1 file"
    assert result_words({"global_step": 2000}) == "2,000 steps"
