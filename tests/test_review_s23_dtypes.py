"""Models that differ only in dtype (a float32 GGUF import beside its bfloat16 Hub original, bf16 beside fp16) are
merged and stacked as mergekit does: each tensor in the inputs' promoted dtype (torch.promote_types), or the spec's
dtype with every input cast to it as it is read; a slices build takes the base's dtypes. Checked tensor for tensor
against the same merge of same-dtype copies. And the perplexity of a model whose tokenizer has no pad token."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backend import registry, runner
from backend.merge import run_merge
from backend.specs import MergeSpec, UpscaleSpec
from backend.upscale import run_upscale
from tests.conftest import load_state, make_llama


def cast_copy(src: Path, dst: Path, dtype: torch.dtype) -> Path:
    """`src` with every tensor stored in `dtype` (its config saying so): the same model saved in another dtype."""
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        f.unlink()
    save_file({k: v.to(dtype) for k, v in load_state(src).items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg.pop("torch_dtype", None)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def models(tokenizer_dir, tmp_path_factory):
    """f32 (float32), bf16 (another model in bfloat16), f16 (a third in float16), base (float32, for TIES)."""
    root = tmp_path_factory.mktemp("dtypes")
    return {"f32": make_llama(tokenizer_dir, root / "f32", layers=2, seed=0),
            "bf16": make_llama(tokenizer_dir, root / "bf16", layers=2, seed=1, dtype=torch.bfloat16),
            "f16": make_llama(tokenizer_dir, root / "f16", layers=2, seed=2, dtype=torch.float16),
            "base": make_llama(tokenizer_dir, root / "base", layers=2, seed=3)}


def merged(spec: MergeSpec) -> tuple[dict[str, torch.Tensor], dict]:
    out = Path(run_merge(spec)["path"])
    return load_state(out), json.loads((out / "config.json").read_text())


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    assert a.keys() == b.keys() and a  # an empty output compared equal before
    for k in a:
        assert a[k].dtype == b[k].dtype == dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("method", ["linear", "slerp", "ties"])
@pytest.mark.parametrize("pair", [("f32", "bf16"), ("bf16", "f16")])
def test_models_differing_in_dtype_merge_in_the_promoted_dtype(models, tmp_path, method, pair):
    """F32 + BF16 and BF16 + F16 merge in float32 (torch.promote_types, as mergekit's align_dtype), equal bit for
    bit to the merge of float32 copies; config.json says float32. Refused before: 'differ in architecture'."""
    a, b = (models[p] for p in pair)
    a32, b32 = (cast_copy(models[p], tmp_path / f"{p}-32", torch.float32) for p in pair)
    extra = {"base": str(models["base"]), "density": 0.5} if method == "ties" else {}
    out, cfg = merged(MergeSpec(models=[str(a), str(b)], method=method, name="mixed", **extra))
    ref, _ = merged(MergeSpec(models=[str(a32), str(b32)], method=method, name="same", **extra))
    assert_same(out, ref, torch.float32)
    assert cfg["dtype"] == "float32"


def test_a_chosen_dtype_casts_every_input_as_it_is_read(models, tmp_path):
    """dtype bfloat16 over F32 + BF16: mergekit casts each input to bfloat16 when it loads it, so the merge equals
    that of a bfloat16 copy of the float32 model (the old code averaged the unrounded float32 weights)."""
    a16 = cast_copy(models["f32"], tmp_path / "f32-16", torch.bfloat16)
    for method in ("linear", "slerp"):
        out, cfg = merged(MergeSpec(models=[str(models["f32"]), str(models["bf16"])], method=method,
                                    dtype="bfloat16", name=f"chosen-{method}"))
        ref, _ = merged(MergeSpec(models=[str(a16), str(models["bf16"])], method=method, name=f"copies-{method}"))
        assert_same(out, ref, torch.bfloat16)
        assert cfg["dtype"] == "bfloat16"
    # two float32 models with dtype bfloat16 too: the inputs are rounded first, then averaged in float32
    b16 = cast_copy(models["base"], tmp_path / "base-16", torch.bfloat16)
    out, _ = merged(MergeSpec(models=[str(models["f32"]), str(models["base"])], dtype="bfloat16", name="both32"))
    ref, _ = merged(MergeSpec(models=[str(a16), str(b16)], name="both16"))
    assert_same(out, ref, torch.bfloat16)


def test_the_queue_does_not_refuse_rows_of_other_dtypes(models):
    registry.import_folder(models["f32"], "a32")
    registry.import_folder(models["bf16"], "b16")
    job = runner.submit(MergeSpec(models=["a32", "b16"]))
    assert job.kind == "merge"


@pytest.mark.parametrize("base, second", [("f32", "bf16"), ("bf16", "f32")])
def test_slices_of_two_dtypes_take_the_base_dtype(models, base, second):
    """Layers from a second model stored in another dtype are written in the base's (rounded to nearest even, as
    torch's .to()); the base's own tensors are copied unchanged."""
    want = {"f32": torch.float32, "bf16": torch.bfloat16}[base]
    spec = UpscaleSpec(base=str(models[base]), second=str(models[second]), method="slices",
                       slices=[{"source": 0, "start": 0, "end": 2}, {"source": 1, "start": 0, "end": 2}],
                       name=f"stack-{base}")
    out = load_state(Path(run_upscale(spec)["path"]))
    a, b = load_state(models[base]), load_state(models[second])
    stacked = {k.replace(f"layers.{i}.", f"layers.{i + 2}.") for k in a for i in (0, 1)
               if k.startswith(f"model.layers.{i}.")}
    assert set(out) == set(a) | stacked and stacked, sorted(set(out) ^ (set(a) | stacked))  # four layers, all checked
    for k, v in out.items():
        assert v.dtype == want, k
        if k.startswith("model.layers.") and int(k.split(".")[2]) >= 2:
            src = b[k.replace(f"layers.{k.split('.')[2]}.", f"layers.{int(k.split('.')[2]) - 2}.")]
            assert torch.equal(v, src.to(want)), k
        else:
            assert torch.equal(v, a[k]), k


TEXTS = ["Depth up-scaling stacks two copies of a model and drops the middle layers.",
         "Question: what is 15 percent of 200? Answer: 30.", "Solar.",
         "Merging averages the weights of two candidates tensor by tensor, which needs the same shapes."]


def bare_folder(src: Path, dst: Path) -> Path:
    """`src` with only tokenizer.json for its tokenizer (no tokenizer_config.json): a folder from the wild whose
    tokenizer names no special token at all."""
    dst.mkdir()
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(src / f, dst / f)
    return dst


def test_perplexity_of_a_model_whose_tokenizer_has_no_pad_token(tiny_llama, tmp_path):
    """Refused before ("Asking to pad but the tokenizer does not have a padding token"). The padded batch scores
    what the folder with its full tokenizer scores, and what each text scores alone (padding changes nothing)."""
    from backend.evaldevice import load_model
    from backend.evalscore import perplexity, perplexity_items

    tok, model = load_model(bare_folder(tiny_llama, tmp_path / "bare"))
    full_tok, full_model = load_model(tiny_llama)
    got, ref = perplexity_items(tok, model, TEXTS), perplexity_items(full_tok, full_model, TEXTS)
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<|im_end|>", None, None)  # generation_config's pad id 2
    assert full_tok.pad_token == "<|im_end|>"
    alone = [perplexity_items(tok, model, [t])[0] for t in TEXTS]
    assert [n for _, n in got] == [n for _, n in ref] == [n for _, n in alone]
    assert len({n for _, n in got}) > 1  # texts of other lengths: the batch was padded
    assert [x for x, _ in got] == pytest.approx([x for x, _ in ref], rel=1e-6)
    assert [x for x, _ in got] == pytest.approx([x for x, _ in alone], rel=1e-5)
    assert perplexity(tok, model, TEXTS)[0] == pytest.approx(perplexity(full_tok, full_model, TEXTS)[0], rel=1e-6)


def test_pad_token_fallbacks_are_lm_evals(tiny_llama, tmp_path):
    """lm-eval's order: pad, unk, eos, then an added <|pad|>; the model's own pad/eos id before adding a token
    (an added one has no embedding row when the tokenizer fills the vocabulary), refused clearly when none fits."""
    from transformers import AutoTokenizer

    from backend.evaldevice import DeviceError, configure_pad_token, load_model

    bare = bare_folder(tiny_llama, tmp_path / "bare")
    _, model = load_model(bare)
    tok = AutoTokenizer.from_pretrained(bare)
    tok.unk_token, tok.eos_token = "<unk>", "<|im_end|>"
    configure_pad_token(tok, model)
    assert tok.pad_token == "<unk>"  # unk before eos, as lm-eval
    for cfg in (model.generation_config, model.config):
        cfg.pad_token_id = cfg.eos_token_id = None
    tok = AutoTokenizer.from_pretrained(bare)
    with pytest.raises(DeviceError, match=r"no pad, unk or eos token.*<\|pad\|> \(id 300\) has no embedding row"):
        configure_pad_token(tok, model, bare)
    model.resize_token_embeddings(320)  # a vocabulary padded past the tokenizer's (Qwen's 151936 rows)
    tok = AutoTokenizer.from_pretrained(bare)
    configure_pad_token(tok, model)
    assert (tok.pad_token, tok.pad_token_id) == ("<|pad|>", 300)
