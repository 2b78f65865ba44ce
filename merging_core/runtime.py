"""Process-wide settings for the entry points (the app server and the CLI), applied once.

Library functions never call this: only ``app.py`` and ``merge-lab`` do, before heavy work.
Streamlit serves every session from its own thread. Torch's default intra-op pool (one thread
per core) then oversubscribes the CPU as soon as two things run at once, and the small
matrix products behind interactive charts slow down by orders of magnitude (measured on a
2-core machine: 1.8 s with the default pool vs 0.03 s with one thread for the same chart).
Half the cores keeps large CPU merges parallel and small ones responsive;
``MERGE_LAB_TORCH_THREADS`` overrides it. The CLI has the same problem whenever anything else
runs beside it (measured on vision8 with a busy second core: TSV-M 18.9 s with two threads,
0.15 s with one).
"""

from __future__ import annotations

import os

THREADS_ENV = "MERGE_LAB_TORCH_THREADS"


def torch_threads(cpu_count: int | None, override: str | None) -> int:
    """Intra-op threads for an entry point: ``override`` if given, else half the cores (>= 1).

    Raises:
        ValueError: ``override`` is not a positive whole number.
    """
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive whole number, got {override!r}")
        return int(override)
    return max(1, (cpu_count or 2) // 2)


def configure() -> None:
    """Offline hub and a bounded torch thread pool (call once, before any heavy import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(torch_threads(os.cpu_count(), os.environ.get(THREADS_ENV)))
