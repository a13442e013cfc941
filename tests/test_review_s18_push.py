"""A licence `other` whose base models name none: the pusher's license_name / license_link, through the spec, the
command line (`models push --license-name --license-link`, also queued) and the Models page, reach the card."""

from __future__ import annotations

import shutil

import pytest
import yaml
from pydantic import ValidationError

from backend import registry, runner
from backend.specs import PushSpec, UpscaleSpec
from backend.upscale import run_upscale
from tests.test_hub import hub  # noqa: F401,F811 - the stub Hub fixture
from tests.test_review_cli import cli


def _card_meta(hub, repo: str) -> dict:
    return yaml.safe_load(hub.files(f"model/{repo}")["README.md"].decode().split("---")[1])


@pytest.fixture
def unnamed(tiny_llama, tmp_path):
    """A model made from a base whose card says `license: other` and names none (as BLOOMChat's did)."""
    folder = shutil.copytree(tiny_llama, tmp_path / "old")
    (folder / "README.md").write_text("---\nlicense: other\n---\n# old\n")
    (folder / "LICENSE").write_text("The licence of old.\n")
    registry.import_folder(folder, "old")
    run_upscale(UpscaleSpec(base="old", m=2, name="old-dus"))
    return "old-dus"


def test_the_licence_name_is_an_id():
    assert PushSpec(model="a", repo="acme/a", license_name=" bloom-1.0 ").license_name == "bloom-1.0"
    assert PushSpec(model="a", repo="acme/a", license_name="  ").license_name is None
    with pytest.raises(ValidationError, match="lower-case letters"):
        PushSpec(model="a", repo="acme/a", license_name="My Licence")


def test_models_push_takes_a_licence_name_and_link_queued_too(hub, unnamed, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    rc, _, err = cli("models", "push", unnamed, "--repo", "acme/now", "--license-name", "bloom-1.0",
                     "--license-link", "https://example.com/bloom")
    assert rc == 0, err
    assert {k: _card_meta(hub, "acme/now")[k] for k in ("license", "license_name", "license_link")} == \
        {"license": "other", "license_name": "bloom-1.0", "license_link": "https://example.com/bloom"}
    rc, _, err = cli("models", "push", unnamed, "--repo", "acme/later", "--license-name", "bloom-1.0", "--queue")
    assert rc == 0, err
    (job,) = [j for j in runner.list_jobs() if j.kind == "push"]
    assert job.spec["license_name"] == "bloom-1.0"  # in the job's spec: the worker's push names it
    runner.worker(once=True)
    meta = _card_meta(hub, "acme/later")
    assert (meta["license_name"], meta["license_link"]) == ("bloom-1.0", "LICENSE")
    rc, _, err = cli("models", "list", "--license-name", "x")
    assert rc == 2 and "--license-name" in err


def test_models_page_pushes_with_the_licence_name_typed(hub, unnamed, monkeypatch):
    from tests.test_pages import app

    monkeypatch.setenv("HF_TOKEN", hub.token)
    at = app("models.py")
    at.selectbox(key="model").set_value(unnamed).run()
    at.toggle(key=f"push_card_{unnamed}").set_value(True).run()
    assert any("set `license_name`" in m.value for m in at.markdown)  # the preview asks for it
    at.text_input(key=f"push_repo_{unnamed}").set_value("acme/typed").run()
    at.text_input(key=f"push_lname_{unnamed}").set_value("bloom-1.0").run()
    assert not any("set `license_name`" in m.value for m in at.markdown)  # the preview has it now
    at.button(key=f"push_{unnamed}").click().run()
    assert not at.exception
    runner.worker(once=True)
    assert _card_meta(hub, "acme/typed")["license_name"] == "bloom-1.0"
    at.text_input(key=f"push_lname_{unnamed}").set_value("Not An Id").run()  # refused by the spec, in words
    assert at.button(key=f"push_{unnamed}").disabled and any("lower-case" in e.value for e in at.error)
    assert "lower-case" in at.button(key=f"push_{unnamed}").help  # was "Type the Hub repo (owner/name) first."
