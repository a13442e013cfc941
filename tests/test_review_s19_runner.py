"""The runner as a package (backend/runner/): everyone still reaches it as `runner.X`, a test's patch reaches the
module that looks the name up, and a job process still starts in the repository root."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

from backend import runner
from storage import db
from storage.models import Job

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "backend" / "runner"


def _sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))] + [ROOT / "app.py"]


def _parse(path: Path) -> ast.AST:
    with warnings.catch_warnings():  # a test file's regex with an invalid escape is not this test's business
        warnings.simplefilter("ignore")
        return ast.parse(path.read_text())


def _uses_runner(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module == "backend" and any(a.name == "runner" for a in n.names)
               for n in ast.walk(tree))


def test_every_runner_name_the_project_uses_is_on_the_package():
    used = set()
    for path in _sources("backend", "pages", "tests", "bench"):
        tree = _parse(path)
        if _uses_runner(tree):
            used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id == "runner"}
    assert {"submit", "get", "worker", "job_message", "execute", "_claim_next", "BEAT_STALE"} <= used
    assert sorted(u for u in used if not hasattr(runner, u)) == []


def _looked_up_in() -> dict[str, set[str]]:
    """Each name the runner's modules read as a global inside their functions, with the modules that read it."""
    where: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        for fn in ast.walk(_parse(path)):
            if isinstance(fn, ast.FunctionDef):
                for n in ast.walk(fn):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                        where.setdefault(n.id, set()).add(path.stem)
    return where


def test_a_patch_on_the_package_also_patches_the_modules_that_call_the_name():
    """After the split a patch on `runner` no longer reached a function of a module that calls its own global (the
    worker loop's start_child, a job's work_function): such a test passed without testing what it claims."""
    where, missed = _looked_up_in(), []
    for path in _sources("tests", "bench"):
        tree = _parse(path)
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            patched = {}  # (target, name) of each setattr in this test
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                if getattr(call.func, "attr", "") == "setattr" and len(call.args) >= 2 \
                        and isinstance(call.args[1], ast.Constant):
                    patched[ast.unparse(call.args[0]), call.args[1].value] = call.lineno
            for (target, name), line in patched.items():
                if target == "runner":
                    missed += [f"{path.name}:{line} {name} (also runner.{m})" for m in sorted(where.get(name, ()))
                               if ("runner." + m, name) not in patched]
    assert missed == []


def test_the_guard_sees_a_patch_that_misses_its_caller():
    assert "loop" in _looked_up_in()["start_child"] and "child" in _looked_up_in()["work_function"]


def test_every_module_of_the_runner_stays_under_500_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert len(sizes) >= 7 and max(sizes.values()) < 500, sizes


def test_a_job_process_starts_in_the_repository_root(workspace, monkeypatch):
    """`python -m backend jobs exec ID` finds `backend` only from the repository root: the worker's start_child,
    moved one folder down, must still start it there (a job started in backend/ failed at once)."""
    with db.session() as s:
        job = Job(kind="eval", status="running", spec={"kind": "eval", "models": ["x"]})
        s.add(job)
        s.commit()
        s.refresh(job)
    seen = {}
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    def popen(args, **kwargs):
        seen.update(args=args, cwd=kwargs["cwd"])
        return stand_in

    monkeypatch.setattr(runner.loop.subprocess, "Popen", popen)
    try:
        assert runner.start_child(job) is stand_in
    finally:
        stand_in.kill()
        stand_in.wait()
    assert seen == {"args": [sys.executable, "-m", "backend", "jobs", "exec", str(job.id)], "cwd": ROOT}
    assert (Path(seen["cwd"]) / "backend" / "__main__.py").is_file() and runner.get(job.id).pid == stand_in.pid
