"""Fixtures for bundle tests: the shipped vision8 bundle and its adapters, loaded once."""

import pytest

from merging_core.bundles import load_bundle


@pytest.fixture(scope="session")
def bundle():
    return load_bundle("vision8")


@pytest.fixture(scope="session")
def adapters(bundle):
    return bundle.adapter_set()
