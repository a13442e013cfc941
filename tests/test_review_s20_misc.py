"""Review session 20, user walk: an lm-eval task name checked before queueing, one list of eval task forms, refused
uploads not kept, the name rule's "ASCII letters", a merge of a model with itself refused, the seed reader's
layouts and its "not UTF-8" wording."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backend import evaltasks, lmeval, registry, runner, uploads
from backend.data import DataError, preview
from backend.names import check_name
from backend.specs import EVAL_TASK_FORMS, EvalSpec, MergeSpec, explain
from backend.synth.seeds import SeedError, load_seeds
from storage import db
from storage.models import Job
from tests.test_pages import app
from tests.test_review_cli import cli

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"


# ---------------------------------------------------------------- 1. an unknown lm-eval task, refused when queued

def test_an_unknown_lm_eval_task_is_refused_before_it_is_queued_with_the_close_names(tiny_llama):
    """`lm-eval:arc_eazy` was queued and failed only when its turn came (lm-eval's index is built by the job)."""
    with pytest.raises(ValueError, match=r"lm-eval task 'arc_eazy' is unknown; did you mean 'arc_easy'\?") as no:
        runner.submit(EvalSpec(models=[str(tiny_llama)], tasks=["perplexity", "lm-eval:arc_eazy"]))
    assert "dus_gsm8k_mini, dus_truthfulqa_mini; presets: h6" in str(no.value)
    assert runner.list_jobs() == []
    for known in ("lm-eval:arc_easy", "lm-eval:h6", "lm-eval:dus_gsm8k_mini", "lm-eval:mmlu"):  # task, preset, group
        evaltasks.check_task(known, 5)


@pytest.fixture
def fresh_index(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    evaltasks.lm_eval_index.cache_clear()
    built = []

    class Manager:  # lm-eval's TaskManager as the index reads it: its all_tasks
        def __init__(self):
            built.append(1)
            self.all_tasks = ["arc_easy", "gsm8k", "mmlu"]

    monkeypatch.setattr(lmeval, "_hub_manager", Manager)
    yield built, tmp_path / "cache" / "dus-studio"
    evaltasks.lm_eval_index.cache_clear()  # the real index for the other tests


def test_lm_eval_index_is_built_once_per_installed_lm_eval(fresh_index):
    """Building lm-eval's index takes ~10 s: a second process reads the names from the cache file instead."""
    built, folder = fresh_index
    assert evaltasks.lm_eval_index() == {"arc_easy", "gsm8k", "mmlu"} and built == [1]
    (cache,) = folder.glob("lm-eval-*-tasks.json")
    assert json.loads(cache.read_text())["names"] == ["arc_easy", "gsm8k", "mmlu"]
    evaltasks.lm_eval_index.cache_clear()  # as a new process
    assert evaltasks.lm_eval_index() == {"arc_easy", "gsm8k", "mmlu"} and built == [1]
    with pytest.raises(evaltasks.EvalError, match="of the 3 tasks, groups and tags lm-eval registers"):
        evaltasks.check_task("lm-eval:nosuchtask", 5)


# ---------------------------------------------------------------- 2. one list of task forms

def test_an_unknown_task_kind_lists_every_form_the_help_offers():
    with pytest.raises(ValidationError) as no:
        EvalSpec(models=["m"], tasks=["vibes:x"])
    said = explain(no.value)
    assert "qa[:FILE]" in said and "perplexity[:FILE]" in said  # left out before
    help_ = EvalSpec.model_fields["tasks"].description
    assert all(form in said and form in help_ for form in EVAL_TASK_FORMS.values())
    for bare in ("mc", "gsm8k", "lm-eval"):
        with pytest.raises(ValidationError, match="needs a file or task name after the colon"):
            EvalSpec(models=["m"], tasks=[bare])
    assert EvalSpec(models=["m"], tasks=["qa", "perplexity", "synth-math"]).tasks == ["qa", "perplexity", "synth-math"]


# ---------------------------------------------------------------- 3. a refused upload is not kept

def _stored() -> list[str]:
    return sorted(p.name for p in uploads.uploads_dir().glob("*"))


@pytest.mark.parametrize("name, body", [("empty.jsonl", b""), ("image.jsonl", BINARY),
                                        ("wrong.jsonl", b'{"colour": "red"}\n')])
def test_an_upload_the_train_page_refuses_is_removed(tiny_llama, name, body):
    registry.import_folder(tiny_llama, "tiny")
    at = app("train.py")
    at.file_uploader(key="upload").set_value((name, body, "application/json")).run()
    assert not at.exception, at.exception
    assert any(name in e.value for e in at.error), [e.value for e in at.error]
    assert _stored() == []  # was kept in workspace/uploads for good


def test_a_seed_upload_the_synth_page_refuses_is_removed_and_a_good_one_kept():
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    at.file_uploader(key="seed_upload").set_value(("seeds.jsonl", BINARY, "application/json")).run()
    assert [e.value for e in at.error] == [
        "seeds.jsonl, line 1, column 1: not UTF-8 (byte 0x89): save the file as UTF-8, then upload it again."]  # one
    # instruction (tests/test_review_s25_cli.py): "… as UTF-8. Fix the file and upload it again." gave two
    assert _stored() == []
    good = json.dumps({"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"}) + "\n"
    at.file_uploader(key="seed_upload").set_value(("good.jsonl", good.encode(), "application/json")).run()
    assert not at.error and len(_stored()) == 1


def test_an_upload_stored_before_or_named_by_a_job_is_kept_when_refused_again():
    """The same bytes may be a saved spec's file (stored before), or a job's: only what this upload wrote goes."""
    before, written = uploads.store_upload(b"", "kept.jsonl")
    assert written and uploads.store_upload(b"", "kept.jsonl") == (before, None)
    assert not uploads.discard_refused(before, None) and before.exists()
    with db.session() as s:
        s.add(Job(kind="sft", spec={"data": [{"source": str(before)}]}))
        s.commit()
    assert not uploads.discard_refused(before, before.stat().st_mtime_ns) and before.exists()
    other, written = uploads.store_upload(b"x", "other.jsonl")
    assert uploads.discard_refused(other, written) and not other.exists()


def test_a_refused_upload_another_tab_stored_again_meanwhile_is_kept():
    """Tab A wrote the file and was still reading it when tab B uploaded the same bytes (found: not new) and
    accepted them; A's refusal then removed B's file."""
    path, written = uploads.store_upload(b"x", "same.jsonl")  # tab A
    assert uploads.store_upload(b"x", "same.jsonl") == (path, None)  # tab B, while A reads
    assert not uploads.discard_refused(path, written) and path.exists()  # A refuses: B's file stays


# ---------------------------------------------------------------- 4. the name rule says ASCII

def test_the_name_rule_says_ascii_letters():
    with pytest.raises(ValueError) as no:
        check_name("modèle-ü✓", "name")
    assert str(no.value) == ("name 'modèle-ü✓': use ASCII letters (a–z, A–Z), digits, '.', '_' and '-' (at most 100, "
                             "not starting with a symbol).")


# ---------------------------------------------------------------- 5. a merge of a model with itself

def test_a_merge_of_a_model_with_itself_is_refused_by_the_spec_and_the_cli(tiny_llama):
    """`merge --models tiny tiny` registered a copy of tiny as tiny_tiny-average."""
    registry.import_folder(tiny_llama, "tiny")
    with pytest.raises(ValidationError) as no:
        MergeSpec(models=["tiny", "tiny"], method="slerp")
    assert explain(no.value) == ("models: 'tiny' listed twice; a merge of a model with itself is that model: give "
                                 "different models.")
    rc, out, err = cli("merge", "--models", "tiny", "tiny")
    assert rc == 2 and "'tiny' listed twice" in err
    assert [r.name for r in registry.list_models()] == ["tiny"] and runner.list_jobs() == []


# ---------------------------------------------------------------- 6. seed layouts and one "not UTF-8"

def test_a_seed_record_missing_its_fields_names_both_layouts(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problm": "What is 2+2?", "solution": "\\boxed{4}"}) + "\n")
    with pytest.raises(SeedError) as no:
        load_seeds(str(path))
    assert str(no.value) == ("math.jsonl, record 1: missing question, answer — a seed record is MATH's "
                             "{problem, solution} or GSM8K's {question, answer}.")


def test_a_binary_seed_file_is_not_utf8_as_on_the_train_page(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(BINARY)
    with pytest.raises(SeedError) as seeds:
        load_seeds(str(path))
    with pytest.raises(DataError) as train:
        preview(str(path), "sft")
    assert str(seeds.value) == "seeds.jsonl, line 1, column 1: not UTF-8 (byte 0x89): save the file as UTF-8."
    assert str(seeds.value) in str(train.value)


def test_a_utf16_seed_file_is_read_as_the_train_page_reads_one(tmp_path):
    path = tmp_path / "seeds.jsonl"
    row = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"}
    path.write_text(json.dumps(row) + "\n", encoding="utf-16")  # Notepad's "Unicode"
    (seed,) = load_seeds(str(path))
    assert seed.question == row["question"] and seed.answer == "5"


def test_lm_eval_that_cannot_be_imported_is_said_when_a_task_is_checked(monkeypatch):
    """lm-eval missing or broken raised a raw ModuleNotFoundError at queueing and in a recipe's plan."""
    from backend import evaltasks, lmeval

    def broken():
        raise ModuleNotFoundError("No module named 'lm_eval.tasks'; 'lm_eval' is not a package")

    monkeypatch.setattr(lmeval, "local_tasks", broken)
    with pytest.raises(evaltasks.EvalError, match=r"lm-evaluation-harness cannot be imported \(No module named"):
        evaltasks.check_task("lm-eval:arc_easy", 5)


def test_a_merge_of_one_model_by_two_names_is_refused_before_queueing(tiny_llama):
    """Its name and its folder (or the folder with a trailing slash) passed the spec's check of names as typed and
    were merged as two models."""
    from backend.merge.executor import MergeError

    rec = registry.import_folder(tiny_llama, "tiny")
    for models in (["tiny", rec.path], [str(tiny_llama), str(tiny_llama) + "/"]):
        with pytest.raises(MergeError, match="are one model .*a merge of a model with itself is that model"):
            runner.submit(MergeSpec(models=models, method="linear"))
    assert runner.list_jobs() == []


def test_the_builtin_model_by_two_names_before_it_is_imported_is_one_model():
    from backend.merge.executor import MergeError

    assert registry.get(registry.BUILTIN_NAME) is None
    with pytest.raises(MergeError, match="are one model \\(the built-in model\\)"):
        runner.check_before_queueing(MergeSpec(models=["builtin", registry.BUILTIN_NAME], method="linear"))
