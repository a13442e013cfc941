"""The layers of STYLE: backend/ and storage/ never import streamlit or pages. The CLI, the worker and its job
processes use backend without Streamlit; a backend module that pulled streamlit in would load it (seconds) in
every job process, and its logic could then only be tested through a page."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("streamlit", "pages")

# Imports each module named on the command line in turn and prints, as JSON, the modules that failed to import and,
# for each forbidden package found in sys.modules, the module whose import first brought it in.
PROBE = """
import importlib, json, sys
forbidden, failed, first = {forbidden!r}, [], {{}}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
    for top in forbidden:
        if top not in first and any(m == top or m.startswith(top + ".") for m in sys.modules):
            first[top] = name
print(json.dumps({{"failed": failed, "brought_in_by": first}}))
"""


def _modules() -> list[str]:
    """Every module of backend/ and storage/ by its dotted name (not backend.__main__, the CLI's entry: importing it
    runs a command)."""
    names = []
    for top in ("backend", "storage"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if parts[-1] != "__main__":
                names.append(".".join(parts))
    return names


def test_every_backend_and_storage_module_imports_without_streamlit_or_pages():
    modules = _modules()
    assert {"backend", "backend.runner", "backend.recipe.plan", "storage.db"} <= set(modules)
    r = subprocess.run([sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN), *modules], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.splitlines()[-1]) == {"failed": [], "brought_in_by": {}}


def test_no_backend_or_storage_function_imports_streamlit_or_pages_when_it_runs():
    """An import inside a function runs only when it is called, after the test above has looked."""
    found = []
    for top in ("backend", "storage"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert found == []


def test_the_lm_eval_task_loaders_stand_alone():
    """lm-eval loads backend/lm_eval_tasks/loaders.py by its path (a task YAML's `!function loaders.NAME`), outside
    the studio's package: it now holds the JSON Lines reader qa and seeds build on, and must import nothing of the
    studio, or a task run by lm-eval alone fails."""
    probe = ("import importlib.util, json, sys\n"
             "spec = importlib.util.spec_from_file_location('loaders', sys.argv[1])\n"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "rows = m.json_lines('\\ufeff{\"a\": 1}\\n\\n{\"a\": 2}\\n', lambda n, v: None, None)\n"
             "print(json.dumps([sorted(x for x in sys.modules if x.split('.')[0] in ('backend', 'storage', 'pages')),"
             " [list(r) for r in rows]]))\n")
    r = subprocess.run([sys.executable, "-c", probe, str(ROOT / "backend" / "lm_eval_tasks" / "loaders.py")],
                       cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == [[], [[1, {"a": 1}], [3, {"a": 2}]]]
