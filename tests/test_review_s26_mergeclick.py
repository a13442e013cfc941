"""The Compare page's merge panel kept Merge enabled while the merge it had just queued was queued or running, and a
second click was refused only after it, by runner.check_before_queueing ("Job 1 (merge, queued) will register a model
named …: choose another name."). The name a queued or running job will register (or a model holds, in any case) is
now said before the click, and Merge is off with that reason as its help, as for a pair of another shape."""

from __future__ import annotations

import shutil

from backend import registry, runner
from backend.specs import ImportSpec, MergeSpec
from tests.test_pages import app

NAME = "a_b-average-0.5-0.5"  # the default name of the pair a, b
NAME_BOX = "merge_name_average_a_b"


def two_candidates(src, tmp_path) -> None:
    for name in ("a", "b"):  # a folder each: two names of one folder are one model, which the merge refuses
        registry.register(shutil.copytree(src, tmp_path / name), name, "trained")


def merge_button(at):
    return at.button(key="merge")


def infos(at) -> list[str]:
    """The info lines of the merge panel (the page says others: no scores yet, the evaluation's)."""
    panel = next(e for e in at.expander if e.label == "Merge candidates")
    return [i.value for i in panel.info]


def test_a_merge_queued_elsewhere_under_the_name_is_said_and_merge_is_off_until_another_name(tiny_llama, tmp_path):
    two_candidates(tiny_llama, tmp_path)
    at = app("compare.py")
    assert at.multiselect(key="merge_models").value == ["a", "b"]
    assert at.text_input(key=NAME_BOX).value == NAME
    assert not merge_button(at).disabled and not infos(at)
    job = runner.submit(MergeSpec(models=["a", "b"], weights=[0.5, 0.5]))  # another tab, `merge --queue`
    at.run()
    said = (f"Job {job.id} is queued already to merge {NAME!r}: follow it on the Jobs page, or choose another name "
            "to start another merge.")
    assert infos(at) == [said]  # before the click (was only after it, in "Not queued: …")
    assert merge_button(at).disabled and merge_button(at).help == said
    at.text_input(key=NAME_BOX).set_value("a_b-mine").run()
    assert not infos(at) and not at.error
    assert not merge_button(at).disabled and not merge_button(at).help
    merge_button(at).click().run()
    assert not at.exception, at.exception
    assert sorted(runner.planned_name(j) for j in runner.list_jobs()) == sorted([NAME, "a_b-mine"])


def test_after_its_click_merge_is_off_beside_the_merge_it_queued(tiny_llama, tmp_path):
    two_candidates(tiny_llama, tmp_path)
    at = app("compare.py")
    merge_button(at).click().run()
    assert not at.exception, at.exception
    [job] = runner.list_jobs()
    said = (f"Job {job.id} queued to merge {NAME!r}: its progress is shown below; choose another name to start "
            "another merge.")
    assert infos(at) == [said]
    assert merge_button(at).disabled and merge_button(at).help == said  # was on: a second click queued, then refused
    at.run()  # still off on the next rerun, while the job is queued
    assert merge_button(at).disabled and [j.id for j in runner.list_jobs()] == [job.id] and not at.error


def test_another_kind_of_job_or_a_model_in_another_case_holding_the_name_turns_merge_off(tiny_llama, tmp_path):
    two_candidates(tiny_llama, tmp_path)
    job = runner.submit(ImportSpec(target=str(tiny_llama), name=NAME))
    at = app("compare.py")
    said = f"Job {job.id} (import, queued) will register a model named {NAME!r}: wait for it (Jobs page), or choose " \
           "another name for the merge."
    assert infos(at) == [said]
    assert merge_button(at).disabled and merge_button(at).help == said
    runner.cancel(job.id)
    registry.register(shutil.copytree(tiny_llama, tmp_path / "upper"), NAME.upper(), "trained")
    at.run()  # registry.get(NAME) found none: enabled, and the merge failed on a case-insensitive file system
    assert merge_button(at).disabled and f"A model named {NAME.upper()!r} is already registered" in merge_button(at).help
    assert infos(at) == [merge_button(at).help]
