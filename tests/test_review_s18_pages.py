"""Eighteenth review of the pages' shared helpers (pages/common.py) and the Hub card's licence: the page cache of
loaded models frees itself when the next model would not fit on the GPU, a stale copy is let go before its
reload, a `license: other` card names its licence. No GPU here: torch.cuda's memory readings are a fake GPU."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import pytest
import torch
import yaml

from backend import evaldevice, registry


class FakeGPU:
    """torch.cuda's memory readings for a GPU of `capacity` bytes that holds the weights of every model loaded and
    still alive. As PyTorch's caching allocator: a model let go leaves its memory reserved (not free to
    mem_get_info) until torch.cuda.empty_cache."""

    def __init__(self, capacity: int):
        self.capacity, self.reserved, self.emptied, self.readings = capacity, 0, 0, 0
        self.live: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def used(self) -> int:
        return sum(self.live.values())

    def holds(self, model, size: int) -> None:
        self.live[model] = size
        self.reserved = max(self.reserved, self.used())

    def mem_get_info(self, *_a) -> tuple[int, int]:
        self.readings += 1
        return self.capacity - max(self.reserved, self.used()), self.capacity

    def empty_cache(self) -> None:
        self.emptied += 1
        self.reserved = self.used()


@pytest.fixture
def gpu(monkeypatch, tiny_llama):
    """A fake GPU with room for one tiny model (and evaldevice's reserve) but not two. Loading runs on the CPU (no
    CUDA here); what evaldevice plans is as on CUDA, from the fake readings."""
    from pages.common import cached_model

    weights = evaldevice.plan(evaldevice.model_shape(tiny_llama), cuda=True, free_bytes=10 ** 12).weights_bytes
    fake = FakeGPU(evaldevice.RESERVE + weights * 3 // 2)
    fake.weights, fake.loads = weights, []
    real_load = evaldevice.load_model

    def load_on_cpu(folder, plan=None):
        assert plan is not None and plan.device == "cuda"  # planned as on a GPU
        tok, model = real_load(folder, None)
        fake.holds(model, plan.weights_bytes)
        fake.loads.append(Path(folder).name)
        return tok, model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", fake.mem_get_info)
    monkeypatch.setattr(torch.cuda, "empty_cache", fake.empty_cache)
    monkeypatch.setattr(evaldevice, "load_model", load_on_cpu)
    cached_model.clear()
    yield fake
    cached_model.clear()


def _copy(src: Path, dst: Path) -> str:
    return str(shutil.copytree(src, dst))


# ---------------------------------------------------------------- the page cache on a full GPU

def test_a_model_that_does_not_fit_beside_the_cached_ones_is_loaded_once_they_are_let_go(gpu, tiny_llama, tmp_path):
    """The cache (up to 4 models) held one model; the next did not fit beside it, and evaldevice.plan refused it
    until the app was restarted. Now the cache is cleared, CUDA's cache emptied, and the load tried once more."""
    from pages.common import cached_model, current_model

    a, b = _copy(tiny_llama, tmp_path / "a"), _copy(tiny_llama, tmp_path / "b")
    first = weakref.ref(current_model(a, "a"))  # held by the cache only (a page's run has ended)
    assert gpu.used() == gpu.weights and gpu.readings == 1 and first() is not None
    second = current_model(b, "b")
    assert (second.name, gpu.loads, gpu.readings, gpu.emptied) == ("b", ["a", "b"], 3, 1)  # refused, freed, again
    assert first() is None and gpu.used() == gpu.weights  # a was let go: only b lives on the GPU
    assert cached_model(b, "b") is second and gpu.loads == ["a", "b"]  # b is cached, not loaded again


def test_a_model_that_does_not_fit_even_alone_is_refused_in_words_after_one_retry(gpu, tiny_llama, tmp_path):
    from pages.common import current_model

    gpu.capacity = evaldevice.RESERVE + gpu.weights // 2
    with pytest.raises(evaldevice.DeviceError) as exc:
        current_model(_copy(tiny_llama, tmp_path / "big"), "big")
    assert "does not fit on the GPU even with the models the pages had loaded unloaded" in str(exc.value)
    assert "GiB free" in str(exc.value)  # evaldevice's numbers follow
    assert (gpu.loads, gpu.readings, gpu.emptied) == ([], 2, 1)


def test_a_stale_copy_is_let_go_before_its_folder_is_loaded_again(gpu, tiny_llama, tmp_path):
    """The stale copy stayed referenced while its folder loaded again: on a GPU with room for one copy, the reload
    was refused although the page was about to drop the old one."""
    from pages.common import current_model

    folder = _copy(tiny_llama, tmp_path / "m")
    current_model(folder, "m")
    cfg = Path(folder, "config.json")
    cfg.write_text(cfg.read_text() + "\n")  # imported again: another file
    lm = current_model(folder, "m")
    assert not lm.stale() and gpu.loads == ["m", "m"] and gpu.used() == gpu.weights


def test_the_models_page_says_a_model_does_not_fit_even_alone(gpu, tiny_llama):
    from tests.test_pages import app

    gpu.capacity = evaldevice.RESERVE + gpu.weights // 2
    registry.import_folder(tiny_llama, "wide")
    at = app("models.py")
    at.chat_input(key="chat_input").set_value("hello").run()
    assert not at.exception
    (said,) = [e.value for e in at.error]
    assert said.startswith("wide cannot be loaded: wide does not fit on the GPU even with the models the pages "
                           "had loaded unloaded")
    assert gpu.emptied == 1 and gpu.readings == 2


# ---------------------------------------------------------------- the Hub card's `license: other`

def _meta(name: str, **kw) -> dict:
    from backend import hubpush

    return yaml.safe_load(hubpush.model_card(name, f"acme/{name}", **kw).split("---")[1])


def _as_hub(name: str, repo: str) -> None:
    from storage import db
    from storage.models import ModelRecord

    with db.session() as s:  # as an import by Hub id registers it
        rec = s.get(ModelRecord, registry.get(name).id)
        rec.source = f"hub:{repo}"
        s.add(rec)
        s.commit()


def _base(tiny_llama: Path, folder: Path, name: str, card: str, licence_file: bool = True) -> None:
    shutil.copytree(tiny_llama, folder)
    (folder / "README.md").write_text(f"---\n{card}---\n# {name}\n")
    if licence_file:
        (folder / "LICENSE").write_text("The Yi Series Models Community License Agreement.\n")
    registry.import_folder(folder, name)


def test_a_base_of_licence_other_gives_the_card_its_name_and_link(tiny_llama, tmp_path):
    """The Hub's card spec (huggingface_hub's ModelCardData: license_name and license_link go with `other`): the
    base's `license: other` with its license_name was dropped, and the card said `other` with a link but no name."""
    from backend import hubpush
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    _base(tiny_llama, tmp_path / "yi", "yi", "license: other\nlicense_name: yi-license\nlicense_link: LICENSE\n")
    _as_hub("yi", "01-ai/Yi-6B")
    run_upscale(UpscaleSpec(base="yi", m=2, name="yi-dus"))
    said = {"license": "other", "license_name": "yi-license", "license_link": "LICENSE"}
    assert {k: _meta("yi-dus").get(k) for k in said} == said  # the LICENSE file is uploaded beside it
    assert "LICENSE" in hubpush.model_files(Path(registry.get("yi-dus").path))
    assert "license_name" not in hubpush.model_card("yi-dus", "acme/yi-dus").split("---", 2)[2]  # nothing asked
    # its licence file not uploaded with it: the link goes to the base's file on the Hub
    Path(registry.get("yi-dus").path, "LICENSE").unlink()
    assert _meta("yi-dus")["license_link"] == "https://huggingface.co/01-ai/Yi-6B/blob/main/LICENSE"
    assert _meta("yi-dus")["license_name"] == "yi-license"


def test_a_licence_link_that_is_a_url_is_kept_and_one_that_cannot_be_reached_is_asked_for(tiny_llama, tmp_path):
    from backend import hubpush
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    url = "https://github.com/microsoft/LLaVA-Med/blob/main/Research%20License.docx"
    _base(tiny_llama, tmp_path / "med", "med", f"license: other\nlicense_name: microsoft-research-license\n"
          f"license_link: {url}\n", licence_file=False)
    run_upscale(UpscaleSpec(base="med", m=2, name="med-dus"))
    assert (_meta("med-dus")["license_name"], _meta("med-dus")["license_link"]) == ("microsoft-research-license", url)
    with pytest.raises(hubpush.PushRefused, match="under theirs"):  # the bases' licence is the model's
        _meta("med-dus", license_name="my-own-1.0")
    # a local base (no Hub repo) whose card links a file that is not uploaded: no link to give, the card asks for one
    _base(tiny_llama, tmp_path / "loc", "loc", "license: other\nlicense_name: loc-1.0\nlicense_link: TERMS.md\n",
          licence_file=False)
    run_upscale(UpscaleSpec(base="loc", m=2, name="loc-dus"))
    meta = _meta("loc-dus")
    assert (meta["license"], meta["license_name"], "license_link" in meta) == ("other", "loc-1.0", False)
    assert "set `license_link`" in hubpush.model_card("loc-dus", "acme/loc-dus")
    assert _meta("loc-dus", license_link="https://example.com/loc-1.0")["license_link"] == \
        "https://example.com/loc-1.0"


def test_licence_other_without_a_name_is_asked_for_or_taken_from_the_push(tiny_llama, tmp_path):
    """A LICENSE file uploaded with a model of unknown licence (or a base card saying `other` with no name) gave
    `license: other` with no license_name and said nothing: the card now asks for it, and push_model takes one."""
    from backend import hubpush
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    _base(tiny_llama, tmp_path / "old", "old", "license: other\n")  # as BLOOMChat's card was
    run_upscale(UpscaleSpec(base="old", m=2, name="old-dus"))
    meta = _meta("old-dus")
    assert (meta["license"], meta["license_link"], "license_name" in meta) == ("other", "LICENSE", False)
    card = hubpush.model_card("old-dus", "acme/old-dus")
    assert "set `license_name`" in card and "The licence is not known" not in card
    named = _meta("old-dus", license_name="bloomchat-176b-license-v1.0")
    assert (named["license"], named["license_name"], named["license_link"]) == \
        ("other", "bloomchat-176b-license-v1.0", "LICENSE")
    assert "set `license_name`" not in hubpush.model_card("old-dus", "acme/old-dus", license_name="bloom-1.0")


# ---------------------------------------------------------------- the "Start worker" button

@pytest.fixture
def fake_worker(monkeypatch):
    """subprocess.Popen for `python -m backend worker` runs `code` instead (a worker that never beats); the
    processes started are killed at the end."""
    import subprocess
    import sys

    import pages.common

    real, started, run = subprocess.Popen, [], {"code": "import time; time.sleep(60)"}

    def popen(cmd, **kw):
        assert cmd[1:] == ["-m", "backend", "worker"]
        started.append(real([sys.executable, "-c", run["code"]], **kw))
        return started[-1]

    monkeypatch.setattr(pages.common.subprocess, "Popen", popen)
    monkeypatch.setattr(pages.common, "_started", [], raising=False)  # none from earlier tests
    yield run, started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_start_worker_is_not_offered_again_while_the_worker_it_started_comes_up(fake_worker):
    """The banner offered "Start worker" again until the worker's first beat (seconds after its start): a second
    click started a second worker, and two jobs ran at once."""
    from tests.test_pages import app

    _, started = fake_worker
    at = app("jobs.py")
    at.button(key="start_worker").click().run()
    assert len(started) == 1 and started[0].poll() is None
    assert "start_worker" not in [b.key for b in at.button]
    assert any(f"starting (process {started[0].pid})" in i.value for i in at.info)
    at.run()
    assert "start_worker" not in [b.key for b in at.button] and len(started) == 1


def test_a_worker_that_ended_without_beating_is_said_with_its_exit_code_and_log(fake_worker):
    from tests.test_pages import app

    run, started = fake_worker
    run["code"] = "print('cannot reach the database at postgresql://db'); raise SystemExit(3)"
    at = app("jobs.py")
    at.button(key="start_worker").click().run()
    started[0].wait(30)
    at.run()
    assert any("ended (exit code 3)" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("cannot reach the database" in c.value for c in at.code)
    assert "start_worker" in [b.key for b in at.button]  # offered again


def test_human_counts_take_the_next_unit_when_rounding_reaches_a_thousand():
    from pages.common import human

    got = [human(n) for n in (999.7, 999_999, 999_960_000, 999_940_000, 12_345, 135_000_000, 950)]
    assert got == ["1.0K", "1.0M", "1.0B", "999.9M", "12.3K", "135.0M", "950"]  # were "1,000", "1,000.0K", …
