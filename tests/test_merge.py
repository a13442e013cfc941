"""Merges against mergekit 0.1.5's own outputs (tests/data/mergekit, made once by make_refs.py there), DARE's
statistics, streaming, schedules, refusals (architecture, vocabulary) and the CLI."""

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

REFS = Path(__file__).resolve().parent / "data" / "mergekit"
CONFIGS = json.loads((REFS / "refs.json").read_text())


def np_slerp(t: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference SLERP written from the formula, in float64 numpy."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1, 1))
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def ours_on_refs(dtype: str, cname: str) -> dict[str, torch.Tensor]:
    """Our merge of a reference configuration's inputs, with the MergeSpec fields refs.json gives for it."""
    cfg = CONFIGS[cname]
    root = REFS / dtype
    spec = MergeSpec(models=[str(root / m) for m in cfg["models"]], base=str(root / cfg["base"]) if cfg["base"]
                     else None, name=f"{cname}-{dtype}", **cfg["spec"])
    return load_state(Path(run_merge(spec)["path"]))


def threshold_ties(dtype: str, cname: str, name: str) -> torch.Tensor:
    """Entries whose |delta| equals a task vector's k-th largest magnitude: mergekit's argsort (not stable) picks
    among them in an order only its full sort reproduces; ours keeps the lowest indices (same count, same values)."""
    cfg = CONFIGS[cname]
    base = load_state(REFS / dtype / "base")[name]
    ties = torch.zeros(base.numel(), dtype=torch.bool)
    density = cfg["spec"]["density"]
    for m in cfg["models"]:
        d = (load_state(REFS / dtype / m)[name] - base).reshape(-1).abs().float()  # rounded in the dtype, as mergekit
        k = max(1, int(density * d.numel()))
        if k < d.numel():
            ties |= d == d.sort(descending=True).values[k - 1]
    return ties.view_as(base)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cname", [c for c in CONFIGS if len(CONFIGS[c]["models"]) > 1])
def test_equals_mergekit(dtype, cname):
    """Every tensor of every method equals mergekit's, bit for bit, except: SLERP, whose angle is a float32 sum in an
    order mergekit's batching decides (within one rounding of the output plus float32 roundings of the inputs),
    float32 rescaling (the L1 norms are float32 sums in torch's order: 4 ulp of the tensor's largest entry), and
    bf16 TIES at threshold ties (above)."""
    ref = load_state(REFS / dtype / f"out-{cname}")
    out = ours_on_refs(dtype, cname)
    assert out.keys() == ref.keys()
    slerp = CONFIGS[cname]["spec"]["method"] == "slerp"
    for k in ref:
        assert out[k].dtype == ref[k].dtype, k
        if slerp:  # one rounding of the output, plus float32 roundings of the coefficients times the inputs
            a, b = (load_state(REFS / dtype / m)[k].float().abs() for m in CONFIGS[cname]["models"])
            tol = torch.finfo(ref[k].dtype).eps * ref[k].float().abs() + 4 * torch.finfo(torch.float32).eps * (a + b)
            assert ((out[k].float() - ref[k].float()).abs() <= tol).all(), k
            continue
        differ = out[k] != ref[k]
        if CONFIGS[cname]["spec"].get("rescale") and dtype == "float32":
            # ‖delta‖₁ / ‖kept‖₁ is a float32 sum over the whole tensor in an order torch picks: one ulp of the factor
            differ &= (out[k] - ref[k]).abs() > 4 * torch.finfo(torch.float32).eps * ref[k].abs().max()
        if cname.startswith("ties") and dtype == "bfloat16":
            differ &= ~threshold_ties(dtype, cname, k)
        assert not differ.any(), f"{k}: {int(differ.sum())} entries differ from mergekit"


def test_ties_refs_exercise_what_they_claim():
    """The references are not trivially equal: the 0.9995 threshold and TIES' sign election change the result."""
    root = REFS / "float32"
    a, near = load_state(root / "a"), load_state(root / "near")
    ref = load_state(root / "out-slerp_near")
    k = "model.layers.0.mlp.up_proj.weight"
    x, y = a[k].double().ravel(), near[k].double().ravel()
    cos = float(x @ y / x.norm() / y.norm())
    assert 0.9995 < cos < 1 - 1e-6  # the old 1 - 1e-6 threshold would have taken the spherical path here
    torch.testing.assert_close(ref[k], torch.lerp(a[k], near[k], 0.4), rtol=0, atol=1e-7)
    base, b = load_state(root / "base"), load_state(root / "b")
    k = "model.layers.1.mlp.up_proj.weight"  # first 32 entries: opposite task vectors, weights 1: sum 0 elects +
    ties = load_state(root / "out-ties_raw")[k].reshape(-1)[:32]
    da, db = (a[k] - base[k]).reshape(-1)[:32], (b[k] - base[k]).reshape(-1)[:32]
    assert torch.equal(da, -db)
    kept = ties != base[k].reshape(-1)[:32]
    assert kept.any() and (ties[kept] > base[k].reshape(-1)[:32][kept]).all()  # only the + side survives


def test_dare_statistics_match_mergekit():
    """DARE at density 0.5 on one task vector: out − base = mask·delta·‖delta‖₁/‖kept‖₁ in mergekit's output and
    in ours; ours is seeded (same seed, same model; another seed, another mask) and chunking does not change it."""
    root = REFS / "float32"
    base, a = load_state(root / "base"), load_state(root / "a")
    ref = load_state(root / "out-dare_linear_half")
    spec = dict(models=[str(root / "a"), str(root / "base")], base=str(root / "base"), method="dare_linear",
                weights=[1.0, 0.0], density=0.5)
    ours = load_state(Path(run_merge(MergeSpec(**spec, name="d1"))["path"]))
    again = load_state(Path(run_merge(MergeSpec(**spec, name="d2"))["path"]))
    other = load_state(Path(run_merge(MergeSpec(**spec, seed=1, name="d3"))["path"]))
    assert all(torch.equal(ours[k], again[k]) for k in ours)
    assert not all(torch.equal(ours[k], other[k]) for k in ours)
    for out in (ref, ours):
        kept_total = 0
        for k in base:
            delta = (a[k] - base[k]).double()
            moved = (out[k] - base[k]).double()
            kept = moved != 0
            kept_total += int(kept.sum())
            factor = delta.abs().sum() / delta[kept].abs().sum()
            slack = 4 * torch.finfo(torch.float32).eps * (base[k].double().abs() + out[k].double().abs())
            assert ((moved - delta * factor).abs()[kept] <= slack[kept]).all(), k
        assert 0.4 < kept_total / sum(v.numel() for v in base.values()) < 0.6


def test_dare_mean_rescale_and_density_one(tokenizer_dir, tmp_path, monkeypatch):
    """On a bigger model: the share kept is density and the mean rescale 1/density, each within 1 %; density 1 is
    task arithmetic exactly (dare_ties: TIES); the mask does not depend on the chunking."""
    import backend.merge.executor as ex

    base, a, b = (make_llama(tokenizer_dir, tmp_path / n, seed=s, layers=24)  # 250k entries: σ of the share 0.3 %
                  for n, s in (("base", 3), ("a", 1), ("b", 2)))
    s0, sa = load_state(base), load_state(a)
    common = dict(models=[str(a), str(b)], base=str(base), weights=[1.0, 0.0])
    out = load_state(Path(run_merge(MergeSpec(**common, method="dare_linear", density=0.3, name="d"))["path"]))
    factors, kept, total = [], 0, 0
    for k in s0:
        delta, moved = (sa[k] - s0[k]).double(), (out[k] - s0[k]).double()
        if not delta.any():  # norm weights: 1 in every random init, no task vector
            continue
        mask = moved != 0
        kept, total = kept + int(mask.sum()), total + mask.numel()
        factors.append(float(delta.abs().sum() / delta[mask].abs().sum()))
    assert abs(kept / total / 0.3 - 1) < 0.01
    assert abs(np.mean(factors) * 0.3 - 1) < 0.01
    monkeypatch.setattr(ex, "CHUNK_ELEMS", 100)
    monkeypatch.setattr(ex, "BLOCK_BYTES", 4096)
    chunked = load_state(Path(run_merge(MergeSpec(**common, method="dare_linear", density=0.3, name="dc"))["path"]))
    assert set(out) == set(chunked) == set(s0) and all(torch.equal(out[k], chunked[k]) for k in out)
    both = dict(models=[str(a), str(b)], base=str(base), weights=[0.6, 0.7])
    for dare, plain in (("dare_linear", "task_arithmetic"), ("dare_ties", "ties")):
        x = load_state(Path(run_merge(MergeSpec(**both, method=dare, density=1.0, name=f"{dare}1"))["path"]))
        y = load_state(Path(run_merge(MergeSpec(**both, method=plain, density=1.0, normalize=False,
                                                name=f"{plain}1"))["path"]))
        assert set(x) == set(y) == set(s0) and all(torch.equal(x[k], y[k]) for k in x), dare


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ties_streamed_in_chunks_equals_whole_tensor(dtype, monkeypatch):
    """Many chunks and blocks per tensor (histogram threshold passes, the running tie count) give the same bits as
    the whole-tensor definition in methods.py."""
    import backend.merge.executor as ex

    monkeypatch.setattr(ex, "CHUNK_ELEMS", 24)
    monkeypatch.setattr(ex, "BLOCK_BYTES", 96)
    out = ours_on_refs(dtype, "ties_rescale")
    root = REFS / dtype
    base, a, b = (load_state(root / m) for m in ("base", "a", "b"))
    assert set(out) == set(base) and out, sorted(out)  # every tensor compared below (an empty output passed before)
    for k in out:
        ref = methods.task_arithmetic_merge([a[k], b[k]], base=base[k], weights=[0.6, 0.5],
                                            method=methods.METHODS["ties"], normalize=True, rescale=True,
                                            density=0.5)
        assert torch.equal(out[k], ref), k


def test_top_k_keeps_exactly_k_with_ties_lowest_index_first():
    x = torch.tensor([0.5, -0.25, 0.25, 0.25, -1.0, 0.25, 0.0, 0.125], dtype=torch.bfloat16)
    bits = methods.magnitude_bits(x)
    (thr, take), = methods.top_k_cuts(lambda: [[bits[:3]], [bits[3:]]], 4, False)
    keep = methods.TopK(thr, take)
    mask = torch.cat([keep(bits[:3]), keep(bits[3:])])
    assert mask.tolist() == [True, True, True, False, True, False, False, False]
    x32 = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 5.0])
    (thr, take), = methods.top_k_cuts(lambda: [[methods.magnitude_bits(x32)]], 3, True)
    assert methods.TopK(thr, take)(methods.magnitude_bits(x32)).tolist() == [True, False, True, False, False, True]


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
    raw = load_state(Path(run_merge(MergeSpec(models=["a", "b"], weights=[1, 1], normalize=False,
                                              name="sum"))["path"]))
    torch.testing.assert_close(raw["model.norm.weight"], sa["model.norm.weight"] + sb["model.norm.weight"])


def test_slerp_matches_an_independent_reference_and_its_ends(pair):
    sa, sb = pair
    out = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=0.3, name="s"))["path"]))
    for k in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight",
              "model.layers.5.mlp.up_proj.weight"):
        ref = np_slerp(0.3, sa[k].numpy(), sb[k].numpy()).reshape(sa[k].shape)
        np.testing.assert_allclose(out[k].numpy(), ref, rtol=0, atol=1e-6)
    zero = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=0.0, name="s0"))["path"]))
    one = load_state(Path(run_merge(MergeSpec(models=["a", "b"], method="slerp", t=1.0, name="s1"))["path"]))
    for k in sa:
        torch.testing.assert_close(zero[k], sa[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(one[k], sb[k], rtol=0, atol=1e-6)


def test_near_parallel_slerp_falls_back_to_linear_at_mergekit_threshold():
    a = torch.randn(10, 4, dtype=torch.float64)
    b = a + 0.02 * torch.randn(10, 4, dtype=torch.float64)
    cos = float((a * b).sum() / a.norm() / b.norm())
    assert 0.9995 < cos < 1 - 1e-6
    assert slerp_coefficients(float((a * b).sum()), float((a * a).sum()), float((b * b).sum()), 0.25) == (0.75, 0.25)
    torch.testing.assert_close(methods.slerp([a.float(), 2 * a.float()], t=0.25), torch.lerp(a, 2 * a, 0.25).float())
    far = a + torch.randn(10, 4, dtype=torch.float64)  # well below the threshold: spherical
    assert slerp_coefficients(float((a * far).sum()), float((a * a).sum()), float((far * far).sum()), 0.25) != \
        (0.75, 0.25)


def test_t_schedule_and_filters_hit_the_right_layers(pair):
    sa, sb = pair
    spec = MergeSpec(models=["a", "b"], method="slerp", t=[0.0, 1.0], filters={"mlp": 0.0}, name="sched")
    out = load_state(Path(run_merge(spec)["path"]))
    torch.testing.assert_close(out["model.layers.0.self_attn.q_proj.weight"],
                               sa["model.layers.0.self_attn.q_proj.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["model.layers.5.self_attn.q_proj.weight"],
                               sb["model.layers.5.self_attn.q_proj.weight"], rtol=0, atol=1e-6)
    k = "model.layers.2.self_attn.q_proj.weight"  # 2/5 of the way: t = 0.4
    ref = np_slerp(0.4, sa[k].numpy(), sb[k].numpy()).reshape(sa[k].shape)
    np.testing.assert_allclose(out[k].numpy(), ref, rtol=0, atol=1e-6)
    for i in range(6):
        k = f"model.layers.{i}.mlp.down_proj.weight"
        torch.testing.assert_close(out[k], sa[k], rtol=0, atol=1e-6)
    # as mergekit: tensors outside the layers (embeddings, final norm) take the schedule's start
    torch.testing.assert_close(out["model.norm.weight"], sa["model.norm.weight"], rtol=0, atol=1e-6)
    assert schedule_value([0, 1, 0], 0.5) == 1.0 and schedule_value(0.3, 0.9) == 0.3


def test_mismatched_models_are_refused_and_nothing_is_registered(pair, tokenizer_dir, tmp_path, workspace):
    q = make_qwen2(tokenizer_dir, tmp_path / "q")
    deeper = make_llama(tokenizer_dir, tmp_path / "deep", layers=8)
    for other in (q, deeper):
        with pytest.raises(ValueError, match="cannot be merged"):
            run_merge(MergeSpec(models=["a", str(other)], name="bad"))
    assert registry.get("bad") is None and not (workspace / "models" / "bad").exists()
    assert list((workspace / ".tmp").iterdir()) == []


def test_different_vocabularies_are_refused_naming_the_difference(pair, tokenizer_dir, tmp_path):
    import shutil

    b = registry.get("b").path

    def variant(name: str, edit) -> str:
        folder = tmp_path / name
        shutil.copytree(b, folder)
        edit(folder)
        return str(folder)

    def swap(folder: Path):  # two tokens trade ids: same size, same tokens, other rows
        data = json.loads((folder / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        x, y = sorted(vocab, key=vocab.get)[100:102]
        vocab[x], vocab[y] = vocab[y], vocab[x]
        (folder / "tokenizer.json").write_text(json.dumps(data))

    def add(folder: Path):
        data = json.loads((folder / "tokenizer.json").read_text())
        data["added_tokens"].append({"id": 299, "content": "<tool>", "special": True, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False})
        (folder / "tokenizer.json").write_text(json.dumps(data))

    def bigger(folder: Path):  # a model of one more token: its config and its embedding (an edited config alone
        from safetensors.torch import save_file  # is refused as weights that do not fit it, review s22)

        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 301}))
        state = load_state(folder)
        embed = state["model.embed_tokens.weight"]
        state["model.embed_tokens.weight"] = torch.cat([embed, torch.zeros(1, embed.shape[1])])
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    cases = {"swap": (swap, r"tokenizer.json vocabulary\): '.+' is id 10\d in a but 10\d in .*swap"),
             "add": (add, r"tokenizer.json added tokens\): 3 vs 4 entries; '<tool>' \(id 299\) only in .*add"),
             "bigger": (bigger, r"vocab_size 300 vs 301")}
    for name, (edit, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            run_merge(MergeSpec(models=["a", variant(name, edit)], name=f"bad-{name}"))


def test_spec_errors_and_defaults():
    with pytest.raises(ValueError, match="slerp merges exactly two"):
        MergeSpec(models=["a", "b", "c"], method="slerp")
    with pytest.raises(ValueError, match="relative to a base"):
        MergeSpec(models=["a", "b"], method="ties")
    with pytest.raises(ValueError, match="one per model"):
        MergeSpec(models=["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        MergeSpec(models=["a", "b"], method="slerp", t=[0.2, 1.5])
    with pytest.raises(ValueError, match="lambda scales a task vector"):
        MergeSpec(models=["a", "b"], **{"lambda": 0.5})
    with pytest.raises(ValueError, match="rescale: only ties and dare"):
        MergeSpec(models=["a", "b"], method="task_arithmetic", base="c", rescale=True)
    with pytest.raises(ValueError, match="weights: they sum to zero"):
        MergeSpec(models=["a", "b"], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="density"):
        MergeSpec(models=["a", "b"], method="ties", base="c", density=0)
    old = MergeSpec.model_validate({"models": ["a", "b"], "method": "dare", "base": "c"})  # a spec saved before
    assert old.method == "dare_linear" and old.resolved_rescale and not old.resolved_normalize
    ties = MergeSpec(models=["a", "b"], method="ties", base="c", **{"lambda": 0.7})
    assert ties.resolved_normalize and not ties.resolved_rescale and ties.lambda_ == 0.7
    assert "lambda: 0.7" in ties.to_yaml() and MergeSpec.model_validate(ties.model_dump(mode="json")) == ties
    assert MergeSpec(models=["a", "b"], method="linear").method == "average"
    assert not MergeSpec(models=["a", "b"], method="task_arithmetic", base="c").resolved_normalize


def test_bf16_merge_streams_in_chunks_and_loads(tokenizer_dir, tmp_path, monkeypatch):
    import backend.merge.executor as ex
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(ex, "CHUNK_ELEMS", 100)  # many chunks per tensor, several blocks for the larger ones
    monkeypatch.setattr(ex, "BLOCK_BYTES", 4096)
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

    from tests.test_cli_runner import here

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "cli-merge"
    r = subprocess.run([sys.executable, "-m", "backend", "merge", "--method", "slerp", "--models", "a", "b",
                        "--t", "0", "0.5", "1", "--out", str(out), "--name", "cli-slerp"],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert registry.get("cli-slerp").recipe["t"] == [0.0, 0.5, 1.0]
    assert set(load_state(out)) == set(pair[0])
    # the next two in this process (test_cli_runner.here): the command's own start is checked above, and each
    # start of torch cost ~4 s of CPU
    r = here("merge", "--method", "dare_ties", "--models", "a", "b", "--base", "a", "--density", "0.3", "--rescale",
             "--lambda", "0.8", "--seed", "7", "--name", "cli-dare")
    assert r.returncode == 0, r.stderr
    recipe = registry.get("cli-dare").recipe
    assert (recipe["method"], recipe["density"], recipe["rescale"], recipe["lambda"], recipe["seed"]) == \
        ("dare_ties", 0.3, True, 0.8, 7)
    bad = here("merge", "--method", "ties", "--models", "a", "b")
    assert bad.returncode == 2 and "relative to a base" in bad.stderr


def test_compare_page_offers_every_method_with_mergekit_defaults(pair):
    from streamlit.testing.v1 import AppTest

    from backend import runner

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="merge_method").options == ["average", "slerp", "task_arithmetic", "ties", "dare_linear",
                                                        "dare_ties"]
    at.selectbox(key="merge_method").set_value("dare_ties").run()
    assert at.checkbox(key="merge_rescale_dare_ties").value and not at.checkbox(key="merge_normalize_dare_ties").value
    at.selectbox(key="merge_base").set_value("a").run()
    at.number_input(key="merge_lambda").set_value(0.8).run()
    at.number_input(key="merge_seed").set_value(3).run()
    at.button(key="merge").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    spec = job.spec
    assert (spec["method"], spec["base"], spec["lambda"], spec["seed"], spec["rescale"], spec["normalize"]) == \
        ("dare_ties", "a", 0.8, 3, True, False)
    at.selectbox(key="merge_method").set_value("ties").run()
    assert at.checkbox(key="merge_normalize_ties").value and not at.checkbox(key="merge_rescale_ties").value
