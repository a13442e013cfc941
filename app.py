"""DUS Studio: grow a language model by stacking its own layers (SOLAR's depth up-scaling), then compare.

    streamlit run app.py      # the README's run command also starts the job worker

Navigation only: each page lives in pages/ and calls backend/.
"""

import streamlit as st

from storage import db

st.set_page_config(page_title="DUS Studio", page_icon="🧱", layout="wide")
db.init_db()

pages = {
    "Build": [
        st.Page("pages/build.py", title="Depth up-scale", icon="🧱", default=True),
        st.Page("pages/models.py", title="Models & chat", icon="📚"),
    ],
    "Run": [
        st.Page("pages/jobs.py", title="Jobs", icon="⚙️"),
    ],
}
st.navigation(pages).run()
