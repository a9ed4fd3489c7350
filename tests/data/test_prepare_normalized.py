"""`distrec prepare` on the normalised layout of real datasets: counts, schema, API."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from distrec.artifacts import read_manifest, shard_paths
from distrec.config import compose
from distrec.data.dataset import load_prepared
from distrec.data.prepare import prepare


def run_prepare(tmp_path, *overrides):
    cfg = compose(["stage=prepare", f"paths.root={tmp_path}", "progress=false", *overrides])
    return load_prepared(prepare(cfg))


@pytest.fixture(scope="module")
def beauty(tmp_path_factory, data_root):
    return run_prepare(tmp_path_factory.mktemp("beauty"), "data=beauty")


def test_beauty_published_counts(beauty):
    assert (beauty.num_users, beauty.num_items, beauty.stats["interactions"]) == (22_363, 12_101, 198_502)
    assert beauty.stats["sequence_length"]["min"] == 5


def test_beauty_artifact_schema(beauty):
    seq = beauty.sequences
    assert seq.schema.names == ["user_id", "raw_user_id", "items", "valid_pos", "test_pos"]
    assert str(seq.schema.field("items").type) == "list<element: int64>"
    assert len(shard_paths(beauty.directory / "sequences")) == 4  # data.num_shards
    assert beauty.items.column("item_id").to_pylist() == list(range(1, 12_102))
    assert beauty.fields == {"title": "text", "attributes": "multi_categorical"}
    manifest = read_manifest(beauty.directory)
    assert manifest["counts"]["interactions"] == 198_502
    assert any(p.endswith("sequences.jsonl.gz") for p in manifest["inputs"])
    users = pq.read_table(beauty.directory / "maps" / "users").to_pylist()
    assert users[0] == {"user_id": 1, "source_id": "1", "raw_user_id": "A1YJEY40YUW4SE"}


def test_beauty_ids_and_leave_one_out(beauty):
    first = beauty.sequences.slice(0, 1).to_pylist()[0]
    assert first["items"] == [1, 2, 3, 4, 5]  # ids of the normalised file are kept
    assert (first["valid_pos"], first["test_pos"]) == (3, 4)
    assert beauty.items.slice(0, 1).to_pylist()[0]["raw_id"] == "B004756YJA"


def test_item_counts_exclude_valid_and_test_targets(beauty):
    counts = beauty.item_counts()
    assert counts.shape == (12_102,) and counts[0] == 0
    assert counts.sum() == 198_502 - 2 * 22_363
    assert np.array_equal(beauty.train_item_ids(), np.flatnonzero(counts))
    users, histories, targets = beauty.eval_examples("test")
    assert len(users) == 22_363 and list(histories[0]) == [1, 2, 3, 4] and targets[0] == 5
