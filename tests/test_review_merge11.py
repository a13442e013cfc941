"""A SLERP says how many tensors it interpolated linearly (walk 11, finding 2): two candidates a few steps apart are
nearly parallel in every tensor (|cos| > 0.9995), so mergekit's SLERP, and ours, is bit for bit a weighted average.
The count is in the merge's result (the CLI, `jobs show`, the job's "done:" message) and in the model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from backend import registry
from backend.merge import methods, run_merge, slerp_note
from backend.specs import MergeSpec
from tests.conftest import load_state, make_llama


def _copy_with(src: Path, dst: Path, edit) -> Path:
    """A copy of the model folder `src` whose every tensor is edit(name, tensor)."""
    shutil.copytree(src, dst)
    state = {k: edit(k, v).contiguous() for k, v in load_state(src).items()}
    for f in dst.glob("*.safetensors"):
        f.unlink()
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _parallel(sa: dict, sb: dict) -> list[str]:
    """The tensors whose cosine, in float64, is above mergekit's DOT_THRESHOLD."""
    out = []
    for k in sa:
        a, b = sa[k].double().flatten(), sb[k].double().flatten()
        if abs(float(a @ b / a.norm() / b.norm())) > methods.DOT_THRESHOLD:
            out.append(k)
    return out


@pytest.fixture
def near(tokenizer_dir, tmp_path):
    """`a` and `a-cpt`: the same tiny model, then every weight moved by 1e-4 (a few training steps)."""
    a = make_llama(tokenizer_dir, tmp_path / "a", seed=1)
    gen = torch.Generator().manual_seed(3)
    b = _copy_with(a, tmp_path / "a-cpt", lambda k, v: v + 1e-4 * torch.randn(v.shape, generator=gen))
    registry.import_folder(a, "a")
    registry.import_folder(b, "a-cpt")
    return load_state(a), load_state(b)


ALL_LINEAR = ("{n} of {n} tensors nearly parallel (|cos| > 0.9995), interpolated linearly as mergekit does — the "
              "same as a weighted average [0.5, 0.5]")


def test_slerp_of_nearby_candidates_says_every_tensor_was_linear_and_equals_the_average(near):
    sa, sb = near
    assert len(_parallel(sa, sb)) == len(sa) == 56  # the premise: every tensor pair is nearly parallel
    result = run_merge(MergeSpec(models=["a", "a-cpt"], method="slerp", t=0.5, name="sl"))
    assert result["slerp"] == ALL_LINEAR.format(n=56)
    card = (Path(result["path"]) / "README.md").read_text()
    assert f"\n\nSLERP: {ALL_LINEAR.format(n=56)}.\n\n## Spec\n" in card
    assert slerp_note(result["path"]) == f"SLERP: {ALL_LINEAR.format(n=56)}."
    # the merged tensors are what they were: mergekit's lerp, the same bits as Average [0.5, 0.5]
    slerped = load_state(Path(result["path"]))
    averaged = load_state(Path(run_merge(MergeSpec(models=["a", "a-cpt"], weights=[0.5, 0.5], name="avg"))["path"]))
    assert slerped.keys() == averaged.keys() == sa.keys()
    for k in sa:
        assert torch.equal(slerped[k], averaged[k]), k
        assert torch.equal(slerped[k], sa[k] * 0.5 + sb[k] * 0.5), k
    assert "slerp" not in run_merge(MergeSpec(models=["a", "a-cpt"], weights=[0.3, 0.7], name="avg2"))
    assert slerp_note(registry.get("avg").path) is None and "SLERP" not in (Path(registry.get("avg").path)
                                                                           / "README.md").read_text()


def test_slerp_of_independent_models_counts_only_the_parallel_norms(tokenizer_dir, tmp_path):
    a = make_llama(tokenizer_dir, tmp_path / "a", seed=1)
    b = make_llama(tokenizer_dir, tmp_path / "b", seed=2)
    sa, sb = load_state(a), load_state(b)
    parallel = _parallel(sa, sb)
    # RMSNorm weights start at 1 in both: 2 per layer and the final norm are parallel; every matrix is not
    assert sorted(parallel) == sorted(k for k in sa if k.endswith("norm.weight")) and len(parallel) == 13
    share = sum(sa[k].numel() for k in parallel) / sum(v.numel() for v in sa.values())
    result = run_merge(MergeSpec(models=[str(a), str(b)], method="slerp", t=0.3, name="ind"))
    assert result["slerp"] == (f"13 of 56 tensors ({share:.1%} of the parameters) nearly parallel (|cos| > 0.9995), "
                               "interpolated linearly as mergekit does; the other 43 spherically")
    out = load_state(Path(result["path"]))
    for k in sa:  # the merge itself is unchanged: the whole-tensor reference definition
        torch.testing.assert_close(out[k], methods.slerp([sa[k], sb[k]], t=0.3), rtol=0, atol=1e-6)
        if k in parallel:
            torch.testing.assert_close(out[k], 0.7 * sa[k] + 0.3 * sb[k], rtol=0, atol=1e-6)
    # norms made random too: no tensor is parallel any more
    gen = torch.Generator().manual_seed(5)
    c = _copy_with(b, tmp_path / "c", lambda k, v: torch.rand(v.shape, generator=gen) + 0.5
                   if k.endswith("norm.weight") else v)
    assert _parallel(sa, load_state(c)) == []
    none = run_merge(MergeSpec(models=[str(a), str(c)], method="slerp", t=0.5, name="none"))
    assert none["slerp"] == "0 of 56 tensors nearly parallel (|cos| > 0.9995) — every tensor interpolated spherically"
    assert slerp_note(none["path"]) == f"SLERP: {none['slerp']}."


def test_a_t_schedule_that_is_all_linear_says_each_tensors_t(near):
    result = run_merge(MergeSpec(models=["a", "a-cpt"], method="slerp", t=[0.0, 1.0], name="sched"))
    assert result["slerp"] == ("56 of 56 tensors nearly parallel (|cos| > 0.9995), interpolated linearly as "
                               "mergekit does — the same as a weighted average [1 − t, t] with each tensor's t")


def test_the_cli_and_the_job_say_it(near, capsys, monkeypatch):
    from backend import runner
    from backend.__main__ import main
    from backend.cli.jobs import job_details

    assert main(["merge", "--method", "slerp", "--models", "a", "a-cpt", "--name", "cli-sl"]) == 0
    assert f"slerp: {ALL_LINEAR.format(n=56)}\n" in capsys.readouterr().out
    monkeypatch.setenv("DUS_JOB_ID", "0")  # runner.execute sets both in this process: restored after the test
    monkeypatch.setenv("DUS_JOB_PID", "0")
    monkeypatch.setattr(runner.child, "_watch_parent", lambda: None)
    job = runner.submit(MergeSpec(models=["a", "a-cpt"], method="slerp", t=0.5, name="job-sl"))
    assert runner.execute(job.id) == 0
    done = runner.get(job.id)
    assert done.result["slerp"] == ALL_LINEAR.format(n=56)
    assert done.message.startswith("done: model job-sl, seconds ")
    assert done.message.endswith(f", slerp {ALL_LINEAR.format(n=56)}")
    shown = job_details(job.id)  # `python -m backend jobs show ID`: the result as YAML
    assert yaml.safe_load(shown.split("\nresult:\n")[1].split("\nspec:\n")[0])["slerp"] == ALL_LINEAR.format(n=56)


def test_the_compare_pages_merge_view_says_the_slerp_was_linear(near):
    from tests.test_pages import app

    from storage import db
    from storage.models import EvalScore

    run_merge(MergeSpec(models=["a", "a-cpt"], method="slerp", t=0.5, name="sl"))
    with db.session() as s:  # the merge view shows merges with scores, beside their candidates
        s.add(EvalScore(model="sl", task="qa", metric="accuracy", value=0.5, n=20))
        s.commit()
    at = app("compare.py")
    assert not at.exception, at.exception
    assert f"SLERP: {ALL_LINEAR.format(n=56)}." in [c.value for c in at.caption]
