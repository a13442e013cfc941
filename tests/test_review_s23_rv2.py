"""Review 23c of the session's data changes, each pinned: a file whose column changes type after the first block
is the file's fault (it was said as the reader's, "try again"); pyarrow running out of memory is not (the page
deleted the upload); a conversational completion of several turns is refused, as its earlier turns would be learned
as prompt where trl learns them; the loss's auto default follows the training rows alone, as trl's; a .Gz suffix."""

import gzip
import json

import pytest

from backend import data


def test_a_jsonl_whose_column_changes_type_after_the_first_block_is_the_files_fault(tmp_path):
    """Every line parses, but "a" is an object for 10 MB, then a list: datasets' cast raises TypeError inside a
    DatasetGenerationError."""
    p = tmp_path / "bad.jsonl"
    with open(p, "w") as f:
        for i in range(300_000):
            f.write(json.dumps({"a": {"b": i}, "t": "x" * 30}) + "\n")
        f.write(json.dumps({"a": [1, 2], "t": "y"}) + "\n")
    with pytest.raises(data.DataError):
        data.load_source(str(p))


def test_running_out_of_memory_or_a_half_imported_library_is_not_the_files_fault():
    import pyarrow as pa

    assert not data.file_fault(pa.ArrowMemoryError("malloc of size 8589934592 failed"))
    assert not data.file_fault(AttributeError("module 'transformers' has no attribute 'PreTrainedTokenizerBase'"))
    outer = RuntimeError("An error occurred while generating the dataset")
    outer.__cause__ = TypeError("Couldn't cast array of type struct<b: int64> to list<item: int64>")
    assert data.file_fault(outer) and data.file_fault(pa.ArrowInvalid("JSON parse error"))


def test_a_conversational_completion_of_several_turns_is_refused_saying_what_to_do():
    row = {"prompt": [{"role": "user", "content": "Q1"}],
           "completion": [{"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                          {"role": "assistant", "content": "A2"}]}
    from backend.data_rows import _row_problem

    assert _row_problem(row, "prompt_completion") == (
        "completion must be one assistant turn (trl's usual conversational prompt/completion); got the roles "
        "assistant, user, assistant: move the earlier turns into the prompt, or give the rows as messages")
    assert _row_problem({**row, "completion": row["completion"][-1:]}, "prompt_completion") is None


def test_the_auto_loss_follows_the_training_rows_not_the_held_out_sets_layout(tmp_path, capsys, tiny_llama):
    from transformers import AutoTokenizer

    from backend.specs import DataSource, SftSpec
    from backend.train_job.rows import load_rows

    train, held = tmp_path / "pc.jsonl", tmp_path / "alpaca.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(12)))
    held.write_text("".join(json.dumps({"instruction": f"i{i}", "output": f"o{i}"}) + "\n" for i in range(4)))
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(train))], eval_fraction=0.0,
                   eval_data=DataSource(source=str(held)))
    rows, evals = load_rows(spec, str(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama))
    assert set(rows.column_names) == {"prompt", "completion"} and set(evals.column_names) == {"prompt", "completion"}
    assert "loss: on each row's completion only, not its prompt (auto" in capsys.readouterr().out


def test_a_gz_suffix_in_any_case_reads(tmp_path):
    p = tmp_path / "ok.jsonl.Gz"
    p.write_bytes(gzip.compress(b'{"text": "a b c"}\n{"text": "d e f"}\n'))
    assert data.load_source(str(p))["text"] == ["a b c", "d e f"]
