"""Fixtures for the geometry tests (helpers live in geometry_helpers.py)."""

from __future__ import annotations

import pytest
from geometry_helpers import random_factors


@pytest.fixture
def small_factors():
    """Three rank-3 tasks on a 24 × 18 module with a shared B component, float64."""
    return random_factors(0, 24, 18, [3, 3, 3])
