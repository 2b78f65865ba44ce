"""Adapters: the sample bundle, loading your own adapters, the table, an identity check."""

import streamlit as st

from app_support import state
from app_support.bundle_view import bundle_panel
from app_support.loading import adapter_rows, load_from_path, load_from_uploads
from app_support.merging import identity_error
from app_support.workset import (
    add_user_adapters,
    all_adapters,
    bundle_adapters,
    select,
    selected_names,
    working_set,
)

SELECT_BOX = "adapters.selected"

IDENTITY_TOLERANCE = 1e-5

state.init_state()
st.title("Adapters")
st.caption(
    "LoRA adapters to analyse and merge. The app opens on the vision8 sample bundle; pick nli6 "
    "(six NLI tasks on a real pretrained MiniLM) or your own bundle folder, or add your own "
    "PEFT adapters (adapter_config.json + adapter_model.safetensors) from a folder or by upload."
)


def remember(adapters, errors) -> None:
    errors = errors + add_user_adapters(adapters)
    st.session_state[state.LOAD_MESSAGES] = errors
    if adapters and len(errors) < len(adapters) + len(errors):
        st.toast(f"Loaded {len(adapters) - len(errors)} adapter(s)")


def load_panel() -> None:
    by_path, by_upload = st.tabs(["From a folder on this machine", "Upload files"])
    with by_path, st.form("load_path", border=False):
        path = st.text_input(
            "Adapter folder, or a folder of adapter folders",
            key="adapters.path",
            placeholder="e.g. ~/adapters/my_lora",
        )
        if st.form_submit_button("Load from folder") and path.strip():
            remember(*load_from_path(path))
    with by_upload:
        kind = st.radio(
            "Upload",
            ["Files", "A folder"],
            horizontal=True,
            key="adapters.upload_kind",
            help="Files: adapter_config.json + adapter_model.safetensors of one "
            "adapter. A folder: one adapter folder, or a folder of them.",
        )
        files = st.file_uploader(
            "Adapter files" if kind == "Files" else "Adapter folder(s)",
            type=None,  # every file reaches the loader, which explains what it refuses and why
            accept_multiple_files=True if kind == "Files" else "directory",
            key=f"adapters.upload.{kind}",
            help="PEFT adapters: adapter_config.json and adapter_model.safetensors. Pickle files "
            "(.bin, .pt) are never opened.",
        )
        name = st.text_input("Name for loose files", value="uploaded", key="adapters.upload_name")
        if st.button("Load uploaded files", disabled=not files, key="adapters.upload_load"):
            remember(*load_from_uploads(files, name))
    for message in st.session_state[state.LOAD_MESSAGES]:
        st.error(message)


def table_panel() -> None:
    adapters = all_adapters()
    if not adapters:
        st.info("No adapters loaded yet. Load a folder or upload files above.")
        return
    bundle_names = [a.name for a in bundle_adapters()]
    st.dataframe(adapter_rows(adapters, bundle_names), hide_index=True, width="stretch")
    names = [a.name for a in adapters]
    # The box shows exactly the working set: it is rewritten whenever the set changed elsewhere
    # (a load selects the new adapters, a trade-off point narrows the set).
    if st.session_state.get(SELECT_BOX) != selected_names():
        st.session_state[SELECT_BOX] = selected_names()
    st.multiselect("Adapters to analyse and merge (in task order)", names, key=SELECT_BOX,
                   on_change=_picked)  # fmt: skip
    if st.session_state[state.USER_ADAPTERS] and st.button("Remove my loaded adapters"):
        st.session_state[state.USER_ADAPTERS] = []
        select(None)
        st.rerun()


def _picked() -> None:
    select(st.session_state[SELECT_BOX])
    st.session_state[state.PREVIOUS_SELECTION] = None


def set_panel() -> None:
    adapter_set, error = working_set()
    if error:
        st.error(
            f"These adapters cannot be merged together: {error}. Pick a compatible subset in "
            "the list above, or turn the sample bundle off."
        )
    if adapter_set is None:
        if all_adapters() and not error:
            st.warning("No adapter is selected: pick some in the list above.")
        return
    st.subheader("Working set")
    cols = st.columns(3)
    cols[0].metric("adapters", len(adapter_set))
    cols[1].metric("mergeable modules", len(adapter_set.modules))
    cols[2].metric("notes", len(adapter_set.issues))
    for issue in adapter_set.issues:
        st.warning(issue)
    identity_panel(adapter_set)


def identity_panel(adapter_set) -> None:
    st.subheader("Identity check")
    st.caption(
        "Merging one adapter alone with Task Arithmetic at scaling 1 must give it back exactly."
    )
    name = st.selectbox("Adapter", adapter_set.names, key="adapters.identity")
    if st.button("Run identity check", key="adapters.identity_run"):
        try:
            error = identity_error(adapter_set, name)
        except (ValueError, KeyError, TypeError) as err:
            st.error(f"Identity check failed to run: {err}")
            return
        verdict = "passes" if error <= IDENTITY_TOLERANCE else "FAILS"
        st.metric(
            f"max |ΔW error| for {name}", f"{error:.2e}", help=f"tolerance {IDENTITY_TOLERANCE}"
        )
        show = st.success if error <= IDENTITY_TOLERANCE else st.error
        show(f"The identity check {verdict} (tolerance {IDENTITY_TOLERANCE:g}).")


bundle_panel()
st.subheader("Load adapters")
load_panel()
st.subheader("Loaded adapters")
table_panel()
set_panel()
