"""Defects the last page review saw and left: the Train page's multi-machine section, seed-file errors on the
synthetic-math page, and compare charts with many models — each pinned by a test that fails without its fix."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from sqlmodel import select

from backend import registry, runner, uploads
from backend.synth import pipeline
from storage import db
from storage.models import EvalScore
from tests.test_pages import app


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


def machines_section(at):
    (box,) = [e for e in at.expander if e.label.startswith("Several machines")]
    return box


def test_invalid_machine_settings_keep_the_section_and_say_what_is_wrong(tiny):
    """A second machine without machine 0's address stopped the page before the Slurm half of the section: it
    vanished, and the reason sat at the page's foot."""
    at = app("train.py")
    at.text_input(key="slurm_partition").set_value("gpu").run()
    at.number_input(key="num_machines").set_value(2).run()
    assert not at.exception, at.exception
    box = machines_section(at)
    assert any(m.value.startswith("**On Slurm**") for m in box.markdown)
    (err,) = [e.value for e in box.error]
    assert err.startswith("main_process_ip: with num_machines 2 every machine needs the address of machine 0")
    assert any(c.value == "No Slurm script until this is fixed." for c in box.caption)
    assert not at.get("download_button") and not [c for c in at.code if c.value.startswith("#!/bin/bash")]
    assert at.text_input(key="slurm_partition").value == "gpu"  # the Slurm inputs stay, with what was typed

    at.text_input(key="main_process_ip").set_value("10.0.0.5").run()
    at.number_input(key="ray_workers").set_value(2).run()  # two ways to use several machines at once
    (err,) = [e.value for e in machines_section(at).error]
    assert err.startswith("num_machines 2 and ray_workers 2: choose one way")
    assert not at.get("download_button")

    at.number_input(key="ray_workers").set_value(1).run()
    box = machines_section(at)
    assert not box.error
    script = next(c.value for c in box.code if c.value.startswith("#!/bin/bash"))
    assert "#SBATCH --nodes=2" in script and "#SBATCH --partition=gpu" in script
    assert "Download the Slurm script" in [b.proto.label for b in at.get("download_button")]


def test_a_problem_outside_the_section_points_to_the_message_below(tiny):
    at = app("train.py")
    at.text_input(key="train_name_cpt_tiny").set_value("bad name!").run()
    box = machines_section(at)
    assert not box.error and not at.get("download_button")
    assert any("see the message at the foot of the page" in c.value for c in box.caption)
    assert any(e.value.startswith("name 'bad name!': ") for e in at.error)  # the field named once


MATH_ROW = {"problem": "What is $2+2$?", "level": "Level 1", "type": "Prealgebra", "solution": "$2+2=\\boxed{4}$"}


@pytest.mark.parametrize("body, says", [
    (json.dumps(MATH_ROW) + '\n{"problem": "broken\n', "My MATH seeds.jsonl, line 2, column 13: not valid JSON"),
    (json.dumps(MATH_ROW) + "\n\n" + json.dumps({"problem": "x"}) + "\n",
     "My MATH seeds.jsonl, record 3: missing solution — a seed record is MATH's {problem, solution} or GSM8K's "
     "{question, answer}."),
    (json.dumps({"question": "q", "answer": 7}) + "\n",
     "My MATH seeds.jsonl, record 1: answer must be text"),  # was a TypeError inside the job
])
def test_a_malformed_seed_upload_is_named_as_the_user_named_it(body, says):
    """The file was read only by the job, whose error named the stored '<content hash>-my-math-seeds.jsonl'."""
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    at.file_uploader(key="seed_upload").set_value(("My MATH seeds.jsonl", body.encode(), "application/json")).run()
    assert not at.exception, at.exception
    (err,) = [e.value for e in at.error]
    assert err.startswith(says) and err.endswith(". Fix the file and upload it again."), err
    assert not re.search(r"[0-9a-f]{16}-", err)  # not the stored '<content hash>-name'
    assert not list(uploads.uploads_dir().glob("*"))  # and the refused file is not kept (test_review_s20_misc)
    assert "make_pairs" not in [b.key for b in at.button] and not runner.list_jobs()
    assert not at.get("download_button")  # no "Save spec" of the generator's seeds in the bad file's place
    assert "Upload a readable seed file to make pairs or save the spec." in [i.value for i in at.info]


def test_a_math_record_with_an_empty_level_reads_as_level_1():
    """'"level": ""' raised an IndexError inside the seed reader, a traceback on the page since it reads uploads."""
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    body = json.dumps(MATH_ROW | {"level": ""}) + "\n"
    at.file_uploader(key="seed_upload").set_value(("levels.jsonl", body.encode(), "application/json")).run()
    assert not at.exception and not at.error
    assert "levels.jsonl: 1 seed problem." in [c.value for c in at.caption]


def test_a_good_seed_upload_says_how_many_seeds_it_holds():
    at = app("synth.py")
    at.radio(key="seed_kind").set_value("MATH / GSM8K file").run()
    body = "".join(json.dumps(MATH_ROW | {"problem": f"What is ${i}+2$?"}) + "\n" for i in range(3))
    at.file_uploader(key="seed_upload").set_value(("mine.jsonl", body.encode(), "application/json")).run()
    assert not at.error
    assert "mine.jsonl: 3 seed problems." in [c.value for c in at.caption]
    assert not at.button(key="make_pairs").disabled


def test_seed_errors_name_the_file_itself_without_a_label(tmp_path):
    from backend.synth.seeds import SeedError, load_seeds

    bad = tmp_path / "gsm.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no hashes"}) + "\n")
    with pytest.raises(SeedError, match=r"^gsm\.jsonl, record 1: the answer does not end"):
        load_seeds(str(bad))
    with pytest.raises(SeedError, match=r"^upload\.jsonl, record 1: the answer does not end"):
        load_seeds(str(bad), label="upload.jsonl")


BASES = ["smollm2-135m", "smollm2-360m-instruct", "qwen2.5-0.5b"]
STEPS = ["dus-m8", "dus-m8-cpt", "dus-m8-cpt-sft-v3", "dus-m8-cpt-sft-v4-dpo-v2", "dus-m4-cpt-sft-v1", "slerp-merged"]
MANY = [f"{b}-{s}" for b in BASES for s in STEPS][:16]  # 16 names of 18–45 characters, the compare page's worst


def assert_names_readable(axis, names):
    """Every model is a tick, in order, labelled by its name or the name cut in the middle, and the axis makes
    room for its labels."""
    assert axis.automargin is True
    assert list(axis.tickvals) == names and list(axis.categoryarray) == names
    for name, label in zip(names, axis.ticktext):
        assert label == name or (len(label) <= 28 and "…" in label and name.startswith(label.split("…")[0])
                                 and name.endswith(label.split("…")[1])), (name, label)
    assert len(set(axis.ticktext)) == len(names)


def test_a_bar_chart_of_16_models_names_every_model_readably():
    """Vertical bars with a fixed 80 px margin cut the names off and ran them into each other."""
    from pages.figures import bar_figure

    rows = [{"model": m, "value": i / 20} for i, m in enumerate(MANY)]
    fig = bar_figure(rows, "gsm8k (accuracy)", MANY)
    (bar,) = fig.data
    assert bar.orientation == "h" and list(bar.y) == MANY and list(bar.hovertext) == MANY  # the whole name
    assert_names_readable(fig.layout.yaxis, MANY)
    assert fig.layout.yaxis.autorange == "reversed"  # the page's first model on top
    assert fig.layout.xaxis.range[0] == 0 and fig.layout.xaxis.range[1] >= 0.75
    fewer = bar_figure(rows[:12], "gsm8k (accuracy)", MANY)
    assert fig.layout.height >= 16 * 26 and fig.layout.height > fewer.layout.height > 320  # a row per model


def test_answer_length_boxes_and_the_leaderboard_of_16_models_name_every_model():
    from pages.figures import leaderboard_figure, length_box_figure

    fig = length_box_figure({m: [10 + i, 20 + i, 30 + i] for i, m in enumerate(MANY)})
    assert [t.name for t in fig.data] == MANY and {t.orientation for t in fig.data} == {"h"}
    assert_names_readable(fig.layout.yaxis, MANY)
    assert fig.layout.hoverlabel.namelength == -1  # plotly cut hover names at 15 characters
    assert fig.layout.height >= 16 * 26
    board = [{"model": m, "score": 1100 - i, "low": 1050 - i, "high": 1150 - i} for i, m in enumerate(MANY)]
    fig = leaderboard_figure(board, "Plain")
    bar, whiskers = fig.data
    assert bar.orientation == "h" and list(bar.hovertext) == MANY and list(whiskers.error_x.array) == [50] * 16
    assert list(whiskers.y) == MANY
    assert_names_readable(fig.layout.yaxis, MANY)
    assert fig.layout.height >= 16 * 26


def test_length_bins_of_16_models_get_a_legend_beside_the_chart_that_grows_with_it():
    """A legend of 16 names under the chart scrolled and squeezed the plot to a strip."""
    from pages.figures import by_bin_figure

    rows = [{"model": m, "bin": b, "range": f"{10 * b}–{10 * b + 10} words", "n": 3, "accuracy": 0.5}
            for m in MANY for b in range(3)]
    fig = by_bin_figure(rows, "accuracy")
    assert fig.layout.legend.orientation == "v" and fig.layout.height >= 16 * 20
    assert sorted(t.hovertext[0] for t in fig.data) == sorted(MANY)
    assert max(len(t.name) for t in fig.data) <= 28


def test_a_few_short_names_keep_upright_bars_and_names_alike_at_both_ends_stay_whole():
    from pages.figures import bar_figure, short_name

    fig = bar_figure([{"model": m, "value": 0.5} for m in ["base", "merged", "sft"]], "math (accuracy)")
    assert fig.data[0].orientation == "v" and fig.layout.height == 320
    assert_names_readable(fig.layout.xaxis, ["base", "merged", "sft"])
    alike = [f"smollm2-135m-{k}-run-with-a-long-tail-sft" for k in ("a", "b")]  # cut alike: "…" hides a / b
    assert short_name(alike[0]) == short_name(alike[1])
    fig = bar_figure([{"model": m, "value": 0.5} for m in alike], "math (accuracy)")
    assert list(fig.layout.yaxis.ticktext) == alike
    from pages.figures import by_bin_figure

    rows = [{"model": m, "bin": 0, "range": "0–10 words", "n": 3, "accuracy": 0.5} for m in alike]
    assert [t.name for t in by_bin_figure(rows, "accuracy").data] == alike  # the legend too (it read alike)


def test_a_resume_refused_on_the_page_says_why_instead_of_a_traceback(tiny, monkeypatch):
    """A training run cancelled from another machine may still run there until that machine's worker stops it:
    the Monitor page's Restart button showed runner.resume's refusal as an exception."""
    from backend.specs import DataSource, SftSpec
    from storage.models import WorkerBeat, utcnow

    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t"))
    runner._update(job.id, status="cancelled", pid=4242, host="machine-b")  # b's pid: not looked up from here
    with db.session() as s:
        s.add(WorkerBeat(host="machine-b", pid=1, seen=utcnow()))  # b's worker beats: it has yet to stop the run
        s.commit()
    monkeypatch.setenv("DUS_HOST_ID", "machine-a")
    at = app("monitor.py")
    at.button(key=f"resume_{job.id}").click().run()
    assert not at.exception, at.exception
    assert any(f"Job {job.id} is still stopping on machine-b" in e.value for e in at.error)
    assert runner.get(job.id).status == "cancelled"


@pytest.fixture
def saved(monkeypatch) -> dict[str, str]:
    """What the pages' download buttons offer, by file name: AppTest keeps it in its in-memory media store."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, str] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        if filename and filename.endswith(".yaml") and isinstance(path_or_data, (str, bytes)):
            files[filename] = path_or_data if isinstance(path_or_data, str) else path_or_data.decode()
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


def test_every_spec_a_page_saves_reruns_from_the_command_line(tiny, tokenizer_dir, tmp_path, saved):
    """'A spec saved from the UI reruns from the CLI': each page's Save spec (YAML) through `python -m backend run`.
    The Compare page offered none for its merge and its evaluation."""
    from tests.conftest import make_llama
    from tests.test_cli_runner import cli, here

    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "other", seed=1), "other")
    app("build.py")
    at = app("train.py")
    at.number_input(key="max_steps").set_value(2).run()
    at.number_input(key="save_steps").set_value(2).run()
    at = app("synth.py")
    at.number_input(key="num_seeds").set_value(6).run()
    at = app("compare.py")
    at.multiselect(key="merge_models").set_value(["tiny", "other"]).run()
    at.multiselect(key="eval_models").set_value(["tiny"]).run()
    at.multiselect(key="eval_tasks").set_value(["perplexity"]).run()
    at.number_input(key="eval_limit").set_value(3).run()
    assert not at.exception, at.exception
    kinds = {name: yaml_kind(text) for name, text in saved.items()}
    assert sorted(kinds.values()) == ["cpt", "eval", "merge", "synth-math", "upscale"], kinds
    for name, text in saved.items():
        path = tmp_path / name
        path.write_text(text)
        # the training in a process of its own, as a user runs it; the others in this one (test_cli_runner.here)
        r = (cli if kinds[name] == "cpt" else here)("run", str(path))
        assert r.returncode == 0, (name, r.stderr[-2000:])
    assert {r.name for r in registry.list_models()} == {"tiny", "other", "tiny-dus-m2", "other-cpt",
                                                         "tiny_other-average-0.5-0.5"}
    assert pipeline.get_dataset("synth-math-pairs").rows == 6
    with db.session() as s:
        assert s.exec(select(EvalScore.model, EvalScore.task).where(EvalScore.metric == "perplexity")).all() == [
            ("tiny", "perplexity")]


def yaml_kind(text: str) -> str:
    return yaml.safe_load(text)["kind"]
