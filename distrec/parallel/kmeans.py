"""Distributed residual k-means on Ray: one actor per group of parquet shards.

Each actor wraps a `distrec.clustering.kmeans.KMeansWorker` over its shards (streamed, never the whole
catalog in one worker); the driver (`residual_kmeans`) reduces sums/counts every iteration. Shards
are given to actors in contiguous blocks so the global row order, hence the sample and the result,
is the same as the single-process path's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distrec.clustering.kmeans import KMeansWorker
from distrec.clustering.vectors import VectorShards
from distrec.errors import ConfigError


def split_contiguous(paths: list, num_workers: int) -> list[list]:
    """Shard paths in `num_workers` contiguous blocks (fewer when there are fewer shards)."""
    num_workers = min(num_workers, len(paths))
    bounds = np.linspace(0, len(paths), num_workers + 1).round().astype(int)
    return [paths[bounds[i]:bounds[i + 1]] for i in range(num_workers)]


class RayPool:
    """Ray actors, one per block of shards, with the same `call` as `LocalPool`."""

    def __init__(self, paths: list[str | Path], num_workers: int, *, column: str = "vector",
                 batch_rows: int = 65_536, normalize_residuals: bool = False, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, cluster=None):
        from distrec.parallel.ray_env import init_ray

        if num_workers < 1:
            raise ConfigError("tokenizer.num_workers must be >= 1 for the Ray path (0 runs in-process)")
        ray = init_ray(cluster)
        self.ray = ray
        blocks = split_contiguous(list(paths), num_workers)
        num_workers = len(blocks)
        cpus = ray.cluster_resources().get("CPU", 0)
        if getattr(cluster, "address", None) is None and num_workers * num_cpus > cpus:
            # on a fixed local cluster the extra actors would wait forever for a CPU
            raise ConfigError(f"tokenizer.num_workers={num_workers} needs {num_workers * num_cpus:g} CPUs but the "
                              f"local Ray cluster has {cpus:g}; lower tokenizer.num_workers or raise cluster.num_cpus")
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_ShardActor)
        threads = max(1, int(num_cpus))
        self.actors = [remote.remote([str(p) for p in block], column, batch_rows, normalize_residuals, threads)
                       for block in blocks]

    def call(self, method: str, per_worker_args: list[tuple] | None = None, *args):
        if per_worker_args is None:
            per_worker_args = [args] * len(self.actors)
        refs = [a.call.remote(method, *a_args) for a, a_args in zip(self.actors, per_worker_args)]
        return self.ray.get(refs)

    def shutdown(self):
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


class _ShardActor:
    def __init__(self, paths, column, batch_rows, normalize_residuals, threads):
        source = VectorShards(paths, column=column, batch_rows=batch_rows)
        self.worker = KMeansWorker(source, normalize_residuals=normalize_residuals, threads=threads)

    def call(self, method, *args):
        return getattr(self.worker, method)(*args)
