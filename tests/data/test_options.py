"""prepare options: k-core, max_history, dense ids and maps, leave-one-out and temporal splits."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_helpers import normalised, sequences


def test_k_core_is_iterative(prepare_in, tmp_path):
    # item 9 has 2 interactions, but user 3 (one of them) has only 2 items: dropping user 3 leaves
    # item 9 with 1, which must then go too (a second round), which shortens user 4 below 3.
    rows = [{"user_id": 1, "items": [1, 2, 3]}, {"user_id": 2, "items": [1, 2, 3]},
            {"user_id": 3, "items": [9, 1]}, {"user_id": 4, "items": [9, 2, 3]}]
    data = prepare_in(*normalised(tmp_path, rows), "data.min_user_interactions=3", "data.min_item_interactions=2")
    assert sequences(data) == [[1, 2, 3], [1, 2, 3]]
    assert data.stats["k_core_rounds"] >= 2
    assert data.stats["filtered"]["k_core"] == 5


def test_max_history_keeps_the_latest(prepare_in, tmp_path):
    rows = [{"user_id": 1, "items": [1, 2, 3, 4, 5], "timestamps": [1, 2, 3, 4, 5]}]
    data = prepare_in(*normalised(tmp_path, rows), "data.max_history=3")
    assert sequences(data) == [[1, 2, 3]]  # ids re-densified: raw items 3, 4, 5
    assert pq.read_table(data.directory / "maps" / "items").column("source_id").to_pylist() == ["3", "4", "5"]
    assert data.sequences.column("timestamps")[0].as_py() == [3, 4, 5]
    assert data.stats["filtered"]["max_history"] == 2


def test_chronological_order_is_stable(prepare_in, tmp_path):
    rows = [{"user_id": 7, "items": [5, 6, 7, 8], "timestamps": [30, 10, 10, 20]}]
    data = prepare_in(*normalised(tmp_path, rows))
    items = pq.read_table(data.directory / "maps" / "items").column("source_id").to_pylist()
    assert [items[i - 1] for i in sequences(data)[0]] == ["6", "7", "8", "5"]


def test_string_ids_get_dense_ids_and_maps(prepare_in, tmp_path):
    rows = [{"user_id": "bob", "user_raw": "B-1", "items": ["z", "a", "m"]}, {"user_id": "al", "items": ["m", "z"]}]
    data = prepare_in(*normalised(tmp_path, rows))
    users = pq.read_table(data.directory / "maps" / "users").to_pydict()
    assert users == {"user_id": [1, 2], "source_id": ["al", "bob"], "raw_user_id": ["al", "B-1"]}
    assert data.items.column("raw_id").to_pylist() == ["a", "m", "z"]
    assert sequences(data) == [[2, 3], [3, 1, 2]]
    assert data.sequences.column("valid_pos").to_pylist() == [-1, 1]
    assert data.sequences.column("test_pos").to_pylist() == [-1, 2]


def test_temporal_split_uses_global_cutoffs(prepare_in, tmp_path):
    rows = [
        {"user_id": 1, "items": [1, 2, 3, 4, 5], "timestamps": [0, 10, 85, 92, 95]},  # valid 85, test 92, 95 cut
        {"user_id": 2, "items": [1, 2, 3], "timestamps": [5, 20, 50]},  # all training
        {"user_id": 3, "items": [3, 4], "timestamps": [10, 100]},  # test but no validation-period item: no targets
        {"user_id": 4, "items": [2, 5], "timestamps": [40, 82]},  # validation only
    ]
    data = prepare_in(*normalised(tmp_path, rows), "data.split=temporal",
                      "data.temporal_valid_frac=0.2", "data.temporal_test_frac=0.1")
    assert (data.split["valid_start"], data.split["test_start"]) == (70, 90)
    assert data.sequences.column("valid_pos").to_pylist() == [2, -1, -1, 1]
    assert data.sequences.column("test_pos").to_pylist() == [3, -1, -1, -1]
    assert sequences(data) == [[1, 2, 3, 4], [1, 2, 3], [3], [2, 5]]
    assert data.stats["filtered"]["after_last_target_or_test_without_valid"] == 2
    assert data.split["users_with_test_but_no_valid_period_interaction"] == 1
    assert data.split["counts"] == {"users": 4, "valid_users": 2, "test_users": 1}
    # training never sees a target
    assert data.item_counts().sum() == 2 + 3 + 1 + 1


def test_explicit_temporal_cutoffs(prepare_in, tmp_path):
    rows = [{"user_id": 1, "items": [1, 2, 3, 4], "timestamps": [1, 2, 3, 4]}]
    data = prepare_in(*normalised(tmp_path, rows), "data.split=temporal",
                      "data.temporal_valid_start=2", "data.temporal_test_start=4")
    assert (data.sequences.column("valid_pos")[0].as_py(), data.sequences.column("test_pos")[0].as_py()) == (1, 3)


def test_item_counts_and_eval_examples(prepare_in, tmp_path):
    rows = [{"user_id": 1, "items": [1, 2, 3, 4]}, {"user_id": 2, "items": [2, 2, 1]}]
    data = prepare_in(*normalised(tmp_path, rows))
    assert data.item_counts().tolist() == [0, 1, 2, 0, 0]  # user 1: [1, 2], user 2: [2]
    users, histories, targets = data.eval_examples("valid")
    assert users.tolist() == [1, 2] and [h.tolist() for h in histories] == [[1, 2], [2]]
    assert targets.tolist() == [3, 2]
    assert [s.tolist() for s in data.train_sequences()] == [[1, 2], [2]]
    assert np.array_equal(data.train_item_ids(), [1, 2])


def test_a_grown_catalog_keeps_the_earlier_item_ids(prepare_in, tmp_path):
    """data.item_ids_from: earlier items keep their ids (and categorical codes), new items come after them,
    an earlier item nobody interacted with since stays in the catalog: an earlier SID table extends."""
    from distrec.errors import ConfigError

    items = [{"item_id": k, "title": f"t{k}", "brand": b} for k, b in [("z", "Z"), ("a", "A"), ("m", "M")]]
    first = prepare_in(*normalised(tmp_path / "v1", [{"user_id": 1, "items": ["z", "a", "m"]}], items))
    assert first.items.column("raw_id").to_pylist() == ["a", "m", "z"]
    grown_items = items + [{"item_id": "b", "title": "tb", "brand": "B"}, {"item_id": "y", "title": "ty", "brand": "M"}]
    rows = [{"user_id": 1, "items": ["z", "y", "m"]}, {"user_id": 2, "items": ["b", "z"]}]
    grown = prepare_in(*normalised(tmp_path / "v2", rows, grown_items), f"data.item_ids_from={first.directory}")
    assert grown.items.column("raw_id").to_pylist() == ["a", "m", "z", "b", "y"]  # "b" sorts first, but is new
    assert sequences(grown) == [[3, 5, 2], [4, 3]]
    assert grown.items.column("brand").to_pylist()[:3] == first.items.column("brand").to_pylist()
    assert grown.stats["earlier_items"] == 3 and grown.stats["filtered"]["earlier_items_without_interactions"] == 1
    assert str(first.directory / "maps" / "items") in json.loads((grown.directory / "manifest.json").read_text())["inputs"]
    with pytest.raises(ConfigError, match="data.item_ids_from=.*no item map"):
        prepare_in(*normalised(tmp_path / "v3", rows), f"data.item_ids_from={tmp_path / 'nothing'}")
