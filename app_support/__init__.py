"""App-only helpers for the Streamlit views: state keys, cached wrappers, widget builders.

Nothing here does merge maths; it wires widgets to :mod:`merging_core` and caches the results.
"""
