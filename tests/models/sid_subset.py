"""Shared by the semantic-ID model tests: a small real Amazon Beauty subset, a small SID table
built in the test, and a few training steps through the real batch code."""

import gzip
import json

import numpy as np
import torch

from distrec.data.batches import SequenceData, build_train_index, collate_eval, collate_train
from distrec.tokenize.sid_table import SIDTable, add_dedup_digit

BEAUTY_ITEMS = 12101


def beauty_subset(data_root, users: int = 300) -> SequenceData:
    """The first `users` Beauty users, leave-one-out split (valid = n-2, test = n-1)."""
    seqs = []
    with gzip.open(data_root / "amazon-beauty" / "sequences.jsonl.gz", "rt") as f:
        for line in f:
            seqs.append(json.loads(line)["items"])
            if len(seqs) == users:
                break
    lengths = np.array([len(s) for s in seqs])
    return SequenceData(user_ids=np.arange(1, users + 1), items=np.concatenate(seqs).astype(np.int64),
                        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                        valid_pos=lengths - 2, test_pos=lengths - 1)


def sid_table(levels: int, size: int, dedup: bool = True, seed: int = 0, num_items: int = BEAUTY_ITEMS) -> SIDTable:
    """Random codes for the whole catalog (+ a de-duplication digit, as TIGER's tables have)."""
    codes = np.random.default_rng(seed).integers(0, size, (num_items, levels))
    sizes = [size] * levels
    if dedup:
        codes, extra = add_dedup_digit(codes)
        sizes.append(extra)
    return SIDTable.from_codes(np.arange(1, num_items + 1), codes, sizes)


def train_losses(model, data: SequenceData, max_history: int, steps: int, batch_size: int = 32, lr: float = 3e-3,
                 seed: int = 0) -> list[float]:
    """Losses of `steps` AdamW steps, cycling over the same few batches (memorisation must lower it)."""
    torch.manual_seed(seed)
    index = build_train_index(data, max_history)
    ids = np.random.default_rng(seed).permutation(len(index))[: batch_size * 2]
    batches = [collate_train(data, index, ids[i:i + batch_size], max_history) for i in range(0, len(ids), batch_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        out = model(batches[step % len(batches)])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


def eval_batch(data: SequenceData, max_history: int, users: int = 16) -> dict:
    rows = np.arange(users)
    return collate_eval(data, rows, data.test_pos[rows], max_history)


def prepare_beauty(root, data_root, tables: dict) -> None:
    """The real Beauty data/ artifact (prepare stage) under `root`, plus SID tables `root/<name>`."""
    from distrec.config import compose
    from distrec.stages.prepare import run

    run(compose(["stage=prepare", "data=beauty", f"data.path={data_root / 'amazon-beauty'}", f"paths.root={root}",
                 "progress=false"]))
    for name, table in tables.items():
        table.save(root / name)


def train_zero2_one_step(root, sids: str, train_dir, *overrides) -> dict:
    """One step of `distrec train` under 2-worker ZeRO-2 (Ray Train, gloo), validating 16 users."""
    from distrec.config import compose
    from distrec.stages.train import run

    cfg = compose(["stage=train", "data=beauty", f"paths.root={root}", f"paths.sids={root / sids}",
                   f"paths.train={train_dir}", "engine=zero2", "engine.num_workers=2", "train.max_steps=1",
                   "train.global_batch_size=8", "train.warmup_steps=0", "train.val_max_users=16",
                   "eval.batch_size=16", "progress=false", *overrides])
    return run(cfg)
