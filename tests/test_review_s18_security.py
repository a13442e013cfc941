"""Security review (session 18), as an attacker and as a careless user would probe the dashboard: a model folder's
links out of it, remote-code modules of a Hub import, guessing a password from many IPv6 addresses, and two model
names one case-insensitive file system cannot tell apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend import auth, registry
from backend.hubpush import model_files
from storage import db
from tests.test_hub import hub, model_repo  # noqa: F401  (the Hub emulator fixture)

# ---------------------------------------------------------------- links out of an imported folder


def _with_link(src: Path, dst: Path, name: str, target: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / name).unlink(missing_ok=True)
    (dst / name).symlink_to(target)
    return dst


def test_import_folder_refuses_a_link_to_a_file_outside_it(tiny_llama, tmp_path, workspace):
    """A model folder unpacked from someone's archive may hold 'special_tokens_map.json -> ~/.ssh/id_rsa'. It was
    registered, and a push of the model (hubpush.model_files follows links) uploaded the secret's bytes to the
    Hub; a build copied it beside its weights (copy_companions)."""
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    folder = _with_link(tiny_llama, tmp_path / "unpacked", "special_tokens_map.json", Path("../home/id_rsa"))
    assert model_files(folder)["special_tokens_map.json"].read_text().startswith("-----BEGIN")  # what a push sends
    for attempt in (lambda: registry.check_import(str(folder)), lambda: registry.import_folder(folder)):
        with pytest.raises(registry.RegistryError) as e:
            attempt()
        assert (f"{folder / 'special_tokens_map.json'} is a link to {secret.resolve()}, outside the model folder"
                in str(e.value)) and "cp -L" in str(e.value)
    assert registry.list_models() == []


def test_import_folder_keeps_links_inside_it_and_a_hub_cache_snapshot(tiny_llama, tmp_path, workspace):
    """What stays allowed: a link to a file of the folder itself, and links into huggingface_hub's cache: every file
    of snapshots/REV/ is a link to ../../blobs/HASH (a cached Hub model imported by its snapshot folder), and `hf
    download --local-dir` before huggingface_hub 0.23 linked each large file there. A 'blobs' folder elsewhere is
    no cache."""
    inner = _with_link(tiny_llama, tmp_path / "inner", "tokenizer_config.json", Path("tokenizer_config.orig"))
    shutil.copy2(tiny_llama / "tokenizer_config.json", inner / "tokenizer_config.orig")
    assert registry.import_folder(inner, "inner").name == "inner"
    repo = tmp_path / "hub" / "models--acme--tiny"
    snapshot, blobs = repo / "snapshots" / "0123abc", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in tiny_llama.iterdir():
        shutil.copy2(f, blobs / f"hash-{f.name}")
        (snapshot / f.name).symlink_to(Path("../../blobs") / f"hash-{f.name}")
    assert registry.check_import(str(snapshot)) == ("folder", "0123abc")
    assert registry.import_folder(snapshot, "cached").path == str(snapshot.resolve())
    old_local_dir = _with_link(tiny_llama, tmp_path / "local-dir", "tokenizer.json", blobs / "hash-tokenizer.json")
    assert registry.import_folder(old_local_dir, "local-dir").name == "local-dir"  # hf download before 0.23
    not_cache = tmp_path / "secrets" / "blobs"
    not_cache.mkdir(parents=True)
    shutil.copy2(tiny_llama / "tokenizer.json", not_cache / "t.json")
    outside = _with_link(tiny_llama, tmp_path / "other", "tokenizer.json", not_cache / "t.json")
    with pytest.raises(registry.RegistryError, match="outside the model folder"):
        registry.import_folder(outside, "other")


def test_a_weights_file_linked_to_another_disk_is_still_imported(tiny_llama, tmp_path, workspace):
    """Weights kept on another disk and linked in are read and checked as weights (a key file is no safetensors):
    only the text files a push or a build copies are refused when they lead out."""
    big = tmp_path / "disk2" / "model.safetensors"
    big.parent.mkdir()
    shutil.copy2(tiny_llama / "model.safetensors", big)
    folder = _with_link(tiny_llama, tmp_path / "linked", "model.safetensors", big)
    assert registry.import_folder(folder, "linked").num_layers == 6


# ---------------------------------------------------------------- a Hub import's remote-code modules

MODELING = b"from .configuration_acme import AcmeConfig\nopen(__file__ + '.RAN', 'w').close()\n"
CONFIGURATION = b"open(__file__ + '.RAN', 'w').close()\n"


def test_import_hub_fetches_the_modules_its_auto_map_names_and_runs_none(hub, tiny_llama, tmp_path):  # noqa: F811
    """A remote-code model's auto_map names its modules (modeling_acme.AcmeForCausalLM, which imports
    .configuration_acme): HUB_PATTERNS fetched no *.py, so the imported folder named classes it did not hold and
    neither it nor a model built from it (outputs.copy_companions copies what the auto_map names) loaded as its Hub
    repo does. Now they are fetched, as save_pretrained would have written them, and no other .py of the repo;
    none is imported (each would leave a .RAN file)."""
    src = model_repo(tiny_llama, tmp_path / "repo", **{"modeling_acme.py": MODELING,
                                                      "configuration_acme.py": CONFIGURATION,
                                                      "handler.py": b"raise SystemExit('endpoint handler')\n"})
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_acme.AcmeConfig",
                          "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}
    (src / "config.json").write_text(json.dumps(config))
    hub.add("model/acme/remote", src)
    rec = registry.import_hub("acme/remote")
    got = sorted(p.name for p in Path(rec.path).glob("*.py*"))
    assert got == ["configuration_acme.py", "modeling_acme.py"]
    assert (Path(rec.path) / "modeling_acme.py").read_bytes() == MODELING


# ---------------------------------------------------------------- guessing from many IPv6 addresses


def test_lockout_counts_an_ipv6_client_by_its_slash_64():
    """One IPv6 host holds a /64 (2**64 addresses; SLAAC privacy addresses change on their own): counted per
    address, a guesser took 5 tries from each and was never locked. A /64 is one client, and '::ffff:1.2.3.4' is
    1.2.3.4."""
    now = [1000.0]
    lock = auth.Lockout(max_failures=5, seconds=300, clock=lambda: now[0])
    stored = auth.hash_password("correct horse")
    answers = [auth.attempt("wrong", stored, f"2001:db8:1:2::{i:x}", lock)[1] for i in range(1, 7)]
    assert answers == ["Wrong password."] * 4 + ["Wrong password. Too many failed attempts: locked for 5 min.",
                                                 "Too many failed attempts: try again in 5 min."]
    assert auth.attempt("correct horse", stored, "2001:db8:1:3::1", lock) == (True, "")  # the next /64: another
    for i in range(5):
        auth.attempt("wrong", stored, "::ffff:10.0.0.7" if i % 2 else "10.0.0.7", lock)
    assert auth.attempt("correct horse", stored, "10.0.0.7", lock)[0] is False
    assert auth.attempt("correct horse", stored, "global", lock) == (True, "")  # what the page passes without an IP
    assert [auth.client_key(c) for c in ("2001:DB8:1:2:aa::1", "::ffff:1.2.3.4", "1.2.3.4", "global")] == [
        "2001:db8:1:2::/64", "1.2.3.4", "1.2.3.4", "global"]


# ---------------------------------------------------------------- names one case-insensitive disk cannot tell apart


def test_a_name_differing_only_in_case_is_refused_before_any_work(tiny_llama, workspace):
    """On macOS's default APFS (and a Windows or exFAT share) 'Tiny' and 'tiny' are one folder of workspace/models.
    check_name_free let the second through, so a build ran to its end and failed at the rename ("already exists"),
    or an import in place registered a second row the file system cannot tell from the first."""
    registry.import_folder(tiny_llama, "Tiny-Llama")
    with pytest.raises(registry.RegistryError) as e:
        registry.check_name_free("tiny-llama")
    assert str(e.value).startswith("A model named 'Tiny-Llama' is already registered") and "differs only" in str(
        e.value)
    with pytest.raises(registry.RegistryError, match="differs only in case"):
        registry.check_import(str(tiny_llama), "TINY-LLAMA")
    assert [r.name for r in registry.list_models()] == ["Tiny-Llama"]


# ---------------------------------------------------------------- a GGUF file's neighbours


def test_a_gguf_import_reads_the_file_alone_not_its_folders_other_files(tiny_llama, tmp_path, workspace,
                                                                       monkeypatch):
    """transformers' AutoTokenizer.from_pretrained(FOLDER, gguf_file=F) also reads FOLDER/tokenizer_config.json. A
    GGUF downloaded into a folder holding another model's files (~/Downloads) took that file's auto_map and chat
    template: with trust_remote_code unset, transformers asked "Do you wish to run the custom code? [y/N]" on a
    terminal (a 'y' ran the neighbour's module) and failed the import anywhere else (checked with the built-in GGUF
    and the real loaders). Now both loaders see a folder holding the GGUF alone, with trust_remote_code=False; they
    are stubbed here with the tiny Llama (reading the built-in's tokenizer takes 13 s)."""
    import transformers

    folder = tmp_path / "Downloads"
    folder.mkdir()
    gguf = folder / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["tok_other.OtherTokenizer", None]}, "chat_template": "OTHER"}))
    seen = []

    def loader(load):
        def from_pretrained(src, **k):
            gguf_file = Path(k["gguf_file"])  # absolute (s19): a bare name is looked up in the cwd first
            seen.append((sorted(p.name for p in Path(src).iterdir()), gguf_file.is_absolute(),
                         str(gguf_file.relative_to(src) if gguf_file.is_relative_to(src) else gguf_file),
                         k.get("trust_remote_code")))
            return load(tiny_llama)
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        loader(transformers.PreTrainedTokenizerFast.from_pretrained))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        loader(transformers.LlamaForCausalLM.from_pretrained))
    assert registry.import_gguf(gguf, name="from-downloads").name == "from-downloads"
    assert seen == [(["tiny.Q4_1.gguf"], True, "tiny.Q4_1.gguf", False)] * 2
    assert list(db.tmp_dir().iterdir()) == []  # the reading folder is gone
    # a workspace on a file system without links (exFAT, SMB): the import failed, blaming the GGUF file
    seen.clear()
    monkeypatch.setattr(Path, "symlink_to", lambda *a, **k: (_ for _ in ()).throw(PermissionError(1, "EPERM")))
    assert registry.import_gguf(gguf, name="no-links").name == "no-links"
    assert seen == [([], True, str(gguf.resolve()), False)] * 2


# ---------------------------------------------------------------- a Hub id the Hub cannot take


@pytest.mark.parametrize("target", ["acme/my model", "a/..", "acme/x--y", "acme/" + "x" * 97])
def test_an_id_the_hub_refuses_is_refused_before_queueing_and_not_blamed_on_the_network(target, workspace):
    """'acme/my model' or 'a/..' passed as a Hub id: the job was queued, huggingface_hub refused the id
    (HFValidationError) and the import said "this machine seems to be offline"."""
    from backend import runner
    from backend.specs import ImportSpec

    with pytest.raises(registry.RegistryError) as e:
        runner.submit(ImportSpec(target=target))
    assert str(e.value).startswith(f"{target!r} is no folder or .gguf file here, and not a Hub id: ")
    assert "offline" not in str(e.value) and runner.list_jobs() == []
    assert registry.check_import("acme/ok-1.5_b") == ("hub", "ok-1.5_b")  # what the Hub takes still passes


@pytest.mark.parametrize("target, why", [("/tmp/" + "x" * 300, "File name too long"),
                                         ("x" * 300 + ".gguf", "File name too long"),
                                         ("~no-such-user-here/model", "Could not determine home directory")])
def test_a_path_the_machine_cannot_read_is_refused_in_words(target, why, workspace):
    """A pasted path with a component over 255 bytes, or '~user' of no user: check_import raised the OSError or
    RuntimeError itself, which the page's refusal (it catches ValueError) let through as a traceback."""
    from backend import runner
    from backend.specs import ImportSpec

    with pytest.raises(registry.RegistryError) as e:
        runner.submit(ImportSpec(target=target))
    assert str(e.value) == (f"{target[:80]!r}{'…' if len(target) > 80 else ''} is no path this machine can read "
                            f"({why}): give a model folder, a .gguf file or a Hub id (owner/name).")
    assert registry.import_name(target) is None and runner.list_jobs() == []


# ---------------------------------------------------------------- final review of the above


def test_a_safetensors_link_beside_an_indexed_model_is_refused_and_never_uploaded(tiny_llama, tmp_path, workspace):
    """Weight links were let through as 'parsed as weights'; with an index only the shards it names are, and a
    push uploaded every root .safetensors: 'consolidated.safetensors -> ~/.ssh/id_rsa' passed the check and was
    sent."""
    from backend.safetensors_stream import INDEX_NAME

    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    folder = _with_link(tiny_llama, tmp_path / "indexed", "consolidated.safetensors", secret)
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": {k: "model.safetensors" for k in keys}}))
    assert "consolidated.safetensors" not in model_files(folder) and "model.safetensors" in model_files(folder)
    with pytest.raises(registry.RegistryError, match="consolidated.safetensors is a link to"):
        registry.import_folder(folder)
    assert registry.list_models() == []


def test_a_link_that_cannot_be_read_is_refused_in_words(tiny_llama, tmp_path, workspace, monkeypatch):
    """A link to a file this user may not read raised PermissionError out of the check, past the page's `except
    ValueError`: a traceback where the old code gave reasons."""
    folder = _with_link(tiny_llama, tmp_path / "locked", "tokenizer.json", Path("/root/.bashrc"))
    real = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda p: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if p.name == "tokenizer.json" and p.parent == folder.resolve() else real(p))
    assert registry.links_out(folder) == [f"{folder.resolve() / 'tokenizer.json'} cannot be read (Permission denied): "
                                          "copy the file itself into the folder or remove it, then import again."]


def test_a_push_carries_a_remote_code_models_modules(tokenizer_dir, tmp_path):
    """A built folder keeps the modules its auto_map names (copy_companions); the push left them out, so the Hub repo
    named classes it did not hold."""
    from tests.test_review_s18_models import WANT_PY, make_remote

    folder = make_remote(tokenizer_dir, tmp_path / "remote", seed=0)
    assert WANT_PY <= set(model_files(folder)) and "convert_checkpoint.py" not in model_files(folder)


def test_a_licence_name_the_bases_rule_out_is_refused_before_queueing(tiny_llama, tmp_path, workspace):
    """A base card of a known licence takes no licence name: the push was queued, then failed in the worker."""
    from backend import runner
    from backend.specs import PushSpec

    folder = shutil.copytree(tiny_llama, tmp_path / "apache")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# apache\n")
    registry.import_folder(folder, "apache")
    with pytest.raises(ValueError, match="apache-2.0, an id the Hub knows"):
        runner.submit(PushSpec(model="apache", repo="acme/apache", license_name="my-1.0"))
    assert runner.list_jobs() == []


def test_a_synth_run_named_in_other_case_is_refused_before_any_file(workspace):
    """Its folder is datasets/NAME: on macOS or Windows 'Run' and 'run' are one folder, and the second run's
    pairs.jsonl and export replaced the registered first one's files."""
    from backend.specs import SynthMathSpec
    from backend.synth import pipeline

    pipeline.save_dataset("Run-pairs", "synth-pairs", str(workspace / "datasets" / "Run" / "pairs.jsonl"), 0, {})
    with pytest.raises(pipeline.DatasetError, match="'run-pairs' differs only in case"):
        pipeline.check_synth_free(SynthMathSpec(name="run", num_seeds=2))
    assert not (workspace / "datasets" / "run").exists()


def test_model_safetensors_beside_an_index_of_other_shards_is_refused(tiny_llama, tmp_path, workspace):
    """transformers loads model.safetensors and never reads the index; builds and pushes here followed the index:
    the model scored and the one built or pushed were two models."""
    from backend.safetensors_stream import INDEX_NAME, CheckpointError, weight_files

    folder = shutil.copytree(tiny_llama, tmp_path / "both")
    shutil.copy(folder / "model.safetensors", folder / "model-00001-of-00001.safetensors")
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(CheckpointError, match="transformers loads the one, this studio's builds the others"):
        weight_files(folder)
    with pytest.raises(ValueError, match="beside model.safetensors.index.json"):
        registry.check_import(str(folder))


@pytest.mark.parametrize("value", [1, None, "../elsewhere.safetensors", "/abs.safetensors"])
def test_an_index_naming_no_shard_of_the_folder_is_refused_in_words(tiny_llama, tmp_path, workspace, value):
    """A number in weight_map raised TypeError past the import page's `except ValueError`; '../x' read a file
    elsewhere as a shard."""
    from backend.safetensors_stream import INDEX_NAME

    folder = shutil.copytree(tiny_llama, tmp_path / "bad")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": {"w": value}}))
    with pytest.raises(ValueError, match="not shard files of the folder"):
        registry.check_import(str(folder))


def test_a_push_says_which_shard_is_missing(tiny_llama, tmp_path, workspace, monkeypatch):
    from backend import hubpush
    from backend.safetensors_stream import INDEX_NAME

    folder = shutil.copytree(tiny_llama, tmp_path / "m")
    registry.import_folder(folder, "m")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(hubpush.PushRefused, match="missing shard.s. model-00002-of-00002.safetensors"):
        hubpush.check_pushable("m")  # was "holds no .safetensors weights"


def test_a_licence_link_must_be_an_uploaded_file_or_a_url_and_not_replace_the_bases(tiny_llama, tmp_path, workspace):
    from backend import hubpush
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    folder = shutil.copytree(tiny_llama, tmp_path / "old")
    (folder / "README.md").write_text("---\nlicense: other\n---\n# old\n")
    registry.import_folder(folder, "old")
    run_upscale(UpscaleSpec(base="old", m=2, name="old-dus"))
    rec = registry.get("old-dus")
    chain = hubpush.ancestors("old-dus")
    with pytest.raises(hubpush.PushRefused, match="'TERMS.md' is no file uploaded with the model"):
        hubpush.license_meta(chain, Path(rec.path), license_name="x-1.0", license_link="TERMS.md")
    assert hubpush.license_meta(chain, Path(rec.path), license_link="https://e.com/t")["license_link"] == \
        "https://e.com/t"
    folder2 = shutil.copytree(tiny_llama, tmp_path / "named")
    (folder2 / "README.md").write_text("---\nlicense: other\nlicense_name: l3\nlicense_link: https://e.com/l3\n---\n")
    registry.import_folder(folder2, "named")
    with pytest.raises(hubpush.PushRefused, match="link its licence at 'https://e.com/l3'"):
        hubpush.license_meta(hubpush.ancestors("named"), folder2, license_link="https://e.com/mine")
