"""Shared fixtures. Real data comes from ../shared/data (or $DISTREC_DATA)."""

import os
from pathlib import Path

import pytest

from distrec.dist.ray_env import apply_local_env

apply_local_env()  # before any test module imports Ray (Ray reads these once per process)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTREC_DATA", REPO.parent / "shared" / "data"))


NO_DATA = "real datasets not found"


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.exists():
        pytest.skip(f"{NO_DATA} at {DATA} (set DISTREC_DATA)")
    return DATA


def pytest_terminal_summary(terminalreporter):
    """One line saying how many tests were skipped for want of the real datasets, and how to run them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NO_DATA in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} real-data tests skipped: no datasets at {DATA}. To run them, point DISTREC_DATA at a "
            "directory of normalised datasets (docs/data.md), e.g. DISTREC_DATA=/data/recsys pytest", yellow=True)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster on 127.0.0.1 for the whole session (2 CPUs)."""
    from distrec.dist.ray_env import init_ray

    ray = init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
