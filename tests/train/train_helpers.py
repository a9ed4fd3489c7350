"""Helpers of the engine tests: tiny fp32 runs of the real `distrec train` stage and their logs."""

import json

from distrec.config import compose

# A debug-size SASRec, no dropout, fp32: runs are deterministic and comparable across engines.
TINY = ["model.size=debug", "model.dropout=0", "engine.precision=fp32", "train.global_batch_size=64",
        "train.max_steps=12", "train.warmup_steps=2", "train.log_every=1", "train.eval_every=6",
        "train.patience=0", "train.keep_checkpoints=0", "train.val_max_users=200", "eval.batch_size=128",
        "progress=false"]


def train(root, train_dir, *overrides):
    from distrec.stages.train import run

    cfg = compose(["stage=train", "data=ml100k", f"paths.root={root}", f"paths.train={train_dir}", *TINY,
                   *overrides])
    return run(cfg)


def rows(train_dir, split="train"):
    lines = (train_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def losses(train_dir):
    return [r["loss"] for r in rows(train_dir)]
