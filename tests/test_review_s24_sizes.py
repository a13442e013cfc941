"""House size (files under ~500 lines): backend/scoretable.py (558 lines) and storage/db.py (569) split along their
seams, nothing changed for their callers. scoretable keeps the table's rows, charts and export; one score's rules
(value, standard error, interval, column) moved to backend/scorevalues.py and the notes under the table to
backend/tablenotes.py. db keeps the workspace, SQLite, the schema and the build folders; a database server's engine,
messages and notice moved to storage/server.py. The import graph runs one way (the face imports its parts, never
the reverse), and every name the studio reads from the old modules is the very object of the new ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend import scorenotes, scoretable, scorevalues, tablenotes
from storage import db, server
from tests.test_review_s19_split_a import _imported  # every module a file imports

ROOT = Path(__file__).resolve().parent.parent
SPLIT = {"backend.scoretable": ["backend/scoretable.py", "backend/scorevalues.py", "backend/tablenotes.py"],
         "storage.db": ["storage/db.py", "storage/server.py"]}


def test_each_split_file_is_under_500_lines():
    sizes = {f: len((ROOT / f).read_text().splitlines()) for files in SPLIT.values() for f in files}
    assert max(sizes.values()) < 500, sizes


@pytest.mark.parametrize("face", SPLIT)
def test_the_new_modules_never_import_the_module_they_came_from(face):
    """scoretable imports scorevalues and tablenotes, never the reverse (tablenotes reads scorevalues only); db imports
    server: neither is ever met half initialised."""
    for part in SPLIT[face][1:]:
        imported = _imported(ROOT / part)
        assert face not in imported and not {m for m in imported if m.startswith(face + ".")}, (part, imported)
    assert "backend.tablenotes" not in _imported(ROOT / "backend/scorevalues.py")


def _names_read(module: str) -> set[str]:
    """The names the project (backend, pages, tests, bench, app.py) reads from `module`: `from M import N`, and `M.N`
    through any name it was imported as (`from storage import db as storage_db`). Read from the text: parsing every
    test file took seconds."""
    package, _, leaf = module.rpartition(".")
    used = set()
    files = [*ROOT.glob("backend/**/*.py"), *ROOT.glob("storage/*.py"), *ROOT.glob("pages/*.py"),
             *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"), ROOT / "app.py"]
    for path in files:
        text = path.read_text()
        for names in re.findall(rf"^\s*from {re.escape(module)} import \(?([^)]*?)\)?$", text, re.M | re.S):
            used |= {n.split(" as ")[0].strip() for n in re.sub(r"#[^\n]*", "", names).split(",") if n.strip()}
        aliases = {m[1] or leaf for m in re.findall(rf"^\s*from {re.escape(package)} import [^\n]*?\b{leaf}\b"
                                                     rf"( as (\w+))?", text, re.M)}
        for alias in aliases:
            # not a path or a host in a string ("backend/scoretable.py", "db.example:5432")
            used |= set(re.findall(rf"(?<![\w./@'\"-]){alias}\.(\w+)", text))
    return used


def test_every_name_the_studio_reads_from_the_old_modules_is_there():
    for face, module in (("backend.scoretable", scoretable), ("storage.db", db)):
        used = _names_read(face)
        assert len(used) > 20, (face, used)  # the scan found them (table_notes, latest_scores; session, new_tmp)
        assert sorted(u for u in used if not hasattr(module, u)) == [], face


def test_the_old_modules_give_the_very_objects_of_the_new_ones():
    for name in ("headline", "value", "stderr", "interval95", "zero_error", "items_behind", "headline_score",
                 "score_column", "too_few_answers", "averaged_tasks", "number_text", "higher_is_better", "_unreadable",
                 "STDERR", "AVERAGE", "PLUS_MINUS", "HUGE", "QA_METRICS"):
        assert getattr(scoretable, name) is getattr(scorevalues, name), name
    for name in ("table_notes", "items_note", "average_note", "cut_off_note", "cut_off_why", "blanked_cells",
                 "overlap_note", "taught", "zero_error_cells", "zero_error_note", "ZERO_ERROR_WHY", "huge_note"):
        assert getattr(scoretable, name) is getattr(tablenotes, name), name
    for name in ("DatabaseUnavailable", "describe", "on_unreachable", "_tell_unreachable", "_finite", "retry_seconds"):
        assert getattr(db, name) is getattr(server, name), name
    assert issubclass(db.DatabaseUnavailable, RuntimeError)


def test_the_notice_registered_through_db_is_the_one_the_server_engine_calls():
    """app.py registers its notice with db.on_unreachable; the reconnect loop, now in storage/server.py, calls
    server._tell_unreachable: one callback slot, not a copy per module."""
    told = []
    db.on_unreachable(lambda where, seconds: told.append((where, seconds)))
    try:
        server._tell_unreachable("host:5432/x", 60)
    finally:
        db.on_unreachable(None)
    assert told == [("host:5432/x", 60)]
    server._tell_unreachable("host:5432/y", 60)  # cleared: nothing is told
    assert told == [("host:5432/x", 60)]


def test_a_patch_of_the_notes_module_reaches_the_counted_notes(monkeypatch):
    """scorenotes counts the models of the notes tablenotes writes, and looks them up there: a test's patch of
    tablenotes.zero_error_cells (tests/test_review_s22_comparescale.py) reaches it."""
    cells = {("qa (accuracy)", 0.0, 20): [f"m{i}" for i in range(scorenotes.MANY + 1)]}
    monkeypatch.setattr(tablenotes, "zero_error_cells", lambda latest, rows, clean=False: cells)
    assert scorenotes.zero_error_summary({}, []) == (
        tablenotes.ZERO_ERROR_WHY + "qa (accuracy) for 11 models, 0 of 20 items: 95 % interval 0–0.15.")
