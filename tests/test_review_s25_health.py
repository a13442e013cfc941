"""Code health, session 25. (1) backend/training.py (535 lines) split: a run folder's checkpoints, the resume check
and its words moved to backend/training_checkpoints.py, and one size guard now holds every module of the project
under the house's ~500 lines. (2) One tolerant reader of a model's config.json (modelinfo.config_or_problem) serves
read_config and the model tables' registry.arch_and_vocab. (3) The tables' facts are kept while the file is
unchanged: the Models page parsed every model's config at each rerun. (4) The runner's modules import one way: what
resume_step reads moved below it (runner/registered.py, training_checkpoints), so it imports no module that imports
it back."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from backend import modelinfo, registry, training, training_checkpoints
from backend.safetensors_stream import CheckpointError
from storage.models import ModelRecord
from tests.test_review_s19_split_a import _imported  # every module a file imports
from tests.test_review_s24_sizes import _names_read  # the names the project reads from a module

ROOT = Path(__file__).resolve().parent.parent


# ---- 1. house size, and training.py split ---------------------------------------------------------------------------

def line_counts(paths) -> dict[str, int]:
    """Lines of each file, by its path in the repository: the one size helper."""
    return {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in paths}


def test_every_module_of_the_studio_stays_under_500_lines():
    """One guard for the whole studio (backend, storage, pages, app.py): training.py had grown to 535 lines with no
    size test of its own; queue.py (493) and recipe/tables.py (495) are held by it too."""
    sizes = line_counts([*ROOT.glob("backend/**/*.py"), *ROOT.glob("storage/**/*.py"), *ROOT.glob("pages/**/*.py"),
                         ROOT / "app.py"])
    assert len(sizes) > 100  # the globs found the studio
    assert {f: n for f, n in sizes.items() if n >= 500} == {}


def test_training_gives_every_name_the_studio_reads_and_the_moved_ones_are_the_very_objects():
    used = _names_read("backend.training") - {"py"}  # "training.py" in a sentence
    assert {"run_train", "check_resume", "failure_reason", "TrainingError", "complete_checkpoints"} <= used
    assert sorted(u for u in used if not hasattr(training, u)) == []
    for name in ("TrainingError", "PLACEMENT_FIELDS", "check_resume", "complete_checkpoints", "resumable_checkpoints",
                 "resume_words"):
        assert getattr(training, name) is getattr(training_checkpoints, name), name


def test_the_checkpoints_module_imports_neither_the_training_job_nor_the_runner():
    """train_entry (every trainer process) and the runner's resume_point read the checkpoints there: importing
    backend.training pulled in the runner, data and the memory planner, and the runner imported training back."""
    imported = _imported(ROOT / "backend/training_checkpoints.py")
    assert not {m for m in imported if m.startswith(("backend.training", "backend.runner"))
                or m in ("backend.runner", "backend.data")}, imported
    assert "backend.training" not in _imported(ROOT / "backend/train_entry.py")


def test_the_training_error_keeps_its_name_in_a_traceback(tmp_path):
    """A job's error line is its exception's last traceback line: "backend.training.TrainingError: …" as before."""
    ckpt = tmp_path / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    from backend.specs import DataSource, SftSpec

    spec = SftSpec(model="m", data=[DataSource(source="builtin:alpaca-mini")], max_steps=3)
    (tmp_path / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    with pytest.raises(training.TrainingError) as err:
        training.check_resume(spec, tmp_path)
    assert traceback.format_exception_only(err.type, err.value)[0].startswith(
        f"backend.training.TrainingError: max_steps 3, but run folder {tmp_path} holds checkpoint-5, already past it.")


# ---- 2 and 3. one tolerant config reader, kept while the file is unchanged ------------------------------------------

def _rec(folder: Path) -> ModelRecord:
    return ModelRecord(name="m", path=str(folder), kind="base", architecture="RowArch", model_type="llama")


def test_one_reader_serves_read_config_and_the_model_tables(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 99}))
    read = []
    real = modelinfo.config_or_problem
    monkeypatch.setattr(modelinfo, "config_or_problem", lambda f: read.append(Path(f)) or real(f))
    assert modelinfo.read_config(folder)["vocab_size"] == 99
    assert registry.arch_and_vocab(_rec(folder)) == ("LlamaForCausalLM", 99)
    assert read == [folder, folder]


@pytest.mark.parametrize("content, said", [
    (b"[1, 2]", "config.json is not valid JSON for a config: it holds a list, not an object."),
    (b"\xff\xfe{not text", "config.json is not valid JSON ("),
])
def test_a_config_that_is_no_json_object_is_refused_in_words_and_shown_as_unknown(tmp_path, content, said):
    """read_config handed a list on (inspect_model then failed on it as no layer count), and raised a bare
    UnicodeDecodeError for bytes that are no text; the model tables fell back to the row's facts for both."""
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(said)):
        modelinfo.read_config(tmp_path)
    assert registry.arch_and_vocab(_rec(tmp_path)) == ("RowArch", None)


def test_a_gone_folder_is_no_error_for_the_tables_and_said_for_read_config(tmp_path):
    gone = tmp_path / "gone"
    assert registry.arch_and_vocab(_rec(gone)) == ("RowArch", None)
    said = f"{gone} has no config.json: it is not a Hugging Face model folder"
    with pytest.raises(CheckpointError, match=re.escape(said)):
        modelinfo.read_config(gone)


def test_the_tables_read_a_config_once_until_it_changes(tmp_path, monkeypatch):
    """150 models on the Models page: every rerun parsed 150 files (about 15 ms of each rerun here); now each is
    parsed once, and again when it is rewritten (another mtime or size)."""
    modelinfo._config_facts.cache_clear()
    read = []
    real = modelinfo.config_or_problem
    monkeypatch.setattr(modelinfo, "config_or_problem", lambda f: read.append(Path(f)) or real(f))
    recs = []
    for i in range(150):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_vl", "text_config": {"vocab_size": i}}))
        recs.append(_rec(folder))
    for _ in range(3):  # three reruns
        assert [registry.arch_and_vocab(r) for r in recs] == [("RowArch", i) for i in range(150)]
    assert len(read) == 150
    config = Path(recs[7].path) / "config.json"
    config.write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936}))
    os.utime(config, ns=(1, 1))  # another mtime, whatever the clock's resolution
    assert registry.arch_and_vocab(recs[7]) == ("Qwen3ForCausalLM", 151936)
    assert len(read) == 151


# ---- 4. the runner's import graph has no loop -----------------------------------------------------------------------

RUNNER = sorted(p.stem for p in (ROOT / "backend/runner").glob("*.py") if p.stem != "__init__")


def _runner_imports(module: str) -> set[str]:
    """The runner modules `module` imports, at its top or inside a function."""
    tree = ast.parse((ROOT / "backend/runner" / f"{module}.py").read_text())
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("backend.runner."):
            out.add(n.module.split(".")[2])
        elif isinstance(n, ast.ImportFrom) and n.module == "backend.runner":
            out |= {a.name for a in n.names if a.name in RUNNER}
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[2] for a in n.names if a.name.startswith("backend.runner.")}
    return out


def test_no_runner_module_imports_one_that_imports_it_back():
    """states imported hosts, hosts resume_step, and resume_step imported states inside resume_action (and
    training, which imports the runner, inside resume_point): a loop that held only while the import stayed
    inside the function."""
    graph = {m: _runner_imports(m) for m in RUNNER}

    def loop_from(m, path):
        if m in path:
            return path[path.index(m):] + [m]
        return next((found for n in sorted(graph[m]) if (found := loop_from(n, path + [m]))), None)

    assert [loop for m in RUNNER if (loop := loop_from(m, []))] == []
    assert graph["resume_step"] == {"registered"} and graph["registered"] == set()
    assert not {i for i in _imported(ROOT / "backend/runner/resume_step.py") if i.startswith("backend.training.")
                or i == "backend.training"}


FIRST = r"""
import importlib, os, sys
from pathlib import Path
run_dir, firsts = Path(sys.argv[1]), sys.argv[2:]
OURS = ("backend", "storage", "tests")


def fork(first, body):
    read, write = os.pipe()
    if (pid := os.fork()) == 0:
        os.close(read)
        try:
            said = body(first)
        except BaseException as exc:
            said = f"{type(exc).__name__}: {exc}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    return pid, read


def libraries(first):  # the third-party modules the studio's import loads
    importlib.import_module(first)
    return " ".join(m for m in sys.modules if m.split(".")[0] not in OURS and "__main__" not in m)


def resume_labels(first):
    importlib.import_module(first)
    from backend.runner.resume_step import resume_action
    from storage.models import Job
    return " | ".join(resume_action(Job(id=1, kind=kind, status="queued", run_dir=str(run_dir))).label
                      for kind in ("sft", "upscale"))


pid, read = fork("backend.training", libraries)
with os.fdopen(read) as f:
    names = f.read().split()
os.waitpid(pid, 0)
for name in names:  # loaded once here, so that each child pays only for importing the studio's own modules
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not [m for m in sys.modules if m.split(".")[0] in OURS]
children = [(first, *fork(first, resume_labels)) for first in firsts]
for first, pid, read in children:
    with os.fdopen(read) as f:
        print(f"{first}: {f.read()}")
    os.waitpid(pid, 0)
"""

@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_each_runner_module_imported_first_in_a_fresh_interpreter_says_what_a_resume_does(tmp_path):
    """Each runner module (and the training modules) imported before any other module of the studio, in a fresh
    process, then a resume's button read for a training with a checkpoint and for a build: the rules resume_action
    reads (what a run registered, a run folder's checkpoints) are there however the import began."""
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    firsts = [f"backend.runner.{m}" for m in RUNNER] + ["backend.runner", "backend.training",
                                                       "backend.training_checkpoints"]
    out = subprocess.run([sys.executable, "-c", FIRST, str(tmp_path), *firsts], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{m}: Resume from the last checkpoint | Run again" for m in firsts]
