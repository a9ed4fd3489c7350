"""Residual k-means over shards: Lloyd steps in numpy/faiss that run in one process or in Ray actors.

The pieces:
- `assign(x, centroids) -> (labels, sums, counts, inertia)`: one Lloyd step's map side on a shard;
- `update(sums, counts, centroids)`: the reduce side, splitting the largest cluster into empty ones;
- `KMeansWorker`: holds some parquet shards (streamed, never loaded whole) plus its part of the
  training sample; the same class runs in-process (`LocalPool`) or as a Ray actor (distrec/parallel/kmeans.py);
- `residual_kmeans(pool, ...)`: the driver. It trains each level on a seeded sample of at most
  `points_per_centroid * k` rows (faiss convention), reducing sums/counts from every worker each
  iteration and checkpointing centroids; then every worker assigns all its rows, level by level on
  the residuals, in one streaming pass.

Because the sample, the initialisation and the reduction order depend only on the seed and the row
order, 1 worker and N workers give the same centroids and codes (up to float64 summation order).

Plug-in points (GAOQ, balanced clustering): `fit_level(level, pool, k, rng, centroids0) -> centroids`
replaces the Lloyd loop of a level, and a worker's `assign_codes(level, residual, centroids,
prefix_codes) -> labels` replaces nearest-centroid assignment (e.g. balanced, prefix-aligned codes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from distrec.clustering.vectors import VectorShards
from distrec.errors import ConfigError, DataError

SPLIT_EPS = 1.0 / 1024  # relative perturbation when a centroid is split to refill an empty cluster


# ------------------------------------------------------------------ map and reduce of one Lloyd step

def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid (L2) and the squared distance to it, via faiss (GPU when present)."""
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatL2(centroids.shape[1])
    if faiss.get_num_gpus() > 0:  # faiss-gpu build on a GPU worker
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(centroids)
    dist, labels = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return labels[:, 0].astype(np.int64), np.maximum(dist[:, 0], 0)


def segment_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster float64 sums of the rows of x (a sparse one-hot matmul: fast and order-stable)."""
    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    return np.asarray(onehot @ x.astype(np.float64))


def assign(x: np.ndarray, centroids: np.ndarray):
    """Map side of a Lloyd step: (labels, per-cluster sums, counts, inertia)."""
    k = len(centroids)
    labels, dist = nearest(x, centroids)
    return labels, segment_sums(x, labels, k), np.bincount(labels, minlength=k), float(dist.astype(np.float64).sum())


def update(sums: np.ndarray, counts: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, int]:
    """Reduce side: new centroids = sums / counts; each empty cluster takes half of the largest one.

    Returns (centroids float32, number of clusters refilled).
    """
    counts = counts.astype(np.float64).copy()
    new = centroids.astype(np.float64).copy()
    full = counts > 0
    new[full] = sums[full] / counts[full, None]
    empty = np.flatnonzero(~full)
    signs = np.where(np.arange(new.shape[1]) % 2 == 0, 1.0, -1.0)
    for j in empty:  # split the currently largest cluster in two, as faiss does
        i = int(np.argmax(counts))
        new[j] = new[i] * (1 - SPLIT_EPS * signs)
        new[i] = new[i] * (1 + SPLIT_EPS * signs)
        counts[j] = counts[i] / 2
        counts[i] -= counts[j]
    return new.astype(np.float32), len(empty)


def sample_positions(num_rows: int, k: int, points_per_centroid: int, seed: int) -> np.ndarray:
    """Sorted row positions of the training sample: all rows, or k * points_per_centroid of them."""
    cap = k * points_per_centroid
    if num_rows <= cap:
        return np.arange(num_rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(num_rows, cap, replace=False)).astype(np.int64)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


# ------------------------------------------------------------------ a worker and the in-process pool

class KMeansWorker:
    """Holds some vector shards and its part of the training sample; answers the driver's calls."""

    def __init__(self, source: VectorShards, normalize_residuals: bool = False,
                 assign_codes: Callable | None = None, threads: int | None = None):
        self.source = source
        self.normalize_residuals = normalize_residuals
        self.assign_codes = assign_codes
        if threads:
            faiss.omp_set_num_threads(threads)
        self.residual = None  # the current level's residuals of this worker's sample rows
        self.labels = None

    def info(self) -> tuple[int, int | None]:
        return self.source.num_rows, self.source.dim

    def load_sample(self, positions: np.ndarray) -> int:
        self.residual = self.source.rows(positions).astype(np.float32)
        self.prefix = np.zeros((len(positions), 0), dtype=np.int64)
        return len(positions)

    def sample_rows(self, positions: np.ndarray) -> np.ndarray:
        """Current-level residuals of some sample rows (for initialisation)."""
        return self._level_input(self.residual)[positions]

    def _level_input(self, residual):
        return normalize_rows(residual) if self.normalize_residuals else residual

    def step(self, centroids: np.ndarray):
        _, sums, counts, inertia = assign(self._level_input(self.residual), centroids)
        return sums, counts, inertia

    def advance(self, level: int, centroids: np.ndarray) -> None:
        """Fix this level's codes of the sample and move to the next level's residuals."""
        x = self._level_input(self.residual)
        labels = self._assign(level, x, centroids, self.prefix)
        self.residual = x - centroids[labels]
        self.prefix = np.column_stack([self.prefix, labels])

    def _assign(self, level, x, centroids, prefix):
        if self.assign_codes is not None:
            return self.assign_codes(level, x, centroids, prefix)
        return nearest(x, centroids)[0]

    def encode(self, codebooks: np.ndarray):
        """Codes of every row, streaming: (item_ids, codes int32 [n, L], squared error, squared norm)."""
        ids_out, codes_out, sq_err, sq_norm = [], [], 0.0, 0.0
        for _, ids, x in self.source.batches():
            codes = np.zeros((len(ids), len(codebooks)), dtype=np.int32)
            residual = x
            for level, centroids in enumerate(codebooks):
                residual = self._level_input(residual)
                labels = self._assign(level, residual, centroids, codes[:, :level])
                codes[:, level] = labels
                residual = residual - centroids[labels]
            sq_err += float(np.square(residual, dtype=np.float64).sum())
            sq_norm += float(np.square(x, dtype=np.float64).sum())
            ids_out.append(ids)
            codes_out.append(codes)
        if not ids_out:
            return np.zeros(0, np.int64), np.zeros((0, len(codebooks)), np.int32), 0.0, 0.0
        return np.concatenate(ids_out), np.concatenate(codes_out), sq_err, sq_norm


class LocalPool:
    """Workers in this process; `call` has the same shape as the Ray pool's."""

    def __init__(self, workers: list[KMeansWorker]):
        self.workers = workers

    def call(self, method: str, per_worker_args: list[tuple] | None = None, *args):
        if per_worker_args is None:
            per_worker_args = [args] * len(self.workers)
        return [getattr(w, method)(*a) for w, a in zip(self.workers, per_worker_args)]

    def shutdown(self):  # nothing to release (the Ray pool kills its actors)
        pass


# ------------------------------------------------------------------ the driver

def lloyd(pool, level: int, k: int, centroids: np.ndarray, iters: int, bar=None, checkpoint_dir=None) -> np.ndarray:
    """Lloyd iterations over the workers' samples: map on workers, reduce here, checkpoint each step."""
    for it in range(iters):
        parts = pool.call("step", None, centroids)
        sums = sum(p[0] for p in parts)  # fixed worker order: reproducible
        counts = sum(p[1] for p in parts)
        inertia = sum(p[2] for p in parts)
        centroids, refilled = update(sums, counts, centroids)
        if checkpoint_dir is not None:
            np.save(Path(checkpoint_dir) / f"level{level}.npy", centroids)
            (Path(checkpoint_dir) / f"level{level}.json").write_text(
                json.dumps({"level": level, "iteration": it + 1, "inertia": inertia, "refilled": refilled}))
        if bar is not None:
            bar.set_postfix(level=level, inertia=f"{inertia:.4g}", refilled=refilled)
            bar.update(1)
    return centroids


def residual_kmeans(pool, levels: int, k: int, iters: int = 20, points_per_centroid: int = 256, seed: int = 0,
                    checkpoint_dir: str | Path | None = None, progress: bool = True,
                    fit_level: Callable | None = None) -> tuple[np.ndarray, dict]:
    """Train `levels` residual codebooks of `k` centroids over a pool of workers.

    Returns (codebooks float32 [levels, k, d], stats).
    """
    infos = pool.call("info")
    rows = [n for n, _ in infos]
    num_rows = sum(rows)
    dims = {d for n, d in infos if n}
    if num_rows == 0:
        raise DataError("the catalog is empty (0 item vectors)", hint="check the embeddings artifact")
    if len(dims) != 1:
        raise DataError(f"workers see vectors of different dimensions {sorted(dims)}",
                        hint="all shards must come from the same embedding run")
    if k > num_rows:
        raise ConfigError(f"tokenizer.codebook_size={k} is larger than the catalog ({num_rows} items)",
                          )
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    positions = sample_positions(num_rows, k, points_per_centroid, seed)
    offsets = np.concatenate([[0], np.cumsum(rows)])
    bounds = np.searchsorted(positions, offsets)
    pool.call("load_sample", [(positions[bounds[i]:bounds[i + 1]] - offsets[i],) for i in range(len(rows))])
    rng = np.random.default_rng(seed + 1)
    codebooks = []
    bar = tqdm(total=levels * iters, desc="k-means", unit="iter", disable=not progress)
    for level in range(levels):
        init = np.sort(rng.choice(len(positions), k, replace=False))
        owner = np.searchsorted(bounds, init, side="right") - 1
        parts = pool.call("sample_rows", [(init[owner == i] - bounds[i],) for i in range(len(rows))])
        centroids = np.concatenate([p for p in parts if len(p)]).astype(np.float32)
        if fit_level is not None:
            centroids = fit_level(level, pool, k, rng, centroids)
        else:
            centroids = lloyd(pool, level, k, centroids, iters, bar, checkpoint_dir)
        pool.call("advance", None, level, centroids)
        codebooks.append(centroids)
    bar.close()
    return np.stack(codebooks), {"num_rows": num_rows, "sample_rows": int(len(positions))}
