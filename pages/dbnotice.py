"""What a page says while the database server it waits for restarts (storage/db.py on_unreachable calls it)."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx, in_cached_function


def database_wait_notice(where: str, seconds: float) -> None:
    """A database server restarting: the page's first query waits for it (up to DUS_DB_RETRY_SECONDS) and the page
    stood blank meanwhile, a title and the running icon; a toast says what it waits for. Not from inside a cached
    function (st.cache_data / cache_resource: Compare's scores): Streamlit records the toast with the cached value
    and every later hit of it failed to replay it (CacheReplayClosureError), the page broken until the entry went.
    `in_cached_function` is Streamlit's own flag for that (its caching module reads it); a test pins it. Nor from a
    thread that runs no page (the app's preloading): there is no page to show it on."""
    if get_script_run_ctx(suppress_warning=True) is not None and not in_cached_function.get():
        st.toast(f"The database at {where} does not answer; retrying for up to {seconds:.0f} s.",
                 icon=":material/hourglass_top:")
