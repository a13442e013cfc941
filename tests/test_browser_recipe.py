"""The Recipe page in a real browser: load the smoke preset on a tiny model, plan it, run it through the served
worker, watch the stage graph turn green, and read the merge table the run filled."""

from __future__ import annotations


import pytest

from tests.test_browser import ARGS, ARTIFACTS, CHROMIUM, served  # noqa: F401 (the served-app fixture)

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def two_job_slots(monkeypatch):
    """The served worker (started by `served`, after this) runs two jobs at a time: sft-a and sft-b side by side on
    the two cores, as tests/test_recipe.py's smoke run does; one at a time, the run took a training job longer."""
    monkeypatch.setenv("DUS_JOB_SLOTS", "2")


def test_run_the_smoke_recipe_from_the_recipe_page(served, tiny_llama):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from backend import recipe, registry

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(served + "/recipe")
        page.get_by_text("Preset").first.wait_for(timeout=30_000)
        page.get_by_label("Base (smoke needs a small model folder or name)").fill(str(tiny_llama))
        page.keyboard.press("Enter")
        page.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="smoke").click()
        page.get_by_role("button", name="Load preset").click()
        page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => "
                               "t.value.includes('name: smoke'))", timeout=30_000)
        page.get_by_role("button", name="Plan").click()
        page.get_by_text("recipe smoke: 9 to run, 0 reused").wait_for(timeout=60_000)
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Submitted recipe run").wait_for(timeout=60_000)
        page.locator("svg").filter(has_text="sft-a").first.wait_for(timeout=30_000)  # the live graph

        def finished() -> bool:
            rows = recipe.stages(recipe.runs(1)[0].id)
            return all(r.reused or (j and j.status in ("succeeded", "failed", "cancelled")) for r, j in rows)

        for _ in range(600):
            if finished():
                break
            page.wait_for_timeout(1000)
        # the live fragment (every 2 s) has drawn the finished run: no stage queued or running in the graph or in
        # the stage table (its grid's cells, read from the grid's accessibility table); was a fixed 3 s wait
        page.wait_for_function(
            "() => { const busy = s => /(^|· )(queued|running)$/.test(s.trim());"
            " const g = [...document.querySelectorAll('svg text')].map(e => e.textContent);"
            " const c = [...document.querySelectorAll('[data-testid=\"stDataFrame\"] td')].map(e => e.textContent);"
            " return g.some(s => s.includes('avg')) && c.some(s => s.trim() === 'eval:avg')"
            " && !g.some(busy) && !c.some(busy); }", timeout=30_000)
        page.get_by_role("tab", name="Paper tables").click()
        page.get_by_text("Tables 6–7 — merge candidates and methods").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "browser-recipe.png"), full_page=True)
        browser.close()
    (run,) = recipe.runs()
    rows = {r.stage: (r, j) for r, j in recipe.stages(run.id)}
    assert all(j.status == "succeeded" for s, (r, j) in rows.items() if s != "base"), \
        {s: (j.status, j.error) for s, (r, j) in rows.items() if j}
    assert registry.get(rows["avg"][0].output).num_layers == 8
