"""Who may use the dashboard once other machines can reach it. Pure Python (no Streamlit, standard library only),
so run.sh can ask before anything is installed or started:

    python3 -m backend.auth check --address 0.0.0.0      # exit 2 with the reason when a login is missing

On loopback (127.0.0.0/8, ::1, localhost, a unix socket) nothing is asked. Bound to any other address — or with
DUS_REQUIRE_LOGIN=1 — the app needs one of:
  * a password: DUS_PASSWORD (hashed at start and removed from the environment) or DUS_PASSWORD_HASH (made by
    `python -m backend auth hash`; job processes get neither: runner.start_child); checked with scrypt and a constant-time
    compare, NFKC-normalised first (NIST SP 800-63B: 'é' typed as one or as two code points is one password); 5
    failures in a row lock that client (an IPv6 client: its /64) out for 5 minutes, however many it sends at once;
  * Streamlit's OpenID Connect login (`st.login`), configured in .streamlit/secrets.toml's [auth] section.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import importlib.util
import ipaddress
import math
import os
import secrets
import sys
import threading
import time
import tomllib
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, MutableMapping

PASSWORD_ENV = "DUS_PASSWORD"
HASH_ENV = "DUS_PASSWORD_HASH"
FORCE_ENV = "DUS_REQUIRE_LOGIN"  # ask for a login on loopback too (tests, a shared machine)
MIN_LENGTH = 8
MAX_FAILURES = 5
LOCK_SECONDS = 300
# scrypt (RFC 7914) at n=2**14, r=8: 16 MiB and ~0.15 s per check on a busy 2-core machine — nothing for one
# login, a lot for guessing.
_N, _R, _P = 2 ** 14, 8, 1
_MAXMEM = 2 ** 31 - 1  # what verify lets scrypt use; a hash asking more is refused when read, not at each login
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_ENV_LOCK = threading.Lock()
SECRETS_FILES = (Path.home() / ".streamlit" / "secrets.toml", Path(".streamlit") / "secrets.toml")  # Streamlit's


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _normal(password: str) -> str:
    """NFKC, as NIST SP 800-63B asks of verifiers: the same visible password from a keyboard that sends 'é' as e +
    combining accent (macOS, some IMEs) hashed differently from one that sends the single code point."""
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    """'scrypt$n$r$p$salt$digest' with a random 16-byte salt: what DUS_PASSWORD_HASH holds."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the password is too short: use at least {MIN_LENGTH} characters.")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(_normal(password).encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        algo, n, r, p, salt, digest = stored.strip().split("$")
        n, r, p = int(n), int(r), int(p)
        salt, digest = base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
        # bounds: a hand-edited hash must not make every login attempt eat gigabytes
        ok = algo == "scrypt" and 2 <= n <= 2 ** 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
        ok = ok and 128 * r * (n + p + 2) <= _MAXMEM  # OpenSSL's need: else every login raised 'memory limit exceeded'
    except (ValueError, AttributeError):
        ok = False
    if not ok or len(salt) < 8 or len(digest) < 16:
        raise ValueError(f"{HASH_ENV} is not a hash made by `python -m backend auth hash`.")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from. A hash made before passwords were normalised holds the
    password as typed then: a password that normalisation changes is also tried as typed (a second scrypt only for
    such input)."""
    n, r, p, salt, digest = _parse(stored)

    def same(text: str) -> bool:
        got = hashlib.scrypt(text.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=_MAXMEM)
        return hmac.compare_digest(got, digest)  # constant time: the comparison leaks nothing about the digest

    normal = _normal(password)
    return same(normal) or (normal != password and same(password))


def is_loopback(address: str | None) -> bool:
    """True only for addresses no other machine reaches. An empty address makes Streamlit listen on every
    interface; a host name other than localhost may resolve anywhere: both count as exposed."""
    if not address:
        return False
    a = address.strip().lower()
    if a.startswith("unix://"):  # Streamlit on a socket file: reachable only through the file system
        return True
    a = a.strip("[]")
    if a in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:
        return False


def login_required(address: str | None, env: MutableMapping[str, str] = os.environ) -> bool:
    return not is_loopback(address) or env.get(FORCE_ENV, "").strip() not in ("", "0")


def password_hash(env: MutableMapping[str, str] = os.environ) -> str | None:
    """The configured hash. A plaintext DUS_PASSWORD is hashed once and removed from `env` (children started
    afterwards — the worker, its jobs — never see it); its hash takes its place unless one was given."""
    with _ENV_LOCK:  # two first visits at once: the second waits for the hash instead of seeing neither variable
        plain = env.pop(PASSWORD_ENV, None)
        if plain is not None and not env.get(HASH_ENV):
            env[HASH_ENV] = hash_password(plain)
        return env.get(HASH_ENV) or None


def oidc_in_files(files: Iterable[Path] = SECRETS_FILES) -> bool:
    """Whether a Streamlit secrets file has an [auth] section (what run.sh can see before Streamlit starts)."""
    for f in files:
        try:
            if "auth" in tomllib.loads(Path(f).read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def method(env: MutableMapping[str, str] = os.environ, oidc: bool = False) -> str | None:
    """'password' when one is configured (it wins: an explicit variable is the more deliberate choice), else
    'oidc' when secrets.toml has [auth], else None."""
    if env.get(PASSWORD_ENV) is not None or env.get(HASH_ENV):
        return "password"
    return "oidc" if oidc else None


def problem(address: str | None, env: MutableMapping[str, str] = os.environ, oidc: bool = False) -> str | None:
    """Why the app must not serve at `address`, or None. Hashes (and removes) a plaintext DUS_PASSWORD."""
    if not login_required(address, env):
        return None
    where = (f"on {address}, which other machines can reach," if not is_loopback(address) else
             f"with {FORCE_ENV}=1") if address else "on every interface (server.address is empty)"
    try:
        stored = password_hash(env)  # first: it may turn DUS_PASSWORD into DUS_PASSWORD_HASH
        if stored:
            _parse(stored)
            return None
    except ValueError as exc:
        return f"DUS Studio is served {where} but its password is unusable: {exc}"
    if method(env, oidc) == "oidc":
        if importlib.util.find_spec("authlib") is None:
            return (f"DUS Studio is served {where} with Streamlit's OIDC login configured in secrets.toml [auth], "
                    "but Authlib is not installed: `pip install 'Authlib>=1.3.2'`.")
        return None
    return (f"DUS Studio is served {where} and no login is configured, so anyone who reaches it could see and "
            f"start every job, model and file. Set {PASSWORD_ENV} (or {HASH_ENV}, made by `python -m backend auth "
            "hash`), or configure Streamlit's OIDC login in .streamlit/secrets.toml [auth] (README: 'Exposing the "
            "dashboard'); or serve on 127.0.0.1.")


def client_key(client: str) -> str:
    """Whom `client` (the page's IP address, or a name such as 'global') counts as for the lockout: an IPv6 address
    by its /64, the block one host or home network holds (RFC 4291 interface ids; privacy addresses change within
    it on their own), so a guesser cannot take 5 tries from each of its 2**64 addresses; an IPv4-mapped address
    ('::ffff:1.2.3.4', a dual-stack socket) as the IPv4 address. Anything that is no address stays as it is."""
    try:
        ip = ipaddress.ip_address(client.strip().strip("[]").split("%", 1)[0])  # no zone id ('fe80::1%eth0')
    except ValueError:
        return client
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip) if ip.version == 4 else str(ipaddress.ip_network(f"{ip}/64", strict=False))


class Lockout:
    """Failed logins per client. After `max_failures` in a row the client is refused for `seconds`, even with the
    right password, so guessing costs time. One per server process; sessions are threads, hence the lock."""

    def __init__(self, max_failures: int = MAX_FAILURES, seconds: float = LOCK_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.max_failures, self.seconds, self.clock = max_failures, seconds, clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # client -> (failures in a row, locked until)

    def locked_for(self, client: str) -> float:
        with self._lock:
            _, until = self._state.get(client, (0, 0.0))
            return max(0.0, until - self.clock())

    def reserve(self, client: str) -> float:
        """Count an attempt as failed before its password is checked (success takes it back): 0 when it may be
        checked, else the seconds the client stays locked. Counted after the check, 20 guesses sent at once from 20
        sessions were all checked (each saw no failure yet: scrypt runs outside the GIL) against a limit of 5."""
        with self._lock:
            now = self.clock()
            _, until = self._state.get(client, (0, 0.0))
            if until > now:
                return until - now
            if len(self._state) > 10_000:  # many clients: forget those neither locked nor recently failing
                self._state = {k: v for k, v in self._state.items() if v[1] > now}
            count, until = self._state.get(client, (0, 0.0))
            count = 0 if until and until <= now else count  # a lock that ran out starts a fresh count
            count += 1
            self._state[client] = (0, now + self.seconds) if count >= self.max_failures else (count, 0.0)
            return 0.0

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)


LOCKOUT = Lockout()


def attempt(password: str, stored: str, client: str, lockout: Lockout | None = None) -> tuple[bool, str]:
    """(allowed, message for the form). A locked client's password is not even checked."""
    lockout = lockout or LOCKOUT  # looked up at call time: the process-wide one unless a test passes its own
    client = client_key(client)
    wait = lockout.reserve(client)  # counted as a failure now, so attempts sent at once cannot pass the limit
    if wait > 0:
        return False, f"Too many failed attempts: try again in {math.ceil(wait / 60)} min."
    if verify_password(password, stored):
        lockout.succeeded(client)
        return True, ""
    wait = lockout.locked_for(client)
    if wait > 0:
        return False, f"Wrong password. Too many failed attempts: locked for {math.ceil(wait / 60)} min."
    return False, "Wrong password."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m backend.auth", description="run.sh's check before it starts")
    p.add_argument("action", choices=["check"])
    p.add_argument("--address", default="127.0.0.1", help="the address the dashboard will listen on")
    a = p.parse_args(argv)
    env = dict(os.environ)  # a copy: the check must not consume DUS_PASSWORD, the app still needs it
    why = problem(a.address, env, oidc=oidc_in_files())
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
