"""Shared fixtures. Real data comes from ../shared/data (or $DISTREC_DATA)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTREC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.exists():
        pytest.skip(f"real datasets not found at {DATA} (set DISTREC_DATA)")
    return DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster on 127.0.0.1 for the whole session (2 CPUs)."""
    from distrec.dist.ray_env import init_ray

    ray = init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
