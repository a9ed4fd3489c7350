"""GAOQ subtrees on Ray: the level-0 clusters' subtrees, batched into tasks.

Below level 0 every node is independent given the shared anchors (the `Plan`), so the driver
puts the catalog in the object store once and runs batches of level-0 clusters as Ray tasks,
at most `num_workers` at a time. Each task runs the same `fit_subtrees` as the in-process path,
and every node's k-means is seeded from its prefix, so the codes do not depend on the split.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from distrec.errors import ConfigError
from distrec.tokenize.quantizers.gaoq import Plan, fit_subtrees

BATCHES_PER_WORKER = 4  # smaller tasks than workers x 1: a slow subtree does not hold up the rest


def _batches(jobs: list, num_batches: int) -> list[list]:
    """Jobs dealt round-robin by size (largest first), so batches carry similar work."""
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][1]))
    batches = [[] for _ in range(min(num_batches, len(jobs)))]
    for n, i in enumerate(order):
        batches[n % len(batches)].append(i)
    return [sorted(b) for b in batches]


def _run_batch(x, jobs, plan):
    return fit_subtrees(x, jobs, plan, progress=False)


def fit_subtrees_ray(x: np.ndarray, jobs: list[tuple[int, np.ndarray, np.ndarray]], plan: Plan, num_workers: int,
                     progress: bool = True, cluster=None) -> list:
    """Same result as `fit_subtrees(x, jobs, plan)`, computed by Ray tasks (one CPU each)."""
    from distrec.parallel.ray_env import init_ray

    if num_workers < 1:
        raise ConfigError("tokenizer.num_workers must be >= 1 for the Ray path (0 runs in-process)")
    ray = init_ray(cluster)
    remote = ray.remote(num_cpus=1)(_run_batch)
    x_ref, plan_ref = ray.put(np.ascontiguousarray(x)), ray.put(plan)
    batches = _batches(jobs, num_workers * BATCHES_PER_WORKER)
    results: list = [None] * len(jobs)
    pending, queue = {}, list(batches)
    with tqdm(total=len(jobs), desc="gaoq subtrees (ray)", disable=not progress) as bar:
        while queue or pending:
            while queue and len(pending) < num_workers:
                batch = queue.pop(0)
                pending[remote.remote(x_ref, [jobs[i] for i in batch], plan_ref)] = batch
            done, _ = ray.wait(list(pending), num_returns=1)
            batch = pending.pop(done[0])
            for i, part in zip(batch, ray.get(done[0])):
                results[i] = part
            bar.update(len(batch))
    return results
