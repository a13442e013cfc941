"""Which model a merge takes config.json, the tokenizer, its chat template and generation config from: mergekit
0.1.5's donor (merge.py, _get_donor_model: `base_model or referenced_models()[0]`), `tokenizer_source`, and
`chat_template: auto` (the template most models share). The weights are tested against mergekit in test_merge.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend import registry
from backend.merge import MergeError, has_chat_template, run_merge
from backend.specs import MergeSpec
from tests.conftest import make_llama

OTHER = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def _strip_template(folder: Path) -> None:
    """A pretrained base: no chat template, and its own end token in generation_config.json."""
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 0}))


def _set_template(folder: Path, template: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    tok.save_pretrained(folder)


@pytest.fixture
def trio(tokenizer_dir, tmp_path):
    """base (no template, config marked), a and b (ChatML, as instruct candidates)."""
    folders = {}
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        folder = make_llama(tokenizer_dir, tmp_path / name, layers=2, seed=seed)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["_dus_test_origin"] = name
        (folder / "config.json").write_text(json.dumps(cfg))
        folders[name] = folder
    _strip_template(folders["base"])
    for name, folder in folders.items():
        registry.register(folder, name, "imported")
    return folders


def _origin(out: str) -> str:
    return json.loads((Path(out) / "config.json").read_text())["_dus_test_origin"]


def _template(out: str) -> str | None:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out).chat_template


def test_relative_merge_takes_config_and_tokenizer_from_the_base(trio):
    """mergekit's default: with base_model set, config.json and the tokenizer files are the base's (the first model's
    before, whatever the base)."""
    said = []
    res = run_merge(MergeSpec(models=["a", "b"], method="ties", base="base", name="t1"),
                    progress=lambda f, m: said.append(m))
    assert _origin(res["path"]) == "base"
    # said by the job itself (its log, the command line), not by the page alone
    assert res["warning"].startswith("the tokenizer comes from base, which has no chat template")
    assert "end-of-turn token of a, b" in res["warning"] and f"warning: {res['warning']}" in said
    assert not has_chat_template(res["path"]) and _template(res["path"]) is None
    assert json.loads((Path(res["path"]) / "generation_config.json").read_text())["eos_token_id"] == 0


def test_plain_merge_takes_them_from_the_first_model(trio):
    res = run_merge(MergeSpec(models=["b", "a"], method="average", name="t2"))
    assert _origin(res["path"]) == "b" and "warning" not in res
    assert has_chat_template(res["path"])


def test_tokenizer_source_picks_a_candidate_config_stays_the_base(trio):
    """mergekit's tokenizer_source moves the tokenizer only: config.json is still the base's."""
    _set_template(trio["b"], OTHER)
    res = run_merge(MergeSpec(models=["a", "b"], method="task_arithmetic", base="base", tokenizer_source="b",
                              name="t3"))
    assert _origin(res["path"]) == "base"
    assert _template(res["path"]) == OTHER
    assert json.loads((Path(res["path"]) / "generation_config.json").read_text())["eos_token_id"] == 2


def test_chat_template_auto_takes_the_most_common(trio, tokenizer_dir, tmp_path):
    """auto: a and b share ChatML, the base has none: the base's tokenizer with ChatML. With a third candidate on
    another template, still the majority."""
    from tests.conftest import CHATML

    c = make_llama(tokenizer_dir, tmp_path / "c", layers=2, seed=3)
    _set_template(c, OTHER)
    registry.register(c, "c", "imported")
    # c first: "the first template found" would take its template, "the most common" takes a's and b's
    res = run_merge(MergeSpec(models=["c", "a", "b"], method="ties", base="base", chat_template="auto", name="t4"))
    assert _origin(res["path"]) == "base"
    assert _template(res["path"]).strip() == CHATML.strip()


def test_chat_template_given_and_none_found(trio):
    res = run_merge(MergeSpec(models=["a", "b"], method="average", chat_template=OTHER, name="t5"))
    assert _template(res["path"]) == OTHER
    for m in ("a", "b"):
        _strip_template(trio[m])
    with pytest.raises(MergeError, match="none of the models has a chat template"):
        run_merge(MergeSpec(models=["a", "b"], method="average", chat_template="auto", name="t6"))
    assert registry.get("t6") is None


def test_tokenizer_source_naming_the_base_listed_as_a_model(trio):
    """A model that is the base is left out of the merge (without_base); naming it as the source still finds it."""
    res = run_merge(MergeSpec(models=["a", "b", "base"], method="ties", base="base", tokenizer_source="a",
                              name="t7"))
    assert has_chat_template(res["path"])
    res = run_merge(MergeSpec(models=["a", "b", "base"], method="ties", base="base", tokenizer_source="base",
                              name="t8"))
    assert not has_chat_template(res["path"])


@pytest.mark.parametrize("fields, words", [
    ({"method": "average", "tokenizer_source": "base"}, "needs a base"),
    ({"method": "average", "tokenizer_source": "zzz"}, "not one of the models"),
    ({"method": "ties", "base": "base", "tokenizer_source": "zzz"}, "or the base"),
    ({"method": "average", "chat_template": "chatml"}, "paste its text"),
])
def test_spec_refuses(fields, words):
    with pytest.raises(ValidationError, match=words):
        MergeSpec(models=["a", "b"], **fields)


def test_cli_passes_both_fields(trio, tmp_path, capsys):
    from backend.__main__ import main

    tpl = tmp_path / "t.jinja"
    tpl.write_text(OTHER)
    main(["merge", "--models", "a", "b", "--method", "ties", "--base", "base", "--tokenizer-source", "a",
          "--chat-template", f"@{tpl}", "--name", "t9"])
    out = registry.get("t9").path
    assert _origin(out) == "base" and _template(out) == OTHER


def test_has_chat_template_reads_files(tmp_path, tokenizer_dir):
    folder = tmp_path / "m"
    shutil.copytree(tokenizer_dir, folder)
    assert has_chat_template(folder)
    _strip_template(folder)
    assert not has_chat_template(folder)
    (folder / "tokenizer_config.json").write_text("not json")
    assert not has_chat_template(folder)


def test_compare_page_warns_and_queues_the_tokenizer_source(trio):
    """The page: a TIES relative to a base without a template warns (the merged chat model would have none); taking
    the tokenizer from a candidate clears the warning and the queued spec carries it."""
    from backend import runner
    from tests.test_pages import app

    at = app("compare.py")
    at.multiselect(key="merge_models").set_value(["a", "b"]).run()
    at.selectbox(key="merge_method").set_value("ties").run()
    at.selectbox(key="merge_base").set_value("base").run()
    assert any("comes from base, which has no chat template" in w.value for w in at.warning)
    (tok,) = [s for s in at.selectbox if s.key.startswith("merge_tok_")]
    assert tok.options[0].startswith("the base, base (mergekit's default)")
    tok.set_value("b").run()
    assert not any("no chat template" in w.value for w in at.warning)
    at.button(key="merge").click().run()
    (job,) = runner.list_jobs()
    assert job.spec["tokenizer_source"] == "b" and job.spec["base"] == "base"
    runner.worker(once=True)
    assert runner.get(job.id).status == "succeeded"
    out = registry.get(runner.get(job.id).result["model"]).path
    assert _origin(out) == "base" and has_chat_template(out)


def test_recipe_stage_renames_the_tokenizer_source():
    """In a recipe a merge's tokenizer_source names a stage, as its models do: renamed to the stage's model; the
    word 'base' is left as it is."""
    from backend.recipe.spec import stage_refs, stage_spec

    st = {"name": "t", "kind": "merge", "method": "ties", "models": ["c1", "c2"], "base": "up",
          "tokenizer_source": "c2"}
    assert ("tokenizer_source", "c2") in stage_refs(st)
    spec = stage_spec(st, lambda ref: f"r-{ref}")
    assert spec.tokenizer_source == "r-c2" and spec.models == ["r-c1", "r-c2"] and spec.base == "r-up"
    st["tokenizer_source"] = "base"
    assert all(k != "tokenizer_source" for k, _ in stage_refs(st))
    assert stage_spec(st, lambda ref: f"r-{ref}").tokenizer_source == "base"
    # without a merge base, 'base' is the recipe's base model, as in models: [base, ...]
    plain = {"name": "p", "kind": "merge", "method": "average", "models": ["base", "c2"], "tokenizer_source": "base"}
    assert ("tokenizer_source", "base") in stage_refs(plain)
    assert stage_spec(plain, lambda ref: f"r-{ref}").tokenizer_source == "r-base"


def test_cli_says_the_lost_template(trio, capsys):
    from backend.__main__ import main

    main(["merge", "--models", "a", "b", "--method", "ties", "--base", "base", "--name", "t10"])
    assert "warning: the tokenizer comes from base, which has no chat template" in capsys.readouterr().err
