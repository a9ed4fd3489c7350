"""Fixtures of the data tests."""

import pytest

from data_helpers import run_prepare


@pytest.fixture
def prepare_in(tmp_path):
    """prepare_in(*overrides) -> PreparedData, written under a fresh tmp directory."""
    counter = iter(range(1000))
    return lambda *overrides: run_prepare(tmp_path / f"run{next(counter)}", *overrides)
