"""Geometry (placeholder until merging_core.geometry lands)."""

import streamlit as st

from app_support import state
from app_support.library import feature, needs

state.init_state()
st.title("Geometry")
if feature("geometry") is None:
    needs("geometry")
    st.stop()
st.info("Coming next.")
