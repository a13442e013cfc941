"""Session 23 (code health): the merge methods were written out nine times (the spec's Literal, its relative /
dropping checks, the name's tag, MERGE_DEFAULTS, MERGE_METHOD_FIELDS, the Compare page's choices and inputs): one table
in backend/spec_models.py now, the rest read from it. `models`' options were listed twice (MODELS_OPTIONS by action
plus a hand-made list for the refusal), and --name, --out and --shard-size were defined twice (upscale, merge)."""

from __future__ import annotations

import argparse
import ast
import typing
from pathlib import Path

import pytest

from backend.cli import models as cli_models
from backend.spec_models import MERGE_ALIASES, MERGE_DEFAULTS, MERGE_METHOD_FIELDS, MergeSpec

ROOT = Path(__file__).resolve().parent.parent
NAMES = set(MERGE_DEFAULTS) | set(MERGE_ALIASES)


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in NAMES]


def test_the_merge_methods_are_written_in_one_table():
    """Outside the table (and MERGE_ALIASES), a method's name appears only where that one method is meant
    (`method == "slerp"`): never two of them together, a tuple or list of methods another table already says."""
    tree = ast.parse((ROOT / "backend/spec_models.py").read_text())
    tables = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id in ("_MERGE_METHODS",
                                                                                       "MERGE_ALIASES")]
    assert len(tables) == 2 and set(_strings(tables[0])) == set(MERGE_DEFAULTS)
    page = ast.parse((ROOT / "pages/compare.py").read_text())
    for where, node in [("spec_models", tree), ("compare", page)]:
        for n in ast.walk(node):
            if n in tables or not isinstance(n, (ast.Tuple, ast.List, ast.Set, ast.Subscript)):
                continue
            assert len(_strings(n)) < 2, (where, ast.unparse(n)[:120])


def test_the_spec_the_merge_registry_and_the_readers_agree():
    from backend.merge.methods import METHODS

    assert typing.get_args(MergeSpec.model_fields["method"].annotation) == tuple(MERGE_DEFAULTS) == tuple(METHODS)
    assert MERGE_METHOD_FIELDS["base"][0] == ("task_arithmetic", "ties", "dare_linear", "dare_ties")
    assert MERGE_METHOD_FIELDS["density"][0] == ("ties", "dare_linear", "dare_ties")
    assert MERGE_METHOD_FIELDS["seed"][0] == ("dare_linear", "dare_ties")
    assert MERGE_METHOD_FIELDS["weights"][0] == ("average", "task_arithmetic", "ties", "dare_linear", "dare_ties")
    for field, (methods, _) in MERGE_METHOD_FIELDS.items():
        assert methods == tuple(m for m in MERGE_DEFAULTS if MergeSpec.reads(m, field)), field


@pytest.mark.parametrize("method", sorted(MERGE_DEFAULTS))
def test_a_setting_changed_from_its_default_changes_the_name_only_where_the_method_reads_it(method):
    """_unnamed_settings's keys come from the table: each setting a method reads, changed, changes the name."""
    base = {"models": ["a", "b"], "method": method} | ({"base": "c"} if MergeSpec.reads(method, "base") else {})
    name = MergeSpec(**base).default_name()
    changed = {"t": {"t": [0.0, 1.0]}, "filters": {"filters": {"mlp": 0.2}}, "seed": {"seed": 3},
               "base": {"lambda": 0.5}, "weights": {"normalize": not MERGE_DEFAULTS[method][0]},
               "density": {"rescale": not MERGE_DEFAULTS[method][1]}}
    read = [f for f in changed if MergeSpec.reads(method, f)]
    assert read  # every method reads something of these
    names = {f: MergeSpec(**base, **changed[f]).default_name() for f in read}
    assert name not in names.values() and len(set(names.values())) == len(read), names


def _models_parser() -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser().add_subparsers()
    cli_models.add_models(sub)
    return sub.choices["models"]


def test_models_options_table_is_the_parsers_options_with_the_actions_reading_each():
    """One table: the refusal's options and the message's "it reads" list both come from it, in the parser's order."""
    parser = _models_parser()
    dests = [a.dest for a in parser._actions if a.option_strings and a.dest != "help"]
    assert list(cli_models.MODELS_OPTIONS) == dests
    actions = next(a for a in parser._actions if a.dest == "action").choices
    assert {x for acts in cli_models.MODELS_OPTIONS.values() for x in acts} == set(actions)
    a = parser.parse_args(["import", "x", "--force", "--json", "--after", "0"])
    with pytest.raises(ValueError) as e:
        cli_models.cmd_models(a)
    assert str(e.value) == ("models import takes no --force, --json (it reads --name, --allow-pickle, --queue, --after "
                            "and a TARGET).")


def test_output_options_are_defined_once_and_both_commands_have_them():
    src = (ROOT / "backend/cli/models.py").read_text()
    assert src.count('"--out"') == 1 and src.count('"--shard-size"') == 1
    sub = argparse.ArgumentParser().add_subparsers()
    cli_models.add_upscale(sub)
    cli_models.add_merge(sub)
    for command, name_help in [("upscale", "registered name (default: derived)"),
                               ("merge", "registered name (default: derived from the candidates and the method)")]:
        opts = {a.dest: a for a in sub.choices[command]._actions}
        assert opts["name"].help == name_help and opts["shard_size"].default == "2GB"
        assert opts["out"].help.startswith("folder to write the model to (default $DUS_WORKSPACE/models/NAME; a "
                                           "relative path is from the current folder)")
        assert {"queue", "after"} <= set(opts)
