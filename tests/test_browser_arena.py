"""The blind side-by-side chat in the real browser (served app, headless Chromium): two tiny models answer under
the labels Model A / Model B, their names appear only after the vote, and the shuffled order is recorded."""

from __future__ import annotations

import pytest

from tests.test_browser import ARGS, ARTIFACTS, CHROMIUM, served  # noqa: F401  (served is the app fixture)

pytestmark = pytest.mark.browser


def test_blind_arena_hides_names_until_the_vote(served, tiny_llama_untied, tokenizer_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from backend import arena, registry
    from storage import db
    from storage.models import ChatTranscript
    from tests.conftest import make_llama

    # untied, and the page's default choice (the last two): the served "tiny" is tied, and a tied random model repeats
    # the prompt's last token ("\n"): answers that show nothing take no vote
    registry.import_folder(tiny_llama_untied, "tiny-b")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "c", seed=5, tie=False), "tiny-c")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(served + "/arena")
        page.get_by_placeholder("One prompt for every model").fill("What is 12 times 7?")
        page.keyboard.press("Enter")
        page.get_by_role("button", name="A is better").wait_for(timeout=60_000)
        heads = page.locator("strong").all_inner_texts()
        assert "Model A" in heads and "Model B" in heads
        assert not any("tiny" in h for h in heads)  # the answers carry no names before the vote
        assert page.get_by_text("timings after the vote").count() == 2 and page.get_by_text("tokens/s").count() == 0
        page.screenshot(path=str(ARTIFACTS / "browser-arena-blind.png"), full_page=True)
        page.get_by_role("button", name="A is better").click()
        page.get_by_text("Vote recorded.").wait_for(timeout=15_000)
        revealed = page.locator("strong").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "browser-arena-revealed.png"), full_page=True)
        browser.close()
    (v,) = arena.votes()
    with db.session() as s:
        t = s.get(ChatTranscript, v.transcript_id)
    assert sorted(t.positions) == ["tiny-b", "tiny-c"] and t.blind and v.blind
    assert (v.model_a, v.model_b, v.position_a, v.position_b, v.outcome) == (*t.positions, 0, 1, "a")
    assert f"Model A: {t.positions[0]}" in revealed and f"Model B: {t.positions[1]}" in revealed  # names after
