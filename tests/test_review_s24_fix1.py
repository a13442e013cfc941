"""Review session 24, fixes to its own commits: the paper's mixes saved all or none (tests/test_review_s24_data.py),
a .jsonl.gz of a mixed-type column blamed on its bad row, no import loop between runner.hosts and runner.messages,
config keys transformers does not define left out of a merge's comparison both ways, '1 pair' not '1 pairs', and a
seed file's fault said in words."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from backend import data


def _gz(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(encoding)))
    return path


# ---------------------------------------------------------------- 2. a .jsonl.gz of a mixed-type column

@pytest.mark.parametrize("name, encoding", [("mixed.jsonl.gz", "utf-8"), ("MIXED.JSON.GZ", "utf-8"),
                                            ("utf16.jsonl.gz", "utf-16")])
def test_a_gz_file_of_a_mixed_type_column_names_its_bad_row(tmp_path, name, encoding):
    """`datasets` keeps a column of mixed types as JSON text and decodes the string "0" as the number 0: the rows are
    read again from the file, which for a .gz was skipped (its suffix is .gz), so row 1 was blamed, not row 2."""
    f = _gz(tmp_path / name, [{"instruction": "Say 0.", "output": "0"}, {"instruction": "Say 5.", "output": 5}],
            encoding)
    with pytest.raises(data.DataError) as refused:
        data.check_mix([(str(f), 1.0)], "sft")
    assert ", row 2: " in str(refused.value) and ", row 1" not in str(refused.value), str(refused.value)


def test_a_gz_file_that_wraps_its_rows_is_read_again_unwrapped(tmp_path):
    f = tmp_path / "wrapped.json.gz"
    f.write_bytes(gzip.compress(json.dumps({"data": [{"instruction": "Say 0.", "output": "0"},
                                                     {"instruction": "Say 5.", "output": 5}]}).encode()))
    with pytest.raises(data.DataError, match=r", row 2: "):
        data.check_mix([(str(f), 1.0)], "sft")


# ---------------------------------------------------------------- 3. no import loop between hosts and messages

def _imports(path: Path, top_only: bool) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    nodes = tree.body if top_only else ast.walk(tree)
    return {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}


def test_hosts_reads_the_resume_step_from_a_module_below_it():
    """recover_orphans imported runner.messages inside itself, while messages imports hosts at its top: a loop."""
    from backend import runner
    from backend.runner import hosts, messages, resume_step

    runner_dir = Path(runner.__file__).parent
    assert "backend.runner.messages" not in _imports(runner_dir / "hosts.py", top_only=False)
    assert "backend.runner.resume_step" in _imports(runner_dir / "hosts.py", top_only=True)
    below = {f"backend.runner.{m}" for m in ("hosts", "queue", "states", "messages", "child", "loop")}
    assert _imports(runner_dir / "resume_step.py", top_only=True) & below == set()
    # the same functions, read from messages and the package as before (recipe/state.py, pages/common.py, jobs CLI)
    assert hosts.with_resume_step is resume_step.with_resume_step is messages.with_resume_step
    for name in ("resume_action", "ResumeAction", "resume_point", "what_resume_does", "_what_resume_does"):
        assert getattr(messages, name) is getattr(resume_step, name), name
    assert runner.resume_point is resume_step.resume_point and runner.what_resume_does is resume_step.what_resume_does


# ---------------------------------------------------------------- 4. configs compared as transformers reads them

def test_a_key_no_config_class_defines_is_left_out_both_ways():
    from backend.configmatch import loaded_difference
    from tests.test_review_s24_configs import SMOLLM2_FROM_GGUF, SMOLLM2_HUB

    assert loaded_difference(SMOLLM2_HUB, SMOLLM2_FROM_GGUF | {"is_llama_config": False}) == {}  # both hold it
    assert loaded_difference(SMOLLM2_HUB | {"rope_interleaved": True}, SMOLLM2_FROM_GGUF) == {}  # one holds it


def test_where_transformers_cannot_read_one_config_both_are_compared_as_written():
    """One config read by its class and one as written differed in every default the class fills in ("head_dim:
    None vs 64", "is_encoder_decoder: None vs False") beside the setting that really differed."""
    from backend.configmatch import loaded_difference
    from tests.test_review_s24_configs import SMOLLM2_FROM_GGUF, SMOLLM2_HUB

    refused = SMOLLM2_HUB | {"num_attention_heads": 7}  # 576 is no multiple of 7: LlamaConfig refuses it
    differ = loaded_difference(refused, SMOLLM2_FROM_GGUF)
    assert list(differ)[0] == "num_attention_heads" and differ["num_attention_heads"] == (7, 9)
    assert "is_encoder_decoder" not in differ  # filled in by the class for one side only
    # as written, both: what the files say (head_dim is in one only), no default of the class's
    assert differ == {"num_attention_heads": (7, 9), "head_dim": (None, 64), "is_llama_config": (True, None),
                      "mlp_bias": (None, False), "rope_interleaved": (False, None)}


def test_reading_a_config_for_a_comparison_prints_no_warning_of_transformers():
    """A llama3 RoPE config whose original length is not below max_position_embeddings: transformers warns on
    reading it; a merge's check printed that warning about a model nobody was loading."""
    import logging

    import transformers

    from backend.configmatch import loaded_difference
    from tests.test_review_s24_configs import SMOLLM2_FROM_GGUF, SMOLLM2_HUB

    llama3 = SMOLLM2_HUB | {"max_position_embeddings": 4321, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 4321}}
    seen: list[str] = []
    handler = logging.Handler()  # transformers' own handler writes to the stderr it found first: its records here
    handler.emit = lambda record: seen.append(record.getMessage())
    logger, before = logging.getLogger("transformers"), transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # transformers' default, whatever an earlier test left
    logger.addHandler(handler)
    try:
        differ = loaded_difference(llama3, SMOLLM2_FROM_GGUF)
        assert set(differ) == {"max_position_embeddings", "rope"}
        assert transformers.logging.get_verbosity() == transformers.logging.WARNING  # given back
    finally:
        logger.removeHandler(handler)
        transformers.logging.set_verbosity(before)
    assert [m for m in seen if "original_max_position_embeddings" in m] == []


# ---------------------------------------------------------------- 5. "1 score", "1 pair", "1 seed", not "1 scores"

def test_a_count_of_one_kept_score_is_said_in_the_singular():
    from backend import runner
    from backend.cli.common import result_lines
    from pages.common import result_words

    assert runner.IN_WORDS["kept"].format(1) == "1 score kept from its earlier run"  # the "done:" message's words
    assert runner.IN_WORDS["kept"].format(1200) == "1,200 scores kept from its earlier run"
    assert result_words({"kept": 1, "global_step": 1}) == "1 score kept from its earlier run, 1 step"  # the pages'
    assert result_lines({"kept": 1}) == ["1 score kept from its earlier run"]  # the CLI's
    assert runner.IN_WORDS["already"].format(True) == "already registered: nothing imported"


def test_a_perplexity_file_of_one_blank_row_says_the_first_row(tmp_path):
    from backend.evaltasks import EvalError, task_set

    f = tmp_path / "blank.jsonl"
    f.write_text(json.dumps({"text": "   "}) + "\n")
    with pytest.raises(EvalError) as refused:
        task_set(f"perplexity:{f}", 10)
    assert str(refused.value) == f"perplexity:{f}: the first row has no text to score."



# ---------------------------------------------------------------- 8. a seed file's fault said in words

def test_a_seed_files_fault_the_reader_does_not_word_is_a_seed_error_naming_it(tmp_path, monkeypatch):
    """count_seeds raised a file-fault error that is not a SeedError as it came: the page catches SeedError only,
    so it showed a traceback."""
    from backend.synth import seeds

    good = tmp_path / "stored-hash-good.jsonl"
    good.write_text(json.dumps({"question": "Tom has 2 apples and buys 3. How many?", "answer": "5\n#### 5"}) + "\n")

    def failing(*a, **k):
        raise ValueError("Invalid control character at: line 1 column 7 (char 6)\nmore")

    monkeypatch.setattr(seeds, "read_records", failing)
    with pytest.raises(seeds.SeedError) as refused:
        seeds.count_seeds(good, "good.jsonl")
    assert str(refused.value).startswith("good.jsonl could not be read as seeds (ValueError: Invalid control "
                                         "character at: line 1 column 7 (char 6)). Fix the file: a seed record is "
                                         "MATH's"), str(refused.value)
    monkeypatch.setattr(seeds, "read_records", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(data.ReaderFailed):  # the reader's own: the upload is kept, as before
        seeds.count_seeds(good, "good.jsonl")
