"""The modules split into several files (a package, or a module and its siblings): every file stays under the house's
~500 lines, the old module still gives every name the project imports from it, the CLI's help reads the same, and a
test's `monkeypatch.setattr(M, "N", …)` reaches the code: after a split a patch on the old module does not reach a
function that now looks the name up in its new module, and such a test passes without testing what it claims."""

from __future__ import annotations

import ast
import importlib
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each split: the files that were one module, the old one (the import point) first.
FAMILIES = {
    "runner": ["backend/runner/*.py"],
    "cli": ["backend/cli/*.py"],
    "memplan": ["backend/memplan/*.py"],
    "train_job": ["backend/train_job/*.py"],
    "synth": ["backend/synth/*.py"],
    "data": ["backend/data.py", "backend/data_files.py", "backend/data_rows.py"],
    "registry": ["backend/registry.py", "backend/import_checks.py", "backend/import_convert.py"],
    "evaluate": ["backend/evaluate.py", "backend/evaltasks.py", "backend/evalscore.py", "backend/evaljob.py",
                 "backend/evalrolling.py"],
    "analysis": ["backend/analysis.py", "backend/answerstats.py", "backend/lengthfit.py", "backend/claimtext.py"],
    "specs": ["backend/specs.py", "backend/spec_base.py", "backend/spec_models.py", "backend/spec_train.py"],
    "recipe plan": ["backend/recipe/plan.py", "backend/recipe/inputs.py", "backend/recipe/checks.py",
                    "backend/recipe/state.py"],
    "ray jobs": ["backend/cluster/ray_jobs.py", "backend/cluster/ray_client.py", "backend/cluster/ray_checks.py"],
    "figures": ["pages/figures.py", "pages/figure_style.py", "pages/figure_scores.py"],
    "scoretable": ["backend/scoretable.py", "backend/scorevalues.py", "backend/tablenotes.py"],
    "db": ["storage/db.py", "storage/server.py"],
    "training": ["backend/training.py", "backend/training_checkpoints.py"],
}
# The four split in this round, with the names the rest of the project imports from the old module (checked below).
SPLIT_NOW = {"backend.specs": FAMILIES["specs"], "backend.recipe.plan": FAMILIES["recipe plan"],
             "backend.cluster.ray_jobs": FAMILIES["ray jobs"], "pages.figures": FAMILIES["figures"]}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(patterns: list[str]) -> list[Path]:
    return [p for pat in patterns for p in sorted(ROOT.glob(pat))]


MODULES = {_name(p): p for pats in FAMILIES.values() for p in _files(pats)}
FAMILY_OF = {_name(p): fam for fam, pats in FAMILIES.items() for p in _files(pats)}


@cache
def _parse(path: Path) -> ast.Module:
    with warnings.catch_warnings():  # a test file's regex with an invalid escape is not this test's business
        warnings.simplefilter("ignore")
        try:
            return ast.parse(path.read_text())
        except FileNotFoundError:  # a scratch file removed between the listing and the reading
            return ast.Module(body=[], type_ignores=[])


def _functions(tree: ast.AST):
    return (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _locals(fn) -> set[str]:
    a = fn.args
    names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x is not None}
    return names | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


@cache
def global_reads(module: str) -> frozenset[str]:
    """The names a function of `module` reads as globals (a parameter or a local of that name is not one)."""
    out = set()
    for fn in _functions(_parse(MODULES[module])):
        own = _locals(fn)
        out |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                and n.id not in own}
    return frozenset(out)


@cache
def _defines_and_uses(module: str) -> frozenset[str]:
    """The names `module` defines itself (not imports) and its own code also reads."""
    tree = _parse(MODULES[module])
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                defined |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return frozenset(defined & read)


@cache
def _bound_in_package(package: str) -> frozenset[str]:
    """The names a package's __init__ binds to something other than its own submodule of that name (recipe's
    `from backend.recipe.plan import plan` makes `backend.recipe.plan` the function)."""
    init = ROOT / package.replace(".", "/") / "__init__.py"
    if not init.is_file():
        return frozenset()
    out = set()
    for n in _parse(init).body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                out |= {x.id for x in ast.walk(t) if isinstance(x, ast.Name)}
        elif isinstance(n, ast.ImportFrom) and n.module != package:
            out |= {a.asname or a.name for a in n.names}
    return frozenset(out)


@cache
def _aliases(path: Path) -> dict[str, str]:
    return _aliases_in(_parse(path))


def _aliases_in(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted module name, for the modules of FAMILIES a file imports (from X import m, import X as m,
    m = importlib.import_module("X")), read from its source."""
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            for a in n.names:
                if f"{n.module}.{a.name}" in MODULES and a.name not in _bound_in_package(n.module):
                    out[a.asname or a.name] = f"{n.module}.{a.name}"
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.asname and a.name in MODULES:
                    out[a.asname] = a.name
        elif isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and len(n.targets) == 1 \
                and isinstance(n.targets[0], ast.Name) and ast.unparse(n.value.func) == "importlib.import_module" \
                and n.value.args and isinstance(n.value.args[0], ast.Constant) and n.value.args[0].value in MODULES:
            out[n.targets[0].id] = n.value.args[0].value
    return out


def _module_of(expr: ast.AST, aliases: dict[str, str]) -> str | None:
    """The module of FAMILIES an expression names (`runner`, `runner.loop`, `backend.data`), else None."""
    try:
        dotted = ast.unparse(expr)
    except Exception:  # noqa: BLE001
        return None
    head, _, rest = dotted.partition(".")
    full = aliases.get(head, head) + (f".{rest}" if rest else "")
    return full if full in MODULES else None


@cache
def attribute_reads() -> frozenset[tuple[str, str]]:
    """(module, name) for each `M.N` the project's own code (backend, pages, bench, app.py) reads inside a function: a
    patch of M.N reaches such a caller, as it looks the name up on M when it runs."""
    out = set()
    for path in [*ROOT.glob("backend/**/*.py"), *ROOT.glob("pages/*.py"), *ROOT.glob("bench/*.py"), ROOT / "app.py"]:
        aliases = _aliases(path)
        for fn in _functions(_parse(path)):
            for n in ast.walk(fn):
                if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
                    module = _module_of(n.value, aliases)
                    if module:
                        out.add((module, n.attr))
    return frozenset(out)


def reaches(module: str, name: str) -> bool:
    """Whether a patch of `module.name` can change what the code does: a function of the module reads the name as a
    global, the module defines it and uses it, or a caller elsewhere looks it up on the module."""
    return name in global_reads(module) or name in _defines_and_uses(module) or (module, name) in attribute_reads()


def _patches(tree: ast.AST, aliases: dict[str, str]):
    """(function, [(module, name, line)]) for each function of a test file that patches a module of FAMILIES:
    monkeypatch.setattr(M, "N", …), monkeypatch.setattr("backend.m.N", …), mock.patch("backend.m.N"),
    mock.patch.object(M, "N")."""
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        found = []
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            func = ast.unparse(call.func)
            args = call.args
            if func.endswith(("setattr", "patch.object", "delattr")) and len(args) >= 2 \
                    and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                module = _module_of(args[0], aliases)
                if module:
                    found.append((module, args[1].value, call.lineno))
            elif func.endswith(("setattr", "patch", "delattr")) and args and isinstance(args[0], ast.Constant) \
                    and isinstance(args[0].value, str) and "." in args[0].value:
                module, _, name = args[0].value.rpartition(".")
                if module in MODULES:
                    found.append((module, name, call.lineno))
        if found:
            yield fn, found


def _test_files() -> list[Path]:
    return sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


def test_every_patch_of_a_split_module_reaches_the_code():
    """monkeypatch.setattr(M, "N", …) on a split module is allowed only where it changes what runs: a function of M
    reads N as a global, M defines N and uses it, or a caller looks N up on M (`M.N(…)`)."""
    vacuous = [f"{path.name}:{line} {module}.{name}" for path in _test_files()
               for _, found in _patches(_parse(path), _aliases(path))
               for module, name, line in found if not reaches(module, name)]
    assert vacuous == []


def test_a_patch_of_a_module_split_now_also_patches_the_siblings_that_call_the_same_object():
    """Before this round's splits one patch of the old module reached every lookup; now a sibling may look the same
    object up as its own global (ray_checks.missing_paths calls `client`, as ray_jobs.submit does): a patch of M.N
    where a sibling defined N and another sibling reads it must patch that sibling too, or its caller runs the real
    one. (Names from outside the split, such as storage's utcnow or sqlmodel's select, are each test's choice.)"""
    now = {_name(p) for pats in SPLIT_NOW.values() for p in _files(pats)}
    missed = []
    for path in _test_files():
        for _, found in _patches(_parse(path), _aliases(path)):
            patched = {(m, n) for m, n, _ in found}
            for module, name, line in (f for f in found if f[0] in now):
                value = getattr(importlib.import_module(module), name, None)
                if getattr(value, "__module__", None) not in now:
                    continue
                for other in now:
                    if other != module and FAMILY_OF[other] == FAMILY_OF[module] and name in global_reads(other) \
                            and (other, name) not in patched \
                            and getattr(importlib.import_module(other), name, None) is value:
                        missed.append(f"{path.name}:{line} {module}.{name} (also {other}.{name})")
    assert missed == []


def test_the_guard_sees_a_vacuous_patch_and_a_missed_sibling():
    """The guard itself: a patch of a name nothing reads through the module is caught, and one the module reads
    is not."""
    # ray_jobs re-exports missing_paths, but only ray_checks.check_paths calls it
    assert not reaches("backend.cluster.ray_jobs", "missing_paths")
    assert reaches("backend.cluster.ray_checks", "missing_paths")
    assert reaches("backend.cluster.ray_jobs", "client")  # submit, lost and RayRun read it in ray_jobs
    assert reaches("backend.cluster.ray_jobs", "address")  # the runner calls ray_jobs.address()
    assert "client" in global_reads("backend.cluster.ray_checks")  # missing_paths: a patch of ray_jobs misses it
    assert not reaches("backend.specs", "os")
    tree = ast.parse("from backend.cluster import ray_jobs\n"
                     "def test_x(monkeypatch):\n"
                     "    monkeypatch.setattr(ray_jobs, 'missing_paths', None)\n"
                     "    monkeypatch.setattr('backend.recipe.plan.hub_online', None)\n")
    assert [f for _, f in _patches(tree, _aliases_in(tree))] == [[("backend.cluster.ray_jobs", "missing_paths", 3),
                                                ("backend.recipe.plan", "hub_online", 4)]]


@pytest.mark.parametrize("old", sorted(SPLIT_NOW))
def test_each_split_file_stays_under_500_lines_and_the_old_module_gives_every_name_used(old):
    sizes = {p.name: len(p.read_text().splitlines()) for p in _files(SPLIT_NOW[old])}
    assert len(sizes) >= 2 and max(sizes.values()) < 500, sizes
    module = importlib.import_module(old)
    used = set()
    for path in [*ROOT.glob("backend/**/*.py"), *ROOT.glob("pages/*.py"), *_test_files(), ROOT / "app.py"]:
        tree, aliases = _parse(path), _aliases(path)
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module == old:
                used |= {a.name for a in n.names}
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
                 and _module_of(n.value, aliases) == old}
    assert len(used) > 5  # the scan found the names imported (9 from recipe.plan since state.py took a run's rows)
    assert sorted(u for u in used if not hasattr(module, u)) == []


def test_each_spec_class_and_registry_exists_once():
    """The kinds' table holds the classes the siblings define (no second copy of a class or of SPECS), and the CLI's
    field help is the spec's own description."""
    from backend import spec_models, spec_train, specs

    assert specs.SPECS["upscale"] is spec_models.UpscaleSpec is specs.UpscaleSpec
    assert specs.SPECS["sft"] is spec_train.SftSpec and specs.DataSource is spec_train.DataSource
    assert not hasattr(spec_models, "SPECS") and not hasattr(spec_train, "SPECS")
    assert issubclass(specs.SftSpec, specs._Spec) and issubclass(specs.MergeSpec, specs._Spec)
    assert specs.SftSpec.model_fields["grad_accum"].description.startswith("micro-batches whose gradients")
