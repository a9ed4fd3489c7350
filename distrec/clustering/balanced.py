"""Balanced k-means: every cluster holds floor(n/k) or ceil(n/k) points, exactly.

Lloyd iterations whose assignment step is capacity-constrained. The constrained assignment is
a vectorised "deferred acceptance" in rounds (scales to 1M points x 256 clusters):

  1. every unassigned point proposes to its nearest cluster that still has room;
  2. a cluster with more proposers than room keeps the nearest ones and is then full;
  3. the rejected points repeat step 1 among the clusters that are not full.

A cluster that fills stays full, so there are at most k rounds, and in practice only a few
(each round touches only the points still unassigned). Exact sizes come from two passes:
first every cluster takes at most q = n // k points (k*q points placed), then the r = n % k
left-over points go to distinct clusters (capacity 1 each), so sizes are q or q + 1.

This is a greedy approximation of the optimal capacity-constrained assignment (min-cost flow),
chosen because each round is a few numpy array operations and a distance matrix of only the
points still waiting; it never leaves a point unassigned.
"""

from __future__ import annotations

import numpy as np

FAISS_MIN_ROWS = 50_000  # below this, numpy k-means++ seeding is faster than starting faiss
_CHUNK = 65536  # rows per block when computing distances (bounds the temporaries)


def sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 distances [n, k] (float32)."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def _fill(dist, points, room, labels) -> np.ndarray:
    """Assign `points` (row indices of `dist` [n, k]) to clusters with `room` left.

    `room` and `labels` are modified in place. Returns the points left over once every
    cluster is full.
    """
    waiting = points
    while waiting.size and (room > 0).any():
        rows = dist if waiting.size == len(dist) else dist[waiting]  # a copy once any are placed
        full = room <= 0
        if full.any():
            rows[:, full] = np.inf
        choice = rows.argmin(1)
        best = rows[np.arange(waiting.size), choice]
        # Rank the proposers of each cluster by distance; keep the first `room` of them.
        order = np.lexsort((best, choice))
        chosen = choice[order]
        rank = np.arange(order.size) - np.searchsorted(chosen, chosen, side="left")
        accept = rank < room[chosen]
        labels[waiting[order[accept]]] = chosen[accept]
        room -= np.bincount(chosen[accept], minlength=len(room))
        waiting = waiting[order[~accept]]
    return waiting


def balanced_assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Labels [n] with every cluster size in {n // k, n // k + 1} (k = len(centroids))."""
    n, k = len(x), len(centroids)
    dist = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        dist[s:s + _CHUNK] = sq_distances(x[s:s + _CHUNK], centroids)
    labels = np.full(n, -1, dtype=np.int64)
    # Pass 1: room n // k everywhere. Pass 2: the n % k left-overs, at most one per cluster.
    left = _fill(dist, np.arange(n), np.full(k, n // k, dtype=np.int64), labels)
    if left.size:
        sub = np.full(left.size, -1, dtype=np.int64)
        unplaced = _fill(sq_distances(x[left], centroids), np.arange(left.size), np.ones(k, dtype=np.int64), sub)
        if unplaced.size:
            raise RuntimeError("balanced assignment left points unplaced (capacities < points)")
        labels[left] = sub
    return labels


def _init_centroids(x, k, rng, sample):
    """k-means++ seeding on a sample (at most `sample` points)."""
    pick = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = pick[rng.integers(len(pick))]
    closest = sq_distances(pick, centroids[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        j = rng.choice(len(pick), p=closest / total) if total > 0 else rng.integers(len(pick))
        centroids[i] = pick[j]
        closest = np.minimum(closest, sq_distances(pick, centroids[i:i + 1])[:, 0])
    return centroids


def _init_faiss(x, k, seed, iters):
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False, spherical=False)
    km.cp.min_points_per_centroid = 1  # small parents: no warnings, no refusal
    km.train(x)
    return km.centroids.copy()


def balanced_kmeans(x: np.ndarray, k: int, iters: int = 10, seed: int = 0, init: str = "auto",
                    init_iters: int = 10, points_per_centroid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster `x` [n, d] into k clusters of size n // k or n // k + 1.

    Initialised by (unbalanced) k-means (`init="faiss"`, sampled as faiss does) or k-means++
    (`init="kmeans++"`; "auto" = faiss from FAISS_MIN_ROWS rows on, where its threads pay off),
    then `iters` Lloyd steps with the balanced assignment. With `points_per_centroid`, the Lloyd
    steps run on a seeded sample of that many points per cluster (the faiss convention) and all
    n points get one final balanced assignment, so the size bound holds for the whole set.
    Returns (centroids [k, d] float32, labels [n] int64).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if points_per_centroid and n > points_per_centroid * k:
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, points_per_centroid * k, replace=False))]
        centroids, _ = balanced_kmeans(sample, k, iters, seed, init, init_iters)
        labels = balanced_assign(x, centroids)
        return cluster_means(x, labels, k), labels
    if not 1 <= k <= n:
        raise ValueError(f"balanced_kmeans needs 1 <= k <= n, got k={k}, n={n}")
    if k == n:  # one point per cluster
        return x.copy(), np.arange(n, dtype=np.int64)
    if k == 1:
        return x.mean(0, keepdims=True), np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if init == "faiss" or (init == "auto" and n >= FAISS_MIN_ROWS):
        centroids = _init_faiss(x, k, seed, init_iters)
    else:
        centroids = _init_centroids(x, k, rng, sample=256 * k)
    labels = balanced_assign(x, centroids)
    for _ in range(iters):
        centroids = cluster_means(x, labels, k)
        new = balanced_assign(x, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
    return cluster_means(x, labels, k), labels


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of each cluster's points [k, d] (float32; an empty cluster gets zeros)."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(x), dtype=np.float32), (labels, np.arange(len(x)))), shape=(k, len(x)))
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    return np.asarray(onehot @ x) / np.maximum(counts, 1)[:, None]


def inertia(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of the points to their cluster's centroid."""
    return float(((x - centroids[labels]) ** 2).sum())
