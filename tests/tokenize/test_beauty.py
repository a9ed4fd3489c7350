"""Real Amazon Beauty (titles -> TF-IDF+SVD): every tokenizer gives unique SIDs and a quality report."""

import numpy as np
import pytest

from distrec.artifacts import read_json, read_manifest, read_table
from distrec.tokenize.sid_table import SIDTable

NUM_ITEMS = 12_101


@pytest.fixture
def tokenize(make_cfg):
    """tokenize(root, name, *overrides) -> (SIDTable, quality report) of root/name."""
    from distrec.stages import tokenize as stage

    def run(root, name, *overrides):
        stage.run(make_cfg(root, "data=beauty", f"paths.sids={root}/{name}", *overrides))
        return SIDTable.load(root / name), read_json(root / name / "quality.json")

    return run


def test_embeddings_cover_the_catalog(beauty_root, tokenize):
    table = read_table(beauty_root / "embed" / "item_embeddings")
    assert table.num_rows == NUM_ITEMS
    assert table.schema.field("vector").type.list_size == 128
    x = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 128)
    norms = np.linalg.norm(x, axis=1)
    manifest = read_manifest(beauty_root / "embed")
    assert manifest["counts"]["no_content"] == 7 == len(manifest["no_content_items"])  # the 7 items without a title
    assert table.column("no_content").to_pylist().count(True) == 7
    np.testing.assert_allclose(norms, 1, rtol=1e-5)  # ...got a placeholder, not an all-zero vector


def test_rq_kmeans_sid_table_and_report(beauty_root, tokenize):
    sids, quality = tokenize(beauty_root, "sids_rq", "tokenizer=rq_kmeans")
    assert sids.num_items == NUM_ITEMS and sids.levels == 4 and sids.num_collisions() == 0
    assert sids.codebook_sizes[:3] == [256, 256, 256]
    assert sids.codebook_sizes[3] == quality["max_items_per_sid"]
    assert quality["dedup"]["collisions_after"] == 0
    assert 0 < quality["collision_rate"] < 0.5
    assert all(level["utilisation"] > 0.9 for level in quality["per_level"])
    assert "reconstruction" not in quality  # normalised residuals (the default): no additive decoder
    # conditional entropy shrinks with depth: later digits refine, the first one partitions
    h = [level["conditional_entropy_bits"] for level in quality["per_level"]]
    assert h[0] > h[1] > h[2] > 0
    trie = sids.trie()
    node = np.zeros(NUM_ITEMS, dtype=np.int64)
    for level in range(sids.levels):
        node = trie.step(node, level, sids.codes[1:, level])
    assert np.array_equal(node, np.arange(1, NUM_ITEMS + 1))
    assert read_manifest(beauty_root / "sids_rq")["content_hash"] == sids.content_hash
    assert (beauty_root / "sids_rq" / "checkpoints" / "level2.npy").exists()


def test_rq_kmeans_128_balanced_dedup(beauty_root, tokenize):
    sids, quality = tokenize(beauty_root, "sids_rq128", "tokenizer=rq_kmeans_128", "tokenizer.dedup=balanced")
    assert sids.codebook_sizes == [128, 128, 128] and sids.num_collisions() == 0
    assert quality["dedup"]["items_reassigned"] == quality["dedup"]["collisions_before"] > 0


def test_pq_long_ids_are_unique_without_an_extra_digit(beauty_root, tokenize):
    sids, quality = tokenize(beauty_root, "sids_pq", "tokenizer=pq")
    assert sids.levels == 32 and sids.codebook_sizes == [256] * 32
    assert sids.num_collisions() == 0
    # only near-duplicates (e.g. titles differing in a shade) collide before re-assignment
    assert quality["collision_rate"] < 0.05
    assert quality["reconstruction"]["relative_mse"] < 0.5


def test_opq_fits_on_training_items_only(beauty_root, tokenize):
    from distrec.data.dataset import load_prepared

    sids, quality = tokenize(beauty_root, "sids_opq_fast", "tokenizer=opq", "tokenizer.pq.num_subspaces=8",
                             "tokenizer.pq.opq_iters=2", "tokenizer.pq.pca_dim=128")
    assert sids.levels == 8 and sids.num_collisions() == 0
    assert quality["fit_items"] == len(load_prepared(beauty_root / "data").train_item_ids())
    assert quality["num_items"] == NUM_ITEMS


@pytest.mark.slow
def test_opq_shipped_config(beauty_root, tokenize, make_cfg):
    from distrec.stages import embed

    embed.run(make_cfg(beauty_root, "data=beauty", "embed.dim=512", f"paths.embeddings={beauty_root}/embed512"))
    sids, quality = tokenize(beauty_root, "sids_opq", "tokenizer=opq", f"paths.embeddings={beauty_root}/embed512")
    assert sids.levels == 32 and sids.num_collisions() == 0
    assert quality["collision_rate"] < 0.05
    assert quality["reconstruction"]["relative_mse"] < 0.5


@pytest.mark.slow
def test_rq_vae_uses_at_least_90_percent_of_every_codebook(beauty_root, tokenize):
    sids, quality = tokenize(beauty_root, "sids_rqvae", "tokenizer=rq_vae", "tokenizer.rqvae.epochs=60")
    assert sids.num_collisions() == 0
    assert [level["utilisation"] >= 0.9 for level in quality["per_level"]] == [True] * 3, quality["per_level"]
    assert quality["reconstruction"]["relative_mse"] < 0.6


def test_fields_embedder_on_attributes(beauty_root, tokenize, make_cfg):
    from distrec.stages import embed

    cfg = make_cfg(beauty_root, "data=beauty", "embed=fields", f"paths.embeddings={beauty_root}/embed_fields", "embed.dim=16")
    embed.run(cfg)
    table = read_table(beauty_root / "embed_fields" / "item_embeddings")
    x = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 16)
    assert x.shape == (NUM_ITEMS, 16) and np.isfinite(x).all()
    assert len(np.unique(x.round(4), axis=0)) > 100  # attribute sets differ between items


@pytest.mark.ray
def test_ray_embed_and_tokenize_match_in_process(beauty_root, tokenize, ray_local, make_cfg):
    from distrec.stages import embed

    cfg = make_cfg(beauty_root, "data=beauty", f"paths.embeddings={beauty_root}/embed_ray", "embed.num_workers=2")
    embed.run(cfg)
    local = read_table(beauty_root / "embed" / "item_embeddings").sort_by("item_id")
    remote = read_table(beauty_root / "embed_ray" / "item_embeddings").sort_by("item_id")
    assert np.array_equal(local.column("item_id").to_numpy(), remote.column("item_id").to_numpy())
    np.testing.assert_allclose(remote.column("vector").combine_chunks().flatten().to_numpy(),
                               local.column("vector").combine_chunks().flatten().to_numpy(), atol=1e-5)

    one, _ = tokenize(beauty_root, "sids_one", "tokenizer.codebook_size=64", "tokenizer.kmeans_iters=5")
    two, _ = tokenize(beauty_root, "sids_two", "tokenizer.codebook_size=64", "tokenizer.kmeans_iters=5",
                      "tokenizer.num_workers=2")
    assert np.array_equal(one.codes, two.codes)
