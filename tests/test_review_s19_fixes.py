"""Session 19 fixes: case-only data-set names, a GGUF import read from the working folder, links into the Hub cache.

1. A mix named 'Mix' beside 'mix' was saved, while models and synthetic-math runs refuse a name that differs from
   a registered one only in case (db.named_any_case).
2. import_gguf handed transformers the link's bare file name; its model loader takes a gguf_file that names a file
   in the process's working folder first (modeling_utils, `os.path.isfile(gguf_file)`), so another GGUF of that
   name there became the imported model's weights.
3. registry.links_out let a link to nothing pass (the import, a build or a push failed later), and let a link into
   ANY cached repo's blobs pass (another model's file, maybe a private one, uploaded by a push).
4. Data files as users write them (backend/data.py): CSV cells typed by pandas' guess (numbers refused, "NA" made
   missing, a column turning to words after 10,000 rows unreadable), ';'-separated CSV, files of no rows named in
   `datasets`' words, an unknown ShareGPT speaker read as the user, a float weight just over a whole number.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend import registry

# ---------------------------------------------------------------- 1. a data set's name in another case


def test_a_mix_whose_name_differs_from_a_data_sets_only_in_case_is_refused_before_its_sources_are_read(monkeypatch):
    """A mix has no folder, but a synthetic-math run beside it does (workspace/datasets/NAME), and that run refuses
    'Mix-pairs' beside 'mix-pairs': a mix took the name the other way round, and `mix:Mix` and `mix:mix` then named
    two different data sets in recipes, lineage and the pages' lists."""
    from backend import data
    from backend.synth import pipeline

    pipeline.save_mix("sft-v1", [("builtin:alpaca-mini", 1.0)], "sft")
    read = []
    monkeypatch.setattr(data, "load_source", lambda source, **k: read.append(source))
    with pytest.raises(pipeline.DatasetError) as e:
        pipeline.save_mix("SFT-v1", [("builtin:orca-mini", 1.0)], "sft")
    assert str(e.value) == (
        "A mix data set is already named 'sft-v1' (a mix of builtin:alpaca-mini×1 for sft): 'SFT-v1' differs from it "
        "only in case, and a case-insensitive file system (macOS, Windows, an exFAT or SMB share) holds both in one "
        "folder. Nothing was saved: choose another name.")
    assert read == []  # refused before any work
    assert [d.name for d in pipeline.list_datasets()] == ["sft-v1"]
    assert pipeline.save_mix("sft-v1", [("builtin:alpaca-mini", 1.0)], "sft").name == "sft-v1"  # the same, again


# ---------------------------------------------------------------- 2. a GGUF file of the same name in the cwd


def write_tiny_gguf(path: Path, seed: int) -> Path:
    """A whole, loadable one-layer Llama GGUF (float32, a 97-token byte-level vocabulary) that transformers reads
    as the built-in's, in about a second; `seed` picks its weights."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = [chr(c) for c in range(33, 127)] + ["ab", "<s>", "</s>"]
    n, hidden, ff = len(tokens), 8, 16
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_vocab_size(n)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (n - 2) + [3, 3])
    w.add_token_merges(["a b"])
    w.add_token_scores([0.0] * n)
    w.add_bos_token_id(n - 2)
    w.add_eos_token_id(n - 1)
    shapes = {"token_embd.weight": (n, hidden), "output_norm.weight": (hidden,), "output.weight": (n, hidden)}
    for part, shape in [("attn_norm", (hidden,)), ("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)),
                        ("attn_v", (hidden, hidden)), ("attn_output", (hidden, hidden)), ("ffn_norm", (hidden,)),
                        ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)), ("ffn_down", (hidden, ff))]:
        shapes[f"blk.0.{part}.weight"] = shape
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_gguf_import_reads_the_users_file_not_one_of_its_name_in_the_working_folder(tmp_path, monkeypatch):
    """Run from a folder holding another `tiny.gguf` (a shell in ~/Downloads importing ~/models/tiny.gguf), the
    import registered the other file's weights under this file's config and tokenizer."""
    (tmp_path / "models").mkdir()
    mine = write_tiny_gguf(tmp_path / "models" / "tiny.gguf", seed=0)
    cwd = tmp_path / "Downloads"
    cwd.mkdir()
    write_tiny_gguf(cwd / "tiny.gguf", seed=1)
    monkeypatch.chdir(cwd)
    rec = registry.import_gguf(mine, name="tiny")
    got = load_file(Path(rec.path) / "model.safetensors")["model.embed_tokens.weight"]
    import gguf

    want = next(t for t in gguf.GGUFReader(mine).tensors if t.name == "token_embd.weight")
    assert torch.equal(got, torch.from_numpy(np.array(want.data)))


# ---------------------------------------------------------------- 3. links to nothing, links into another cached repo


def _cached_repo(root: Path, repo: str, src: Path) -> tuple[Path, Path]:
    """huggingface_hub's cache layout of `src`'s files: (snapshot folder of links, blobs folder)."""
    snapshot, blobs = root / repo / "snapshots" / "0123abc", root / repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in src.iterdir():
        shutil.copy2(f, blobs / f"hash-{f.name}")
        (snapshot / f.name).symlink_to(Path("../../blobs") / f"hash-{f.name}")
    return snapshot, blobs


def test_a_link_to_nothing_is_refused_in_words_before_queueing(tiny_llama, tmp_path):
    """A copy of a cached snapshot's links after `hf cache delete` (or a tokenizer.json linked to a file since
    moved) passed the check: the import registered a folder whose tokenizer could not be read."""
    from backend import runner
    from backend.specs import ImportSpec

    folder = tmp_path / "copied"
    shutil.copytree(tiny_llama, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(tmp_path / "gone" / "tokenizer.json")
    said = (f"{folder / 'tokenizer.json'} is a link to {tmp_path / 'gone' / 'tokenizer.json'}, which does not exist "
            "(a download or copy left incomplete, or a cache cleaned since): copy that file itself into the folder (or "
            "download the model again), or remove the link, then import again.")
    assert registry.links_out(folder) == [said]
    with pytest.raises(registry.RegistryError) as e:
        runner.submit(ImportSpec(target=str(folder)))
    assert str(e.value).startswith(said + " ")  # then: no tokenizer (the file the link should give)
    with pytest.raises(registry.RegistryError) as e:
        registry.import_folder(folder, "copied")
    assert str(e.value) == said
    assert registry.list_models() == [] and runner.list_jobs() == []


def test_a_link_to_a_missing_weights_file_is_refused_too(tiny_llama, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(Path("/nowhere/model.safetensors"))
    assert [x.split(",")[0] for x in registry.links_out(folder)] == [
        f"{folder / 'model.safetensors'} is a link to /nowhere/model.safetensors"]


def test_a_snapshot_links_only_into_its_own_cached_repo(tiny_llama, tmp_path):
    """A snapshot folder's special_tokens_map.json linked to another cached repo's blob (a private model's file,
    its hash known) passed as "a link into the cache", and a push uploaded it."""
    cache = tmp_path / "hub"
    snapshot, _ = _cached_repo(cache, "models--acme--tiny", tiny_llama)
    _, private = _cached_repo(cache, "models--acme--private", tiny_llama)
    assert registry.links_out(snapshot) == []
    link = snapshot / "special_tokens_map.json"
    link.symlink_to(private / "hash-tokenizer_config.json")
    assert registry.links_out(snapshot) == [
        f"{link} is a link to {private / 'hash-tokenizer_config.json'}, a file of the cached repo "
        "models--acme--private, not of models--acme--tiny whose snapshot this is: a push of the model would upload "
        "that file and a build would copy it. Copy the file itself into the folder (`cp -L`) or remove the link, then "
        "import again."]
    with pytest.raises(registry.RegistryError, match="models--acme--private"):
        registry.import_folder(snapshot, "cached")


def test_a_local_dir_download_links_into_one_cached_repo(tiny_llama, tmp_path):
    """`hf download --local-dir` before huggingface_hub 0.23 linked its large files into one repo's blobs: that
    stays allowed, a folder whose links lead into two repos is not (a weights file still may: it is parsed)."""
    _, blobs = _cached_repo(tmp_path / "hub", "models--acme--tiny", tiny_llama)
    _, other = _cached_repo(tmp_path / "hub", "models--acme--other", tiny_llama)
    local = tmp_path / "local-dir"
    local.mkdir()
    for f in tiny_llama.iterdir():
        (local / f.name).symlink_to(blobs / f"hash-{f.name}")
    assert registry.links_out(local) == []
    (local / "model.safetensors").unlink()
    (local / "model.safetensors").symlink_to(other / "hash-model.safetensors")  # weights: parsed as weights
    (local / "tokenizer.json").unlink()
    (local / "tokenizer.json").symlink_to(other / "hash-tokenizer.json")
    refused = {x.split(" is a link")[0]: x for x in registry.links_out(local)}
    # every text file's link: which repo's files is this model?
    assert sorted(refused) == sorted(str(f) for f in local.iterdir() if f.name != "model.safetensors")
    assert refused[str(local / "tokenizer.json")].startswith(
        f"{local / 'tokenizer.json'} is a link to {other / 'hash-tokenizer.json'}, a file of the cached repo "
        "models--acme--other, while its links point into 2 cached repos (models--acme--other, models--acme--tiny): ")


# ---------------------------------------------------------------- 4. data files as users write them


def _preview(path: Path, kind: str = "sft") -> dict:
    from backend import data

    return data.preview(str(path), kind)


def _refusal(path: Path, kind: str = "sft") -> str:
    from backend import data

    with pytest.raises(data.DataError) as e:
        data.preview(str(path), kind)
    return str(e.value)


def test_a_csv_cell_is_text_whatever_it_looks_like(tmp_path):
    """A CSV has no types, but pandas guessed one per column: numeric answers were refused ("output must be text;
    got int", and no edit of a CSV cell can make "4" text), an answer "NA" or "None" became a missing one."""
    csv = tmp_path / "qa.csv"
    csv.write_text("instruction,output\nWhat is 2+2?,4\nAbbreviation of North America?,NA\nAnd of nothing?,None\n"
                   "Zip code of Agawam?,01001\n")
    pv = _preview(csv)
    assert [r["messages"][1]["content"] for r in pv["examples"]] == ["4", "NA", "None", "01001"]
    empty = tmp_path / "empty-cell.csv"
    empty.write_text("instruction,output\nq1,a1\nq2,\n")  # an empty cell is still a missing answer
    assert _refusal(empty) == ("empty-cell.csv, row 2: output must be text; got NoneType (null or missing). Fix or "
                               "remove that row.")


def test_a_csv_whose_column_turns_from_numbers_to_words_after_10000_rows_is_read(tmp_path):
    """pandas guesses per 10,000-row chunk: the second chunk's words failed the file ("Could not read big.csv as CSV:
    Failed to parse string: 'answer 0' as a scalar of type int64")."""
    csv = tmp_path / "big.csv"
    csv.write_text("instruction,output\n" + "".join(f"q{i},{i}\n" for i in range(10_000)) + "q,answer 0\n")
    from backend import data

    ds = data.load_source(str(csv))
    assert len(ds) == 10_001 and ds[0]["output"] == "0" and ds[10_000]["output"] == "answer 0"


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_csv_separated_by_semicolons_or_tabs_is_split_so(tmp_path, sep):
    """A spreadsheet saved where the decimal mark is a comma separates with ';': one column 'instruction;output'
    fit no layout."""
    csv = tmp_path / "semi.csv"
    csv.write_text(f"instruction{sep}output\nWhat is 2,5 + 1?{sep}3,5\n")
    pv = _preview(csv)
    assert pv["layout"] == "alpaca" and pv["examples"][0]["messages"][1]["content"] == "3,5"


@pytest.mark.parametrize("name, content, said", [
    ("header.csv", "instruction,output\n", "holds a header line but no rows"),
    ("empty.json", "[]", "holds no rows: an empty array, or only empty objects {}"),
    ("objects.jsonl", "{}\n{}\n", "holds no rows: an empty array, or only empty objects {}"),
])
def test_a_file_of_no_rows_says_so_not_datasets_words(tmp_path, name, content, said):
    """It was 'Could not read header.csv as CSV: Instruction "train" corresponds to no data!'."""
    (tmp_path / name).write_text(content)
    assert _refusal(tmp_path / name) == f"Data file {name} {said}. Add rows to it, or choose another file."


def test_a_parquet_file_of_no_rows_says_so(tmp_path):
    """It was 'Could not read empty.parquet as PARQUET: BatchSize must be greater than 0, got 0'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": pa.array([], pa.string()), "output": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    assert _refusal(tmp_path / "empty.parquet") == "Data file empty.parquet has no rows."


def test_a_sharegpt_speaker_it_does_not_know_is_named_not_made_the_user(tmp_path):
    """Any speaker but human/gpt/system/... was read as the user: replies "from": "model" made every row "user,
    user" (then refused in roles the file does not use), a "function_call" turn was trained on as the user's
    words."""
    import json

    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"},
                                               {"from": "function_call", "value": "{}"},
                                               {"from": "gpt", "value": "done"}]}) + "\n")
    assert _refusal(f) == (
        "chats.jsonl, row 1: conversations, turn 3: from 'function_call' is no speaker this reads (one of human, "
        "user, gpt, assistant, system, chatgpt, bing, bard): rename it, or use the messages layout with its roles. "
        "Fix or remove that row.")
    f.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}))
    assert _preview(f)["examples"] == [{"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "x"}]}]


def test_a_mix_weight_a_float_product_leaves_just_over_a_whole_number_takes_no_extra_row():
    """A mix member's weight times its use's (expand_rows): 0.07 × 100 = 7.000000000000001 took the set 7 times and
    one random row more; 0.5 of a set still takes half of it, and any positive weight at least one row."""
    from backend import data

    ds, _ = data.prepare("builtin:alpaca-mini", "sft")
    n = len(ds)
    assert len(data.prepare("builtin:alpaca-mini", "sft", weight=0.07 * 100)[0]) == 7 * n
    assert len(data.prepare("builtin:alpaca-mini", "sft", weight=2.5)[0]) == 2 * n + n // 2
    assert len(data.prepare("builtin:alpaca-mini", "sft", weight=1e-9)[0]) == 1
    with pytest.raises(data.DataError, match=r"builtin:alpaca-mini: weight must be a positive finite number; got inf"):
        data.prepare("builtin:alpaca-mini", "sft", weight=1e200 * 1e200)
