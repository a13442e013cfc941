"""Review of session 14: up-scaling (LLaMA Pro identity blocks, config lists, lineage), safetensors reading (index,
duplicates, dtypes), QA matching (scripts, numbers, BOM), the OpenAI-compatible client, and uploads."""

from __future__ import annotations

import json
import os
import struct
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backend import qa, registry, uploads
from backend.openai_compat import chat_completion
from backend.safetensors_stream import CheckpointError, open_checkpoint, read_header
from backend.specs import UpscaleSpec
from backend.upscale import plan_upscale, run_upscale
from tests.conftest import load_state, make_llama


# ---------------------------------------------------------------- LLaMA Pro identity blocks

def test_llama_pro_on_gptj_keeps_the_base_logits(tmp_path):
    """GPT-J's MLP output is fc_out: it was not zeroed, so the 'identity' blocks changed the logits (by 0.18)."""
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(0)
    src = tmp_path / "gptj"
    GPTJForCausalLM(GPTJConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(src)
    res = run_upscale(UpscaleSpec(base=str(src), method="llama-pro", groups=2, name="gptj-pro"))
    out = load_state(Path(res["path"]))
    assert res["layers"] == 4
    # groups=2 on 2 layers: [0, id(0), 1, id(1)]; the inserted blocks' fc_out is zero
    for slot in (1, 3):
        assert torch.count_nonzero(out[f"transformer.h.{slot}.mlp.fc_out.weight"]) == 0
        assert torch.count_nonzero(out[f"transformer.h.{slot}.mlp.fc_out.bias"]) == 0
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        a = GPTJForCausalLM.from_pretrained(src).eval()(ids).logits
        b = GPTJForCausalLM.from_pretrained(res["path"]).eval()(ids).logits
    assert torch.equal(a, b)


def _write_model(folder: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_llama_pro_refuses_a_sub_block_without_a_known_output_projection(tmp_path):
    """An MLP whose output projection has an unknown name: one zeroed o_proj used to pass the check, and the model
    built was no identity expansion. Now refused, naming the sub-block."""
    t = {"model.embed_tokens.weight": torch.ones(8, 4)}
    for i in range(2):
        t |= {f"model.layers.{i}.self_attn.q_proj.weight": torch.ones(4, 4),
              f"model.layers.{i}.self_attn.o_proj.weight": torch.ones(4, 4),
              f"model.layers.{i}.mlp.in_proj.weight": torch.ones(8, 4),
              f"model.layers.{i}.mlp.outp.weight": torch.ones(4, 8),
              f"model.layers.{i}.input_layernorm.weight": torch.ones(4)}
    src = _write_model(tmp_path / "odd", t, {"num_hidden_layers": 2, "model_type": "odd"})
    with pytest.raises(ValueError, match=r"in this odd model, mlp has no output projection"):
        plan_upscale(UpscaleSpec(base=str(src), method="llama-pro", groups=1))


# ---------------------------------------------------------------- config and lineage

def test_token_id_lists_are_not_remapped_like_layers(tokenizer_dir, tmp_path):
    """A 3-layer model with a 3-id eos_token_id list (Llama 3 style): llama-pro's [0, 1, 2, id(2)] turned it into
    [a, b, c, c]."""
    src = make_llama(tokenizer_dir, tmp_path / "three", layers=3)
    cfg = json.loads((src / "config.json").read_text())
    cfg["eos_token_id"] = [2, 1, 0]
    (src / "config.json").write_text(json.dumps(cfg))
    res = run_upscale(UpscaleSpec(base=str(src), method="llama-pro", groups=1, name="three-pro"))
    new = json.loads((Path(res["path"]) / "config.json").read_text())
    assert new["num_hidden_layers"] == 4
    assert new["eos_token_id"] == [2, 1, 0]


def test_an_unused_second_model_is_no_parent(tokenizer_dir, tmp_path):
    """slices with a second model no slice takes from: it was registered as a parent and named on the card."""
    a = make_llama(tokenizer_dir, tmp_path / "a", layers=4, seed=0)
    b = make_llama(tokenizer_dir, tmp_path / "b", layers=4, seed=1)
    spec = UpscaleSpec(base=str(a), second=str(b), method="slices", name="only-a",
                       slices=[{"source": 0, "start": 0, "end": 3}, {"source": 0, "start": 1, "end": 4}])
    res = run_upscale(spec)
    assert registry.record("only-a").parents == [str(a)]
    card = (Path(res["path"]) / "README.md").read_text()
    assert f"from `{a}`." in card and f"`{b}`" not in card.split("## Rebuild")[0]
    # a slice from the second model keeps it
    spec2 = UpscaleSpec(base=str(a), second=str(b), method="slices", name="a-and-b",
                        slices=[{"source": 0, "start": 0, "end": 3}, {"source": 1, "start": 1, "end": 4}])
    run_upscale(spec2)
    assert registry.record("a-and-b").parents == [str(a), str(b)]


def _hub_form(folder: Path, theta: float) -> None:
    """Rewrite a config as the Hub ships it (transformers 4): rope_theta and rope_scaling at the top."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    (folder / "config.json").write_text(json.dumps(cfg | {"rope_theta": theta, "rope_scaling": None}))


def test_rope_settings_compare_across_config_forms(tokenizer_dir, tmp_path):
    """A trained model (config saved by transformers 5: rope_parameters) and its Hub base (rope_theta at the top)
    were refused as 'rope_theta: None vs 10000.0'; two models whose RoPE bases differ passed (a dict was skipped)."""
    from backend.modelinfo import inspect_model
    from backend.upscale import MismatchError, check_compatible

    trained = make_llama(tokenizer_dir, tmp_path / "trained", layers=4, seed=0)
    base = make_llama(tokenizer_dir, tmp_path / "base", layers=4, seed=1)
    _hub_form(base, 10000.0)
    check_compatible(inspect_model(trained), inspect_model(base))
    res = run_upscale(UpscaleSpec(base=str(trained), second=str(base), method="slices", name="two-forms",
                                  slices=[{"source": 0, "start": 0, "end": 3}, {"source": 1, "start": 1, "end": 4}]))
    assert res["layers"] == 6
    from backend.modelinfo import rope_settings

    assert rope_settings(json.loads((base / "config.json").read_text())) == \
        rope_settings(json.loads((trained / "config.json").read_text())) == \
        {"rope_type": "default", "rope_theta": 10000.0}

    other = make_llama(tokenizer_dir, tmp_path / "other", layers=4, seed=2)
    cfg = json.loads((other / "config.json").read_text())
    cfg["rope_parameters"]["rope_theta"] = 1e6
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MismatchError, match=r"rope: .*10000\.0.* vs .*1000000\.0"):
        check_compatible(inspect_model(trained), inspect_model(other))
    _hub_form(other, 1e6)  # the Hub form of a different base is refused too
    with pytest.raises(MismatchError, match="rope"):
        check_compatible(inspect_model(trained), inspect_model(other))


def test_rope_settings_of_scaled_and_rope_free_configs():
    from backend.modelinfo import rope_settings

    llama31 = {"rope_theta": 500000.0, "max_position_embeddings": 131072,
               "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    v5 = {"max_position_embeddings": 131072,
          "rope_parameters": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3", "rope_theta": 500000.0}}
    assert rope_settings(llama31) == rope_settings(v5) and rope_settings(v5)["rope_theta"] == 500000.0
    assert rope_settings({"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 1e4}) == \
        {"factor": 2.0, "rope_type": "linear", "rope_theta": 1e4}
    assert rope_settings({"n_embd": 32}) == {}  # GPT-2: no RoPE


# ---------------------------------------------------------------- safetensors reading

def _sharded(folder: Path, shards: dict[str, dict[str, torch.Tensor]], weight_map: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, tensors in shards.items():
        save_file(tensors, folder / fname)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_a_tensor_the_index_names_but_no_shard_holds_is_refused(tmp_path):
    """It was left out without a word (an untied lm_head: transformers then draws it at random)."""
    d = _sharded(tmp_path / "m", {"s1.safetensors": {"a": torch.zeros(2)}, "s2.safetensors": {"b": torch.ones(2)}},
                 {"a": "s1.safetensors", "b": "s2.safetensors", "lm_head.weight": "s2.safetensors"})
    with pytest.raises(CheckpointError, match=r"names 1 tensor\(s\) that their shard does not hold \(lm_head"):
        open_checkpoint(d)


def test_the_index_decides_which_copy_of_a_tensor_is_read(tmp_path):
    """A stale copy of 'a' in shard 2 (the index puts 'a' in shard 1) replaced the real one."""
    d = _sharded(tmp_path / "m", {"s1.safetensors": {"a": torch.zeros(2)},
                                  "s2.safetensors": {"a": torch.ones(2), "b": torch.ones(2)}},
                 {"a": "s1.safetensors", "b": "s2.safetensors"})
    refs = open_checkpoint(d)
    assert refs["a"].file.name == "s1.safetensors" and refs["b"].file.name == "s2.safetensors"


def test_one_name_in_two_files_without_an_index_is_refused(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    save_file({"a": torch.zeros(2)}, d / "a.safetensors")
    save_file({"a": torch.ones(2)}, d / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"'a' is in both a.safetensors and b.safetensors"):
        open_checkpoint(d)


@pytest.mark.parametrize("dtype, name", [(torch.float8_e4m3fnuz, "F8_E4M3FNUZ"), (torch.float8_e5m2fnuz, "F8_E5M2FNUZ"),
                                         (torch.complex64, "C64")])
def test_every_whole_byte_safetensors_dtype_is_read(tmp_path, dtype, name):
    """Valid files the safetensors library writes and reads were refused as 'corrupt … truncated download?'."""
    f = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(4).to(dtype)}, f)
    header, start = read_header(f)
    assert header["w"]["dtype"] == name and header["w"]["data_offsets"] == [0, 4 * torch.zeros(1, dtype=dtype)
                                                                            .element_size()]


def test_an_unknown_dtype_is_named_not_called_corrupt(tmp_path):
    f = tmp_path / "x.safetensors"
    raw = json.dumps({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0")
    with pytest.raises(CheckpointError) as exc:
        read_header(f)
    assert "stored as F4" in str(exc.value) and "truncated" not in str(exc.value)


# ---------------------------------------------------------------- QA matching

@pytest.mark.parametrize("reply, answers, verdict", [
    ("Москва", ["Москва"], "correct"),  # normalised to '' on both sides: never correct
    ("The capital is 東京.", ["東京"], "correct"),
    ("Αθήνα", ["Αθηνα"], "correct"),  # Greek accents dropped as Latin ones are
    ("Straße", ["Strasse"], "correct"),
    ("It is 2.5 metres long.", ["2"], "wrong"),  # '2 5' contained '2'
    ("About 1,500 people.", ["1"], "wrong"),
    ("One kilometre is 1,000 metres.", ["1000"], "correct"),
    ("The answer is 5.", ["5"], "correct"),  # a full stop after a number is still punctuation
    ("brasilia", ["Brasília"], "correct"),
])
def test_qa_matching_in_any_script_and_on_numbers(reply, answers, verdict):
    assert qa.classify(reply, answers, "answerable") == verdict


def test_qa_normalise_values():
    assert qa.normalise("Москва!") == "москва"
    assert qa.normalise("It's 2.5, or 1,000.") == "it s 2.5 or 1000"
    assert qa.normalise("São Paulo") == "sao paulo"


def test_qa_file_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text(json.dumps({"id": 1, "question": "Capital of France?", "answers": ["Paris"], "answerable": True})
                 + "\n", encoding="utf-8-sig")
    assert qa.load_items(p) == [{"id": "1", "question": "Capital of France?", "answers": ["Paris"],
                                 "answerable": True, "kind": "answerable"}]


# ---------------------------------------------------------------- OpenAI-compatible client

@pytest.fixture
def null_content_server():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"index": 0, "finish_reason": "length",
                                            "message": {"role": "assistant", "content": None}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


def test_a_reply_without_text_is_named(null_content_server):
    """content null (a reasoning model out of tokens): the judge died on None[:80] with a bare TypeError."""
    with pytest.raises(TypeError, match=r"no text \(content None, finish_reason 'length'\)"):
        chat_completion(null_content_server, "m", "hi")
    judge = qa.Judge(null_content_server, "judge")
    with pytest.raises(qa.QAError, match=r"judge: .* did not answer in the OpenAI chat format .*no text"):
        judge.grade([{"question": "Capital of France?", "answers": ["Paris"]}], ["Paris"])


# ---------------------------------------------------------------- held-out check

def test_numeric_columns_count_as_training_text():
    from backend.heldout import row_text
    from backend.synth.pipeline import ContaminationIndex

    row = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                       "May. How many clips did Natalia sell altogether in April and May?", "answer": 72, "ok": True}
    assert row_text(row).split("\n")[:2] == [row["question"], "72"]
    item = "How many clips did Natalia sell altogether in April and May? 72"
    assert ContaminationIndex([row_text(row)], 8).overlap(item) == 1.0  # 0.8 without the answer


# ---------------------------------------------------------------- chat

def test_a_chat_template_that_refuses_the_conversation_is_a_runtime_error(tokenizer_dir):
    """The pages catch RuntimeError from stream_reply; jinja's TemplateError went through as a traceback."""
    from transformers import AutoTokenizer

    from backend.chat import LoadedModel, stream_reply

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = ("{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                         "{{ raise_exception('Conversation roles must alternate user/assistant/...') }}{% endif %}"
                         "{{ message['content'] }}{% endfor %}")
    lm = LoadedModel("m", None, tok)  # the template fails before the model is used
    history = [{"role": "user", "content": "hi"}, {"role": "user", "content": "hello?"}]
    with pytest.raises(RuntimeError, match=r"chat template refused this conversation: Conversation roles must alt"):
        list(stream_reply(lm, history, max_new_tokens=4))


# ---------------------------------------------------------------- uploads

def test_two_sessions_saving_the_same_upload_at_once(monkeypatch):
    """Streamlit sessions are threads of one process: both wrote one temporary file, the second rename failed.
    The interleaving is forced: each thread waits before its rename until the other has written."""
    barrier = threading.Barrier(2)
    real = os.replace

    def replace(a, b):
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass
        return real(a, b)

    monkeypatch.setattr(uploads.os, "replace", replace)
    data = b'{"text": "hi"}\n'
    saved, errors = [], []

    def save():
        try:
            saved.append(uploads.store_upload(data, "data.jsonl")[0])
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(saved) == 2 and saved[0] == saved[1]
    assert saved[0].read_bytes() == data
    assert sorted(p.name for p in uploads.uploads_dir().iterdir()) == [saved[0].name]  # no partial file left
