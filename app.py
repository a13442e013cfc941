"""DUS Studio: grow a language model by stacking its own layers (SOLAR's depth up-scaling), then compare.

    streamlit run app.py      # the README's run command also starts the job worker

Navigation only: each page lives in pages/ and calls backend/.
"""

import threading
from pathlib import Path

import streamlit as st

from backend import analysis, data
from pages.dbnotice import database_wait_notice
from pages.login import gate
from storage import db

st.set_page_config(page_title="DUS Studio", page_icon=":material/layers:", layout="wide")


def _preload_libraries() -> None:
    """torch and transformers whole, as `datasets` needs them before it reads a data file (data.datasets_ready,
    ~3-5 s on a 2-core CPU: the first upload's preview waited for them), then the compare page's regression
    libraries (~1.3 s). A session that needs them sooner waits for this import (importlib's module lock), never
    sees one half made."""
    data.datasets_ready()
    analysis.preload()


@st.cache_resource(show_spinner=False)
def _preload() -> threading.Thread:
    """Once per server process, in the background: _preload_libraries."""
    thread = threading.Thread(target=_preload_libraries, name="dus-preload", daemon=True)
    thread.start()
    return thread


def sidebar_links(where, pages: dict[str, list]) -> None:
    """The menu, drawn here rather than by Streamlit: with `client.showSidebarNavigation = false` (.streamlit/config.toml)
    Streamlit never draws its own, so the very first visitor of a fresh server no longer sees Streamlit's listing of
    every file in pages/ (common, figures, login, ...) while its first script run still treats pages/ as v1 pages."""
    with where:
        for section, group in pages.items():
            st.caption(section)
            for page in group:
                st.page_link(page)


_preload()
menu = st.sidebar.container()  # the menu comes first in the sidebar, above the login's "Sign out"
gate()  # before anything else: a login whenever the dashboard is reachable from other machines
db.on_unreachable(database_wait_notice)  # a page waiting for a restarting server says so
try:
    db.init_db()
except db.DatabaseUnavailable as exc:  # a wrong DATABASE_URL: say which server, not a traceback
    st.error(str(exc))
    st.stop()

pages = {
    "Build": [
        st.Page("pages/build.py", title="Depth up-scale", icon=":material/layers:", default=True),
        st.Page("pages/models.py", title="Models & chat", icon=":material/library_books:"),
    ],
    "Data": [
        st.Page("pages/synth.py", title="Synthetic math", icon=":material/calculate:"),
    ],
    "Train": [
        st.Page("pages/train.py", title="Train", icon=":material/fitness_center:"),
        st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/list_alt:"),
        st.Page("pages/recipe.py", title="Recipe", icon=":material/science:"),
    ],
    "Compare": [
        st.Page("pages/compare.py", title="Merge & compare", icon=":material/balance:"),
        st.Page("pages/arena.py", title="Side-by-side chat", icon=":material/forum:"),
    ],
}
current = st.navigation(pages, position="hidden")
sidebar_links(menu, pages)
st.session_state["_via_app"] = True
# A first visit straight to /monitor (say) runs Streamlit's legacy pages/ mode, which skips this file; the page
# then sends the visitor here (pages.common.via_app) and we forward them to the page they asked for.
intended = st.session_state.pop("_intended_page", None)
if intended:
    for page in (p for group in pages.values() for p in group):
        if page.url_path == Path(intended).stem:
            st.switch_page(page)
current.run()
