"""Third user-review walk: what the registry already knows is refused before a job is queued (a merge of models of
different depth, an import of a file under a taken name), and three error texts that named the wrong thing."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from backend import data, registry, runner, uploads
from backend.__main__ import main
from backend.merge import MergeError, run_merge
from backend.specs import ImportSpec, MergeSpec, UpscaleSpec, explain
from tests.conftest import make_llama

ROOT = Path(__file__).resolve().parent.parent
NAME_RULE = "use ASCII letters (a–z, A–Z), digits, '.', '_' and '-' (at most 100, not starting with a symbol)."


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(f"pages/{name}").run()
    assert not at.exception, at.exception
    return at


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def deep(tokenizer_dir, tmp_path_factory) -> Path:
    return make_llama(tokenizer_dir, tmp_path_factory.mktemp("deep"), layers=8)


@pytest.fixture(scope="module")
def half(tokenizer_dir, tmp_path_factory) -> Path:
    return make_llama(tokenizer_dir, tmp_path_factory.mktemp("half"), dtype=torch.bfloat16)


# ---------------------------------------------------------------- 1. a merge the registry shows cannot work

def test_a_merge_of_models_of_different_depth_is_refused_before_it_is_queued(tiny_llama, deep, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(deep, "deep")
    spec = MergeSpec(models=["tiny", "deep"])
    with pytest.raises(MergeError) as refused:
        runner.submit(spec)
    with pytest.raises(MergeError) as ran:  # what the job said when it ran (before writing anything)
        run_merge(spec)
    assert str(refused.value) == str(ran.value) == \
        "tiny and deep cannot be merged: they have different layers or tensors (6 vs 8 layers)."
    rc, err = cli("merge", "--models", "tiny", "deep", "--queue")
    assert rc != 0 and "tiny and deep cannot be merged: they have different layers or tensors (6 vs 8 layers)." in err
    # a registered folder given by its path is the same row; the base of a relative method is checked too
    with pytest.raises(MergeError, match=r"\(6 vs 8 layers\)"):
        runner.submit(MergeSpec(models=["tiny", str(deep)]))
    other = shutil.copytree(tiny_llama, tmp_path / "other")  # a second 6-layer candidate (tiny's own folder is
    with pytest.raises(MergeError, match=r"tiny and deep cannot be merged: .*\(6 vs 8 layers\)"):  # tiny itself)
        runner.submit(MergeSpec(models=["tiny", str(other)], method="task_arithmetic", base="deep"))
    assert runner.list_jobs() == []


def test_the_merge_page_says_why_and_queues_nothing(tiny_llama, deep):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(deep, "deep")
    at = page("compare.py")
    at.multiselect(key="merge_models").set_value(["tiny", "deep"]).run()
    # said as soon as the pair is chosen (it was said only after the click), and Merge off
    assert [e.value for e in at.error] == [
        "tiny and deep cannot be merged: they have different layers or tensors (6 vs 8 layers). Choose other "
        "candidates."]
    assert at.button(key="merge").disabled
    assert runner.list_jobs() == []


def test_width_is_refused_from_the_rows_and_models_still_to_be_made_are_left_to_the_job(tiny_llama, half):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(half, "half")
    # another dtype is no refusal: the merge casts as mergekit does (tests/test_review_s23_dtypes.py)
    assert runner.submit(MergeSpec(models=["tiny", "half"], name="mixed")).kind == "merge"
    with registry.db.session() as s:  # a row of another width (a wider model's headers), checked without its folder
        row = registry.get("half")
        row.dtype, row.hidden_size = "F32", 48
        s.add(row)
        s.commit()
    with pytest.raises(MergeError) as refused:
        runner.submit(MergeSpec(models=["tiny", "half"]))
    assert [j.spec["name"] for j in runner.list_jobs()] == ["mixed"]  # the refused merge queued nothing
    assert str(refused.value) == ("tiny and half cannot be merged: the models differ in architecture (hidden_size: "
                                  "32 vs 48); only models of the same architecture and shapes can be combined.")
    # a recipe's merge waits for candidates a queued job will make: queued, checked when it runs
    maker = runner.submit(UpscaleSpec(base="tiny", m=1, name="made-later"))
    job = runner.submit(MergeSpec(models=["tiny", "made-later"]), after=maker.id)
    assert (job.kind, job.status) == ("merge", "queued")


# ---------------------------------------------------------------- 2. an import the registry shows cannot work

def test_an_import_of_a_file_under_a_taken_name_is_refused_with_both_reasons(tiny_llama, tmp_path):
    rec = registry.import_folder(tiny_llama, "tiny")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage{{{\n")
    with pytest.raises(registry.RegistryError) as refused:
        runner.submit(ImportSpec(target=str(bad), name="tiny"))
    assert str(refused.value) == (
        f"{bad} is a file, not a model: import the folder that holds its config.json and weights (.safetensors; "
        f".bin with 'allow pickle'), or a .gguf file. A model named 'tiny' is already registered: the base model at "
        f"{rec.path}. Choose another name, or delete tiny first (Models page, or `python -m backend models delete "
        f"tiny`).")
    with pytest.raises(registry.RegistryError, match=r"^'/nowhere/at/all' is not a folder, a \.gguf file or a Hub"):
        runner.submit(ImportSpec(target="/nowhere/at/all"))
    with pytest.raises(registry.RegistryError, match=r"^GGUF file .*none\.gguf does not exist\.$"):
        runner.submit(ImportSpec(target=str(tmp_path / "none.gguf")))
    # the folder's own name is the default name, and it is taken by the first import of that folder
    registry.import_folder(tiny_llama)
    with pytest.raises(registry.RegistryError, match=f"A model named '{tiny_llama.name}' is already registered"):
        runner.submit(ImportSpec(target=str(tiny_llama)))
    assert runner.list_jobs() == []
    queued = [runner.submit(ImportSpec(target=str(tiny_llama), name="tiny-2")),
              runner.submit(ImportSpec(target="builtin")), runner.submit(ImportSpec(target="someone/model"))]
    assert [j.status for j in queued] == ["queued"] * 3


def test_the_models_page_says_why_an_import_is_not_queued(tiny_llama, tmp_path):
    rec = registry.import_folder(tiny_llama, "tiny")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage{{{\n")
    at = page("models.py")
    at.text_input(key="import_target").set_value(str(bad)).run()
    at.text_input(key="import_name").set_value("tiny").run()
    at.button(key="import").click().run()
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"Not queued: {bad} is a file, not a model")
    assert f"A model named 'tiny' is already registered: the base model at {rec.path}." in error
    assert runner.list_jobs() == []
    rc, err = cli("models", "import", str(bad), "--name", "tiny")  # the CLI imports through the same check
    assert rc != 0 and f"{bad} is a file, not a model" in err and "already registered: the base model" in err


# ---------------------------------------------------------------- 3. error texts

def test_an_unreadable_upload_is_named_as_sent_with_the_line_counted_from_one():
    path = uploads.store_upload(b"garbage{{{\n", "bad.jsonl")[0]
    assert path.name != "bad.jsonl"  # stored under a content hash
    with pytest.raises(data.DataError) as exc:
        data.load_source(str(path))
    assert str(exc.value) == "bad.jsonl, line 1, column 1: not valid JSON (Expecting value). Each line must be one JSON object."
    path = uploads.store_upload(b'{"text": "a"}\n\n{"text": \n', "notes.jsonl")[0]
    with pytest.raises(data.DataError) as exc:
        data.load_source(str(path))
    assert str(exc.value).startswith("notes.jsonl, line 3, column 10: not valid JSON (")


def test_the_train_page_names_a_bad_upload_as_sent_with_its_line(tiny_llama):
    registry.import_folder(tiny_llama, "tiny")
    at = page("train.py")
    at.radio(key="kind").set_value("sft").run()
    at.file_uploader(key="upload").set_value(("broken.jsonl", b'{"prompt": "hi", "completion": "yo"}\n{"prompt": "x\n',
                                              "application/json")).run()
    (error,) = [e.value for e in at.error if "broken.jsonl" in e.value]
    assert "broken.jsonl, line 2, column 12: not valid JSON (Unterminated string starting there)" in error
    assert "-broken.jsonl" not in error and "row" not in error  # not the stored name, not pyarrow's 0-based row


def test_a_local_json_file_keeps_its_name_and_a_broken_array_names_its_line(tmp_path):
    bad = tmp_path / "0123456789abcdef-mine.json"  # looks like an upload, but is the user's own file
    bad.write_text('[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(data.DataError) as exc:
        data.load_source(str(bad))
    assert str(exc.value).startswith("0123456789abcdef-mine.json, line 3, column 12: not valid JSON (Expecting value)")


def test_the_zero_weights_merge_error_names_the_page_checkbox_and_the_spec_field():
    with pytest.raises(ValidationError) as exc:
        MergeSpec(models=["a", "b"], weights=[1.0, -1.0])
    assert explain(exc.value) == (
        "weights: they sum to zero, so they cannot be normalized by their sum; change a weight, or untick "
        "\"Normalize by the weights' sum\" (normalize: false in a spec, --no-normalize on the command line).")


def test_a_field_error_names_its_field_once():
    with pytest.raises(ValidationError) as exc:
        UpscaleSpec(base="tiny", m=1, name=" bad/name.. ", shard_size="lots")
    assert explain(exc.value).splitlines() == [f"name ' bad/name.. ': {NAME_RULE}",
                                               "shard_size 'lots' is not a size like 500MB or 2GB."]
    with pytest.raises(ValidationError) as exc:
        UpscaleSpec(base="tiny", m="two")
    assert explain(exc.value) == "m: Input should be a valid integer, unable to parse string as an integer"


def test_with_a_worker_on_another_machine_a_path_missing_here_is_left_to_that_machine(tiny_llama):
    """A shared database with a worker on another machine: the folder may be there (the job says so if not); the
    pre-queue check looked only here and refused it (review finding). A taken name is refused all the same."""
    from storage import db
    from storage.models import WorkerBeat, utcnow

    registry.import_folder(tiny_llama, "tiny")
    with db.session() as s:
        s.add(WorkerBeat(host="gpu-node-7", pid=1, seen=utcnow()))
        s.commit()
    job = runner.submit(ImportSpec(target="/data/models/only-on-gpu-node-7"))
    assert job.status == "queued"
    with pytest.raises(registry.RegistryError, match="A model named 'tiny' is already registered"):
        runner.submit(ImportSpec(target="/data/models/only-on-gpu-node-7", name="tiny"))
