"""Shared fixtures. Real data comes from ../shared/data (or $DISTREC_DATA)."""

import os
from pathlib import Path

import pytest

from distrec.dist.ray_env import apply_local_env

apply_local_env()  # before any test module imports Ray (Ray reads these once per process)

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
