"""A real `streamlit run app.py` on 127.0.0.1 and a headless Chromium driven by Playwright.

Skipped (with the reason) when Debian's chromium or the playwright package is missing.
Screenshots go to $SCREENSHOT_DIR (default: a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
MODULES = [f"blocks.{i}.attn.{p}" for i in range(3) for p in ("q", "v")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    return path


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory) -> Path:
    """Three small PEFT adapters written by the library's own saver (seeded)."""
    from merging_core.adapters import LoraModule
    from merging_core.io import save_adapter

    root = tmp_path_factory.mktemp("adapters")
    for t in range(3):
        gen = torch.Generator().manual_seed(t)
        modules = {
            m: LoraModule(B=torch.randn(32, 4, generator=gen), A=torch.randn(4, 32, generator=gen))
            for m in MODULES
        }
        save_adapter(root / f"task{t}", modules, base_model="tiny-test-model")
    return root


@pytest.fixture(scope="session")
def server(chromium_path) -> str:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def shots() -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="merge-lab-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(chromium_path, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        tab.goto(server, wait_until="networkidle")
        yield tab
        browser.close()


@pytest.fixture
def tabs(chromium_path, server):
    """Factory of tabs, each its own browser context (its own Streamlit session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )

        def open_tab(path: str = "", *, width: int = 1440, height: int = 900):
            tab = browser.new_context(viewport={"width": width, "height": height}).new_page()
            tab.set_default_timeout(120_000)
            tab.goto(f"{server}/{path}", wait_until="networkidle")
            return tab

        yield open_tab
        browser.close()
