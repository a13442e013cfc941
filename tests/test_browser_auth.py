"""The login gate in a real browser: `streamlit run app.py` with a password, driven by Debian's Chromium.

The gate triggers on non-loopback addresses; DUS_REQUIRE_LOGIN=1 turns it on for 127.0.0.1, so the test server
stays unreachable from other machines while it is tested.
"""

from __future__ import annotations

import os

import pytest

from tests.test_browser import ARGS, ARTIFACTS, CHROMIUM, need_chromium, streamlit_app

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


@pytest.fixture
def served_with_password(workspace, tiny_llama):
    need_chromium()
    from backend import registry

    registry.import_folder(tiny_llama, "tiny")  # the Train page needs a model before it shows its uploader
    env = {**os.environ, "DUS_WORKSPACE": str(workspace), "DUS_REQUIRE_LOGIN": "1", "DUS_PASSWORD": PASSWORD}
    env.pop("DUS_PASSWORD_HASH", None)
    with streamlit_app(env, worker=False) as url:
        yield url


def _sign_in(page, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_pages_need_the_password(served_with_password, workspace):
    from playwright.sync_api import sync_playwright

    url = served_with_password
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path in ("/train", "/monitor", ""):  # page URLs visited first, and the start page
            page.goto(url + path)
            page.get_by_label("Password", exact=True).wait_for(timeout=30_000)
            page.wait_for_timeout(1000)  # let any content that would leak arrive
            assert page.get_by_text("Depth up-scale").count() == 0
            assert page.get_by_text("Train", exact=True).count() == 0
            assert page.get_by_role("link", name="Monitor").count() == 0  # no menu either
            assert page.get_by_text("Page not found").count() == 0
        page.screenshot(path=str(ARTIFACTS / "browser-login.png"), full_page=True)

        _sign_in(page, "not the password")
        page.get_by_text("Wrong password.").wait_for(timeout=30_000)
        assert page.get_by_text("Depth up-scale").count() == 0

        _sign_in(page, PASSWORD)
        page.get_by_role("heading", name="Depth up-scale").wait_for(timeout=30_000)
        assert page.get_by_label("Password", exact=True).count() == 0
        page.get_by_text("Sign out").wait_for(timeout=10_000)

        # Signed in, the Train page's uploader writes under a generated name, whatever name the browser sends.
        page.get_by_role("link", name="Train").click()
        page.get_by_text("Or upload a file").wait_for(timeout=30_000)
        # drawn whole first (its first render in a fresh server imports the memory plan's libraries, seconds), as
        # a user waits: a file given during that render was taken in only after it, past this test's wait
        page.get_by_role("button", name="Launch Continued pretraining").wait_for(timeout=60_000)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            {"name": "../../evil.jsonl", "mimeType": "application/json", "buffer": b'{"text": "hello"}\n'})
        page.get_by_text("evil.jsonl saved as").wait_for(timeout=60_000)  # the upload is read: layout, rows
        page.screenshot(path=str(ARTIFACTS / "browser-login-upload.png"), full_page=True)

        # A new session (another browser context) asks again, and signing in on /monitor opens the Monitor page.
        other = browser.new_context().new_page()
        other.goto(url + "/monitor")
        _sign_in(other, PASSWORD)
        other.get_by_role("heading", name="Monitor").wait_for(timeout=30_000)
        assert other.get_by_text("Page not found").count() == 0
        browser.close()
    saved = list((workspace / "uploads").iterdir())
    assert len(saved) == 1 and saved[0].name.endswith("-evil.jsonl") and len(saved[0].name) == 16 + 1 + 10
    assert saved[0].read_bytes() == b'{"text": "hello"}\n'
    assert not (workspace.parent / "evil.jsonl").exists() and not (workspace / "evil.jsonl").exists()
