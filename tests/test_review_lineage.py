"""Lineage after a forced delete, and training from a corrupt model folder (findings of a CLI walk).

Parents are recorded by name (ModelRecord.parents), so a name freed by `models delete --force` must not be taken by
another model: it would become the ancestor of the deleted model's children, in their lineage and in the
evaluation's training-data overlap check (backend/heldout.py). A training job from a truncated folder is refused
before anything is launched or written, and a trainer's failure is summed up by the exception that caused it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from backend import heldout, registry, training
from backend.__main__ import main
from storage import db
from tests.conftest import make_llama

SFT_DATA = {"kind": "sft", "data": [{"source": "builtin:alpaca-mini", "weight": 1.0}]}
DPO_DATA = {"kind": "dpo", "data": [{"source": "builtin:prefs-mini", "weight": 1.0}]}
STRANGER_DATA = {"kind": "cpt", "data": [{"source": "builtin:facts-corpus", "weight": 1.0}]}


def cli(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of `python -m backend ARGS`, run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(args))
    return rc, err.getvalue()


@pytest.fixture
def orphaned(tiny_llama) -> None:
    """base -> tiny6-cpt-sft -> tiny6-cpt-sft-dpo, then tiny6-cpt-sft deleted with --force."""
    registry.import_folder(tiny_llama, "base")
    registry.register(tiny_llama, "tiny6-cpt-sft", "trained", parents=["base"], recipe=SFT_DATA)
    registry.register(tiny_llama, "tiny6-cpt-sft-dpo", "trained", parents=["tiny6-cpt-sft"], recipe=DPO_DATA)
    with pytest.raises(registry.RegistryError, match="'tiny6-cpt-sft' is already registered"):  # held, not deleted
        registry.register(tiny_llama, "tiny6-cpt-sft", "trained", parents=["base"])
    with pytest.raises(registry.RegistryError, match="1 model.*made from 'tiny6-cpt-sft': tiny6-cpt-sft-dpo"):
        registry.delete("tiny6-cpt-sft")
    registry.delete("tiny6-cpt-sft", force=True)
    assert registry.get("tiny6-cpt-sft") is None


def test_a_deleted_parents_name_cannot_be_taken_so_lineage_and_overlap_stay_true(orphaned, tokenizer_dir,
                                                                                    tmp_path):
    stranger = make_llama(tokenizer_dir, tmp_path / "stranger", layers=10, seed=3)
    with pytest.raises(registry.RegistryError, match=r"made from it and still name it as their parent: "
                                                     r"tiny6-cpt-sft-dpo.*Choose another name"):
        registry.register(stranger, "tiny6-cpt-sft", "upscaled", parents=["base"], recipe=STRANGER_DATA)
    with pytest.raises(registry.RegistryError, match="tiny6-cpt-sft-dpo"):
        registry.check_name_free("tiny6-cpt-sft")  # what runner.submit and every build check before any work
    assert registry.get("tiny6-cpt-sft") is None
    assert registry.lineage("tiny6-cpt-sft-dpo") == [("tiny6-cpt-sft", False)]
    sources, notes = heldout.lineage_sources("tiny6-cpt-sft-dpo")
    assert sources == ["builtin:prefs-mini"]  # not the stranger's builtin:facts-corpus
    assert notes == ["tiny6-cpt-sft: not registered, its training data is unknown"]


def test_the_cli_refuses_the_freed_name_and_leaves_nothing(orphaned, workspace):
    rc, err = cli("upscale", "--base", "base", "--m", "1", "--name", "tiny6-cpt-sft")
    assert rc != 0 and "Traceback" not in err
    assert "still name it as their parent: tiny6-cpt-sft-dpo" in err and "Choose another name" in err
    assert registry.get("tiny6-cpt-sft") is None
    assert not (db.models_dir() / "tiny6-cpt-sft").exists()


def test_the_name_is_free_again_once_no_model_names_it(orphaned, tiny_llama):
    registry.delete("tiny6-cpt-sft-dpo")
    rec = registry.register(tiny_llama, "tiny6-cpt-sft", "trained", parents=["base"], recipe=SFT_DATA)
    assert (rec.name, registry.lineage("tiny6-cpt-sft")) == ("tiny6-cpt-sft", [("base", True)])


def test_parents_shown_marks_a_deleted_parent(orphaned, tmp_path):
    dpo = registry.get("tiny6-cpt-sft-dpo")
    assert registry.parents_shown(dpo) == ["tiny6-cpt-sft (deleted)"]
    assert registry.parents_shown(registry.get("base")) == []
    made_from_folder = registry.register(registry.resolve("base")[0], "from-folder", "upscaled",
                                         parents=["base", str(tmp_path / "gone-folder")])
    assert registry.parents_shown(made_from_folder) == ["base", str(tmp_path / "gone-folder")]


def test_the_builtin_model_may_take_its_name_back_but_nothing_else_may(tiny_llama):
    builtin = registry.BUILTIN_NAME
    registry.register(tiny_llama, builtin, "base", source="builtin")
    registry.register(tiny_llama, "child", "trained", parents=[builtin], recipe=SFT_DATA)
    registry.delete(builtin, force=True)
    with pytest.raises(registry.RegistryError, match="still name it as their parent: child"):
        registry.import_folder(tiny_llama, builtin)
    # import_builtin's re-import after its folder went: the same model again, so its children's lineage holds
    registry.check_name_free(builtin, "builtin")
    registry.register(tiny_llama, builtin, "base", source="builtin")
    assert registry.lineage("child") == [(builtin, True)]


def test_training_from_a_truncated_folder_is_refused_before_launch_and_leaves_nothing(tiny_llama, tmp_path,
                                                                                      workspace):
    broken = tmp_path / "truncated"
    shutil.copytree(tiny_llama, broken)
    raw = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(raw[: len(raw) - 100])
    rc, err = cli("train", "cpt", "--model", str(broken), "--data", "builtin:facts-corpus", "--max-steps", "1")
    assert rc != 0 and "Traceback" not in err
    assert f"{broken / 'model.safetensors'}: tensor" in err and "truncated download?" in err
    assert "training failed" not in err  # refused up front, not after the launched trainer died
    runs = workspace / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert registry.list_models() == []


def test_the_failure_summary_names_an_exception_with_a_module_path():
    tail = ["Traceback (most recent call last):",
            '  File "backend/train_entry.py", line 80, in main',
            "safetensors._safetensors_rust.SafetensorError: Error while deserializing header: incomplete metadata, "
            "file not fully covered",
            "Traceback (most recent call last):",
            "subprocess.CalledProcessError: Command '['python', '-m', 'backend.train_entry']' returned non-zero "
            "exit status 1."]
    assert training.failure_line(tail) == tail[2]
    assert training.failure_line(["ValueError: bad rows", "error: x"]) == "ValueError: bad rows"
    assert training.failure_line(["some output", "last words"]) == "last words"
    assert training.failure_line([]) == "no output"


def test_models_list_and_the_models_page_mark_the_deleted_parent(orphaned, capsys):
    from streamlit.testing.v1 import AppTest

    assert main(["models", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tiny6-cpt-sft-dpo "))
    assert line.endswith("tiny6-cpt-sft (deleted)")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/models.py").run()
    table = at.dataframe[0].value
    assert table.set_index("name").loc["tiny6-cpt-sft-dpo", "parents"] == "tiny6-cpt-sft (deleted)"


def test_a_training_rerun_under_a_taken_name_is_refused_before_its_data_is_read(tiny_llama, monkeypatch):
    """`run cpt.yaml` a second time took 10 s to say the name was taken: the data were loaded first."""
    from backend import data
    from backend.specs import CptSpec, DataSource

    registry.import_folder(tiny_llama, "tiny")
    registry.register(tiny_llama, "tiny-cpt", "trained", parents=["tiny"])

    def unread(source):
        raise AssertionError(f"{source} was read before the name was checked")

    monkeypatch.setattr(data, "load_source", unread)
    with pytest.raises(registry.RegistryError, match="A model named 'tiny-cpt' is already registered"):
        training.run_train(CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))
