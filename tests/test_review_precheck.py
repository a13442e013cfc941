"""Bad data files are refused before anything is queued: a recipe stage's malformed or wrongly laid-out data file
passed the plan and failed its stage after the stages before it had run (its dependants then waited for ever), and
an evaluation's malformed task file was queued and failed when its turn came, with a traceback in its log. Each
test fails without its fix; nothing here runs a job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from backend import data, evaltasks, evaluate, recipe, registry, runner
from backend.__main__ import main as cli
from backend.recipe.spec import RecipeError
from backend.specs import DataSource, EvalSpec, SftSpec
from storage import db
from storage.models import Job, RecipeRun
from tests.test_pages import app


def smoke(base: Path) -> dict:
    return yaml.safe_load(recipe.preset("smoke", str(base)))


def nothing_queued() -> None:
    with db.session() as s:
        assert s.exec(select(Job)).all() == [] and s.exec(select(RecipeRun)).all() == []


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


ALPACA = {"instruction": "Add 2 and 2.", "output": "4"}


# ---------------------------------------------------------------- recipe: a stage's data, read at plan

@pytest.mark.parametrize("key, lines, said", [
    ("data", [ALPACA, "{not json"], "bad.jsonl, line 2"),
    ("data", [{"foo": "a", "bar": "b"}], "Columns ['bar', 'foo'] fit no layout usable for sft"),
    ("data", [{"messages": "hello"}], "bad.jsonl, row 1: messages must be a list of {role, content} turns"),
    ("eval_data", [ALPACA, "[1, 2"], "bad.jsonl, line 2"),
])
def test_recipe_plan_refuses_a_stage_data_file_its_job_cannot_read(tiny_llama, tmp_path, key, lines, said):
    d = smoke(tiny_llama)
    bad = write(tmp_path / "bad.jsonl", lines)
    d["stages"][0][key] = [{"source": str(bad)}] if key == "data" else {"source": str(bad)}
    with pytest.raises(RecipeError) as err:
        recipe.plan_text(yaml.safe_dump(d))
    where = f"stage sft-a.{key}[0].source: "
    assert str(err.value).startswith(where) and said in str(err.value)
    with pytest.raises(RecipeError, match=f"^{re.escape(where)}"):
        recipe.run_recipe(yaml.safe_dump(d))  # the Recipe page's Run: no stage queued, no run recorded
    nothing_queued()


def test_recipe_plan_refuses_a_builtin_set_of_the_wrong_layout_and_reads_each_file_once(tiny_llama, tmp_path,
                                                                                        monkeypatch):
    d = smoke(tiny_llama)
    d["stages"][0]["data"] = [{"source": "builtin:facts-corpus"}]  # plain text: no conversation for SFT
    with pytest.raises(RecipeError) as err:
        recipe.plan_text(yaml.safe_dump(d))
    assert str(err.value).startswith("stage sft-a.data[0].source: builtin:facts-corpus: Columns ['text'] fit no layout usable for sft")
    # a good file plans as before; a file two stages share is read once
    good = write(tmp_path / "good.jsonl", [ALPACA] * 3)
    d = smoke(tiny_llama)
    for st in d["stages"][:2]:
        st["data"] = [{"source": str(good)}]
    reads = []
    load = data.load_source
    monkeypatch.setattr(data, "load_source", lambda src: reads.append(src) or load(src))
    [p] = recipe.plan_text(yaml.safe_dump(d))
    assert p.lines()[0] == "recipe smoke: 9 to run, 0 reused, 0 already queued"
    assert reads == [str(good)]


def test_recipe_plan_and_run_cli_exit_2_with_the_reader_message(tiny_llama, tmp_path, capsys):
    d = smoke(tiny_llama)
    bad = write(tmp_path / "bad.jsonl", [ALPACA, "{not json"])
    d["stages"][1]["data"] = [{"source": "builtin:alpaca-mini"}, {"source": str(bad)}]
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(d))
    for argv in (["recipe", "plan", str(f)], ["recipe", "run", str(f), "--queue"], ["run", str(f), "--queue"]):
        capsys.readouterr()
        assert cli(argv) == 2
        out = capsys.readouterr()
        assert "stage sft-b.data[1].source: bad.jsonl, line 2" in out.err and "to run" not in out.out
    nothing_queued()


def test_the_recipe_page_plans_and_runs_nothing(tiny_llama, tmp_path):
    """The page's Plan said "9 to run" for a recipe whose stage data was malformed; Run then ran the up-scaling."""
    d = smoke(tiny_llama)
    d["stages"][0]["data"] = [{"source": str(write(tmp_path / "bad.jsonl", [ALPACA, "{not json"]))}]
    at = app("recipe.py")
    at.text_area(key="recipe_yaml").input(yaml.safe_dump(d)).run()
    at.button(key="recipe_plan").click().run()
    assert not at.exception, at.exception
    assert not [c for c in at.caption if "to run" in c.value]
    [err] = [e.value for e in at.error]
    assert err.startswith("Not planned: stage sft-a.data[0].source: bad.jsonl, line 2")
    at.button(key="recipe_run").click().run()
    assert [e.value for e in at.error] == [err.replace("Not planned", "Not run")]
    nothing_queued()


def test_recipe_plan_refuses_a_malformed_eval_task_file(tiny_llama, tmp_path):
    d = smoke(tiny_llama)
    qa = write(tmp_path / "qa.jsonl", [{"id": 1, "question": "Capital of France?"}])
    d["eval"] = {"tasks": ["perplexity", f"qa:{qa}"], "limit": 4}
    with pytest.raises(RecipeError) as err:
        recipe.plan_text(yaml.safe_dump(d))
    assert str(err.value) == ("eval.tasks: qa.jsonl, line 1: missing answers, answerable (a row is {id, question, "
                              "answers: [...], answerable: true/false}).")
    d["eval"] = None
    d["stages"].append({"name": "check", "kind": "eval", "models": ["avg"], "tasks": [f"qa:{qa}"]})
    with pytest.raises(RecipeError, match=r"^stage check\.tasks: qa\.jsonl, line 1: missing answers"):
        recipe.plan_text(yaml.safe_dump(d))
    nothing_queued()


# ---------------------------------------------------------------- eval: task files, read when queued

MC = {"question": "2 + 2?", "choices": ["3", "4"], "answer": 1}
GSM = {"question": "2 + 2?", "answer": "2 + 2 = 4 #### 4"}


@pytest.mark.parametrize("kind, lines, said", [
    ("mc", [MC, "{bad"], "task.jsonl, line 2: not valid JSON."),
    ("mc", [MC, {**MC, "answer": "B"}], "task.jsonl, line 2: answer must be the index of the right choice"),
    ("gsm8k", [GSM, {"question": "3 + 3?"}], "task.jsonl, line 2: missing answer (the layout is {question, answer})."),
    ("gsm8k", [GSM, "7"], "task.jsonl, line 2: expected an object {question, answer}; got int."),
    ("gsm8k", [GSM, {"question": "3 + 3?", "answer": ["6"]}], "task.jsonl, line 2: answer must be text ending"),
    ("qa", [{"id": "a", "question": "Capital of France?", "answers": ["Paris"], "answerable": "yes"}],
     "task.jsonl, line 1: answerable must be true or false."),
    ("perplexity", ['{"text": "fine"}', '{"text": broken}'], "task.jsonl, line 2"),
])
def test_a_malformed_task_file_is_not_queued(tiny_llama, tmp_path, kind, lines, said):
    task = f"{kind}:{write(tmp_path / 'task.jsonl', lines)}"
    spec = EvalSpec(models=[str(tiny_llama)], tasks=["synth-math", task], limit=4)
    with pytest.raises(ValueError) as err:
        runner.submit(spec)
    assert said in str(err.value)
    nothing_queued()


def test_a_binary_task_file_is_named_with_what_to_give(tiny_llama, tmp_path):
    """Python's "'utf-8' codec can't decode byte 0x89 in position 0" named neither the file nor the fix."""
    png = tmp_path / "scores.jsonl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    with pytest.raises(ValueError) as err:
        runner.submit(EvalSpec(models=[str(tiny_llama)], tasks=[f"mc:{png}"]))
    assert str(err.value) == (f"mc:{png}: scores.jsonl is not UTF-8 text (byte 0); give a JSON Lines file, one "
                              "object a line.")
    nothing_queued()


def test_eval_cli_queue_exits_2_and_good_files_still_queue(tiny_llama, tmp_path, capsys):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama, "twin")
    bad = write(tmp_path / "bad.jsonl", [GSM, {"question": "3 + 3?"}])
    for argv in (["eval", "tiny", "--tasks", f"gsm8k:{bad}", "--queue"],
                 ["eval", "tiny", "twin", "--tasks", f"gsm8k:{bad}", "--queue"]):  # one job per model
        capsys.readouterr()
        assert cli(argv) == 2
        assert "bad.jsonl, line 2: missing answer (the layout is {question, answer})." in capsys.readouterr().err
    nothing_queued()
    good = write(tmp_path / "good.jsonl", [GSM, {"question": "3 + 3?", "answer": 6}])  # a bare number is the answer
    assert cli(["eval", "tiny", "--tasks", f"gsm8k:{good}", "--queue"]) == 0
    assert [j.kind for j in runner.list_jobs()] == ["eval"]
    assert [a for _, _, a in evaluate.task_set(f"gsm8k:{good}", 10).items] == ["4", "6"]


def test_a_missing_perplexity_file_is_refused_and_a_hub_data_set_left_to_the_job(tiny_llama, tmp_path,
                                                                                   monkeypatch):
    """A perplexity file is no Hub id (the spec lets both through): missing, it is refused when queued. Reading a
    Hub id or an lm-eval task needs the network (a 24 s wait offline): queueing does not try."""
    missing = tmp_path / "missing.txt"
    with pytest.raises(ValueError) as err:
        runner.submit(EvalSpec(models=[str(tiny_llama)], tasks=[f"perplexity:{missing}"]))
    assert str(err.value) == f"perplexity:{missing}: Data file {missing} does not exist."
    nothing_queued()
    monkeypatch.setattr(evaltasks, "task_set", lambda task, limit: pytest.fail(f"read {task} at queueing"))
    job = runner.submit(EvalSpec(models=[str(tiny_llama)], tasks=["perplexity:someone/some-set", "lm-eval:arc_easy"]))
    assert job.status == "queued"


def test_the_eval_page_says_not_queued(tiny_llama, tmp_path):
    """Once, with one job per model (the default for two): each model's submit said it again."""
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama, "tiny-2")
    bad = write(tmp_path / "bad.jsonl", [MC, "{bad"])
    at = app("compare.py")
    at.multiselect(key="eval_models").set_value(["tiny", "tiny-2"]).run()
    assert at.toggle(key="eval_fan_out").value
    at.text_input(key="eval_more").set_value(f"mc:{bad}").run()
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Not queued: bad.jsonl, line 2: not valid JSON."]
    nothing_queued()


@pytest.mark.parametrize("how", ["train", "run"])
def test_train_and_run_queue_refuse_a_malformed_data_file(tiny_llama, tmp_path, capsys, how):
    """`train --queue` and `run SPEC --queue` queued a job on a file its trainer could not read (the Train page
    previews it): the job failed when its turn came. Built-in sets of the wrong layout are refused alike."""
    registry.import_folder(tiny_llama, "tiny")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "yo"}\n{"prompt": \n')
    argv = ["train", "sft", "--model", "tiny", "--data", str(bad), "--queue"]
    if how == "run":
        (tmp_path / "sft.yaml").write_text(SftSpec(model="tiny", data=[DataSource(source=str(bad))]).to_yaml())
        argv = ["run", str(tmp_path / "sft.yaml"), "--queue"]
    assert cli(argv) == 2
    assert "bad.jsonl, line 2, column 12: not valid JSON" in capsys.readouterr().err
    with pytest.raises(data.DataError, match="builtin:facts-corpus"):  # plain text, no sft layout
        runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")]))
    assert runner.list_jobs() == []


def test_train_queue_refuses_a_registered_set_or_mix_of_the_wrong_layout(tiny_llama, workspace, capsys):
    """A registered set or a mix holding one, of a layout the job cannot train on, was queued by `train --queue` and
    failed the job when its turn came (only built-in sets and local files were read)."""
    from backend.synth import pipeline

    registry.import_folder(tiny_llama, "tiny")
    chat = workspace / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "1 + 1?"},
                                             {"role": "assistant", "content": "2"}]}) + "\n")
    pipeline.save_dataset("chat", "sft", str(chat), 1, {})
    pipeline.save_mix("chat-mix", [("dataset:chat", 1.0), ("builtin:alpaca-mini", 1.0)], "sft")
    for source in ("dataset:chat", "mix:chat-mix"):
        assert cli(["train", "dpo", "--model", "tiny", "--data", source, "--queue"]) == 2
        assert "dataset:chat: Columns ['messages'] fit no layout usable for dpo" in capsys.readouterr().err
    nothing_queued()
    assert cli(["train", "sft", "--model", "tiny", "--data", "mix:chat-mix", "--queue"]) == 0
    assert [j.kind for j in runner.list_jobs()] == ["sft"]


def test_a_recipe_stage_on_its_own_synthetic_data_still_queues(tiny_llama, workspace):
    """Registered sets are read before a training job is queued; the recipe's own synthetic sets are not registered
    until their synth-math stage has run, and the recipe queues every stage at once."""
    from tests.test_review_recipe11 import recipe_text, stage

    [run_id] = recipe.run_recipe(recipe_text(tiny_llama, stage("sft", "stage:synth/instruct"),
                                             stage("dpo", "stage:synth/alignment", name="align")))
    kinds = [j.kind for _, j in recipe.stages(run_id) if j]
    assert kinds.count("synth-math") == 1 and {"sft", "dpo"} <= set(kinds)
    assert {j.status for j in runner.list_jobs()} == {"queued"}
