"""backend/data.py and backend/registry.py split into smaller modules (house rule: files under ~500 lines) with
nothing changed for their callers: every name still imported from them, one way (the new modules never import
them back), the error classes named as before, and a test's patch of data.load_source or registry.get still
reaching every function that reads through them."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

import pytest

from backend import data, data_files, data_rows, import_checks, import_convert, registry

ROOT = Path(__file__).resolve().parent.parent
SPLIT = {"data.py": ("data_files.py", "data_rows.py", "data_reading.py"), "registry.py": ("import_checks.py", "import_convert.py")}


def test_each_module_is_under_500_lines():
    sizes = {f: len((ROOT / "backend" / f).read_text().splitlines()) for face, parts in SPLIT.items()
             for f in (face, *parts)}
    assert max(sizes.values()) < 500, sizes


def _imported(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("face", SPLIT)
def test_the_new_modules_never_import_the_module_they_came_from(face):
    """The import graph runs one way: backend.data imports data_rows and data_files, never the reverse (likewise
    registry and import_checks / import_convert), so neither is ever met half initialised."""
    face_mod = f"backend.{face.removesuffix('.py')}"
    for part in SPLIT[face]:
        imported = _imported(ROOT / "backend" / part)
        assert not {m for m in imported if m == face_mod or m.startswith(face_mod + ".")}, (part, imported)


def test_the_names_the_studio_uses_are_the_very_objects_of_the_new_modules():
    for name in ("DataError", "LAYOUTS", "KIND_LAYOUTS", "detect_layout", "check_rows", "convert_row",
                 "to_prompt_completion"):
        assert getattr(data, name) is getattr(data_rows, name), name
    assert data.json_reason is data_files.json_reason
    for name in ("RegistryError", "links_out", "missing_tokenizer", "builtin_gguf", "gguf_default_name",
                 "_gguf_cut_short", "TOKENIZER_FILES", "BUILTIN_GGUF"):
        assert getattr(registry, name) is getattr(import_checks, name), name
    for name in ("HUB_PATTERNS", "HUB_SKIP", "gguf_to_folder", "pickle_to_folder", "hub_to_folder"):
        assert getattr(registry, name) is getattr(import_convert, name), name


def test_the_errors_keep_their_names_in_a_traceback():
    """A trainer's failure line is its traceback's last line (training.failure_line): "backend.data.DataError: …"
    as before the split, not the module the class now lives in."""
    with pytest.raises(data.DataError) as e:
        data.builtin_path("nope")
    assert traceback.format_exception_only(e.type, e.value)[0].startswith("backend.data.DataError: No built-in")
    with pytest.raises(registry.RegistryError) as e:
        registry.resolve("/no/such/folder")
    assert traceback.format_exception_only(e.type, e.value)[0].startswith("backend.registry.RegistryError: ")


def test_a_patched_load_source_reaches_check_source_prepare_and_preview(monkeypatch):
    """Tests patch data.load_source (test_review_s12_data, test_review_precheck): the functions that read through it
    look it up in backend.data still."""
    import datasets

    rows = [{"instruction": f"Say {i}", "output": str(i)} for i in range(4)]
    read = []
    monkeypatch.setattr(data, "load_source", lambda source, split="train", **_: read.append(source)
                        or datasets.Dataset.from_list(rows))
    data.check_source("someone/set", "sft")
    ds, layout = data.prepare("someone/set", "sft")
    pv = data.preview("someone/set", "sft", n=1)
    assert read == ["someone/set"] * 3 and layout == pv["layout"] == "alpaca" and len(ds) == 4
    assert ds[0]["messages"] == [{"role": "user", "content": "Say 0"}, {"role": "assistant", "content": "0"}]


def test_a_patched_registry_get_reaches_the_lineage_functions(monkeypatch):
    asked = []
    monkeypatch.setattr(registry, "get", lambda name: asked.append(name))
    rec = registry.ModelRecord(name="child", path="/x", kind="trained", parents=["gone", "/a/folder"])
    assert registry.parents_shown(rec) == ["gone (deleted)", "/a/folder"]
    # an exact name first (s20: a model registered as "builtin" is the user's), then the built-in's
    assert registry.record("builtin") is None and asked == ["gone", "builtin", registry.BUILTIN_NAME]
