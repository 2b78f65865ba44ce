"""Trade-off (placeholder until merging_core.tradeoff lands)."""

import streamlit as st

from app_support import state
from app_support.library import feature, needs

state.init_state()
st.title("Trade-off")
if feature("tradeoff") is None:
    needs("tradeoff")
    st.stop()
st.info("Coming next.")
