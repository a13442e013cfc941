"""Session 22: a CLI command loads what it needs, not what every command's parser needs. build_parser imported every
command's module and built every parser: `--help` alone paid 0.6 s of CPU for the specs (pydantic), the database's
tables (sqlmodel, for `jobs list --status`'s choices) and numpy (`compare --outcome`'s). Given the command line it now
builds only the command it names, whole, and every other command as its line in --help, in the same words. Also: the
data sets read once per pass (datasets_once, as registry.read_once reads the models), and the entry point's docstring
no longer writes an upscale into the current folder."""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import backend.__main__ as entry
from backend.__main__ import build_parser
from tests.test_review_s13_cli import _parsers

ROOT = Path(__file__).resolve().parent.parent


def _sub(p: argparse.ArgumentParser, path) -> argparse.ArgumentParser:
    for name in path:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p


def test_every_help_built_from_its_command_line_is_the_whole_parsers_word_for_word(monkeypatch):
    """Each of the 40 helps (the top level, every command and action), from the parser main builds for
    `python -m backend PATH --help`, equals the one from the whole parser (checked against the previous commit's
    helps too when this was written: equal but for the docstring's upscale line)."""
    monkeypatch.setenv("COLUMNS", "100")
    helps = {path: p.format_help() for path, p in _parsers(build_parser())}
    assert len(helps) >= 40 and ("jobs", "list") in helps and ("datasets", "push") in helps
    for path, text in helps.items():
        assert _sub(build_parser([*path, "--help"]), path).format_help() == text, path
    # a misspelt command and no command: the top level with every command's line, as before
    for argv in (["jbos"], [], ["--help", "jobs"]):
        assert build_parser(argv).format_help() == helps[()]
    lines = {line.split()[0] for line in helps[()].splitlines() if line.startswith("    ") and line.split()}
    assert set(entry.COMMANDS) <= lines  # each command is on the top level's list, with its help


def test_only_the_named_command_is_built():
    parser = build_parser(["models", "list"])
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert commands["models"].get_default("fn").__name__ == "cmd_models"
    assert commands["jobs"].get_default("fn") is None and commands["jobs"]._actions[1:] == []  # its line only
    # an option before the command (refused later as unknown) still names it
    assert _sub(build_parser(["--bogus", "jobs", "list"]), ["jobs"]).get_default("fn").__name__ == "cmd_jobs"


HEAVY = ("pydantic", "sqlmodel", "storage.models", "numpy", "backend.analysis", "backend.synth.seeds", "torch",
         "transformers", "pandas")


def _loaded(*argv: str) -> tuple[int, list[str]]:
    """The exit code of `python -m backend ARGV` run by main in a fresh process, and which HEAVY modules it loaded."""
    code = ("import sys, contextlib, io\nfrom backend.__main__ import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    try:\n        rc = main(sys.argv[1:])\n    except SystemExit as e:\n        rc = e.code\n"
            f"print(rc, *[m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=True)
    rc, *mods = out.stdout.split()
    return int(rc), mods


def test_help_and_a_misspelt_command_load_no_specs_database_or_numpy():
    """HEAD loaded all of HEAVY but torch, transformers and pandas for each of these (0.6 s of CPU)."""
    assert _loaded("--help") == (0, [])
    assert _loaded("jbos") == (2, [])
    assert _loaded("models", "--help") == (0, [])


def test_a_command_loads_what_it_needs_only():
    # jobs list reads the database and the specs; it no longer loads compare's numpy or synth-math's seeds
    rc, mods = _loaded("jobs", "list")
    assert rc == 0 and {"pydantic", "sqlmodel", "storage.models"} <= set(mods)
    assert not {"numpy", "backend.analysis", "backend.synth.seeds", "torch", "transformers", "pandas"} & set(mods)


def test_a_spec_refused_is_still_said_in_the_specs_words(capsys):
    """pydantic is looked up, not imported, by main: a ValidationError still reads as specs.explain words it."""
    assert entry.main(["upscale", "--base", "builtin", "--m", "0"]) == 2
    assert capsys.readouterr().err == "error: m=0: m must be at least 1.\n"
    assert entry.main(["eval", "a", "--limit", "-2"]) == 2
    assert capsys.readouterr().err == "error: limit: Input should be greater than or equal to 1\n"


def test_the_docstrings_upscale_writes_into_the_workspace():
    """`--out workspace/models/smol-dus-m8` wrote into ./workspace of the current folder, not $DUS_WORKSPACE."""
    line = next(x for x in entry.__doc__.splitlines() if "--base SmolLM2-135M-Instruct" in x)
    assert "--out" not in line.split("#")[0] and "$DUS_WORKSPACE/models/NAME" in line


# ---------------------------------------------------------------- 2. data sets read once per pass

@contextlib.contextmanager
def _counted():
    seen = collections.Counter()

    def count(conn, cursor, statement, *args):
        if "FROM datasets" in statement:
            seen["datasets"] += 1

    sa.event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(Engine, "before_cursor_execute", count)


def test_datasets_once_answers_get_dataset_from_one_read(tmp_path):
    from backend.synth import datasets, pipeline
    from storage import db

    db.init_db()
    for i in range(3):
        f = tmp_path / f"d{i}.jsonl"
        f.write_text('{"prompt": "a", "completion": "b"}\n')
        datasets.save_dataset(f"set-{i}", "sft", str(f), 1, {})
    names = ["set-0", "set-1", "set-2", "gone", "set-1"] * 10
    with _counted() as plain:
        expected = [(r.name, r.path, r.rows) if r else None for r in map(pipeline.get_dataset, names)]
    assert plain["datasets"] == len(names)  # a SELECT each, before
    with _counted() as once, datasets.datasets_once():
        with datasets.datasets_once():  # nested: the outer read stands
            got = [(r.name, r.path, r.rows) if r else None for r in map(pipeline.get_dataset, names)]
    assert once["datasets"] == 1 and got == expected
    assert expected[:4] == [("set-0", str(tmp_path / "d0.jsonl"), 1), ("set-1", str(tmp_path / "d1.jsonl"), 1),
                            ("set-2", str(tmp_path / "d2.jsonl"), 1), None]
    # outside it, each lookup reads the database again: a set registered since is seen
    f = tmp_path / "late.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n')
    datasets.save_dataset("late", "sft", str(f), 1, {})
    assert pipeline.get_dataset("late").name == "late"


@pytest.mark.parametrize("module", ["data", "evaluate", "jobs", "models", "recipe", "train"])
def test_each_commands_line_is_its_modules_help(module):
    """HELP holds the line a command shows in --help whether its parser is built or not: one place for the words."""
    mod = sys.modules.get(f"backend.cli.{module}") or __import__(f"backend.cli.{module}", fromlist=["HELP"])
    mine = {name for name, add in entry.COMMANDS.items() if add.__module__ == mod.__name__}
    assert set(mod.HELP) == mine and all(mod.HELP.values())
