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
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from distrec.artifacts import read_json, read_table, shard_paths, write_json
from distrec.data.batches import SEQUENCE_COLUMNS
from distrec.errors import ConfigError, DistrecError

log = logging.getLogger("distrec.train")
RUN_NAME = "ray"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints
USER_ERROR = "user-error"  # workers/user-error-<rank>.json: a DistrecError a worker stopped on


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
    try:
        if job.cfg.engine.reader == "ray_data":
            shard = ray.train.get_dataset_shard("sequences")
            table = pa.concat_tables(list(shard.iter_batches(batch_format="pyarrow", batch_size=None)))
        else:
            table = read_table(source)
        train_loop(job, session, SequenceData.from_arrow(table, source=source))
    except DistrecError as e:
        # Bad input or config (every rank has it: see loop.on_every_rank). Raised, Ray Train would retry
        # it engine.max_failures times to the same end; the driver raises it instead (user_error).
        write_json(pids / f"{USER_ERROR}-{session.rank}.json", {"type": type(e).__name__, "message": str(e)})
    finally:
        session._open.close()


def user_error(workers_dir: Path) -> DistrecError | None:
    """The DistrecError the workers stopped on (rank order), removing their reports; None if none."""
    import distrec.errors

    reports = sorted(Path(workers_dir).glob(f"{USER_ERROR}-*.json"))
    found = [read_json(p) for p in reports]
    for p in reports:
        p.unlink()
    if not found:
        return None
    kind = getattr(distrec.errors, found[0]["type"], DistrecError)
    return (kind if isinstance(kind, type) and issubclass(kind, DistrecError) else DistrecError)(found[0]["message"])


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
    from distrec.parallel.ray_env import init_ray

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
    workers_dir = Path(job.train_dir) / "workers"
    user_error(workers_dir)  # reports an interrupted earlier run left
    forget_deleted_checkpoints(Path(job.train_dir) / RUN_NAME)
    result = _fit_in_thread(trainer)
    error = user_error(workers_dir)
    if error is not None:
        raise error
    if result.error is not None:
        raise result.error
    checkpoints = {}
    for checkpoint, metrics in result.best_checkpoints or []:
        checkpoints[int(metrics["step"])] = Path(checkpoint.path)
    latest = Path(result.checkpoint.path) if result.checkpoint is not None else None
    return latest, checkpoints


def forget_deleted_checkpoints(run_dir: Path) -> list[str]:
    """Drop the checkpoints deleted by hand (a corrupt one, as its error says) from Ray Train's run
    snapshot, so that the run resumes from the newest one left: Ray refuses to start a run whose
    snapshot names a missing checkpoint. Returns the names dropped."""
    path = Path(run_dir) / SNAPSHOT
    if not path.exists():
        return []
    snap = json.loads(path.read_text())
    results, indices = snap.get("checkpoint_results"), snap.get("checkpoint_report_indices")
    if not isinstance(results, list) or not isinstance(indices, list) or len(results) != len(indices):
        return []  # not the layout this was written for (Ray 2.60): leave it to Ray's own error

    def exists(result) -> bool:
        return (Path(run_dir) / result["checkpoint_dir_name"]).exists()

    gone = [r["checkpoint_dir_name"] for r in results if not exists(r)]
    if not gone:
        return []
    kept = [(r, i) for r, i in zip(results, indices) if exists(r)]
    snap["checkpoint_results"] = [r for r, _ in kept]
    snap["checkpoint_report_indices"] = [i for _, i in kept]
    snap["latest_checkpoint_result"] = max(kept, key=lambda ri: ri[1])[0] if kept else None
    pending = [(r, v) for r, v in zip(snap.get("pending_training_results", []),
                                      snap.get("pending_validation_specs", [])) if exists(r)]
    snap["pending_training_results"] = [r for r, _ in pending]
    snap["pending_validation_specs"] = [v for _, v in pending]
    for key in ("validated_checkpoint_dir_names", "timed_out_validation_checkpoint_dir_names",
                "failed_validation_checkpoint_dir_names"):
        if key in snap:
            snap[key] = [name for name in snap[key] if name not in gone]
    write_json(path, snap)
    log.warning("checkpoints deleted from %s: %s; resuming from %s", run_dir, ", ".join(gone),
                snap["latest_checkpoint_result"]["checkpoint_dir_name"] if kept else "the start")
    return gone


def _fit_in_thread(trainer):
    """`trainer.fit()` in a helper thread, the main thread waiting in Python: a signal handler runs only in
    the main thread, between bytecodes, so in a blocking `ray.get` SIGTERM and Ctrl-C waited for the whole
    run. Now the CLI's handlers stop the run at once (the driver's exit ends the workers)."""
    out = {}

    def target():
        try:
            out["result"] = trainer.fit()
        except BaseException as e:  # handed to the main thread
            out["error"] = e

    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in out:
        raise out["error"]
    return out["result"]


def _has_column(path: str, name: str) -> bool:
    import pyarrow.parquet as pq

    return name in pq.read_schema(path).names
