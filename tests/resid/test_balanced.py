"""Balanced k-means: exact size bounds, and a partition better than chance."""

import numpy as np
import pytest

from distrec.clustering.balanced import balanced_assign, balanced_kmeans, cluster_means, inertia


@pytest.mark.parametrize("n,k", [(1000, 7), (1024, 32), (999, 1000 // 3), (50, 50), (10, 1)])
def test_sizes_within_floor_ceil(n, k):
    x = np.random.default_rng(n + k).standard_normal((n, 8)).astype(np.float32)
    centroids, labels = balanced_kmeans(x, k, iters=5, seed=1)
    sizes = np.bincount(labels, minlength=k)
    assert sizes.min() >= n // k and sizes.max() <= -(-n // k)
    assert sizes.sum() == n and centroids.shape == (k, 8)


def test_assignment_balanced_even_when_every_point_prefers_one_centroid():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((503, 4)).astype(np.float32) * 0.01
    centroids = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0]], np.float32)
    sizes = np.bincount(balanced_assign(x, centroids), minlength=4)
    assert sorted(sizes) == [125, 126, 126, 126]


def test_beats_random_partition_on_inertia():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((16, 16)) * 4
    x = (centres[rng.integers(16, size=4000)] + rng.standard_normal((4000, 16))).astype(np.float32)
    centroids, labels = balanced_kmeans(x, 16, iters=10, seed=0)
    random_labels = rng.permutation(np.arange(4000) % 16)
    ours = inertia(x, centroids, labels)
    chance = inertia(x, cluster_means(x, random_labels, 16), random_labels)
    assert ours < 0.5 * chance


def test_well_separated_equal_clusters_are_recovered():
    rng = np.random.default_rng(2)
    centres = np.eye(8, dtype=np.float32) * 20
    truth = np.repeat(np.arange(8), 50)
    x = centres[truth] + rng.standard_normal((400, 8)).astype(np.float32)
    _, labels = balanced_kmeans(x, 8, iters=10, seed=3)
    # same partition up to relabelling: every true cluster maps to exactly one label
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 8
