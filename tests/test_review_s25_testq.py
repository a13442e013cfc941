"""Test quality: what a test needs from the machine (PostgreSQL, Ray, lm-eval, pandas, chromium, /dev/shm, a tmpfs)
is asked for through tests/needs.py, which skips it on a developer's machine and fails it under CI (the CI
environment variable), where a skip would hide a broken install behind a green run."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from tests.needs import missing, need_module

TESTS = Path(__file__).resolve().parent
# a skip for what this machine has more of, not less: no install can be broken by it
SKIPS_ALLOWED = {"needs.py": "the helper itself",
                 "test_review_s23_imports.py": "sentencepiece installed: a folder of its tokenizer alone loads"}


def test_a_missing_requirement_skips_here_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^ray is not installed$"):
        missing("ray is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^ray is not installed\. CI is set, so this is a broken "
                                                    r"install, not a skip: install it, or unset CI"):
        missing("ray is not installed")


def test_need_module_imports_what_is_there_and_skips_or_fails_on_what_is_not(monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert isinstance(need_module("json"), types.ModuleType) and need_module("json").dumps([1]) == "[1]"
    with pytest.raises(pytest.fail.Exception, match=r"^lm-eval is not installed \(No module named "
                                                    r"'no_such_module_dus'\)\. CI is set"):
        need_module("no_such_module_dus", "lm-eval is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"^no_such_module_dus is not installed"):
        need_module("no_such_module_dus")


def test_every_skip_for_something_missing_goes_through_needs():
    """pytest.skip / pytest.importorskip called directly in tests/ (the PostgreSQL cluster, the Ray cluster, the
    /dev/shm and tmpfs fixtures, lm_eval, pandas and scikit-learn imports skipped under CI too), and skipif markers
    on what is installed, named by file and line."""
    direct = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in SKIPS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "pytest" and \
                    node.func.attr in ("skip", "importorskip"):
                direct.append(f"{path.name}:{node.lineno} pytest.{node.func.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "skipif" \
                    and "installed" in ast.unparse(node):
                direct.append(f"{path.name}:{node.lineno} skipif")
    assert direct == []
    used = {p.name for p in TESTS.glob("*.py") if "from tests.needs import" in p.read_text()}
    assert {"pg_cluster.py", "ray_cluster.py", "test_faults.py", "test_browser.py", "test_lmeval.py",
            "test_review_s17_arena.py"} <= used, used
