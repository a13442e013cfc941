"""The one name check: every name that becomes a folder or file (models, runs, data sets, mixes) passes here.

A name is one path component by construction — ASCII letters, digits, '.', '_' and '-', starting with a letter or
digit, at most 100 characters — so '../x', '/etc', '' and 'a/b' never reach `Path(parent) / name`. Names made
from user text (a folder's name, a GGUF file's stem, a Hub id) go through `safe_name` instead of failing.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BAD_RUN = re.compile(r"-*[^A-Za-z0-9._-]+-*")  # with the dashes around it: 'v2) -x' -> 'v2-x', not 'v2--x'
_LEADING = re.compile(r"^[^A-Za-z0-9]+")


def check_name(name: object, what: str = "name") -> str:
    """`name` unchanged when it is safe, else ValueError naming the field. fullmatch, not match + `$`: `$` also
    matches before a trailing newline, which would let 'x\\n' through."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        # "letters" alone read as any letter: 'modèle' was refused by a rule it seemed to follow
        raise ValueError(f"{what} {name!r}: use ASCII letters (a–z, A–Z), digits, '.', '_' and '-' (at most 100, not "
                         "starting with a symbol).")
    return name


def safe_name(text: str, fallback: str = "model") -> str:
    """A valid name made from any text (runs of other characters become one '-', and none is left at either end);
    `fallback` when nothing is left. A valid name comes back unchanged."""
    text = str(text)
    if NAME_RE.fullmatch(text):
        return text
    name = _LEADING.sub("", _BAD_RUN.sub("-", text))[:100]
    name = name if text.endswith("-") else name.rstrip("-")
    return name if NAME_RE.fullmatch(name) else fallback


def inside(parent: Path | str, name: str, what: str = "name") -> Path:
    """`parent / name`, resolved, after checking the name; refused unless it is a direct child of `parent` (a
    symlink named like the model cannot redirect a build elsewhere)."""
    check_name(name, what)
    root = Path(parent).expanduser().resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ValueError(f"{what} {name!r}: {path} is not inside {root}; choose another name.")
    return path


def human_bytes(n: float) -> str:
    """Three significant digits (702 MiB, 1.23 GiB, 12.3 KiB): a small model's size read "0.00 GiB" in GiB, and
    "0 / 0 MiB" in a build's progress."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        shown = float(f"{n:.3g}")  # rounded first: 1023.9 KiB read "1.02e+03 KiB"
        if shown < 1000:
            return f"{shown:g} {unit}"
        if unit == "GiB":
            return f"{n:,.0f} {unit}"
        n /= 1024
    return ""
