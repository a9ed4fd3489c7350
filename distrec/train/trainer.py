"""A training job from start to exported weights: `train_in_process` runs it here (the Ray path is
distrec.parallel.train; distrec.parallel.executor chooses), `export_run` writes train/weights and
model.json from its checkpoints.

The in-process path is what GPU hosts without Ray and speed/memory measurements use: with
`engine.kind=deepspeed` it still runs the model through the DeepSpeed engine (one-process group);
`engine.kind=fast` (engine=gpu) imports neither Ray nor DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distrec.data.batches import SequenceData
from distrec.train.checkpoint import complete_checkpoints, latest_checkpoint
from distrec.train.engine import init_single_process
from distrec.train.export import export_weights
from distrec.train.loop import LocalSession, TrainJob, select_metric, train_loop


def train_in_process(job: TrainJob, sequences: SequenceData) -> tuple[Path, dict, dict]:
    """Train in this process; returns (latest checkpoint, {step: checkpoint}, run summary)."""
    e = job.cfg.engine
    device = torch.device("cuda", 0) if e.use_gpu else torch.device("cpu")
    if e.kind == "deepspeed":
        init_single_process("nccl" if e.use_gpu else "gloo")
    session = LocalSession(Path(job.train_dir), job.cfg.train.keep_checkpoints, device)
    summary = train_loop(job, session, sequences)
    return latest_checkpoint(session.root), dict(complete_checkpoints(session.root)), summary


def export_run(job: TrainJob, latest: Path, checkpoints: dict, summary: dict, info: dict | None = None) -> dict:
    """Export train/weights + model.json; returns the summary with the exported model's facts."""
    hashes = {k: v for k, v in job.identity.items() if k != "model_config"}  # model.json has the config
    summary["model"] = export_weights(Path(job.train_dir), latest, checkpoints,
                                      {**(info or {}), **hashes, "select_metric": select_metric(job.cfg)})
    return summary
