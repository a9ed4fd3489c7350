"""Residual k-means: Lloyd pieces, sampling, errors, and 2 Ray workers == 1 process."""

import numpy as np
import pyarrow as pa
import pytest

from distrec.artifacts import write_table
from distrec.clustering.kmeans import KMeansWorker, LocalPool, assign, residual_kmeans, sample_positions, update
from distrec.clustering.vectors import VectorShards
from distrec.errors import ConfigError, DataError


def clustered(n=20_000, d=16, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    return (centers[rng.integers(0, clusters, n)] + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def write_vectors(x, directory, shards=4, ids=None):
    ids = np.arange(1, len(x) + 1) if ids is None else ids
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])
    return write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "vector": vec}), directory, shards)


def test_assign_sums_and_counts():
    x = np.array([[0, 0], [0, 1], [10, 10]], np.float32)
    labels, sums, counts, inertia = assign(x, np.array([[0, 0.5], [10, 10]], np.float32))
    assert labels.tolist() == [0, 0, 1]
    assert counts.tolist() == [2, 1]
    np.testing.assert_allclose(sums, [[0, 1], [10, 10]])
    assert inertia == pytest.approx(0.5)


def test_empty_cluster_takes_half_of_the_largest():
    sums = np.array([[10.0, 20.0], [0, 0], [3, 3]])
    counts = np.array([10, 0, 1])
    centroids, refilled = update(sums, counts, np.zeros((3, 2), np.float32))
    assert refilled == 1
    assert not np.allclose(centroids[0], centroids[1])  # split apart, both near the old centroid
    np.testing.assert_allclose(centroids[:2].mean(0), [1, 2], rtol=1e-6)


def test_sample_is_capped_by_points_per_centroid():
    assert len(sample_positions(10_000, 8, 100, 0)) == 800
    assert len(sample_positions(500, 8, 100, 0)) == 500
    assert np.all(np.diff(sample_positions(10_000, 8, 100, 0)) > 0)


def test_streamed_shards_reduce_error_and_checkpoint(tmp_path):
    x = clustered()
    paths = write_vectors(x, tmp_path / "emb")
    pool = LocalPool([KMeansWorker(VectorShards(paths, batch_rows=3000))])
    codebooks, stats = residual_kmeans(pool, 2, 32, 10, 64, seed=0, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert codebooks.shape == (2, 32, 16) and stats["sample_rows"] == 2048
    assert (tmp_path / "ckpt" / "level1.npy").exists()
    ids, codes, sq_err, sq_norm = pool.call("encode", None, codebooks)[0]
    assert ids.tolist() == list(range(1, 20_001))
    assert sq_err / sq_norm < 0.1  # 50 tight clusters, 32 x 32 codes (noise alone is ~0.01)


@pytest.mark.ray
def test_two_ray_workers_match_one_process(tmp_path, ray_local):
    from distrec.parallel.kmeans import RayPool

    x = clustered(6000)
    paths = write_vectors(x, tmp_path / "emb", shards=4)
    local = LocalPool([KMeansWorker(VectorShards(paths, batch_rows=1000))])
    cb_local, _ = residual_kmeans(local, 3, 16, 5, 64, seed=3, progress=False)
    ids_local, codes_local, _, _ = local.call("encode", None, cb_local)[0]

    pool = RayPool(paths, 2, batch_rows=1000)
    assert len(pool.actors) == 2
    try:
        cb_ray, _ = residual_kmeans(pool, 3, 16, 5, 64, seed=3, progress=False)
        parts = pool.call("encode", None, cb_ray)
    finally:
        pool.shutdown()
    assert len(parts[0][0]) == len(parts[1][0]) == 3000  # each actor held half of the catalog
    np.testing.assert_allclose(cb_ray, cb_local, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.concatenate([p[0] for p in parts]), ids_local)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), codes_local)


def test_k_larger_than_catalog_is_a_config_error(tmp_path):
    pool = LocalPool([KMeansWorker(VectorShards(array=clustered(100)))])
    with pytest.raises(ConfigError, match="larger than the catalog"):
        residual_kmeans(pool, 1, 256, progress=False)


def test_empty_catalog_is_a_data_error(tmp_path):
    paths = write_vectors(np.zeros((0, 8), np.float32), tmp_path / "emb", shards=1)
    pool = LocalPool([KMeansWorker(VectorShards(paths))])
    with pytest.raises(DataError, match="empty"):
        residual_kmeans(pool, 1, 4, progress=False)


def test_nan_vector_names_file_and_row(tmp_path):
    x = clustered(1000)
    x[700, 3] = np.nan
    paths = write_vectors(x, tmp_path / "emb", shards=2)
    pool = LocalPool([KMeansWorker(VectorShards(paths, batch_rows=256))])
    with pytest.raises(DataError, match=r"part-00001.parquet: row 700 has a NaN"):
        residual_kmeans(pool, 1, 4, 2, progress=False)


def test_mismatched_dims_across_shards(tmp_path):
    write_vectors(clustered(100, d=8), tmp_path / "a", shards=1)
    write_vectors(clustered(100, d=16), tmp_path / "b", shards=1)
    with pytest.raises(DataError, match="dimension 16, earlier shards have 8"):
        VectorShards([tmp_path / "a" / "part-00000.parquet", tmp_path / "b" / "part-00000.parquet"])


def test_ragged_list_vectors_are_rejected(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"item_id": [1, 2], "vector": pa.array([[1.0, 2.0], [1.0]])}), path)
    with pytest.raises(DataError, match="row 1 has a vector of length 1"):
        list(VectorShards([path]).batches())


@pytest.mark.ray
def test_more_workers_than_local_cpus_is_a_config_error(tmp_path, ray_local):
    from distrec.parallel.kmeans import RayPool

    paths = write_vectors(clustered(400), tmp_path / "emb", shards=4)
    with pytest.raises(ConfigError, match="needs 3 CPUs but the local Ray cluster has 2"):
        RayPool(paths, 3)
