"""The login gate app.py runs before its navigation. The decisions (is this address exposed, is a login
configured, is the password right, is this client locked out) live in backend/auth.py; this lays out the form.

Until the gate passes, navigation holds only the sign-in page (hidden), so no page of the app runs; a first visit
straight to a page URL is sent to app.py by pages.common.via_app, and so through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from backend import auth

_AUTHED = "_dus_authenticated"


def _oidc_configured() -> bool:
    """Whether Streamlit's secrets hold an [auth] section. No secrets file at all is no OIDC login; one that does
    not parse (or cannot be read) stops the page with where and why: read as "no login configured", the page said
    to configure in secrets.toml the login that was there."""
    try:
        return "auth" in st.secrets
    except Exception as exc:  # noqa: BLE001 - a gate: whatever stops the secrets being read keeps the page locked
        files = [str(f) for f in st.get_option("secrets.files") or []]
        if isinstance(exc, FileNotFoundError) and not any(Path(f).exists() for f in files):
            return False  # StreamlitSecretNotFoundError "No secrets found": none of the files exists
        said = " ".join(str(exc).split())  # a TOML error: "Error parsing secrets file at PATH: why (at line L…)"
        st.error(f"DUS Studio stays locked: Streamlit's secrets cannot be read, so whether they configure a login "
                 f"cannot be told. {said.rstrip('.')}. Fix the file (or remove it if no OIDC login is wanted), then "
                 "reload the page.")
        st.stop()


def _client() -> str:
    # Per client IP where Streamlit knows it; on localhost (None) and behind a proxy all clients share one count.
    ip = st.context.ip_address
    return ip if isinstance(ip, str) and ip else "global"


def _blocked(render) -> None:
    # The form under every page's URL too: a first visit to /monitor shows it (not Streamlit's "Page not found"
    # over it), and once signed in the same URL is the real page (Streamlit finds pages by URL path).
    stems = sorted(f.stem for f in Path(__file__).parent.glob("*.py") if not f.stem.startswith("_"))
    pages = [st.Page(render, title="Sign in", icon=":material/lock:", url_path="sign-in", default=True)]
    pages += [st.Page(render, title="Sign in", icon=":material/lock:", url_path=stem) for stem in stems]
    st.navigation(pages, position="hidden").run()
    st.stop()


def _password_form() -> None:
    st.title("DUS Studio")
    with st.form("login"):
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        ok, message = auth.attempt(password, auth.password_hash() or "", _client())
        if ok:
            st.session_state[_AUTHED] = True
            st.rerun()
        st.error(message)


def _oidc_form() -> None:
    st.title("DUS Studio")
    section = st.secrets["auth"]
    # [auth] with client_id is the default provider; [auth.NAME] sub-sections are named providers.
    providers = [None] if "client_id" in section else [k for k, v in section.items() if isinstance(v, Mapping)]
    for provider in providers or [None]:
        if st.button(f"Log in with {provider}" if provider else "Log in", key=f"login_{provider}", type="primary"):
            st.login(provider)


def gate() -> None:
    """Return when the visitor may use the app; otherwise show why not, or the login form, and stop the run."""
    address = st.get_option("server.address")
    if not auth.login_required(address):
        return
    oidc = _oidc_configured()
    problem = auth.problem(address, oidc=oidc)
    if problem:
        st.error(problem)
        st.stop()
    if auth.method(oidc=oidc) == "password":
        if not st.session_state.get(_AUTHED):
            _blocked(_password_form)
        if st.sidebar.button("Sign out", key="logout", icon=":material/logout:"):
            st.session_state.clear()
            st.rerun()
    else:
        if st.user.get("is_logged_in") is not True:  # absent, not only False, when Streamlit sees no [auth]
            _blocked(_oidc_form)
        if st.sidebar.button("Log out", key="logout", icon=":material/logout:"):
            st.logout()
