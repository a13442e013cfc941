"""What a test needs from the machine (a package, a server binary, chromium, a second filesystem): missing, the test
is skipped on a developer's machine, but FAILS where the CI environment variable is set (as CI services set it):
there the install is meant to have it all, and a skip would hide a broken install behind a green run.

    from tests.needs import missing, need_module
    pd = need_module("pandas", "pandas is not installed (requirements.txt)")
    if not Path(CHROMIUM).exists():
        missing("chromium is not installed (scripts/setup.sh --browser installs it)")
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(reason: str) -> NoReturn:
    """Skip the test (or the module, when called at import) for `reason`; under CI fail it instead."""
    if in_ci():
        pytest.fail(f"{reason}. CI is set, so this is a broken install, not a skip: install it, or unset CI to skip "
                    "such tests.", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need_module(name: str, reason: str | None = None) -> ModuleType:
    """The module `name` imported (pytest.importorskip's job), or missing(): a skip, a failure under CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{reason or f'{name} is not installed'} ({exc})")


def not_here(reason: str) -> NoReturn:
    """Skip the test for `reason`, under CI too: what the machine itself lacks (a second filesystem, the right to
    mount one), which no install gives; CI machines differ there, and the test says what it needs."""
    pytest.skip(reason, allow_module_level=True)

