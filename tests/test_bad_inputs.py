"""The bad-input catalogue: one table of wrong inputs across every CLI command and the backend calls the pages make.

Each case names the substring that tells the user what was wrong, and asserts that the command exits non-zero (or
the call raises) with it, without a traceback, and that NOTHING stayed behind: the models and datasets tables and
the workspace's models/, .tmp/, uploads/ and datasets/ folders are exactly as before.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from pydantic import ValidationError
from sqlmodel import select

from backend import registry
from backend.__main__ import main
from backend.specs import explain
from storage import db
from storage.models import DatasetRecord, ModelRecord
from tests.conftest import make_llama


@dataclass
class Case:
    id: str
    run: list[str] | Callable  # CLI arguments ({name} fills in a prepared path) or a call the page makes
    expect: str  # what the message must say


def _cfg(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


class Files:
    """Every broken input, prepared once per test in its own folder."""

    def __init__(self, root: Path, tiny: Path, tokenizer_dir: Path):
        self.root = root
        self.p: dict[str, str] = {"tiny": str(tiny), "root": str(root)}
        m = self.model("unknown_arch", tiny)
        _cfg(m, model_type="mystery", architectures=["MysteryForCausalLM"], num_hidden_layers=None)
        m = self.model("no_config", tiny)
        (m / "config.json").unlink()
        m = self.model("missing_shard", tiny)
        (m / "model.safetensors").rename(m / "model-00001-of-00002.safetensors")
        (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
        m = self.model("truncated", tiny)
        raw = (m / "model.safetensors").read_bytes()
        (m / "model.safetensors").write_bytes(raw[: len(raw) // 2])
        m = self.model("bad_header", tiny)
        raw = bytearray((m / "model.safetensors").read_bytes())
        raw[:8] = struct.pack("<Q", len(raw) * 4)
        (m / "model.safetensors").write_bytes(bytes(raw))
        m = self.model("no_weights", tiny)
        (m / "model.safetensors").unlink()
        m = self.model("pickle_only", tiny)
        (m / "model.safetensors").rename(m / "pytorch_model.bin")
        self.p["deep"] = str(make_llama(tokenizer_dir, root / "deep", layers=8))
        self.p["wide"] = str(make_llama(tokenizer_dir, root / "wide-src", layers=6))
        _widen(Path(self.p["wide"]))
        (root / "nonempty").mkdir()
        (root / "nonempty" / "keep.txt").write_text("mine")
        self.text("bad_json.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output":\n')
        self.text("empty.jsonl", "")
        self.text("blank.txt", "\n\n")
        self.text("no_columns.jsonl", '{"foo": 1, "bar": 2}\n')
        self.text("alpaca.jsonl", '{"instruction": "say hi", "output": "hi"}\n')
        self.text("wrong_types.jsonl", '{"messages": "not a list"}\n')
        self.text("data.xlsx", "not really")
        self.text("seeds_bad.jsonl", "{not json\n")
        self.text("seeds_empty.jsonl", "")
        self.text("seeds_wrong.jsonl", '{"riddle": "why?"}\n')
        self.text("mc_missing_field.jsonl", '{"question": "2+2?", "choices": ["3", "4"]}\n')
        self.text("gsm_bad.jsonl", "[1, 2\n")
        self.text("invalid.yaml", "kind: upscale\nbase: [unclosed\n")
        self.text("empty.yaml", "")
        self.text("unknown_kind.yaml", "kind: teleport\nbase: tiny\n")
        self.text("extra_field.yaml", "kind: upscale\nbase: tiny\nm: 1\ncolour: blue\n")
        self.text("bad_preset.yaml", "kind: merge\nmodels: [tiny, tiny]\nmethod: frankenmerge\n")
        self.text("huge_steps.yaml", "kind: sft\nmodel: tiny\ndata: [{source: builtin:alpaca-mini}]\n"
                                     "max_steps: 1000000000000\n")
        self.text("fake.gguf", "GGUF but not really")

    def model(self, key: str, tiny: Path) -> Path:
        dst = self.root / key
        shutil.copytree(tiny, dst)
        self.p[key] = str(dst)
        return dst

    def text(self, name: str, content: str) -> None:
        path = self.root / name
        path.write_text(content)
        self.p[name.replace(".", "_")] = str(path)


def _widen(folder: Path) -> None:
    """Same depth and names as tiny, but hidden size 48: a shape mismatch for merging."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(3)
    LlamaForCausalLM(cfg).save_pretrained(folder)


def _page_import(target: str, name: str | None = None):
    return lambda f: registry.import_any(target.format(**f.p), name)


def _page_preview(source: str, kind: str):
    def run(f):
        from backend import data

        ds = data.load_source(source.format(**f.p))
        data.detect_layout(ds.column_names, kind)
    return run


def _page_mix(sources: list[tuple[str, float]], name: str = "mix1"):
    def run(f):
        from backend.synth import pipeline

        pipeline.save_mix(name, [(s.format(**f.p), w) for s, w in sources], "sft")
    return run


def _page_spec(kind: str, **fields):
    """What a page does with a form: build the spec (validation happens here) and queue it."""
    def run(f):
        from backend import runner
        from backend.specs import spec_from_dict

        runner.submit(spec_from_dict({"kind": kind, **fields}))
    return run


SFT = ["train", "sft", "--model", "tiny", "--max-steps", "2"]
CASES = [
    # ---- up-scaling: m, architecture, broken checkpoints, names, outputs
    Case("m-zero", ["upscale", "--base", "tiny", "--m", "0"], "m=0: m must be at least 1"),
    Case("m-negative", ["upscale", "--base", "tiny", "--m", "-3"], "m=-3: m must be at least 1"),
    Case("m-half-n", ["upscale", "--base", "tiny", "--m", "3"], "choose 1 <= m <= 2"),
    Case("m-equals-n", ["upscale", "--base", "tiny", "--m", "6"], "choose 1 <= m <= 2"),
    Case("m-huge", ["upscale", "--base", "tiny", "--m", "1000000000"], "choose 1 <= m <= 2"),
    Case("m-not-int", ["upscale", "--base", "tiny", "--m", "two"], "invalid int value: 'two'"),
    Case("unknown-model", ["upscale", "--base", "no-such-model", "--m", "1"], "neither a registered model"),
    Case("unknown-arch", ["upscale", "--base", "{unknown_arch}", "--m", "1"], "Unknown architecture 'mystery'"),
    Case("no-config", ["upscale", "--base", "{no_config}", "--m", "1"], "has no config.json"),
    Case("missing-shard", ["upscale", "--base", "{missing_shard}", "--m", "1"], "missing shard"),
    Case("truncated", ["upscale", "--base", "{truncated}", "--m", "1"], "truncated"),
    Case("bad-header", ["upscale", "--base", "{bad_header}", "--m", "1"], "corrupt"),
    Case("no-weights", ["upscale", "--base", "{no_weights}", "--m", "1"], "No safetensors weights"),
    Case("name-slash", ["upscale", "--base", "tiny", "--m", "1", "--name", "a/b"], "use ASCII letters"),
    Case("name-dotdot", ["upscale", "--base", "tiny", "--m", "1", "--name", "../evil"], "use ASCII letters"),
    Case("name-taken", ["upscale", "--base", "tiny", "--m", "1", "--name", "tiny"], "already registered"),
    Case("out-not-empty", ["upscale", "--base", "tiny", "--m", "1", "--out", "{root}/nonempty"],
         "already exists and is not empty"),
    Case("shard-size-word", ["upscale", "--base", "tiny", "--m", "1", "--shard-size", "lots"],
         "is not a size like 500MB"),
    Case("shard-size-tiny", ["upscale", "--base", "tiny", "--m", "1", "--shard-size", "10B"], "at least 1KB"),
    Case("slice-format", ["upscale", "--base", "tiny", "--method", "slices", "--slice", "0:5"],
         "use SOURCE:START:END"),
    Case("slice-range", ["upscale", "--base", "tiny", "--method", "slices", "--slice", "0:0:3", "--slice", "0:2:9"],
         "out of range"),
    Case("llama-pro-groups", ["upscale", "--base", "tiny", "--method", "llama-pro", "--groups", "4"],
         "choose one of [1, 2, 3, 6]"),
    Case("unknown-method", ["upscale", "--base", "tiny", "--method", "stack", "--m", "1"], "invalid choice: 'stack'"),
    # ---- merging: depth, shapes, dtype, methods
    Case("merge-depth", ["merge", "--models", "tiny", "{deep}"], "cannot be merged: they have different layers or tensors (6 vs 8 layers)"),
    Case("merge-shapes", ["merge", "--models", "tiny", "{wide}"], "hidden_size: 32 vs 48"),
    # models that differ only in dtype merge, as mergekit's do (test_review_s23_dtypes); a dtype there is none of
    Case("merge-dtype", ["merge", "--models", "tiny", "tiny", "--dtype", "float8"], "invalid choice: 'float8'"),
    Case("merge-unknown", ["merge", "--models", "tiny", "ghost"], "neither a registered model"),
    Case("merge-ties-no-base", ["merge", "--method", "ties", "--models", "tiny", "{deep}"], "ties is relative to a base"),
    Case("merge-slerp-three", ["merge", "--method", "slerp", "--models", "tiny", "tiny", "tiny"], "slerp merges exactly two models"),
    Case("merge-weights-count", ["merge", "--models", "tiny", "tiny", "--weights", "1"],
         "weights (--weights on the command line): give one per model (2), not 1"),
    Case("merge-name", ["merge", "--models", "tiny", "tiny", "--name", "../up"], "use ASCII letters"),
    Case("merge-no-config", ["merge", "--models", "tiny", "{no_config}"], "has no config.json"),
    # ---- training data
    Case("train-bad-json", [*SFT, "--data", "{bad_json_jsonl}"],
         "bad_json.jsonl, line 2, column 31: not valid JSON"),
    Case("train-empty-file", [*SFT, "--data", "{empty_jsonl}"], "empty.jsonl is empty"),
    Case("train-no-layout", [*SFT, "--data", "{no_columns_jsonl}"], "fit no layout"),
    Case("train-dpo-needs-pairs", ["train", "dpo", "--model", "tiny", "--data", "{alpaca_jsonl}"], "fit no layout"),
    Case("train-wrong-types", [*SFT, "--data", "{wrong_types_jsonl}"],
         "row 1: messages must be a list of {role, content} turns"),
    Case("train-missing-file", [*SFT, "--data", "{root}/nope.jsonl"], "does not exist"),
    Case("train-file-type", [*SFT, "--data", "{data_xlsx}"], "unsupported file type"),
    Case("train-unknown-builtin", [*SFT, "--data", "builtin:nope"], "No built-in data set 'nope'"),
    Case("train-offline-hub", [*SFT, "--data", "someone/some-data"], "Offline?"),
    Case("train-unknown-model", ["train", "sft", "--model", "ghost", "--data", "builtin:alpaca-mini"],
         "neither a registered model"),
    Case("train-steps-zero", [*SFT[:-1], "0", "--data", "builtin:alpaca-mini"],
         "max_steps: Input should be greater than or equal to 1"),
    Case("train-steps-huge", ["run", "{huge_steps_yaml}"], "max_steps: Input should be less than or equal to 10000000"),
    Case("train-weight-negative", [*SFT, "--data", "builtin:alpaca-mini@-1"], "with a positive weight"),
    Case("train-name", [*SFT, "--data", "builtin:alpaca-mini", "--name", "x/../../y"], "use ASCII letters"),
    # ---- synthetic math
    Case("synth-level", ["synth-math", "--seeds", "4", "--level", "4"], "invalid choice: 4"),
    Case("synth-level-spec", _page_spec("synth-math", levels=[0]), "levels are 1, 2 or 3"),
    Case("synth-seed-missing", ["synth-math", "--seed-file", "{root}/none.jsonl"], "none.jsonl does not exist"),
    Case("synth-seed-bad-json", ["synth-math", "--seed-file", "{seeds_bad_jsonl}"], "seeds_bad.jsonl, line 1, column 2: not valid JSON"),
    Case("synth-seed-empty", ["synth-math", "--seed-file", "{seeds_empty_jsonl}"], "seeds_empty.jsonl holds no records"),
    Case("synth-seed-wrong", ["synth-math", "--seed-file", "{seeds_wrong_jsonl}"], "record 1: missing question, answer"),
    Case("synth-rephraser", ["synth-math", "--seeds", "4", "--rephraser", "magic"], "use rules, model:NAME"),
    Case("synth-seeds-zero", ["synth-math", "--seeds", "0"], "--seeds: Input should be greater than or equal to 1"),
    Case("synth-seeds-huge", ["synth-math", "--seeds", "1000000000"], "--seeds: Input should be less than or equal to"),
    Case("synth-name", ["synth-math", "--seeds", "4", "--name", "../../etc"], "use ASCII letters"),
    # ---- evaluation
    Case("eval-mc-missing", ["eval", "tiny", "--tasks", "mc:{root}/none.jsonl", "--limit", "2"], "does not exist"),
    Case("eval-mc-field", ["eval", "tiny", "--tasks", "mc:{mc_missing_field_jsonl}", "--limit", "2"],
         "missing answer"),
    Case("eval-gsm-json", ["eval", "tiny", "--tasks", "gsm8k:{gsm_bad_jsonl}", "--limit", "2"], "not valid JSON"),
    Case("eval-task", ["eval", "tiny", "--tasks", "vibes"], "choose one of perplexity"),
    Case("eval-task-needs-file", ["eval", "tiny", "--tasks", "mc"], "needs a file"),
    Case("eval-unknown-model", ["eval", "ghost", "--tasks", "perplexity"], "neither a registered model"),
    Case("eval-limit-zero", ["eval", "tiny", "--limit", "0"], "limit: Input should be greater than or equal to 1"),
    # ---- spec files
    Case("yaml-invalid", ["run", "{invalid_yaml}"], "is not valid YAML"),
    Case("yaml-empty", ["run", "{empty_yaml}"], "a spec is a mapping with a 'kind' field"),
    Case("yaml-unknown-kind", ["run", "{unknown_kind_yaml}"], "kind 'teleport' is not a kind of work"),
    Case("yaml-extra-field", ["run", "{extra_field_yaml}"], "colour: Extra inputs are not permitted"),
    Case("yaml-unknown-preset", ["run", "{bad_preset_yaml}"], "method: Input should be 'average'"),
    Case("yaml-missing", ["run", "{root}/none.yaml"], "none.yaml"),
    # ---- models, data sets, jobs
    Case("import-offline-hub", ["models", "import", "someone/some-model"], "offline"),
    Case("import-nothing", ["models", "import", "{root}/nowhere/at/all"], "is not a folder, a .gguf file"),
    Case("import-fake-gguf", ["models", "import", "{fake_gguf}"], "Could not read GGUF"),
    Case("import-pickle", ["models", "import", "{pickle_only}"], "allow pickle"),
    Case("import-broken", ["models", "import", "{truncated}"], "truncated"),
    Case("import-name", ["models", "import", "{deep}", "--name", "../x"], "use ASCII letters"),
    Case("delete-unknown", ["models", "delete", "ghost"], "No model named 'ghost'"),
    Case("mix-unknown-source", ["datasets", "mix", "m1", "builtin:nope"], "No built-in data set"),
    Case("export-unknown", ["datasets", "export", "ghost-pairs"], "No synthetic pairs named 'ghost-pairs'"),
    Case("cancel-unknown", ["jobs", "cancel", "999"], "No job 999"),
    Case("resume-unknown", ["jobs", "resume", "999"], "No job 999"),
    Case("after-unknown", ["upscale", "--base", "tiny", "--m", "1", "--after", "999"], "No job 999"),
    # ---- what the pages call
    Case("page-import-offline", _page_import("someone/other-model"), "offline"),
    Case("page-import-name", _page_import("{deep}", "a/b"), "use ASCII letters"),
    Case("page-preview-empty", _page_preview("{blank_txt}", "cpt"), "no rows"),
    Case("page-preview-layout", _page_preview("{no_columns_jsonl}", "sft"), "fit no layout"),
    Case("page-mix-weight", _page_mix([("builtin:alpaca-mini", 0.0)]), "weight must be a positive finite number"),
    Case("page-mix-name", _page_mix([("builtin:alpaca-mini", 1.0)], "../mix"), "use ASCII letters"),
    Case("page-upscale-m", _page_spec("upscale", base="tiny", m=0), "m=0: m must be at least 1"),
    Case("page-merge-method", _page_spec("merge", models=["tiny", "tiny"], method="nope"), "method: Input should be"),
]


def snapshot(ws: Path) -> tuple:
    with db.session() as s:
        models = sorted((r.name, r.path) for r in s.exec(select(ModelRecord)))
        datasets = sorted(r.name for r in s.exec(select(DatasetRecord)))
    files = sorted(str(p.relative_to(ws)) for sub in ("models", ".tmp", "uploads", "datasets", "runs")
                   if (ws / sub).exists() for p in (ws / sub).rglob("*"))
    return models, datasets, files


def run_case(case: Case, files: Files) -> str:
    """The message the user sees; fails the test if the action succeeded."""
    if callable(case.run):
        try:
            case.run(files)
        except ValidationError as exc:
            return explain(exc)
        except (ValueError, OSError, RuntimeError) as exc:
            return str(exc)
        pytest.fail(f"{case.id}: no error")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([a.format(**files.p) for a in case.run])
        except SystemExit as exc:  # argparse refuses before main's handler
            rc = exc.code
    assert rc not in (0, None), f"{case.id}: exit code {rc}"
    assert "Traceback" not in err.getvalue()
    return err.getvalue()


def go_offline(monkeypatch) -> None:
    """Offline mode, as HF_HUB_OFFLINE=1 gives a process that starts with it. huggingface_hub and datasets read the
    variable once, at import (conftest imports datasets first), so setting it here alone changed nothing in this
    process: a Hub id was requested over the network, and with no network here huggingface_hub's back-off retried
    for ~23 s (1+2+4+8+8) before the same "Offline?" message. The message must say so either way."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # for what reads it at call time, and for child processes
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def prepared(tiny_llama, tokenizer_dir, tmp_path_factory) -> Files:
    return Files(tmp_path_factory.mktemp("bad"), tiny_llama, tokenizer_dir)


def test_the_catalogue_is_large_and_names_are_unique():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, prepared, workspace, monkeypatch):
    go_offline(monkeypatch)
    registry.import_folder(Path(prepared.p["tiny"]), "tiny")
    before = snapshot(workspace)
    message = run_case(case, prepared)
    assert case.expect in message, f"{case.id}: {message!r}"
    assert snapshot(workspace) == before, f"{case.id} left something behind"
