"""Names never leave their folder, uploads land under generated names, and an exposed dashboard needs a login."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from backend import auth, names, registry, uploads
from backend.__main__ import main as cli
from backend.specs import (DataSource, ImportSpec, MergeSpec, SftSpec, SynthMathSpec, UpscaleSpec, explain)

ROOT = Path(__file__).resolve().parent.parent
BAD_NAMES = ["../x", "..", "/etc/passwd", "a/b", "a\\b", "", " ", "x" * 101, "x\n", ".hidden", "-x", "~root",
             "C:\\x", "a b"]
MESSAGE = "use ASCII letters (a–z, A–Z), digits, '.', '_' and '-' (at most 100, not starting with a symbol)."


@pytest.fixture(autouse=True)
def _no_login_settings(monkeypatch):
    for var in (auth.PASSWORD_ENV, auth.HASH_ENV, auth.FORCE_ENV):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("bad", BAD_NAMES)
def test_check_name_refuses_paths_empty_and_long(bad):
    with pytest.raises(ValueError) as e:
        names.check_name(bad)
    assert str(e.value) == f"name {bad!r}: {MESSAGE}"


def test_check_name_keeps_the_accepted_set():
    for good in ["tiny", "SmolLM2-135M-Instruct-dus-m8", "a.b_c-d", "9", "x" * 100, "a..b"]:
        assert names.check_name(good) == good
    assert names.check_name("x", "mix name") == "x"
    with pytest.raises(ValueError, match=r"^mix name '\.\./x': "):
        names.check_name("../x", "mix name")


def test_safe_name_turns_any_text_into_a_valid_name():
    assert names.safe_name("my model (v2)") == "my-model-v2" and names.safe_name("a--b") == "a--b"
    assert names.safe_name("../../etc") == "etc"
    assert names.safe_name("模型") == "model" and names.safe_name("", "upload") == "upload"
    assert len(names.safe_name("a" * 300)) == 100
    for text in BAD_NAMES:
        names.check_name(names.safe_name(text))  # never raises


def test_inside_resolves_and_stays_in_the_folder(tmp_path):
    assert names.inside(tmp_path, "m") == tmp_path.resolve() / "m"
    with pytest.raises(ValueError, match="use ASCII letters"):
        names.inside(tmp_path, "../m")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="is not inside"):
        names.inside(tmp_path / "models", "link")


@pytest.mark.parametrize("bad", ["../x", "/abs", "", "x" * 101, "a/b"])
def test_every_spec_refuses_a_bad_name(bad):
    data = [DataSource(source="builtin:alpaca-mini")]
    makers = [lambda: UpscaleSpec(base="tiny", m=1, name=bad), lambda: ImportSpec(target="builtin", name=bad),
              lambda: SftSpec(model="tiny", data=data, name=bad), lambda: SynthMathSpec(name=bad),
              lambda: MergeSpec(models=["a", "b"], name=bad)]
    for make in makers:
        with pytest.raises(ValidationError) as e:
            make()
        assert explain(e.value) == f"name {bad!r}: {MESSAGE}"  # the field named once


def test_default_names_from_odd_bases_are_sanitised_not_refused():
    data = [DataSource(source="builtin:alpaca-mini")]
    got = [UpscaleSpec(base="/models/my model (v2)", m=2).default_name(),
           UpscaleSpec(base="..", m=2).default_name(),
           SftSpec(model="/x/Qwen 2.5 ☃", data=data).default_name(),
           MergeSpec(models=["a b", "/c/d!"]).default_name()]
    assert got == ["my-model-v2-dus-m2", "dus-m2", "Qwen-2.5-sft", "a-b_d-average"]
    for name in got:
        names.check_name(name)


def test_registry_refuses_bad_names_and_writes_nothing(tiny_llama, workspace):
    for bad in ["../x", "/tmp/x", ""]:
        with pytest.raises(ValueError, match="use ASCII letters"):
            registry.register(tiny_llama, bad, "base")
        with pytest.raises(ValueError, match="use ASCII letters"):
            registry.import_any(str(tiny_llama), bad)
    assert registry.list_models() == []
    assert not (workspace / "x").exists() and not (workspace / "models" / "x").exists()


def test_import_of_an_oddly_named_folder_gets_a_safe_name(tiny_llama, tmp_path):
    odd = tmp_path / "my model (1)"
    shutil.copytree(tiny_llama, odd)
    assert registry.import_folder(odd).name == "my-model-1"


def test_cli_models_import_with_a_bad_name_exits_non_zero(tiny_llama, workspace, capsys):
    assert cli(["models", "import", str(tiny_llama), "--name", "../x"]) == 2
    assert capsys.readouterr().err.strip() == f"error: name '../x': {MESSAGE}"
    assert registry.list_models() == []
    assert not (workspace / "x").exists() and not (workspace.parent / "x").exists()
    assert not (workspace / "models").exists() or list((workspace / "models").iterdir()) == []


def test_outputs_and_data_sets_refuse_bad_names(workspace):
    from backend import outputs
    from backend.synth import pipeline

    with pytest.raises(ValueError, match="use ASCII letters"):
        outputs.output_dir(None, None, "../escape")
    with pytest.raises(ValueError, match=r"^mix name '\.\./mix': "):
        pipeline.save_mix("../mix", [("builtin:alpaca-mini", 1.0)], "sft")
    assert pipeline.list_datasets() == [] and not (workspace.parent / "escape").exists()


# ---------------------------------------------------------------- uploads

HOSTILE = ["../../evil.jsonl", "/etc/cron.d/evil.json", "..\\..\\evil.csv", "C:\\Windows\\evil.txt",
           "a b (1).JSONL", "../.../..jsonl.jsonl", "x" * 300 + ".parquet"]


@pytest.mark.parametrize("sent", HOSTILE)
def test_hostile_upload_names_land_inside_uploads_under_a_generated_name(sent, workspace):
    data = f"contents of {sent}\n".encode()
    path = uploads.store_upload(data, sent, uploads.DATA_SUFFIXES)[0]
    assert path.parent == (workspace / "uploads").resolve()
    assert re.fullmatch(r"[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]{0,59}\.(jsonl|json|csv|txt|parquet)", path.name)
    assert path.name.startswith(hashlib.sha256(data).hexdigest()[:16])
    assert path.read_bytes() == data
    assert [p for p in workspace.parent.rglob("*") if p.is_file()] == [path]  # nothing else written
    assert uploads.store_upload(data, sent, uploads.DATA_SUFFIXES)[0] == path  # same bytes and name: same file


@pytest.mark.parametrize("sent", ["evil.py", "evil", ".jsonl", "x.jsonl.exe", "x.jsonl\x00.sh", "../", ""])
def test_uploads_with_other_suffixes_are_refused(sent, workspace):
    with pytest.raises(ValueError, match="files are accepted"):
        uploads.store_upload(b"x", sent, uploads.DATA_SUFFIXES)
    with pytest.raises(ValueError, match="only .jsonl, .json files"):
        uploads.store_upload(b"x", "seeds.csv", uploads.SEED_SUFFIXES)
    assert not (workspace / "uploads").exists() or list((workspace / "uploads").iterdir()) == []


def test_pages_write_uploads_only_through_the_backend():
    for page in ("train.py", "synth.py"):
        text = (ROOT / "pages" / page).read_text()
        assert "uploads.store_upload(" in text and '"uploads"' not in text and "write_bytes" not in text


# ---------------------------------------------------------------- auth

def test_hash_and_verify(monkeypatch):
    stored = auth.hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$") and "correct horse" not in stored
    assert stored != auth.hash_password("correct horse")  # salted
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert auth.verify_password("correct horse", stored) is True
    assert auth.verify_password("correct horsE", stored) is False
    assert len(calls) == 2  # both answers came from the constant-time compare
    with pytest.raises(ValueError, match="too short"):
        auth.hash_password("short")
    for broken in ["", "plain", "scrypt$16384$8$1$!!$!!", "scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
                   "scrypt$1073741824$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="]:
        with pytest.raises(ValueError, match="not a hash made by"):
            auth.verify_password("x", broken)


def test_plaintext_password_is_hashed_and_removed_from_the_environment():
    env = {auth.PASSWORD_ENV: "correct horse"}
    stored = auth.password_hash(env)
    assert auth.PASSWORD_ENV not in env and env[auth.HASH_ENV] == stored
    assert auth.verify_password("correct horse", stored)
    given = auth.hash_password("other password")
    env = {auth.PASSWORD_ENV: "correct horse", auth.HASH_ENV: given}
    assert auth.password_hash(env) == given and auth.PASSWORD_ENV not in env


def test_lockout_after_repeated_failures_per_client():
    now = [1000.0]
    lock = auth.Lockout(max_failures=5, seconds=300, clock=lambda: now[0])
    stored = auth.hash_password("correct horse")
    for i in range(4):
        assert auth.attempt("wrong", stored, "1.2.3.4", lock) == (False, "Wrong password.")
    assert auth.attempt("wrong", stored, "1.2.3.4", lock) == (
        False, "Wrong password. Too many failed attempts: locked for 5 min.")
    ok, message = auth.attempt("correct horse", stored, "1.2.3.4", lock)
    assert not ok and message == "Too many failed attempts: try again in 5 min."  # even the right password
    assert auth.attempt("correct horse", stored, "5.6.7.8", lock) == (True, "")  # other clients unaffected
    now[0] += 301
    assert auth.attempt("correct horse", stored, "1.2.3.4", lock) == (True, "")
    assert auth.attempt("wrong", stored, "1.2.3.4", lock) == (False, "Wrong password.")  # a fresh count


@pytest.mark.parametrize("address,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("unix:///tmp/dus.sock", True), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
    ("10.0.0.5", False), ("192.168.1.2", False), ("example.com", False)])
def test_which_addresses_need_a_login(address, loopback):
    assert auth.is_loopback(address) is loopback
    assert auth.login_required(address, {}) is not loopback
    assert auth.login_required(address, {auth.FORCE_ENV: "1"}) is True


def test_problem_names_what_is_missing():
    assert auth.problem("127.0.0.1", {}) is None
    why = auth.problem("0.0.0.0", {})
    assert why.startswith("DUS Studio is served on 0.0.0.0, which other machines can reach, and no login is "
                          "configured") and "DUS_PASSWORD" in why and "[auth]" in why
    assert "every interface" in auth.problem("", {})
    assert auth.problem("0.0.0.0", {auth.HASH_ENV: auth.hash_password("correct horse")}) is None
    assert "unusable" in auth.problem("0.0.0.0", {auth.HASH_ENV: "nonsense"})
    oidc = auth.problem("0.0.0.0", {}, oidc=True)
    assert oidc is None if auth.importlib.util.find_spec("authlib") else "Authlib" in oidc


def test_oidc_in_secrets_files(tmp_path):
    f = tmp_path / "secrets.toml"
    f.write_text('[other]\nx = 1\n')
    assert not auth.oidc_in_files([f, tmp_path / "missing.toml"])
    f.write_text('[auth]\nredirect_uri = "http://h:8501/oauth2callback"\ncookie_secret = "s"\n')
    assert auth.oidc_in_files([f])


def _run_sh(tmp_path, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUS_", "PYTHON"))}
    env.update(DUS_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path), **extra)
    p = subprocess.Popen([str(ROOT / "run.sh")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=60)
    finally:  # should the check ever let it through, stop what it started
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_run_sh_refuses_an_exposed_start_without_a_login(tmp_path):
    r = _run_sh(tmp_path, DUS_HOST="0.0.0.0")
    assert r.returncode == 2
    assert "error: DUS Studio is served on 0.0.0.0" in r.stderr and "no login is configured" in r.stderr
    assert "setup:" not in r.stderr and "run:" not in r.stderr  # nothing installed or started
    assert not (tmp_path / "ws").exists()
    r = _run_sh(tmp_path, DUS_HOST="0.0.0.0", DUS_PASSWORD="short")
    assert r.returncode == 2 and "too short" in r.stderr


def test_cli_auth_hash_and_check(capsys, monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_ENV, "correct horse")
    assert cli(["auth", "hash"]) == 0
    assert auth.verify_password("correct horse", capsys.readouterr().out.strip())
    monkeypatch.delenv(auth.PASSWORD_ENV)
    assert cli(["auth", "check", "--address", "0.0.0.0"]) == 2
    assert "no login is configured" in capsys.readouterr().err
    assert cli(["auth", "check", "--address", "127.0.0.1"]) == 0


@pytest.fixture
def bound(monkeypatch):
    """Set server.address the way `streamlit run app.py --server.address A` does, for AppTest."""
    from streamlit import config

    old = config.get_option("server.address")

    def bind(address):
        config.set_option("server.address", address)

    yield bind
    config.set_option("server.address", old)


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("title", "markdown", "error", "info", "caption")
                    for e in getattr(at, kind))


def test_app_bound_to_an_exposed_address_without_a_login_refuses(bound):
    bound("0.0.0.0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [auth.problem("0.0.0.0", {})]
    assert "Depth up-scale" not in _texts(at) and len(at.text_input) == 0


def test_app_with_a_password_shows_only_the_login_form_until_signed_in(bound, monkeypatch):
    bound("0.0.0.0")
    monkeypatch.setenv(auth.PASSWORD_ENV, "correct horse")
    monkeypatch.setattr(auth, "LOCKOUT", auth.Lockout())
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception and auth.PASSWORD_ENV not in os.environ  # hashed, and gone for child processes
    assert [t.label for t in at.text_input] == ["Password"] and "Depth up-scale" not in _texts(at)
    at.text_input(key="login_password").input("wrong password")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."] and "Depth up-scale" not in _texts(at)
    at.text_input(key="login_password").input("correct horse")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert "Depth up-scale" in _texts(at) and "No model is registered yet" in at.info[0].value


def test_app_with_oidc_configured_shows_only_the_provider_login(bound, monkeypatch):
    """Streamlit's own login (st.login) configured in secrets.toml [auth]: a button per provider, no content. Authlib,
    which st.login needs, is not installed here: the gate says so; with it (faked) the login button appears."""
    bound("0.0.0.0")
    section = {"redirect_uri": "http://h:8501/oauth2callback", "cookie_secret": "s" * 32, "client_id": "c",
               "client_secret": "x", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    real_find_spec = auth.importlib.util.find_spec
    if real_find_spec("authlib") is None:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.secrets["auth"] = section
        at.run()
        assert len(at.error) == 1 and "Authlib is not installed" in at.error[0].value
        monkeypatch.setattr(auth.importlib.util, "find_spec",
                            lambda name, *a: object() if name == "authlib" else real_find_spec(name, *a))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.secrets["auth"] = section
    at.run()
    assert not at.exception and not at.error
    assert [b.label for b in at.button] == ["Log in"] and "Depth up-scale" not in _texts(at)


def test_app_locks_the_form_after_repeated_failures(bound, monkeypatch):
    bound("10.1.2.3")
    monkeypatch.setenv(auth.HASH_ENV, auth.hash_password("correct horse"))
    monkeypatch.setattr(auth, "LOCKOUT", auth.Lockout(max_failures=2, seconds=600))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    for _ in range(2):
        at.text_input(key="login_password").input("wrong password")
        at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password. Too many failed attempts: locked for 10 min."]
    at.text_input(key="login_password").input("correct horse")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Too many failed attempts: try again in 10 min."]
    assert "Depth up-scale" not in _texts(at)


def test_a_job_process_gets_no_login_secret(monkeypatch):
    """The worker's environment holds the login's hash (a plaintext DUS_PASSWORD becomes one at start); a job runs
    code that is not the dashboard's (a trainer, a model's remote code), and inherited it. Its environment, read from
    /proc, no longer holds either variable; the rest of the worker's environment is still passed on."""
    from backend import runner
    from tests.test_review_arena_jobs import _job

    monkeypatch.setenv(auth.HASH_ENV, auth.hash_password("correct horse"))
    monkeypatch.setenv(auth.PASSWORD_ENV, "correct horse")
    monkeypatch.setenv("DUS_SOMETHING_ELSE", "kept")
    r, w = os.pipe()  # the worker's stdin, as a terminal would be (the test run's own may be /dev/null already)
    saved = os.dup(0)
    os.dup2(r, 0)
    try:
        proc = runner.start_child(_job("eval", "running", {"kind": "eval", "models": ["nothing"]}))
    finally:
        os.dup2(saved, 0)
        for fd in (r, w, saved):
            os.close(fd)
    try:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        stdin = os.readlink(f"/proc/{proc.pid}/fd/0")  # the worker's terminal was handed on
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    names_seen = {e.split(b"=", 1)[0].decode() for e in environ if e}
    assert "DUS_SOMETHING_ELSE" in names_seen and "DUS_WORKSPACE" in names_seen
    assert not {auth.HASH_ENV, auth.PASSWORD_ENV} & names_seen
    assert stdin == "/dev/null"
