"""Merges: exact against hand computation and an independent SLERP, schedules, refusals, streaming output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import registry
from backend.merge import methods, run_merge, schedule_value, slerp_coefficients
from backend.specs import MergeSpec
from tests.conftest import load_state, make_llama, make_qwen2


def np_slerp(t: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference SLERP written from the formula, in float64 numpy."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1, 1))
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


@pytest.fixture
def pair(tokenizer_dir, tmp_path):
    a = make_llama(tokenizer_dir, tmp_path / "a", seed=1)
    b = make_llama(tokenizer_dir, tmp_path / "b", seed=2)
    registry.import_folder(a, "a")
    registry.import_folder(b, "b")
    return load_state(a), load_state(b)


def test_average_is_exact(pair):
    sa, sb = pair
    out = load_state(Path(run_merge(MergeSpec(models=["a", "b"], weights=[0.4, 0.6], name="avg"))["path"]))
    assert out.keys() == sa.keys()
    for k in sa:
        torch.testing.assert_close(out[k], 0.4 * sa[k] + 0.6 * sb[k], rtol=0, atol=1e-6)
    rec = registry.get("avg")
    assert rec.kind == "merged" and rec.parents == ["a", "b"] and rec.recipe["weights"] == [0.4, 0.6]
    # unnormalised weights are taken as given
    raw = load_state(Path(run_merge(MergeSpec(models=["a", "b"], weights=[1, 1], normalize=False,
                                              name="sum"))["path"]))
    torch.testing.assert_close(raw["model.norm.weight"], sa["model.norm.weight"] + sb["model.norm.weight"])


def test_slerp_matches_an_independent_reference_and_its_ends(pair):
    sa, sb = pair
    out = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=0.3, name="s"))["path"]))
    for k in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "model.layers.5.mlp.up_proj.weight"):
        ref = np_slerp(0.3, sa[k].numpy(), sb[k].numpy()).reshape(sa[k].shape)
        np.testing.assert_allclose(out[k].numpy(), ref, rtol=0, atol=1e-6)
    zero = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=0.0, name="s0"))["path"]))
    one = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=1.0, name="s1"))["path"]))
    for k in sa:
        torch.testing.assert_close(zero[k], sa[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(one[k], sb[k], rtol=0, atol=1e-6)


def test_colinear_slerp_falls_back_to_linear():
    a = torch.randn(10, 4)
    assert slerp_coefficients(float((a * 2 * a).sum()), float((a * a).sum()), float((2 * a * 2 * a).sum()), 0.25) \
        == (0.75, 0.25)
    torch.testing.assert_close(methods.slerp([a, 2 * a], t=0.25), torch.lerp(a, 2 * a, 0.25))


def test_t_schedule_and_filters_hit_the_right_layers(pair):
    sa, sb = pair
    spec = MergeSpec(models=["a", "b"], method="slerp", t=[0.0, 1.0], filters={"mlp": 0.0}, name="sched")
    out = load_state(Path(run_merge(spec)["path"]))
    # attention follows the schedule: layer 0 -> t=0 (model a), layer 5 (last) -> t=1 (model b)
    torch.testing.assert_close(out["model.layers.0.self_attn.q_proj.weight"],
                               sa["model.layers.0.self_attn.q_proj.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["model.layers.5.self_attn.q_proj.weight"],
                               sb["model.layers.5.self_attn.q_proj.weight"], rtol=0, atol=1e-6)
    k = "model.layers.2.self_attn.q_proj.weight"  # 2/5 of the way: t = 0.4
    ref = np_slerp(0.4, sa[k].numpy(), sb[k].numpy()).reshape(sa[k].shape)
    np.testing.assert_allclose(out[k].numpy(), ref, rtol=0, atol=1e-6)
    # the mlp filter pins t = 0 everywhere
    for i in range(6):
        k = f"model.layers.{i}.mlp.down_proj.weight"
        torch.testing.assert_close(out[k], sa[k], rtol=0, atol=1e-6)
    assert schedule_value([0, 1, 0], 0.5) == 1.0 and schedule_value(0.3, 0.9) == 0.3


def test_task_arithmetic_ties_and_dare_relative_to_a_base(pair, tokenizer_dir, tmp_path):
    sa, sb = pair
    base = make_llama(tokenizer_dir, tmp_path / "base", seed=3)
    registry.import_folder(base, "base")
    s0 = load_state(base)
    out = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="task_arithmetic", base="base",
                                              weights=[0.5, 0.5], name="ta"))["path"]))
    k = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(out[k], s0[k] + 0.5 * (sa[k] - s0[k]) + 0.5 * (sb[k] - s0[k]), rtol=0, atol=1e-6)
    ties = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="ties", base="base", density=0.3,
                                               name="ties"))["path"]))
    delta = (ties[k] - s0[k]).flatten()
    assert 0 < (delta != 0).float().mean() <= 0.6  # trimmed task vectors leave most entries at the base
    d1 = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="dare", base="base", density=0.5,
                                             name="dare1"))["path"]))
    d2 = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="dare", base="base", density=0.5,
                                             name="dare2"))["path"]))
    assert all(torch.equal(d1[x], d2[x]) for x in d1)  # seeded: reproducible
    assert registry.get("ta").parents == ["a", "b", "base"]


def test_mismatched_models_are_refused_and_nothing_is_registered(pair, tokenizer_dir, tmp_path, workspace):
    q = make_qwen2(tokenizer_dir, tmp_path / "q")
    deeper = make_llama(tokenizer_dir, tmp_path / "deep", layers=8)
    for other in (q, deeper):
        with pytest.raises(ValueError, match="cannot be merged"):
            run_merge(MergeSpec(models=["a", str(other)], name="bad"))
    assert registry.get("bad") is None and not (workspace / "models" / "bad").exists()
    assert list((workspace / ".tmp").iterdir()) == []


def test_spec_errors():
    with pytest.raises(ValueError, match="slerp merges exactly two"):
        MergeSpec(models=["a", "b", "c"], method="slerp")
    with pytest.raises(ValueError, match="relative to a base"):
        MergeSpec(models=["a", "b"], method="ties")
    with pytest.raises(ValueError, match="one per model"):
        MergeSpec(models=["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        MergeSpec(models=["a", "b"], method="slerp", t=[0.2, 1.5])


def test_bf16_merge_streams_in_chunks_and_loads(tokenizer_dir, tmp_path, monkeypatch):
    import backend.merge as merge
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(merge, "CHUNK_ELEMS", 100)  # many chunks per tensor, several blocks for the larger ones
    monkeypatch.setattr(merge, "BLOCK_BYTES", 4096)
    a = make_llama(tokenizer_dir, tmp_path / "ba", seed=1, dtype=torch.bfloat16)
    b = make_llama(tokenizer_dir, tmp_path / "bb", seed=2, dtype=torch.bfloat16)
    out = Path(run_merge(MergeSpec(models=[str(a), str(b)], method="slerp", t=0.5, name="bf"))["path"])
    sa, sb, so = load_state(a), load_state(b), load_state(out)
    assert all(v.dtype == torch.bfloat16 for v in so.values())
    for k in so:  # tensors of one block (read once) and of several blocks (read twice) alike
        ref = np_slerp(0.5, sa[k].float().numpy(), sb[k].float().numpy()).reshape(sa[k].shape)
        np.testing.assert_allclose(so[k].float().numpy(), ref, rtol=1e-2, atol=1e-3, err_msg=k)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert model.config.num_hidden_layers == 6


def test_cli_merge(pair, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli-merge"
    r = subprocess.run([sys.executable, "-m", "backend", "merge", "--method", "slerp", "--models", "a", "b",
                        "--t", "0", "0.5", "1", "--out", str(out), "--name", "cli-slerp"],
                       cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert registry.get("cli-slerp").recipe["t"] == [0.0, 0.5, 1.0]
    assert set(load_state(out)) == set(pair[0])
    bad = subprocess.run([sys.executable, "-m", "backend", "merge", "--method", "ties", "--models", "a", "b"],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert bad.returncode == 2 and "relative to a base" in bad.stderr
