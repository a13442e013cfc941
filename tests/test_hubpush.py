"""Pushing a registered model to the Hub (backend/hubpush.py) through huggingface_hub's real upload code, against
the local Hub emulator (tests/hub_server.py): its files in one commit, a model card with its lineage and the
scores of it and its ancestors, and refusals that upload nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backend import evaluate, hubpush, registry, runner
from backend.specs import EvalSpec, UpscaleSpec
from backend.upscale import run_upscale
from tests.test_hub import hub
from tests.test_review_cli import cli

HUB_FIXTURES = (hub,)  # tests/test_hub.py's local Hub emulator, taken by name


@pytest.fixture
def scaled(tiny_llama):
    """tiny (6 layers, imported from a folder) → tiny-dus (m = 2: 8 layers), both scored on held-out perplexity."""
    registry.import_folder(tiny_llama, "tiny")
    run_upscale(UpscaleSpec(base="tiny", m=2, name="tiny-dus"))
    evaluate.run_eval(EvalSpec(models=["tiny", "tiny-dus"], tasks=["perplexity"], limit=4))
    return registry.get("tiny-dus")


def test_a_model_is_pushed_with_its_files_and_a_card_of_its_lineage_and_scores(hub, scaled, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    said = hubpush.push_model("tiny-dus", "acme/tiny-dus")
    files = hub.files("model/acme/tiny-dus")
    files.pop(".gitattributes")  # the new repo's first commit
    folder = Path(scaled.path)
    local = {f.name for f in folder.iterdir() if f.is_file()} - {"README.md"}
    assert set(files) == local | {"README.md"}
    assert all(files[n] == (folder / n).read_bytes() for n in local)  # the weights byte for byte
    assert said == {"pushed": "tiny-dus", "url": f"{hub.url}/acme/tiny-dus", "files": len(files), "size": said["size"]}

    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and "depth-up-scaling" in meta["tags"]
    assert "base_model" not in meta  # its base came from a local folder: no Hub repo to link to
    lineage = card.split("## How it was made")[1].split("##")[0]
    assert "1. `tiny` (6 layers" in lineage and "imported from a local folder (not on the Hub)" in lineage
    assert "2. `tiny-dus` (8 layers" in lineage and "m = 2" in lineage and "from `tiny`" in lineage
    scores = card.split("## Scores in DUS Studio")[1]
    from backend import scoretable

    for name in ("tiny", "tiny-dus"):  # both models' perplexity, in the Compare page's table row, with its error
        latest = scoretable.latest_scores([name])
        (r,) = [r for (m, t, metric), r in latest.items() if metric == "perplexity"]
        se = scoretable.stderr(latest, r)
        # (no average column: perplexity alone gives no model an average, session 26)
        assert se > 0 and f"| {name} | {scoretable.value(r):.4f} ± {se:.4f} |" in scores
    assert "## Build notes" in card and "Layer map" in card  # the up-scale's own card follows


def test_a_model_from_the_hub_links_its_base_and_a_merge_names_its_candidates(hub, tiny_llama, monkeypatch):
    from storage import db
    from storage.models import ModelRecord

    tiny = registry.import_folder(tiny_llama, "tiny")
    with db.session() as s:  # as import_hub registers it (its source names the repo it came from)
        rec = s.get(ModelRecord, tiny.id)
        rec.source = "hub:acme/tiny-base"
        s.add(rec)
        s.commit()
    from backend.merge import run_merge
    from backend.specs import MergeSpec

    run_upscale(UpscaleSpec(base="tiny", m=1, name="a"))
    run_upscale(UpscaleSpec(base="tiny", m=1, name="b", method="dus"))
    run_merge(MergeSpec(models=["a", "b"], method="slerp", t=0.5, name="ab"))
    meta = yaml.safe_load(hubpush.model_card("ab", "acme/ab").split("---")[1])
    assert meta["base_model"] == "acme/tiny-base" and "base_model_relation" not in meta  # not a merge OF acme/tiny-base
    import shutil

    from storage import db as storage_db

    trained = shutil.copytree(tiny_llama, storage_db.models_dir() / "tiny-sft")  # registered as training writes it
    registry.register(trained, "tiny-sft", "trained", parents=["tiny"], source="sft",
                      recipe={"kind": "sft", "data": [{"source": "builtin:alpaca-mini", "weight": 1.0}],
                              "max_steps": 3, "learning_rate": 2e-5})
    sft_card = hubpush.model_card("tiny-sft", "acme/tiny-sft")
    assert yaml.safe_load(sft_card.split("---")[1])["base_model_relation"] == "finetune"
    assert "supervised fine-tuning (SFT) of `tiny` on `builtin:alpaca-mini`, 3 steps, learning rate 2e-05" in sft_card
    card = hubpush.model_card("ab", "acme/ab")
    assert "slerp merge of `a` and `b` (t 0.5)" in card and card.count("`tiny` (6 layers") == 1
    assert "Not evaluated in DUS Studio." in card


def test_a_push_is_refused_before_any_upload_when_it_cannot_be_loaded(hub, tiny_llama, tmp_path,
                                                                      monkeypatch):
    import shutil

    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(hubpush.PushRefused, match="No model named 'nothing'"):
        hubpush.push_model("nothing", "acme/x")
    rec = registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "copy"), "tiny")  # registered where it is
    for f in Path(rec.path).glob("tokenizer*"):
        f.unlink()
    with pytest.raises(hubpush.PushRefused, match="no tokenizer"):
        hubpush.push_model("tiny", "acme/x")
    assert not hub.repos


def test_models_push_on_the_command_line_exit_codes(hub, tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("models", "push", "tiny", "--repo", "acme/tiny")
    assert (rc, out) == (2, "") and "needs a Hugging Face token with write access" in err  # refused: nothing tried
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    rc, out, err = cli("models", "push", "tiny", "--repo", "acme/tiny")
    assert rc == 1 and "refused the token in HF_TOKEN" in err  # tried, and the Hub said no
    monkeypatch.setenv("HF_TOKEN", hub.token)
    rc, out, err = cli("models", "push", "tiny", "--repo", "acme/tiny")
    assert rc == 0 and out.startswith("pushed: tiny\nurl: ") and "model/acme/tiny" in hub.repos
    assert not hub.repos["model/acme/tiny"].private
    assert cli("models", "push", "tiny", "--repo", "acme/tiny-private", "--private")[0] == 0
    assert hub.repos["model/acme/tiny-private"].private
    assert cli("models", "push", "tiny")[0] == 2  # no --repo
    assert cli("models", "push", "tiny", "--repo", "not a repo")[0] == 2
    rc, out, _ = cli("models", "push", "tiny", "--repo", "acme/later", "--queue")  # the worker uploads it
    assert rc == 0 and "model/acme/later" not in hub.repos
    (job,) = [j for j in runner.list_jobs() if j.kind == "push"]
    assert job.spec["repo"] == "acme/later" and runner.job_output(job) == "tiny → hub:acme/later"
    runner.worker(once=True)
    assert runner.get(job.id).status == "succeeded" and "model/acme/later" in hub.repos


def test_models_page_previews_the_card_and_pushes(hub, tiny_llama, monkeypatch):
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setenv("HF_TOKEN", hub.token)
    at = app("models.py")
    assert at.button(key="push_tiny").disabled  # no repo yet
    at.toggle(key="push_card_tiny").set_value(True).run()
    assert any("## How it was made" in m.value and "1. `tiny` (6 layers" in m.value for m in at.markdown)
    at.text_input(key="push_repo_tiny").set_value("acme/tiny").run()
    at.button(key="push_tiny").click().run()  # a push job, the worker's
    assert not at.exception
    (job,) = runner.list_jobs()
    assert (job.kind, job.spec["model"], job.spec["repo"]) == ("push", "tiny", "acme/tiny")
    runner.worker(once=True)
    assert runner.get(job.id).status == "succeeded"
    assert hub.files("model/acme/tiny")["config.json"] == (tiny_llama / "config.json").read_bytes()
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")  # the worker's environment: the job fails, saying why
    at.button(key="push_tiny").click().run()
    failed = max(runner.list_jobs(), key=lambda j: j.id)
    runner.worker(once=True)
    assert "refused the token in HF_TOKEN" in runner.get(failed.id).error
    at.text_input(key="push_repo_tiny").set_value("no repo id").run()
    assert at.button(key="push_tiny").disabled and any("owner/name" in e.value for e in at.error)
