"""The CPU memory bound (docs/benchmarks.md, "Peak memory of CPU training"): the Beauty experiments that
hold the most per beam stay under 4 GiB peak RSS for a training step and a validation of 256 users
(bench/bench_memory.py, real Beauty data). Before the fixes TIGER peaked at 7.56 GiB (3,000 users) and
the flattened decoder at 3.98-4.02 GiB (512 users)."""

import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("experiment", ["tiger_beauty", "flat_beauty_rq128"])
def test_peak_rss_of_a_step_and_a_validation_stays_under_the_bound(experiment, data_root, tmp_path):
    from bench_memory import BOUND, measure

    row = measure(experiment, tmp_path, Namespace(steps=1, val_users=256))
    assert row["peak_rss_bytes"] <= BOUND, row
