"""The memory planner is the package backend/memplan/ (shape, components, strategies, report) and the training job's
parts live in backend/train_job/ (model, rows, metrics, resume), beside the entry module backend/train_entry.py.
backend.memplan and backend.train_entry are the import points (`accelerate launch -m backend.train_entry`, Ray
Train's train_entry.main): these tests hold the names others use there to the functions that do the work, and a
patch on the module a function looks its helper up in to reaching it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_faces_hand_out_the_moved_objects_themselves():
    from backend import memplan, train_entry
    from backend.memplan import components, report, shape, strategies
    from backend.train_job import metrics, model, resume, rows

    for name, home in [("estimate", components), ("Setup", components), ("MemoryPlan", components),
                       ("GiB", components), ("COLUMNS", report), ("fits", report), ("verdict", report),
                       ("check_spec", report), ("report_for_spec", report), ("compare_strategies", report),
                       ("precision_note", report), ("available_memory", report), ("load_shape", shape),
                       ("shape_from_config", shape), ("PlanError", shape), ("NotModelled", shape),
                       ("setup_for_spec", strategies), ("plan_for_spec", strategies)]:
        assert getattr(memplan, name) is getattr(home, name), name
    for name, home in [("MetricsCallback", metrics), ("load_model", model), ("make_config", model),
                       ("build_trainer", model), ("model_flops_per_token", model), ("check_replies_fit", rows),
                       ("without_chat_template", rows), ("train_or_finish", resume)]:
        assert getattr(train_entry, name) is getattr(home, name), name
    assert callable(train_entry.main)


def test_a_patch_on_the_report_module_reaches_the_report(tiny_llama, monkeypatch):
    """report_for_spec looks available_memory up in backend/memplan/report.py: a test patching the package's name
    would not reach it (the patch targets moved there)."""
    from backend import memplan
    from backend.specs import DataSource, SftSpec

    monkeypatch.setattr(memplan.report, "available_memory", lambda device: ([3 * memplan.GiB], "RAM"))
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source="builtin:alpaca-mini")], max_steps=1)
    r = memplan.report_for_spec(spec, tiny_llama, "cpu")
    assert (r.avail, r.what) == ([3 * memplan.GiB], "RAM")


def test_the_split_files_stay_under_the_house_size():
    files = [ROOT / "backend/train_entry.py", *(ROOT / "backend/memplan").glob("*.py"),
             *(ROOT / "backend/train_job").glob("*.py")]
    sizes = {f.relative_to(ROOT).as_posix(): len(f.read_text().splitlines()) for f in files}
    assert len(sizes) == 12 and max(sizes.values()) < 500, sizes  # train_job/overlap.py the twelfth
