"""DUS Studio: grow a language model by stacking its own layers (SOLAR's depth up-scaling), then compare.

    streamlit run app.py      # the README's run command also starts the job worker

Navigation only: each page lives in pages/ and calls backend/.
"""

import threading
from pathlib import Path

import streamlit as st

from backend import analysis
from pages.dbnotice import database_wait_notice
from pages.login import gate
from storage import db

st.set_page_config(page_title="DUS Studio", page_icon=":material/layers:", layout="wide")


@st.cache_resource(show_spinner=False)
def _preload() -> threading.Thread:
    """Once per server process, in the background: the compare page's regression libraries (~1.3 s to import).
    Not torch and transformers for `datasets` (data.datasets_ready, on a data file's first read): imported in this
    thread while a page imported them too, the Monitor page went blank (a browser test)."""
    thread = threading.Thread(target=analysis.preload, name="dus-preload", daemon=True)
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
