"""The real thing: `streamlit run app.py` and the job worker, driven by Debian's headless Chromium (Playwright).

Builds a model from a tiny base through the UI and saves a screenshot to tests/artifacts/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.needs import missing

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        missing("chromium is not installed (./test.sh installs it: scripts/setup.sh --browser)")


@contextmanager
def streamlit_app(env: dict, worker: bool = True) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port (and a job worker), stopped afterwards; yields the URL."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.3"], cwd=ROOT, env=env,
                              start_new_session=True)] if worker else []
    procs.append(subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.address", "127.0.0.1", "--server.headless", "true",
                                   "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("streamlit did not answer /_stcore/health within 20 s")
        yield url
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


@pytest.fixture
def served(workspace, tiny_llama):
    need_chromium()
    from backend import registry

    registry.import_folder(tiny_llama, "tiny")
    with streamlit_app({**os.environ, "DUS_WORKSPACE": str(workspace)}) as url:
        yield url


def test_build_a_model_through_the_browser(served):
    from playwright.sync_api import sync_playwright

    from backend import registry

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(served)
        # The first visitor of a fresh server: the menu is the app's own from the start, never Streamlit's listing
        # of every file in pages/ (its first script run treats pages/ as v1 pages).
        seen, deadline = set(), time.monotonic() + 30
        while page.get_by_role("link", name="Depth up-scale").count() == 0 and time.monotonic() < deadline:
            seen.update(page.locator('[data-testid="stSidebar"] a').all_inner_texts())
            page.wait_for_timeout(50)
        seen.update(page.locator('[data-testid="stSidebar"] a').all_inner_texts())
        assert not {"common", "figures", "login", "app"} & {t.strip() for t in seen}, seen
        page.get_by_text("6 → 8").wait_for(timeout=30_000)  # m defaults to 2 for 6 layers
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        assert page.locator(".js-plotly-plot").count() == 1  # the layer map is drawn
        page.get_by_role("button", name="Build").click()
        page.get_by_text("Model card").wait_for(timeout=60_000)
        page.get_by_text("Lineage: tiny →").wait_for(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "browser-build.png"), full_page=True)
        # the chat works on the new model at once
        page.goto(served + "/models")
        page.get_by_placeholder("Ask").fill("hello")
        page.keyboard.press("Enter")
        page.get_by_text("tokens/s").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-chat.png"), full_page=True)
        browser.close()
    rec = registry.get("tiny-dus-m2")
    assert rec is not None and rec.num_layers == 8 and rec.parents == ["tiny"]


def test_launch_a_tiny_sft_job_and_watch_its_loss_chart_fill(served):
    from playwright.sync_api import sync_playwright

    from backend import runner

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(served + "/train")
        page.get_by_role("button", name="Launch Continued pretraining").wait_for(timeout=60_000)  # drawn whole
        page.get_by_text("SFT", exact=True).click()
        page.get_by_text("alpaca layout, 200 rows").wait_for(timeout=30_000)
        page.get_by_role("button", name="Launch SFT").click()
        page.get_by_text("Watch it on the Monitor page").click()
        page.get_by_text("Recovery").or_(page.locator(".js-plotly-plot")).first.wait_for(timeout=90_000)
        page.get_by_text("succeeded").first.wait_for(timeout=120_000)
        loss_chart = page.locator(".js-plotly-plot", has=page.locator("text=loss")).first
        loss_chart.locator("path.js-line").first.wait_for(timeout=30_000)  # the charts fragment's next refresh
        assert loss_chart.locator("path.js-line").count() >= 1  # the curve is drawn
        page.screenshot(path=str(ARTIFACTS / "browser-monitor.png"), full_page=True)
        browser.close()
    (job,) = runner.list_jobs()
    assert job.kind == "sft" and job.status == "succeeded"
    losses = [m for m in runner.metrics([job.id]) if m.name == "loss"]
    assert len(losses) == 30


def test_inspect_synthetic_pairs_in_the_browser(served):
    from playwright.sync_api import sync_playwright

    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.run_synth_math(SynthMathSpec(num_seeds=40))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(served + "/synth")
        page.get_by_text("Page (of 4; 40 pairs match)").wait_for(timeout=30_000)
        # word-level diff: insertions highlighted on the rephrased side (the pairs render after the page caption)
        inserted = page.locator('span[style*="rgb(220, 245, 220)"]')
        inserted.first.wait_for(timeout=30_000)
        assert inserted.count() >= 10
        page.get_by_role("button", name="Reject this pair").first.click()
        page.get_by_role("button", name="Undo rejection").wait_for(timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "browser-synth.png"), full_page=True)
        page.get_by_role("tab", name="Lengths").click()
        page.get_by_text("Answer length: chosen vs rejected").wait_for(timeout=15_000)
        browser.close()
    assert pipeline.counts(pipeline.get_dataset("synth-math-pairs").id)["rejected"] == 1
