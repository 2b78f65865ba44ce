"""LoRA Merge Lab: the Streamlit entry point (router only).

Run with ``streamlit run app.py``; the server binds to 127.0.0.1 (see .streamlit/config.toml).
"""

import streamlit as st

from app_support.state import init_state
from merging_core import runtime

runtime.configure()
st.set_page_config(page_title="LoRA Merge Lab", page_icon=":material/merge:", layout="wide")
init_state()

PAGES = {
    "Adapters": [
        st.Page("pages/adapters.py", title="Adapters", icon=":material/folder_open:", default=True),
    ],
    "Analyse": [
        st.Page("pages/geometry.py", title="Geometry", icon=":material/scatter_plot:"),
        st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/tune:"),
    ],
    "Merge": [
        st.Page("pages/merge.py", title="Merge", icon=":material/merge:"),
        st.Page("pages/tradeoff.py", title="Trade-off", icon=":material/show_chart:"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
    ],
}

st.navigation(PAGES).run()
