"""Review of the chat and sharing path (session 17): a conversation longer than the model's context, a template that
leaves the system message out, a model without a template that wrote the user's next turn itself, a model deleted
and imported again that was answered from the cache, transient server errors of an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from backend import chat, registry
from backend.chat import GenerationStats, build_prompt, encode, load, stream_reply
from tests.conftest import make_llama

SYSTEM = {"role": "system", "content": "You are terse."}
FOX = "The quick brown fox jumps over the lazy dog. " * 2


def long_chat(turns: int = 10) -> list[dict]:
    msgs = [SYSTEM]
    for i in range(turns):
        msgs += [{"role": "user", "content": f"{i} {FOX}"}, {"role": "assistant", "content": "Half of ten is five."}]
    return msgs + [{"role": "user", "content": "What is 2 + 2?"}]


def spy_inputs(lm) -> list[torch.Tensor]:
    """The input_ids every generate call of `lm` receives."""
    seen, generate = [], lm.model.generate

    def spy(*a, **kw):
        seen.append(kw["input_ids"])
        return generate(*a, **kw)

    lm.model.generate = spy
    return seen


def scripted(lm, ids: list[int]) -> None:
    """Make lm's model emit `ids` one after another (greedy), whatever it reads: a real generate loop, a known reply."""
    forward, calls = lm.model.forward, [0]

    def scripted_forward(*a, **kw):
        out = forward(*a, **kw)
        logits = torch.full_like(out.logits, -1e4)
        logits[:, -1, ids[min(calls[0], len(ids) - 1)]] = 1e4
        calls[0] += 1
        out.logits = logits
        return out

    lm.model.forward = scripted_forward


# ---------------------------------------------------------------- the context length

def test_a_conversation_longer_than_the_context_keeps_the_system_message_and_the_latest_turns(tiny_llama):
    lm = load(tiny_llama, "tiny")
    msgs = long_chat()
    assert len(encode(lm.tokenizer, build_prompt(lm.tokenizer, msgs)).input_ids) > 900  # the context is 128
    seen, stats = spy_inputs(lm), GenerationStats()
    "".join(stream_reply(lm, msgs, max_new_tokens=16, stats=stats))
    (ids,) = seen
    read = lm.tokenizer.decode(ids[0])
    assert ids.shape[1] + 16 <= 128  # it ran within the context: it read 1019 tokens of a 128-token model
    assert read.startswith("<|im_start|>system\nYou are terse.")  # the system message stays, first
    assert read.endswith("What is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    kept = msgs[1 + stats.dropped:]
    assert stats.dropped % 2 == 0 and kept[0]["role"] == "user" and stats.context == 128  # whole exchanges left out
    # the most it could keep: one more exchange would not have fitted
    assert read == build_prompt(lm.tokenizer, [SYSTEM] + kept)
    longer = build_prompt(lm.tokenizer, [SYSTEM] + msgs[stats.dropped - 1:])
    assert len(encode(lm.tokenizer, longer).input_ids) + 16 > 128
    assert stats.max_new_tokens == 16 and stats.new_tokens == 16


def test_a_reply_is_limited_to_the_room_the_prompt_leaves_and_a_message_too_long_is_refused(tiny_llama):
    lm = load(tiny_llama, "tiny")
    question = [{"role": "user", "content": "Say something about depth up-scaling please, in a few words."}]
    used = len(encode(lm.tokenizer, build_prompt(lm.tokenizer, question)).input_ids)
    stats = GenerationStats()
    "".join(stream_reply(lm, question, max_new_tokens=96, stats=stats))
    assert (stats.max_new_tokens, stats.new_tokens, stats.dropped) == (128 - used, 128 - used, 0)  # not 96
    too_long = [SYSTEM, {"role": "user", "content": FOX * 4}]
    with pytest.raises(RuntimeError, match=r"too long for tiny: with the chat template it takes \d+ tokens, and "
                                           r"the model's context is 128 tokens") as refused:
        "".join(stream_reply(lm, too_long, max_new_tokens=8))
    assert isinstance(refused.value, chat.TemplateRefused)  # the CLI's refused input (exit 2), the pages' st.error


# ---------------------------------------------------------------- system messages and the end of a turn

def test_a_template_that_leaves_the_system_message_out_is_refused_in_words(tiny_llama):
    lm = load(tiny_llama, "tiny")
    lm.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|im_start|>user\n' + m['content'] + '<|im_end|>\n' }}"
        "{% elif m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    msgs = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert "French" not in build_prompt(lm.tokenizer, msgs)  # the template drops it without a word
    seen = spy_inputs(lm)
    with pytest.raises(chat.TemplateRefused, match="leaves system messages out .* put its instructions into the "
                                                   "first user message"):
        "".join(stream_reply(lm, msgs, max_new_tokens=4))
    assert not seen  # nothing generated as if no instruction had been given
    assert "".join(stream_reply(lm, msgs[1:], max_new_tokens=4)) is not None  # without it, it answers
    # a template that raises on a system message (Gemma's) says how to go on
    lm.tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                                  "supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(chat.TemplateRefused, match="System role not supported. Without the system message"):
        "".join(stream_reply(lm, msgs, max_new_tokens=4))


def test_a_model_without_a_chat_template_stops_where_it_writes_the_next_turn(tiny_llama):
    lm = load(tiny_llama, "tiny")
    tok = lm.tokenizer
    tok.chat_template = None  # a base model: build_prompt's "user: …\nassistant:" transcript
    said = " four\nuser: and 3 + 3?\nassistant: six"
    ids = tok(said, add_special_tokens=False).input_ids
    scripted(lm, ids)
    reply = "".join(stream_reply(lm, [{"role": "user", "content": "What is 2 + 2?"}], max_new_tokens=len(ids)))
    assert reply == " four"  # it streamed the user's next turn it had made up, and its own answer to it


def test_a_chat_template_model_still_stops_on_every_end_of_turn_token_the_generation_config_lists(tiny_llama):
    lm = load(tiny_llama, "tiny")
    lm.model.generation_config.eos_token_id = [2, 1]  # <|im_end|>, and <|im_start|> as a second end of turn
    ids = lm.tokenizer(" four", add_special_tokens=False).input_ids
    scripted(lm, ids + [1] + lm.tokenizer(" more text", add_special_tokens=False).input_ids)
    stats = GenerationStats()
    assert "".join(stream_reply(lm, [{"role": "user", "content": "2 + 2?"}], max_new_tokens=20, stats=stats)) \
        == " four" and stats.new_tokens == len(ids) + 1


# ---------------------------------------------------------------- the pages' model cache

def test_a_model_deleted_and_imported_again_under_its_name_is_not_answered_from_the_cache(tokenizer_dir, tmp_path):
    from pages.common import cached_model
    from tests.test_pages import app

    folder = make_llama(tokenizer_dir, tmp_path / "m", seed=1)
    registry.import_folder(folder, "m")
    cached_model.clear()
    at = app("models.py")
    at.chat_input(key="chat_input").set_value("What is 2 + 2?").run()
    first = at.chat_message[1].markdown[0].value
    registry.delete("m", force=True)  # from the command line: the page's cache is not told
    shutil.rmtree(folder)
    make_llama(tokenizer_dir, folder, seed=2)  # another model, imported under the same name from the same folder
    registry.import_folder(folder, "m")
    at.button(key="clear_chat").click().run()
    at.chat_input(key="chat_input").set_value("What is 2 + 2?").run()
    assert not at.exception
    second = at.chat_message[1].markdown[0].value
    expected = "".join(stream_reply(load(folder, "m"), [{"role": "user", "content": "What is 2 + 2?"}],
                                    max_new_tokens=96))
    # the deleted model's weights answered (Markdown drops the leading newlines)
    assert expected.strip() and second.strip() == expected.strip() != first.strip()


def test_a_model_deleted_on_the_models_page_leaves_the_shared_cache(tiny_llama, monkeypatch):
    import pages.common
    from tests.test_pages import app

    loads = []
    real = pages.common.load
    monkeypatch.setattr(pages.common, "load", lambda path, name: loads.append(name) or real(path, name))
    registry.import_folder(tiny_llama, "gone")
    pages.common.cached_model.clear()
    at = app("models.py")
    at.chat_input(key="chat_input").set_value("hello").run()
    assert loads == ["gone"]
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert registry.get("gone") is None and not at.exception
    pages.common.cached_model(str(tiny_llama), "gone")  # loads afresh: the page's delete let its copy go
    assert loads == ["gone", "gone"]


def test_a_failed_reply_does_not_leave_the_chat_refusing_every_next_message(tiny_llama, tmp_path):
    """A reply that failed (here, once, as a CUDA out-of-memory would) kept its question in the history; the next
    question made two user turns in a row, and a template that alternates turns refused it and every one after."""
    from pages.common import cached_model
    from tests.test_pages import app

    folder = tmp_path / "alternating"
    shutil.copytree(tiny_llama, folder)
    config = folder / "tokenizer_config.json"
    cfg = json.loads(config.read_text())
    cfg["chat_template"] = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                            "{{ raise_exception('Conversation roles must alternate user/assistant/...') }}"
                            "{% endif %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    config.write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    registry.import_folder(folder, "alt")
    cached_model.clear()
    lm = cached_model(str(folder), "alt")  # the copy the page will use
    generate, calls = lm.model.generate, []

    def once_out_of_memory(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return generate(*a, **kw)

    lm.model.generate = once_out_of_memory
    at = app("models.py")
    at.chat_input(key="chat_input").set_value("What is 2 + 2?").run()
    (said,) = [e.value for e in at.error]
    assert "generation failed: CUDA out of memory" in said
    at.chat_input(key="chat_input").set_value("What is 2 + 2?").run()
    assert not at.error, [e.value for e in at.error]  # "Conversation roles must alternate", then at every message
    assert [m.name for m in at.chat_message] == ["user", "assistant"] and len(calls) == 2
    assert "Not answered: your message is left out of the conversation; send it again" in said


# ---------------------------------------------------------------- an OpenAI-compatible endpoint

@pytest.fixture
def flaky_server():
    """An OpenAI-compatible endpoint that answers each request with the next (status, headers) of `plan`, then 200."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    plan: list[tuple[int, dict]] = []
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status, headers = plan.pop(0) if plan else (200, {})
            seen.append(status)
            body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "four"}}]}
                              if status == 200 else {"error": {"message": f"status {status}"}}).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1", plan, seen
    srv.shutdown()
    srv.server_close()


def test_a_rate_limit_or_a_server_error_is_retried_as_the_openai_client_does(flaky_server):
    import urllib.error

    from backend.openai_compat import chat_completion

    url, plan, seen = flaky_server
    plan += [(429, {"Retry-After": "0"}), (503, {"retry-after-ms": "10"})]
    assert chat_completion(url, "m", "2 + 2?") == "four" and seen == [429, 503, 200]  # it failed on the 429
    seen.clear()
    plan += [(429, {"Retry-After": "0"})] * 3  # still limited after two retries: the caller's HTTP 429, body unread
    with pytest.raises(urllib.error.HTTPError) as failed:
        chat_completion(url, "m", "2 + 2?")
    assert failed.value.code == 429 and b"status 429" in failed.value.read() and seen == [429, 429, 429]
    seen.clear()
    plan += [(400, {}), (500, {"x-should-retry": "false"})]  # a bad request, and a server that says not to retry
    for code in (400, 500):
        with pytest.raises(urllib.error.HTTPError, match=f"HTTP Error {code}"):
            chat_completion(url, "m", "2 + 2?")
    assert seen == [400, 500]


# ---------------------------------------------------------------- the Hub card's licence

def _as_source(name: str, source: str) -> None:
    from storage import db
    from storage.models import ModelRecord

    with db.session() as s:  # as the built-in import registers it
        rec = s.get(ModelRecord, registry.get(name).id)
        rec.source = source
        s.add(rec)
        s.commit()


def test_the_hub_card_says_the_licence_of_the_base_it_was_made_from(tiny_llama, tmp_path):
    import yaml

    from backend import hubpush
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    def meta(name: str) -> dict:
        return yaml.safe_load(hubpush.model_card(name, f"acme/{name}").split("---")[1])

    registry.import_folder(tiny_llama, "smol")
    _as_source("smol", "builtin")  # SmolLM2-135M-Instruct, Apache 2.0 on its Hub card
    run_upscale(UpscaleSpec(base="smol", m=2, name="smol-dus"))
    assert meta("smol-dus")["license"] == meta("smol")["license"] == "apache-2.0"  # none: the Hub said "unknown"
    assert "licence is not known" not in hubpush.model_card("smol-dus", "acme/smol-dus")
    # a folder downloaded from the Hub keeps its card: its licence is the up-scale's
    mit = shutil.copytree(tiny_llama, tmp_path / "mit")
    (mit / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# a model\n")
    registry.import_folder(mit, "mit")
    run_upscale(UpscaleSpec(base="mit", m=2, name="mit-dus"))
    assert meta("mit-dus")["license"] == "mit"
    # bases of other licences: none chosen, the licence file that is uploaded with it is linked, or the card says so
    from backend.merge import run_merge
    from backend.specs import MergeSpec

    run_upscale(UpscaleSpec(base="smol", m=1, name="s7"))
    run_upscale(UpscaleSpec(base="mit", m=1, name="m7"))
    run_merge(MergeSpec(models=["s7", "m7"], method="slerp", t=0.5, name="both"))
    assert "license" not in meta("both")
    assert "The licence is not known to DUS Studio" in hubpush.model_card("both", "acme/both")
    (Path(registry.get("both").path) / "LICENSE").write_text("Terms.\n")
    assert (meta("both")["license"], meta("both")["license_link"]) == ("other", "LICENSE")
    assert "LICENSE" in hubpush.model_files(Path(registry.get("both").path))  # uploaded beside it


def test_sampling_uses_the_generation_config_of_the_model_for_what_the_caller_leaves_open(tiny_llama, tmp_path):
    """The Models page and `python -m backend chat` give a temperature and no top_p: stream_reply's default 1.0
    overrode the model's generation_config.json top_p. A top_p of 0.01 keeps only the likeliest token: sampling
    with it gives the greedy reply whatever the seed; the repetition penalty there holds in both."""
    from transformers import GenerationConfig

    folder = shutil.copytree(tiny_llama, tmp_path / "nucleus")
    GenerationConfig(eos_token_id=2, pad_token_id=2, do_sample=True, temperature=0.7, top_p=0.01,
                     repetition_penalty=1.5).save_pretrained(folder)
    lm = load(folder, "nucleus")
    msgs = [{"role": "user", "content": "What is 2 + 2?"}]
    greedy = "".join(stream_reply(lm, msgs, max_new_tokens=20))
    plain = "".join(stream_reply(load(tiny_llama, "plain"), msgs, max_new_tokens=20))
    assert greedy != plain  # repetition_penalty 1.5 from the file is applied
    for seed in range(3):
        torch.manual_seed(seed)
        assert "".join(stream_reply(lm, msgs, max_new_tokens=20, temperature=1.0)) == greedy
    torch.manual_seed(0)  # a top_p given (the arena's slider) is used as given
    assert "".join(stream_reply(lm, msgs, max_new_tokens=20, temperature=1.0, top_p=1.0)) != greedy


def test_the_models_page_says_what_the_context_left_out(tiny_llama):
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    at = app("models.py")
    question = "Say something about depth up-scaling please, in a few words."
    at.chat_input(key="chat_input").set_value(question).run()
    lm = load(tiny_llama, "tiny")
    used = len(encode(lm.tokenizer, build_prompt(lm.tokenizer, [{"role": "user", "content": question}])).input_ids)
    captions = [c.value for c in at.caption]
    assert f"The reply could take {128 - used} tokens, not 96: the prompt filled the rest of the model's context " \
           "of 128 tokens." in captions and not at.error
    at.chat_input(key="chat_input").set_value("What is 2 + 2?").run()
    captions = [c.value for c in at.caption]
    assert any("longer than tiny's context of 128 tokens: it read the latest turns only, not the "
               "first 2 message(s)" in c for c in captions), captions
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2  # the page's history keeps them all


def test_the_arena_answers_with_a_model_imported_again_under_a_deleted_ones_name(tokenizer_dir, tiny_llama, tmp_path):
    from pages.common import cached_model
    from storage import db
    from storage.models import ChatTranscript
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    folder = make_llama(tokenizer_dir, tmp_path / "b", seed=1)
    registry.import_folder(folder, "b")
    cached_model.clear()
    at = app("arena.py")
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    registry.delete("b", force=True)  # from the command line, then another model under its name and folder
    shutil.rmtree(folder)
    make_llama(tokenizer_dir, folder, seed=2)
    registry.import_folder(folder, "b")
    at.chat_input(key="arena_prompt").set_value("What is 2 + 2?").run()
    assert not at.exception
    from sqlmodel import select

    with db.session() as s:
        first, second = (t.answers["b"]["text"] for t in s.exec(select(ChatTranscript).order_by(ChatTranscript.id)))
    expected = "".join(stream_reply(load(folder, "b"), [{"role": "user", "content": "What is 2 + 2?"}],
                                    max_new_tokens=96))
    assert second == expected != first  # the second round's "b" was the deleted model from the cache


def test_fit_context_renders_from_the_newest_turn_back(tokenizer_dir, monkeypatch):
    """Each turn past the context rendered the whole conversation once per possible start, oldest first (61 s at
    400 exchanges); newest first it stops at the first start that does not fit, with the same result."""
    from transformers import AutoTokenizer

    from backend import chat

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(200):
        messages += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": "ok " * 5}]
    messages.append({"role": "user", "content": "last"})
    calls = []
    real = chat.render
    monkeypatch.setattr(chat, "render", lambda t, m: calls.append(len(m)) or real(t, m))
    prompt, dropped = chat.fit_context(tok, messages, 200)
    assert len(calls) < 20 and dropped % 2 == 0 and dropped > 300
    assert prompt.startswith(real(tok, messages[:1] + messages[1 + dropped:])[:40])
    assert len(chat.encode(tok, prompt).input_ids) <= 200
    more = chat.encode(tok, real(tok, messages[:1] + messages[1 + dropped - 2:])).input_ids
    assert len(more) > 200  # one exchange more would not have fitted
