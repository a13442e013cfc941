"""Shared fixtures: a real (tiny, trained-here) BPE tokenizer and tiny random models saved as safetensors.

Everything runs on the CPU in seconds. Each test gets its own workspace (and so its own SQLite database).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import datasets  # noqa: F401 - see below
import pytest
import torch

# datasets gives its logger a StreamHandler bound to sys.stderr as it is at the first `import datasets`. Imported
# first inside a test that captures output (capfd), that stream is closed after the test, and a later log line
# of datasets (a malformed JSON file, say) prints "--- Logging error ---" with a traceback into the next test's
# output. Imported here, it binds to the session's stream.

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Depth up-scaling stacks two copies of a model's layers into a deeper model.",
    "Twelve times seven is eighty four. Half of ten is five. 3 + 4 = 7.",
    "Solar is built from Llama 2 with 32 layers; removing 8 layers from each copy gives 48.",
    "Question: what is 15 percent of 200? Answer: 30.",
] * 20


def make_tokenizer(out: Path) -> Path:
    """A real byte-level BPE tokenizer (300 tokens, ChatML template) trained here on CORPUS, saved to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _save(model, tokenizer_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, GenerationConfig

    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    GenerationConfig(eos_token_id=2, pad_token_id=2, max_new_tokens=8).save_pretrained(out)
    return out


def make_llama(tokenizer_dir: Path, out: Path, *, layers=6, tie=True, seed=0, dtype=torch.float32) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return _save(LlamaForCausalLM(cfg).to(dtype), tokenizer_dir, out)


def make_qwen2(tokenizer_dir: Path, out: Path, *, layers=6, seed=0) -> Path:
    """Qwen2 with per-layer attention types: sliding windows on the later layers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    types = ["full_attention"] * (layers // 2) + ["sliding_attention"] * (layers - layers // 2)
    cfg = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      use_sliding_window=True, sliding_window=16, layer_types=types, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return _save(Qwen2ForCausalLM(cfg), tokenizer_dir, out)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer_dir, tmp_path_factory) -> Path:
    """Llama with GQA (4 heads, 2 KV heads) and tied embeddings, 6 layers."""
    return make_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_untied(tokenizer_dir, tmp_path_factory) -> Path:
    return make_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny-llama-untied"), tie=False, seed=1)


@pytest.fixture(scope="session")
def tiny_qwen2(tokenizer_dir, tmp_path_factory) -> Path:
    return make_qwen2(tokenizer_dir, tmp_path_factory.mktemp("tiny-qwen2"))


# `database` (a test's DATABASE_URL: SQLite, or a fresh database on a throw-away PostgreSQL cluster) and the rule of
# which tests run on both live beside the cluster helper.
from tests.pg_cluster import database, postgres_cluster, pytest_generate_tests  # noqa: E402,F401
# The two-node Ray cluster of tests/test_ray.py and tests/test_ray_train.py, made once here. Imported into each of
# those modules instead, pytest took it for two session fixtures and started (and kept to the end) two clusters.
from tests.ray_cluster import ray_cluster  # noqa: E402,F401


@pytest.fixture(scope="session")
def empty_database(tmp_path_factory) -> Path:
    """A workspace's SQLite database as db.init_db makes it (every table, no row), made once for the session."""
    from storage import db

    ws = tmp_path_factory.mktemp("empty-workspace")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUS_WORKSPACE", str(ws))
        mp.delenv("DATABASE_URL", raising=False)
        engine = db.init_db()
        with engine.connect() as conn:  # everything into the file itself: a copy of it is the whole database
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
    return ws / "studio.db"


def _new_databases_from(template: Path, monkeypatch) -> None:
    """A SQLite database this process opens first (db.init_db) starts as a copy of `template`, made where and when the
    database itself would have been: creating the tables and checking the schema cost ~0.05 s of CPU and ~0.07 s
    of disk writes, in about half the suite's tests. db._ready.__wrapped__ (what a test of the creation itself
    calls) and other processes create their database as before; so does a test marked fresh_database."""
    from storage import db

    ready = db._ready

    def first_open(url: str):
        path = Path(url.removeprefix("sqlite:///"))
        if url.startswith("sqlite:///") and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}")
            shutil.copyfile(template, part)
            try:
                os.link(part, path)  # never over a database another thread made meanwhile
            except FileExistsError:
                pass
            finally:
                os.unlink(part)  # not Path.unlink, which a test may patch (test_review_s21_files)
        return ready(url)

    first_open.__wrapped__, first_open.cache_clear = ready.__wrapped__, ready.cache_clear
    monkeypatch.setattr(db, "_ready", first_open)


@pytest.fixture(autouse=True)
def workspace(request, tmp_path, monkeypatch, database, empty_database) -> Path:
    ws = tmp_path / "workspace"
    monkeypatch.setenv("DUS_WORKSPACE", str(ws))
    # runner.execute run in the test process sets it; a later test's in-process work must not write as that job
    monkeypatch.delenv("DUS_JOB_ID", raising=False)
    monkeypatch.delenv("DUS_JOB_PID", raising=False)  # and its pid: a later training callback wrote nothing
    if database:
        monkeypatch.setenv("DATABASE_URL", database)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        if not request.node.get_closest_marker("fresh_database"):
            _new_databases_from(empty_database, monkeypatch)
    return ws


@pytest.fixture(autouse=True)
def one_torch_thread_per_child(monkeypatch) -> None:
    """The processes a test starts (job processes, `accelerate launch` and its trainer, workers, the served app, Ray
    jobs, which forward it: backend/cluster/ray_jobs.py FORWARD) use one torch thread. accelerate otherwise gives
    its trainer every core (`--num_cpu_threads_per_process` 2 here), and on this 2-core machine, beside the test
    process and a worker, two OpenMP threads on matrices of 32x64 spin-wait for each other: a 30-step SFT of the
    tiny Llama (backend/train_entry.main, save_steps 5) measured 69 s wall / 31 s CPU with 2 threads and 9.7 s /
    4.1 s with one, beside other work on the machine. The product's default is unchanged: only tests set it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(f))
    return state


# The session's Ray cluster (tests/ray_cluster.py) stops as soon as the last test that uses it has run, not at the
# end of the session: idle, its raylets, GCS and dashboard agents took ~6 % of a core from every later test, and the
# session's last teardown waited 5 s a node for them (`ray start --block` took ~30 s to stop after its SIGTERM here,
# so each wait ran out; 20 s with the second cluster it once had). begin_stop only signals them; the fixture's own
# end reaps them, by then long stopped.
_LAST_RAY_TEST = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the items that will really run, in order
def pytest_collection_modifyitems(config, items) -> None:
    users = [item.nodeid for item in items if "ray_cluster" in getattr(item, "fixturenames", ())]
    if users:
        config.stash[_LAST_RAY_TEST] = users[-1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if item.nodeid == item.config.stash.get(_LAST_RAY_TEST, None):
            from tests.ray_cluster import SESSION

            for cluster in SESSION:
                cluster.begin_stop()
