"""Run a training job in this process (`engine.num_workers=0`) or under Ray Train, then export.

The in-process path is what GPU hosts without Ray and speed/memory measurements use: with
`engine.kind=deepspeed` it still runs the model through the DeepSpeed engine (one-process group);
`engine.kind=fast` (engine=gpu) imports neither Ray nor DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distrec.train.checkpoint import complete_checkpoints, latest_checkpoint, read_state
from distrec.train.engine import check_engine_config, init_single_process
from distrec.train.export import export_weights
from distrec.train.loop import LocalSession, TrainJob, select_metric, train_loop


def fit(job: TrainJob, sequences_dir: str | Path | None = None, cluster_cfg=None, info: dict | None = None) -> dict:
    """Train, export train/weights + model.json; returns the run summary."""
    e = job.cfg.engine
    check_engine_config(e)
    metric = select_metric(job.cfg)
    train_dir = Path(job.train_dir)
    if e.num_workers == 0:
        device = torch.device("cuda", 0) if e.use_gpu else torch.device("cpu")
        if e.kind == "deepspeed":
            init_single_process("nccl" if e.use_gpu else "gloo")
        session = LocalSession(train_dir, job.cfg.train.keep_checkpoints, device)
        summary = train_loop(job, session, job.data)
        checkpoints = dict(complete_checkpoints(session.root))
        latest = latest_checkpoint(session.root)
    else:
        from distrec.parallel.train import run_ray_training

        latest, checkpoints = run_ray_training(job, sequences_dir, cluster_cfg)
        summary = dict(read_state(latest).get("summary") or {})
    hashes = {k: v for k, v in job.identity.items() if k != "model_config"}  # model.json has the config
    summary["model"] = export_weights(train_dir, latest, checkpoints,
                                      {**(info or {}), **hashes, "select_metric": metric})
    return summary
