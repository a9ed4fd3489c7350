"""Fixtures: a prepared-style data directory of real Amazon Beauty (items + sequences parquet).

Built straight from the normalised jsonl.gz files with the artifact schema of docs/architecture.md,
so these tests do not depend on the `prepare` stage.
"""

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from distrec.artifacts import write_table
from distrec.config import compose


def read_jsonl(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def beauty_data(data_root, tmp_path_factory):
    """runs/.../data with items/ (item_id, raw_id, title, attr_ids) and sequences/ (leave-one-out)."""
    src = data_root / "amazon-beauty"
    items = read_jsonl(src / "items.jsonl.gz")
    seqs = read_jsonl(src / "sequences.jsonl.gz")
    out = tmp_path_factory.mktemp("beauty") / "data"
    write_table(pa.table({
        "item_id": pa.array([r["item_id"] for r in items], pa.int64()),
        "raw_id": [r["raw_id"] for r in items],
        "title": [r["title"] for r in items],
        "attr_ids": pa.array([r["attr_ids"] for r in items], pa.list_(pa.int64())),
    }), out / "items", 3)
    lengths = np.array([len(s["items"]) for s in seqs])
    write_table(pa.table({
        "user_id": pa.array([s["user_id"] for s in seqs], pa.int64()),
        "items": pa.array([s["items"] for s in seqs], pa.list_(pa.int64())),
        "valid_pos": pa.array(lengths - 2, pa.int32()),
        "test_pos": pa.array(lengths - 1, pa.int32()),
    }), out / "sequences", 2)
    return out


def make_cfg(root, *overrides):
    return compose([f"paths.root={root}", "progress=false", *overrides])
