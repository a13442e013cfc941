"""The CLI as a package (backend/cli/): backend/__main__.py is the table of commands, each command's module adds its
own parser and function, and no file grows back past the house's ~500 lines."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from backend.__main__ import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "backend" / "cli"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_table_is_the_parser_and_each_command_runs_its_own_modules_function():
    commands = _commands(build_parser())
    assert list(commands) == list(COMMANDS)  # --help lists them in the table's order
    for name, add in COMMANDS.items():
        fn = commands[name].get_default("fn")
        # the function the parser runs comes from the module that added the parser (models.add_models: cmd_models)
        assert fn.__module__ == add.__module__ and fn.__module__.startswith("backend.cli."), (name, fn.__module__)


def test_every_cli_file_is_under_500_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in [*CLI.glob("*.py"), ROOT / "backend" / "__main__.py"]}
    assert len(sizes) >= 8 and max(sizes.values()) <= 500, sizes


def test_no_cli_module_imports_the_entry_point():
    """Under `python -m backend` the entry point is `__main__`: a command module importing backend.__main__ would load
    it a second time, with a WorkFailed of its own that main's `except WorkFailed` does not catch (exit 2 for 1)."""
    paths = sorted(CLI.glob("*.py"))
    assert {"__init__.py", "common.py", "models.py", "train.py"} <= {p.name for p in paths}, paths  # not an empty loop
    for path in paths:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "backend.__main__" not in imported, path.name
