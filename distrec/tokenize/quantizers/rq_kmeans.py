"""RQ-KMeans: residual k-means (GRID/IntRR "RK-Means"). Level l clusters the residual left by levels < l.

With `normalize_residuals` (`tokenizer.normalize_residuals`, true by default as GRID's rkmeans config,
which IntRR's SIDs use; the class argument defaults to plain RQ, which RQ-VAE's initialisation needs)
every level's input is L2-normalised before it is clustered: the item vector at level 0, then each
residual. Without it a level's centroids are pulled towards the items the levels before fitted worst
(largest residuals); normalised, every item's residual direction counts the same. There is then no
additive decoder (the norms are not kept), so the report has no reconstruction error.

Training and assignment are `distrec.clustering.kmeans` (sampled Lloyd on faiss); `fit_pool` runs them
over a pool of shard workers (in-process or Ray actors), `fit`/`encode` over an in-memory array.
"""

from __future__ import annotations

import numpy as np

from distrec.clustering.kmeans import KMeansWorker, LocalPool, nearest, normalize_rows, residual_kmeans
from distrec.clustering.vectors import VectorShards
from distrec.tokenize.quantizers.base import Quantizer


class RQKMeans(Quantizer):
    method = "rq_kmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, iters: int = 20, points_per_centroid: int = 256,
                 seed: int = 0, normalize_residuals: bool = False, progress: bool = True):
        self.levels, self.k, self.iters = levels, codebook_size, iters
        self.points_per_centroid, self.seed = points_per_centroid, seed
        self.normalize_residuals, self.progress = normalize_residuals, progress
        self.codebooks = None  # float32 [levels, k, d]
        self.fit_level = None  # plug-in: replaces the Lloyd loop of a level (see clustering/kmeans.py)

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.k] * self.levels

    @classmethod
    def from_config(cls, cfg, progress: bool = True):
        return cls(cfg.levels, cfg.codebook_size, cfg.kmeans_iters, cfg.points_per_centroid, cfg.seed,
                   cfg.normalize_residuals, progress)

    def fit_pool(self, pool, checkpoint_dir=None) -> dict:
        self.codebooks, stats = residual_kmeans(pool, self.levels, self.k, self.iters, self.points_per_centroid,
                                                self.seed, checkpoint_dir, self.progress, self.fit_level)
        return stats

    def _pool(self, x) -> LocalPool:
        return LocalPool([KMeansWorker(VectorShards(array=x), normalize_residuals=self.normalize_residuals)])

    def fit(self, x):
        x = self.check_input(x, self.k)
        self.fit_pool(self._pool(x))
        return self

    def encode(self, x):
        x = self.check_input(x)
        self.check_dim(x, self.codebooks.shape[2])
        return self._pool(x).call("encode", None, self.codebooks)[0][1].astype(np.int64)

    def decode(self, codes):
        if self.normalize_residuals:
            return super().decode(codes)  # residuals were rescaled: no additive reconstruction
        return sum(self.codebooks[l][codes[:, l]] for l in range(self.levels))

    def last_level_distances(self, x):
        residual = np.ascontiguousarray(x, dtype=np.float32)
        for centroids in self.codebooks[:-1]:
            if self.normalize_residuals:
                residual = normalize_rows(residual)
            residual = residual - centroids[nearest(residual, centroids)[0]]
        if self.normalize_residuals:
            residual = normalize_rows(residual)
        last = self.codebooks[-1]
        return ((residual[:, None, :] - last[None]) ** 2).sum(-1)

    def _state(self):
        params = dict(levels=self.levels, codebook_size=self.k, iters=self.iters,
                      points_per_centroid=self.points_per_centroid, seed=self.seed,
                      normalize_residuals=self.normalize_residuals)
        return params, {"codebooks": self.codebooks}

    def _load_state(self, params, arrays, directory):
        self.__init__(**params, progress=False)
        self.codebooks = arrays["codebooks"]
