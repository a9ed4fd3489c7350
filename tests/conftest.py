"""Shared fixtures. Real data comes from ../shared/data (or $DISTREC_DATA)."""

import os
from pathlib import Path

import pytest

from distrec.parallel.ray_env import apply_local_env

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
    from distrec.parallel.ray_env import init_ray

    ray = init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_sid_catalog(tmp_path_factory):
    """make(name, items, users): a generated catalog (prepare stage) in a fresh directory, with an
    OPQ-like SID table `sids_long` (8 digits x 16, one size for all digits, as ACERec needs) and an
    RQ-like `sids_rq` (3 x 16 + de-duplication digit, for IntRR and TIGER)."""
    import numpy as np

    from distrec.config import compose
    from distrec.stages.prepare import run
    from distrec.tokenize.sid_table import SIDTable, add_dedup_digit

    def make(name: str, items: int, users: int) -> Path:
        root = tmp_path_factory.mktemp(name)
        run(compose(["stage=prepare", "data=synthetic", f"data.synthetic.num_items={items}",
                     f"data.synthetic.num_users={users}", f"paths.root={root}", "progress=false"]))
        rng = np.random.default_rng(0)
        ids = np.arange(1, items + 1)
        SIDTable.from_codes(ids, rng.integers(0, 16, (items, 8)), [16] * 8).save(root / "sids_long")
        codes, extra = add_dedup_digit(rng.integers(0, 16, (items, 3)))
        SIDTable.from_codes(ids, codes, [16, 16, 16, extra]).save(root / "sids_rq")
        return root

    return make
