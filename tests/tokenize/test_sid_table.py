"""The SID table contract: dedup, vocabulary layout, trie, lookups, persistence."""

import numpy as np
import pytest

from distrec.errors import DataError
from distrec.tokenize.sid_table import BOS, EOS, PAD, SIDTable, add_dedup_digit, reassign_last_level


def colliding_codes(n=300, seed=0):
    return np.random.default_rng(seed).integers(0, 4, (n, 2))


def test_dedup_digit_numbers_items_sharing_a_tuple():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2]])
    out, size = add_dedup_digit(codes)
    assert out[:, 2].tolist() == [0, 0, 1, 2] and size == 3
    assert len(np.unique(out, axis=0)) == 4


def test_balanced_reassignment_moves_only_colliders_to_nearest_free_code():
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 1]])
    dist = np.array([[0.0, 0.5, 0.1, 0.9], [0.2, 0.3, 0.4, 0.9]])  # rows 0 and 1 (the colliders)
    out, moved = reassign_last_level(codes, lambda rows: dist[: len(rows)], 4)
    assert moved == 1
    assert out[1].tolist() == [0, 1]  # row 1 is nearer code 1 (0.3 vs 0.5): it keeps it
    assert out[0].tolist() == [0, 0]  # row 0 moves to its nearest free code (2 is taken)
    assert out[2:].tolist() == codes[2:].tolist()


def test_balanced_reassignment_refuses_an_overfull_prefix():
    codes = np.zeros((5, 2), dtype=np.int64)
    with pytest.raises(DataError, match="use tokenizer.dedup=digit"):
        reassign_last_level(codes, lambda rows: np.zeros((len(rows), 4)), 4)


def test_vocabulary_layout_and_tokens():
    codes, size = add_dedup_digit(colliding_codes())
    table = SIDTable.from_codes(np.arange(1, 301), codes, [4, 4, size], "digit")
    assert (PAD, BOS, EOS) == (0, 1, 2)
    assert table.offsets.tolist() == [3, 7, 11]
    assert table.vocab_size == 3 + 8 + size
    assert (table.codes[0] == -1).all() and table.codes.shape == (301, 3)
    tokens = table.tokens(np.array([[0, 5]]))
    assert tokens.shape == (1, 2, 3)
    assert tokens[0, 0].tolist() == [PAD] * 3
    assert tokens[0, 1].tolist() == (table.codes[5] + table.offsets).tolist()


def test_trie_walk_reaches_every_item_and_masks_invalid_codes():
    codes, size = add_dedup_digit(colliding_codes())
    ids = np.random.default_rng(1).permutation(300) + 1  # any row order
    table = SIDTable.from_codes(ids, codes, [4, 4, size], "digit")
    trie = table.trie()
    assert trie.children[0].shape == (1, 4)
    node = np.zeros(300, dtype=np.int64)
    for level in range(3):
        assert trie.allowed(node, level)[np.arange(300), table.codes[1:, level]].all()
        node = trie.step(node, level, table.codes[1:, level])
    assert node.tolist() == list(range(1, 301))
    assert trie.children[2].min() == -1  # some dedup digits are unused under some prefixes


def test_item_for_codes_roundtrip_and_unknown():
    codes, size = add_dedup_digit(colliding_codes())
    table = SIDTable.from_codes(np.arange(1, 301), codes, [4, 4, size], "digit")
    assert table.item_for_codes(table.codes[[7, 3]]).tolist() == [7, 3]
    assert table.item_for_codes(np.array([[3, 3, size - 1 + 50]])).tolist() == [-1]


def test_save_load_keeps_codes_and_hash(tmp_path):
    codes, size = add_dedup_digit(colliding_codes())
    table = SIDTable.from_codes(np.arange(1, 301), codes, [4, 4, size], "digit", {"tokenizer": {"method": "x"}})
    table.save(tmp_path, num_shards=3)
    assert len(list((tmp_path / "sids").glob("part-*.parquet"))) == 3
    loaded = SIDTable.load(tmp_path)
    assert np.array_equal(loaded.codes, table.codes)
    assert loaded.content_hash == table.content_hash
    assert loaded.meta["tokenizer"] == {"method": "x"}
    other = SIDTable.from_codes(np.arange(1, 301), codes[::-1].copy(), [4, 4, size])
    assert other.content_hash != table.content_hash


def test_item_ids_must_be_dense():
    with pytest.raises(DataError, match="dense 1..N"):
        SIDTable.from_codes(np.array([1, 2, 4]), np.zeros((3, 1), np.int64), [2])


def test_trie_refuses_colliding_ids():
    table = SIDTable.from_codes(np.arange(1, 4), np.zeros((3, 1), np.int64), [2])
    assert table.num_collisions() == 2
    with pytest.raises(DataError, match="share a code tuple"):
        table.trie()
