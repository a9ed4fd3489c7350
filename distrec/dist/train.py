"""Training under Ray Train: `TorchTrainer` workers run `distrec.train.loop.train_loop`.

- Ray sets up the process group (gloo on CPU, nccl on GPU); DeepSpeed reuses it.
- Every worker reads all prepared sequences from their parquet shards (not split: the sampler
  picks each worker's micro-batches, so batches do not depend on the worker count): with pyarrow
  (`engine.reader=arrow`, instant) or streamed through Ray Data (`engine.reader=ray_data`, for
  tables in object stores; its start-up costs seconds to tens of seconds on a busy 2-core host).
- Every rank writes its part of a checkpoint to a local directory and reports it; Ray merges the
  ranks' files into one checkpoint under `<train dir>/ray/`. Re-running with the same RunConfig
  (name, storage path) resumes from the latest one (`get_checkpoint()`), and so does a restart
  after a worker failure (`engine.max_failures`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from distrec.artifacts import read_table, shard_paths
from distrec.data.batches import SEQUENCE_COLUMNS
from distrec.errors import ConfigError

RUN_NAME = "ray"


class RaySession:
    """What the training loop needs from Ray Train: rank, checkpoints, reporting."""

    # Ray forwards a worker's output line by line: a bar's redraws arrive as blank lines (the loop
    # prints a line per validation instead)
    progress_bar = False

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._checkpoint = ray.train.get_checkpoint()
        self._open = contextlib.ExitStack()

    def latest_checkpoint(self) -> Path | None:
        if self._checkpoint is None:
            return None
        return Path(self._open.enter_context(self._checkpoint.as_directory()))

    def save(self, step: int, write, metrics: dict, protect: set[int]) -> None:
        import ray.train

        tmp = Path(tempfile.mkdtemp(prefix=f"distrec-step{step}-rank{self.rank}-"))
        try:
            write(tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def report(self, metrics: dict) -> None:
        import ray.train

        ray.train.report(metrics)


def _worker(config: dict) -> None:
    import pyarrow as pa
    import ray.train

    from distrec.data.batches import SequenceData
    from distrec.train.loop import train_loop

    job = config["job"]
    session = RaySession()
    pids = Path(job.train_dir) / "workers"  # lets operators (and tests) find and signal the workers
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"rank-{session.rank}.pid").write_text(f"{os.getpid()}\n")
    source = job.extra["sequences_dir"]
    if job.cfg.engine.reader == "ray_data":
        shard = ray.train.get_dataset_shard("sequences")
        table = pa.concat_tables(list(shard.iter_batches(batch_format="pyarrow", batch_size=None)))
    else:
        table = read_table(source)
    data = SequenceData.from_arrow(table, source=source)
    try:
        train_loop(job, session, data)
    finally:
        session._open.close()


def check_resources(ray, engine_cfg) -> None:
    """Fail before starting when the cluster cannot place the workers (Ray would wait forever)."""
    have = ray.cluster_resources()
    need_cpu = engine_cfg.num_workers * engine_cfg.cpus_per_worker
    spare = 0.25 if engine_cfg.reader == "ray_data" else 0.0  # Ray Data's read tasks hang without CPU
    if need_cpu + spare > have.get("CPU", 0):
        raise ConfigError(f"engine.num_workers={engine_cfg.num_workers} x engine.cpus_per_worker="
                          f"{engine_cfg.cpus_per_worker} needs {need_cpu:g} CPUs but the Ray cluster has "
                          f"{have.get('CPU', 0):g}" + (" (and engine.reader=ray_data needs some left for reading)" if spare else "")
                          + "; lower them or join a bigger cluster (cluster.address)")
    if engine_cfg.use_gpu and engine_cfg.num_workers > have.get("GPU", 0):
        raise ConfigError(f"engine.num_workers={engine_cfg.num_workers} GPU workers but the Ray cluster has "
                          f"{have.get('GPU', 0):g} GPUs; lower engine.num_workers or set engine.use_gpu=false")


def run_ray_training(job, sequences_dir: str | Path, cluster_cfg=None):
    """Train with Ray Train; returns (latest checkpoint dir, {step: checkpoint dir})."""
    from distrec.dist.ray_env import init_ray

    ray = init_ray(cluster_cfg)
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    e = job.cfg.engine
    check_resources(ray, e)
    paths = [str(p) for p in shard_paths(sequences_dir)]
    job.extra["sequences_dir"] = str(sequences_dir)
    datasets = {}
    if e.reader == "ray_data":
        ray.data.DataContext.get_current().enable_progress_bars = bool(job.cfg.progress)
        columns = SEQUENCE_COLUMNS + (["timestamps"] if _has_column(paths[0], "timestamps") else [])
        datasets["sequences"] = ray.data.read_parquet(paths, columns=columns)
    resources = {"CPU": e.cpus_per_worker, **({"GPU": 1} if e.use_gpu else {})}
    keep = job.cfg.train.keep_checkpoints
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=e.num_workers, use_gpu=e.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if e.use_gpu else "gloo"),
        run_config=RunConfig(name=RUN_NAME, storage_path=str(Path(job.train_dir).resolve()),
                             failure_config=FailureConfig(max_failures=e.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep if keep > 0 else None)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    checkpoints = {}
    for checkpoint, metrics in result.best_checkpoints or []:
        checkpoints[int(metrics["step"])] = Path(checkpoint.path)
    latest = Path(result.checkpoint.path) if result.checkpoint is not None else None
    return latest, checkpoints


def _has_column(path: str, name: str) -> bool:
    import pyarrow.parquet as pq

    return name in pq.read_schema(path).names
