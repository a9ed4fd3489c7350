"""Where work runs, chosen in one place: in this process, or on Ray workers.

Each stage that can spread its work has a `num_workers` knob (`engine`, `embed`, `tokenizer`,
`famae.engine`): 0 runs it here without starting Ray, N > 0 on N Ray workers of the cluster that
`cluster.*` names. The stages ask `executor(num_workers, cluster)` and call its methods; none of
them branches on the number of workers itself. Both kinds compute the same result.
"""

from __future__ import annotations

from pathlib import Path

from distrec.errors import ConfigError


class InProcess:
    """Everything in this process; Ray is never imported."""

    num_workers = 0

    def train(self, job, sequences, sequences_dir) -> tuple[Path, dict, dict]:
        """Train `job` on `sequences` (SequenceData); returns (latest checkpoint, checkpoints, summary)."""
        from distrec.train.trainer import train_in_process

        return train_in_process(job, sequences)

    def embed(self, embedder, inputs, out_dir: Path, ecfg, progress: bool) -> None:
        """Embed every row of `inputs` and write item_embeddings shards to `out_dir`."""
        import pyarrow as pa
        from tqdm import tqdm

        from distrec.artifacts import write_table
        from distrec.tokenize.embedders import embed_table

        parts = [embed_table(embedder, inputs.slice(i, ecfg.batch_size), ecfg.normalize, ecfg.seed)
                 for i in tqdm(range(0, inputs.num_rows, ecfg.batch_size), desc="embed", unit="batch",
                               disable=not progress)]
        write_table(pa.concat_tables(parts), out_dir, ecfg.num_shards)

    def recommend(self, predictor, load_args: dict, files, columns, out_dir: Path, rcfg, progress: bool) -> dict:
        """Top-K for the histories of the parquet `files` (distrec.inference.batch) with `predictor`,
        streamed to out_dir/part-*.parquet; `load_args` (Predictor.load's) are for workers that load their own.
        Returns the seconds of start-up phases (none here)."""
        from distrec.inference.batch import recommend_files

        recommend_files(predictor, files, columns, out_dir, rcfg, progress)
        return {}

    def kmeans_pool(self, paths, tcfg):
        """k-means workers over the vector shards at `paths` (distrec.clustering.kmeans's pool interface)."""
        from distrec.clustering.kmeans import KMeansWorker, LocalPool
        from distrec.clustering.vectors import VectorShards

        return LocalPool([KMeansWorker(VectorShards(paths, batch_rows=tcfg.batch_rows),
                                       normalize_residuals=tcfg.normalize_residuals)])

    def fit_subtrees(self, x, jobs, plan, progress: bool = True) -> list:
        """GAOQ's subtrees below level 0 (distrec.tokenize.quantizers.gaoq.fit_subtrees)."""
        from distrec.tokenize.quantizers.gaoq import fit_subtrees

        return fit_subtrees(x, jobs, plan, progress)


class OnRay:
    """The same work on `num_workers` Ray workers (a local cluster on 127.0.0.1, or `cluster.address`)."""

    def __init__(self, num_workers: int, cluster=None):
        self.num_workers, self.cluster = num_workers, cluster

    def train(self, job, sequences, sequences_dir) -> tuple[Path, dict, dict]:
        """Ray Train workers read their shards of `sequences_dir` (the driver's `sequences` stay unused)."""
        from distrec.parallel.train import run_ray_training
        from distrec.train.checkpoint import read_state

        latest, checkpoints = run_ray_training(job, sequences_dir, self.cluster)
        return latest, checkpoints, dict(read_state(latest).get("summary") or {})

    def embed(self, embedder, inputs, out_dir: Path, ecfg, progress: bool) -> None:
        from distrec.parallel.embed import embed_on_ray

        embed_on_ray(embedder, inputs, out_dir, ecfg, self.cluster, progress)

    def recommend(self, predictor, load_args: dict, files, columns, out_dir: Path, rcfg, progress: bool) -> dict:
        """Ray Data actors each load their own Predictor from `load_args` (the driver's `predictor` stays unused)."""
        from distrec.parallel.recommend import recommend_on_ray

        return recommend_on_ray(load_args, files, columns, out_dir, rcfg, predictor.raw_ids is not None, self.cluster, progress)

    def kmeans_pool(self, paths, tcfg):
        from distrec.parallel.kmeans import RayPool

        return RayPool(paths, self.num_workers, batch_rows=tcfg.batch_rows, normalize_residuals=tcfg.normalize_residuals,
                       num_gpus=tcfg.gpus_per_worker, cluster=self.cluster)

    def fit_subtrees(self, x, jobs, plan, progress: bool = True) -> list:
        from distrec.parallel.gaoq import fit_subtrees_ray

        return fit_subtrees_ray(x, jobs, plan, self.num_workers, progress, self.cluster)


def executor(num_workers: int, cluster=None, key: str = "num_workers") -> InProcess | OnRay:
    """InProcess for 0 workers, OnRay for more; `key` names the setting in errors."""
    if num_workers < 0:
        raise ConfigError(f"{key}={num_workers} must be >= 0 (0 = in this process, N = N Ray workers)")
    return OnRay(num_workers, cluster) if num_workers > 0 else InProcess()
