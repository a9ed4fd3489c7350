"""Synthetic catalogs: deterministic, shard by shard, and with structure a sequential model can learn."""

import numpy as np
import pytest

from distrec.artifacts import dir_hash, read_table, shard_paths
from distrec.config import compose
from distrec.data.dataset import load_prepared
from distrec.data.prepare import prepare
from distrec.errors import ConfigError


def generate(root, *overrides):
    cfg = compose(["stage=prepare", "data=synthetic", f"paths.root={root}", "progress=false", *overrides])
    return load_prepared(prepare(cfg))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn"))


def hit_rate(predict, data, k=10):
    _, histories, targets = data.eval_examples("test")
    return float(np.mean([t in predict(h)[:k] for h, t in zip(histories, targets)]))


def test_deterministic_by_seed(synthetic, tmp_path):
    again = generate(tmp_path / "a")
    other = generate(tmp_path / "b", "seed=1")
    assert dir_hash(again.directory) == dir_hash(synthetic.directory)
    assert dir_hash(other.directory) != dir_hash(synthetic.directory)


def test_schema_and_counts(synthetic):
    assert synthetic.num_items == 5000 and synthetic.num_users == 4000
    assert synthetic.items.column("item_id").to_pylist() == list(range(1, 5001))
    assert synthetic.fields["title"] == "text" and synthetic.fields["category_3"] == "categorical"
    lengths = np.diff(synthetic.offsets)
    assert lengths.min() >= 5 and lengths.max() <= 60
    assert synthetic.stats["interactions"] == lengths.sum()
    assert set(synthetic.sequences.column_names) >= {"timestamps", "valid_pos", "test_pos"}
    assert synthetic.vocabulary("category_1")[1] in synthetic.items.column("categories")[0].as_py()


def test_sharded_items_are_the_same_catalog(synthetic, tmp_path):
    small_shards = generate(tmp_path, "data.synthetic.shard_items=1000", "data.synthetic.shard_users=1500")
    assert len(shard_paths(small_shards.directory / "items")) == 5
    assert len(shard_paths(small_shards.directory / "sequences")) == 3
    assert read_table(small_shards.directory / "items").equals(read_table(synthetic.directory / "items"))


def test_same_interest_oracle_beats_popularity(synthetic):
    """Planted structure: predicting popular items of the last item's interest subtree (category_2)
    and item-to-item transitions both beat global popularity by a wide margin."""
    counts = synthetic.item_counts()
    popular = np.argsort(-counts)[:10]
    interest = synthetic.items.column("category_2").to_numpy()  # interest_level=2
    by_interest = {c: np.flatnonzero(interest == c) + 1 for c in np.unique(interest)}
    top_in_interest = {c: ids[np.argsort(-counts[ids], kind="stable")][:10] for c, ids in by_interest.items()}

    transitions = {}
    for seq in synthetic.train_sequences():
        for a, b in zip(seq[:-1], seq[1:]):
            transitions.setdefault(a, {}).setdefault(b, 0)
            transitions[a][b] += 1

    def transition(history):
        nxt = transitions.get(history[-1], {})
        ranked = sorted(nxt, key=lambda b: (-nxt[b], -counts[b]))[:10]
        return list(ranked) + [p for p in popular if p not in ranked]

    pop = hit_rate(lambda h: popular, synthetic)
    oracle = hit_rate(lambda h: top_in_interest[interest[h[-1] - 1]], synthetic)
    trans = hit_rate(transition, synthetic)
    print(f"HR@10 popularity={pop:.4f} same-interest oracle={oracle:.4f} transitions={trans:.4f}")
    assert oracle > 3 * pop
    assert trans > 1.5 * pop


def test_temporal_split_on_synthetic(tmp_path):
    data = generate(tmp_path, "data.split=temporal", "data.synthetic.num_users=500")
    valid, test = (data.sequences.column(c).to_numpy() for c in ("valid_pos", "test_pos"))
    assert ((valid >= 0) | (test < 0)).all()  # a test target always comes with a validation target
    ts = data.sequences.column("timestamps").to_pylist()
    cut = data.split["test_start"]
    for t, v, p in zip(ts, valid, test):
        if p >= 0:
            assert t[p] >= cut > t[v] and len(t) == p + 1


def test_bad_synthetic_config():
    with pytest.raises(ConfigError, match="interest_level"):
        generate("/tmp/unused", "data.synthetic.interest_level=4")
