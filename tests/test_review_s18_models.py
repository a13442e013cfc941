"""Review s18 of built models' folders: a remote-code model's modules go with it, a merge's chat template is written
without loading a tokenizer (a remote-code one could not be), and slices of two SmolLM3 models of other depths take
each layer's no_rope_layers flag from its own source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.merge import run_merge
from backend.outputs import copy_companions
from backend.specs import MergeSpec, SliceRange, UpscaleSpec
from backend.upscale import MismatchError, check_compatible, run_upscale
from tests.conftest import CHATML, load_state, make_llama

# Module texts that stop the process if anything imports them: the project never runs a model's code.
TRAP = "raise SystemExit('remote code ran')\n"


def make_remote(tokenizer_dir: Path, out: Path, seed: int, tag: str = "foo") -> Path:
    """A tiny Llama whose config.json and tokenizer_config.json name classes of its own modules (a remote-code
    model, as Phi-3 or InternLM were published), beside a script no auto_map names."""
    make_llama(tokenizer_dir, out, layers=4, seed=seed)
    cfg = json.loads((out / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": f"configuration_{tag}.FooConfig",
                       "AutoModelForCausalLM": f"modeling_{tag}.FooForCausalLM",
                       "AutoModel": "someorg/other-repo--modeling_other.Other"}  # code in another repo: no file
    (out / "config.json").write_text(json.dumps(cfg))
    tc = json.loads((out / "tokenizer_config.json").read_text())
    tc["tokenizer_class"] = "FooTokenizer"
    tc["auto_map"] = {"AutoTokenizer": [f"tokenization_{tag}.FooTokenizer", None]}
    (out / "tokenizer_config.json").write_text(json.dumps(tc))
    (out / f"configuration_{tag}.py").write_text(TRAP)
    (out / f"modeling_{tag}.py").write_text(f"{TRAP}from .configuration_{tag} import FooConfig\n"
                                            f"from .{tag}_utils import helper\n")
    (out / f"{tag}_utils.py").write_text(f"{TRAP}helper = 1\n")
    (out / f"tokenization_{tag}.py").write_text(TRAP)
    (out / "convert_checkpoint.py").write_text(TRAP)  # a script of the repo: no auto_map names it
    return out


def _py(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(Path(folder).glob("*.py"))}


WANT_PY = {"configuration_foo.py", "modeling_foo.py", "foo_utils.py", "tokenization_foo.py"}


def test_upscale_copies_the_modules_the_auto_map_names(tokenizer_dir, tmp_path):
    src = make_remote(tokenizer_dir, tmp_path / "remote", seed=1)
    out = Path(run_upscale(UpscaleSpec(base=str(src), m=1, name="remote-dus"))["path"])
    # the modules the auto_maps name and what they import relatively, as save_pretrained writes them; not the script
    assert set(_py(out)) == WANT_PY
    assert all(text == (src / name).read_text() for name, text in _py(out).items())
    assert json.loads((out / "config.json").read_text())["auto_map"] == json.loads((src / "config.json").read_text())[
        "auto_map"]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6


def test_remote_modules_old_tokenizer_form_and_paths_outside(tmp_path):
    from backend.outputs import remote_modules

    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": ["tokenization_x.X", "tokenization_x_fast.XFast"]}))  # the old form: a bare [slow, fast] pair
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "../evil.Config",
                                                                   "AutoModel": "pkg.modeling.Model"}}))
    (tmp_path / "tokenization_x.py").write_text("from .missing_module import y\n")  # a broken import is skipped
    (tmp_path / "tokenization_x_fast.py").write_text("from .tokenization_x import X\n")
    (tmp_path.parent / "evil.py").write_text("")
    got = remote_modules(tmp_path, ("tokenizer_config.json", "config.json"))
    assert [p.name for p in got] == ["tokenization_x.py", "tokenization_x_fast.py"]
    dst = tmp_path / "out"
    dst.mkdir()
    copy_companions(tmp_path, dst)
    assert sorted(p.name for p in dst.glob("*.py")) == ["tokenization_x.py", "tokenization_x_fast.py"]


def test_merge_takes_config_modules_from_the_config_donor(tokenizer_dir, tmp_path):
    """A TIES relative to a base takes config.json from the base and the tokenizer from a candidate
    (tokenizer_source): each one's modules come from the folder its file came from."""
    base = make_remote(tokenizer_dir, tmp_path / "base", seed=1)
    a = make_remote(tokenizer_dir, tmp_path / "a", seed=2)
    b = make_remote(tokenizer_dir, tmp_path / "b", seed=3)
    (base / "modeling_foo.py").write_text((base / "modeling_foo.py").read_text() + "# the base's\n")
    (a / "tokenization_foo.py").write_text(TRAP + "# a's tokenizer\n")
    res = run_merge(MergeSpec(method="ties", models=[str(a), str(b)], base=str(base), density=0.5,
                              tokenizer_source=str(a), name="ties-remote"))
    out = Path(res["path"])
    assert set(_py(out)) == WANT_PY
    assert _py(out)["modeling_foo.py"] == (base / "modeling_foo.py").read_text()
    assert _py(out)["tokenization_foo.py"] == (a / "tokenization_foo.py").read_text()


def test_merge_with_a_chat_template_of_a_remote_code_tokenizer(tokenizer_dir, tmp_path, workspace):
    """It failed after the weights were written (AutoTokenizer.from_pretrained asked for trust_remote_code); the
    template is now written from the files, as save_pretrained writes it, and no model code runs."""
    a = make_remote(tokenizer_dir, tmp_path / "a", seed=1)
    b = make_remote(tokenizer_dir, tmp_path / "b", seed=2)
    template = CHATML.replace("assistant", "bot")
    res = run_merge(MergeSpec(method="linear", models=[str(a), str(b)], chat_template=template, name="lin-remote"))
    out = Path(res["path"])
    assert (out / "chat_template.jinja").read_text() == template
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    assert json.loads((out / "tokenizer_config.json").read_text())["auto_map"] == {
        "AutoTokenizer": ["tokenization_foo.FooTokenizer", None]}
    state, sa, sb = load_state(out), load_state(a), load_state(b)
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.allclose(state[name], (sa[name] + sb[name]) / 2)


def test_chat_template_auto_reads_remote_code_tokenizers_from_their_files(tokenizer_dir, tmp_path):
    a = make_remote(tokenizer_dir, tmp_path / "a", seed=1)
    b = make_remote(tokenizer_dir, tmp_path / "b", seed=2)
    c = make_remote(tokenizer_dir, tmp_path / "c", seed=3)
    other = CHATML.replace("assistant", "model")
    # two of three hold `other`: b in tokenizer_config.json's named list (no chat_template.jinja, which comes first),
    # c in its chat_template.jinja, above its tokenizer_config.json's list, which transformers does not read then
    for folder, listed in ((b, other), (c, CHATML)):
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc["chat_template"] = [{"name": "default", "template": listed}, {"name": "tool_use", "template": "x"}]
        (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    (b / "chat_template.jinja").unlink()
    (c / "chat_template.jinja").write_text(other)
    res = run_merge(MergeSpec(method="linear", models=[str(a), str(b), str(c)], chat_template="auto", name="auto3"))
    assert (Path(res["path"]) / "chat_template.jinja").read_text() == other


def test_set_chat_template_reads_back_as_transformers_reads_it(tiny_llama, tokenizer_dir, tmp_path):
    """On an ordinary tokenizer, the template written from the files is the one transformers loads."""
    from transformers import AutoTokenizer

    template = CHATML.replace("assistant", "helper")
    other = make_llama(tokenizer_dir, tmp_path / "other", seed=1)  # a merge of a model with itself is refused
    res = run_merge(MergeSpec(method="linear", models=[str(tiny_llama), str(other)], chat_template=template,
                              name="lin-plain"))
    tok = AutoTokenizer.from_pretrained(res["path"])
    assert tok.chat_template == template
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>helper\n")


def make_smollm3(out: Path, layers: int, seed: int) -> Path:
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    torch.manual_seed(seed)
    cfg = SmolLM3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        no_rope_layer_interval=2, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    SmolLM3ForCausalLM(cfg).save_pretrained(out)
    return out


def test_slices_of_two_smollm3_models_of_other_depths(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from backend.modelinfo import inspect_model

    s2, s4 = make_smollm3(tmp_path / "s2", 2, seed=1), make_smollm3(tmp_path / "s4", 4, seed=2)
    assert AutoConfig.from_pretrained(s2).no_rope_layers == [1, 0]
    assert AutoConfig.from_pretrained(s4).no_rope_layers == [1, 0, 1, 0]
    spec = UpscaleSpec(base=str(s2), second=str(s4), method="slices", name="smol3-slices",
                       slices=[SliceRange(source=0, start=0, end=2), SliceRange(source=1, start=1, end=4)])
    out = Path(run_upscale(spec)["path"])
    want = [1, 0] + [0, 1, 0]  # each layer's flag from the model it comes from
    assert json.loads((out / "config.json").read_text())["no_rope_layers"] == want
    model = AutoModelForCausalLM.from_pretrained(out)
    assert [layer.self_attn.use_rope for layer in model.model.layers] == want
    state, b = load_state(out), load_state(s4)
    assert torch.equal(state["model.layers.2.self_attn.q_proj.weight"], b["model.layers.1.self_attn.q_proj.weight"])
    # a merge averages layer i with layer i: two models of one depth whose flags differ are still refused
    s4b = make_smollm3(tmp_path / "s4b", 4, seed=3)
    raw = json.loads((s4b / "config.json").read_text())
    raw["no_rope_layers"] = [1, 1, 1, 1]
    (s4b / "config.json").write_text(json.dumps(raw))
    with pytest.raises(MismatchError, match="no_rope_layers"):
        check_compatible(inspect_model(s4), inspect_model(s4b))
    check_compatible(inspect_model(s4), inspect_model(s4b), per_layer=True)


@pytest.mark.parametrize("layout", ["jinja", "text", "named", "jinja-over-named", "none"])
def test_read_chat_template_agrees_with_transformers(tokenizer_dir, tmp_path, layout):
    import shutil

    from transformers import AutoTokenizer

    from backend.merge import read_chat_template

    folder = Path(shutil.copytree(tokenizer_dir, tmp_path / "tok"))
    other = CHATML.replace("assistant", "model")
    jinja, tc = folder / "chat_template.jinja", json.loads((folder / "tokenizer_config.json").read_text())
    if layout != "jinja" and layout != "jinja-over-named":
        jinja.unlink()
    if layout == "text":
        tc["chat_template"] = other
    if layout in ("named", "jinja-over-named"):
        tc["chat_template"] = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": other}]
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    want = AutoTokenizer.from_pretrained(folder).chat_template
    want = want.get("default") if isinstance(want, dict) else want
    assert read_chat_template(folder) == want
    assert want == {"jinja": CHATML, "text": other, "named": other, "jinja-over-named": CHATML, "none": None}[layout]


@pytest.fixture
def unknown_type(tokenizer_dir, tmp_path, monkeypatch):
    """(a remote-code model of a model_type transformers does not know, the prompts `input` was asked); `input`
    answers "y", as a user at a terminal might. Its modules stop the process if imported."""
    import builtins

    src = make_remote(tokenizer_dir, tmp_path / "custom", seed=1)
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "foo_custom"
    (src / "config.json").write_text(json.dumps(cfg))
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "y")
    return src, asked


def test_a_remote_code_type_is_never_offered_to_run(unknown_type):
    """A model_type transformers does not know, with an auto_map: left to decide, transformers asks on the terminal
    ("Do you wish to run the custom code? [y/N]") while the upscale reads the config's per-layer lists; "y" ran the
    model's code."""
    src, asked = unknown_type
    out = Path(run_upscale(UpscaleSpec(base=str(src), m=1, name="custom-dus"))["path"])
    assert asked == []
    assert set(_py(out)) == WANT_PY
    assert json.loads((out / "config.json").read_text())["model_type"] == "foo_custom"


@pytest.mark.parametrize("loader", ["evaldevice", "train_entry"])
def test_evaluation_chat_and_training_never_offer_to_run_a_models_code(unknown_type, loader):
    """evaldevice.load_model (evaluation, chat, the Arena) and the training job's loader left trust_remote_code to
    transformers, which asks on a terminal (`python -m backend chat`) whether to run a remote-code model's code: now
    refused, never asked."""
    import importlib

    load_model = importlib.import_module(f"backend.{loader}").load_model
    src, asked = unknown_type
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(src)
    assert asked == []


def test_a_chat_that_does_not_fit_the_gpu_says_how_to_chat_on_the_cpu(tiny_llama, monkeypatch):
    """Chat (its page, `python -m backend chat`, model rephrasing) has no device option: the refusal told its user to
    "evaluate on the CPU (device: cpu)"; evaluation keeps that advice, which its spec takes."""
    import torch

    from backend import chat, evaldevice

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**20, 2**30))  # 1 MiB free: nothing fits
    with pytest.raises(evaldevice.DeviceError, match="CUDA_VISIBLE_DEVICES") as said:
        chat.load(tiny_llama, "tiny")
    assert "device: cpu" not in str(said.value)
    with pytest.raises(evaldevice.DeviceError, match=r"evaluate on the CPU \(device: cpu\)"):
        evaldevice.plan_for(tiny_llama, seq_len=256, batch_size=None)
