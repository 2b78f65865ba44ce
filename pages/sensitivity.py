"""Sensitivity (placeholder until merging_core.sensitivity lands)."""

import streamlit as st

from app_support import state
from app_support.library import feature, needs

state.init_state()
st.title("Sensitivity")
if feature("sensitivity") is None:
    needs("sensitivity")
    st.stop()
st.info("Coming next.")
