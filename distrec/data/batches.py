"""Training and evaluation batches from the prepared sequences (batch format: docs/architecture.md).

Sequences live in flat numpy arrays (`SequenceData`); a training *sample* is a window of at most
`max_history` positions ending at some position of a user's training prefix. Batches are built
by vectorised torch gathers, left-padded with 0, on the device the sample ids are on: host arrays
are read in place (`torch.from_numpy`); `engine.kind=fast` keeps a copy of the arrays on its device
and cuts every batch there (`TrainSampler.device_micro_batches`), with the same code.

Sampling is a pure function of (seed, step): every step's global batch is the same set of samples
whatever the number of workers, and each worker takes its interleaved micro-batches from it. That
keeps losses comparable across worker counts and makes the data position (the step) exact to
checkpoint and resume.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from distrec.data.splits import train_end
from distrec.errors import ConfigError, DataError

SEQUENCE_COLUMNS = ["user_id", "items", "valid_pos", "test_pos"]


@dataclass
class SequenceData:
    """All users' sequences as flat arrays; user row u's items are items[offsets[u]:offsets[u+1]]."""

    user_ids: np.ndarray  # int64 [U]
    items: np.ndarray  # int64 [total interactions]
    offsets: np.ndarray  # int64 [U + 1]
    valid_pos: np.ndarray  # int64 [U], -1 = none
    test_pos: np.ndarray  # int64 [U], -1 = none
    timestamps: np.ndarray | None = None  # int64 aligned with items, when the data has them
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # device -> SequenceTensors

    def tensors(self, device: torch.device | str = "cpu") -> "SequenceTensors":
        """The arrays the batch gathers read, as tensors on `device` (CPU: the same memory; cached)."""
        device = torch.device(device)
        if device not in self._tensors:
            self._tensors[device] = SequenceTensors(
                *(_tensor(a, device) for a in (self.user_ids, self.items, self.offsets)),
                None if self.timestamps is None else _tensor(self.timestamps, device))
        return self._tensors[device]

    @classmethod
    def from_arrow(cls, table: pa.Table, source="sequences") -> "SequenceData":
        missing = [c for c in SEQUENCE_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"sequences table lacks columns {missing}", source,
                            hint="re-run `distrec prepare` (schema: docs/architecture.md)")
        # rows in user_id order: the same samples whatever order the shards were read in
        table = table.sort_by("user_id")
        items = table.column("items").combine_chunks()
        offsets = np.asarray(items.offsets, dtype=np.int64)
        flat = np.asarray(items.values.to_numpy(zero_copy_only=False), dtype=np.int64)
        timestamps = None
        if "timestamps" in table.column_names and table.column("timestamps").null_count == 0:
            ts = table.column("timestamps").combine_chunks()
            timestamps = np.asarray(ts.values.to_numpy(zero_copy_only=False), dtype=np.int64)
            if len(timestamps) != len(flat):
                raise DataError("timestamps and items lists differ in length", source,
                                hint="re-run `distrec prepare`")
        offsets = offsets - offsets[0]
        data = cls(
            user_ids=table.column("user_id").to_numpy().astype(np.int64),
            items=flat,
            offsets=offsets,
            valid_pos=table.column("valid_pos").to_numpy().astype(np.int64),
            test_pos=table.column("test_pos").to_numpy().astype(np.int64),
            timestamps=timestamps,
        )
        data.check(source)
        return data

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def train_lengths(self, include_valid: bool = False) -> np.ndarray:
        """Length of each user's training prefix: items[:valid_pos], or all items without a split.
        include_valid: items[:test_pos], or all items without a test item (the validation item trains)."""
        valid = np.full_like(self.valid_pos, -1) if include_valid else self.valid_pos
        return train_end(valid, self.test_pos, self.lengths())

    def check(self, source) -> None:
        n = self.lengths()
        bad = np.flatnonzero((self.valid_pos >= n) | (self.test_pos >= n) | (self.valid_pos < -1) | (self.test_pos < -1))
        if len(bad):
            raise DataError(f"user_id {self.user_ids[bad[0]]}: valid_pos/test_pos outside its items list "
                            f"({len(bad)} users)", source, hint="re-run `distrec prepare`")
        if len(self.items) and self.items.min() < 1:
            raise DataError("item id < 1 in sequences (0 is padding)", source, hint="re-run `distrec prepare`")


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`: the same memory on the CPU, else one copy. Arrow and Ray's
    object store hand out read-only arrays; torch warns about those, but the gathers only read them, and
    a copy would double the sequences' memory in every worker."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)


@dataclass
class SequenceTensors:
    user_ids: torch.Tensor
    items: torch.Tensor
    offsets: torch.Tensor
    timestamps: torch.Tensor | None


# ---------------------------------------------------------------- training samples

@dataclass
class TrainIndex:
    """One row per training window: which user, where it ends, and whether all positions are labelled."""

    user_row: np.ndarray  # int64 [S]
    end: np.ndarray  # int64 [S]: the window's inputs are items[end-T:end], targets items[end-T+1:end+1]
    label_all: np.ndarray  # bool [S]
    num_labels: np.ndarray  # int64 [S]: labelled positions of the window
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # device -> [user_row, end, ...]

    def __len__(self) -> int:
        return len(self.user_row)

    def tensors(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """(user_row, end, label_all, num_labels) as tensors on `device` (CPU: the same memory; cached)."""
        device = torch.device(device)
        if device not in self._tensors:
            self._tensors[device] = [_tensor(a, device) for a in (self.user_row, self.end, self.label_all,
                                                                   self.num_labels)]
        return self._tensors[device]


def build_train_index(data: SequenceData, max_history: int, include_valid: bool = False) -> TrainIndex:
    """Windows of `max_history` positions over each training prefix (RPG-style): the first window
    labels every position; each later window (sliding by one) labels only its last position.
    include_valid: the prefixes end before the test item (SequenceData.train_lengths)."""
    T = int(max_history)
    pairs = np.maximum(data.train_lengths(include_valid) - 1, 0)  # (input, next item) pairs per user
    rows = np.arange(data.num_users)
    has = pairs > 0
    first_rows = rows[has]
    first_end = np.minimum(pairs[has], T)
    extra = np.maximum(pairs - T, 0)  # later windows of each user
    later_rows = np.repeat(rows, extra)
    # ends T+1 .. pairs for each user, in order
    starts = np.repeat(np.cumsum(extra) - extra, extra)
    later_end = np.arange(len(later_rows)) - starts + T + 1
    user_row = np.concatenate([first_rows, later_rows])
    end = np.concatenate([first_end, later_end])
    label_all = np.concatenate([np.ones(len(first_rows), bool), np.zeros(len(later_rows), bool)])
    order = np.lexsort((end, user_row))  # user by user, oldest window first
    user_row, end, label_all = user_row[order], end[order], label_all[order]
    num_labels = np.where(label_all, end, 1)
    return TrainIndex(user_row.astype(np.int64), end.astype(np.int64), label_all, num_labels.astype(np.int64))


def _gather(t: SequenceTensors, rows: torch.Tensor, ends: torch.Tensor, T: int):
    """Left-padded [B, T] positions `ends-T .. ends-1` of each row's items (flat indices + mask)."""
    rel = ends[:, None] - T + torch.arange(T, device=ends.device)[None, :]
    valid = rel >= 0
    flat = t.offsets[rows][:, None] + rel.clamp(min=0)
    return flat, valid


def _time_columns(t: SequenceTensors, flat: torch.Tensor, valid: torch.Tensor) -> dict:
    """Each position's time and the time of its next item (the target's for the newest): HSTU's
    time-gap bias measures from the latter, as Meta's code does (at serving time: the request time)."""
    if t.timestamps is None:
        return {}
    return {"timestamps": torch.where(valid, t.timestamps[flat], 0),
            "next_timestamps": torch.where(valid, t.timestamps[flat + 1], 0)}


def collate_train(data: SequenceData, index: TrainIndex, sample_ids, max_history: int) -> dict:
    """The training batch of `sample_ids` (numpy or a tensor), on the device the ids are on."""
    ids = torch.as_tensor(sample_ids)
    t = data.tensors(ids.device)
    user_row, end, label_all, _ = index.tensors(ids.device)
    rows, ends, label_all = user_row[ids], end[ids], label_all[ids]
    T = int(max_history)
    flat, valid = _gather(t, rows, ends, T)
    inputs = torch.where(valid, t.items[flat], 0)
    newest = torch.arange(T, device=ids.device) == T - 1
    # later windows label only their newest position
    targets = torch.where(valid & (label_all[:, None] | newest), t.items[flat + 1], 0)
    batch = {"input_ids": inputs, "target_ids": targets, "user_ids": t.user_ids[rows]}
    return batch | _time_columns(t, flat, valid)


class TrainSampler:
    """Global batch of step s = a slice of the seeded permutation of epoch s // steps_per_epoch.

    Worker `rank` takes micro-batches a*world + rank (a < accumulation steps) of it, so the union
    over workers is the same global batch for any world size. The last partial batch is dropped.
    With `group_by_length`, the global batch is ordered by history length before it is cut, so a
    micro-batch of short histories is not padded to the longest history of the whole batch (models
    trim all-padding columns); the global batch, and so the gradient, stays the same.
    """

    def __init__(self, index: TrainIndex, global_batch: int, micro_batch: int, world_size: int,
                 rank: int, seed: int, weighting: str = "labels", group_by_length: bool = False):
        if global_batch % (micro_batch * world_size):
            raise ConfigError(f"train.global_batch_size={global_batch} is not a multiple of "
                              f"micro-batch {micro_batch} x {world_size} workers")
        if len(index) < global_batch:
            raise ConfigError(f"train.global_batch_size={global_batch} is larger than the {len(index)} "
                              "training samples; lower it")
        if weighting not in ("labels", "rows"):
            raise ConfigError(f"train.loss_weighting='{weighting}' is unknown; choose labels or rows")
        self.index, self.gb, self.mb, self.world, self.rank = index, global_batch, micro_batch, world_size, rank
        self.seed, self.weighting, self.group_by_length = seed, weighting, group_by_length
        self.accum = global_batch // (micro_batch * world_size)
        self.steps_per_epoch = len(index) // global_batch
        self._epoch, self._perm = -1, None
        self._device_perm = (None, None)  # ((epoch, device), permutation there)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.index))
        return self._perm

    def global_batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[i * self.gb:(i + 1) * self.gb]

    def micro_batches(self, step: int) -> list[tuple[np.ndarray, float]]:
        """This worker's (sample ids, loss weight) for `step`. Weights over all workers' micro-batches
        sum to 1: each micro-batch's share of the global batch's labelled positions (or rows)."""
        ids = self.global_batch(step)
        if self.group_by_length:  # window end = history length (all windows past max_history are full)
            ids = ids[np.argsort(self.index.end[ids], kind="stable")]
        if self.weighting == "labels":
            counts = self.index.num_labels[ids].astype(np.float64)
        else:
            counts = np.ones(len(ids))
        total = counts.sum()
        out = []
        for a in range(self.accum):
            block = a * self.world + self.rank
            sl = slice(block * self.mb, (block + 1) * self.mb)
            out.append((ids[sl], float(counts[sl].sum() / total)))
        return out

    def device_micro_batches(self, step: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`micro_batches` computed on `device` (engine.kind=fast): the same ids, and the weights as
        float32 tensors there, so nothing waits for the host. The epoch's permutation is the same numpy
        draw, copied to the device once per epoch."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._device_perm[0] != (epoch, device):
            self._device_perm = ((epoch, device), torch.from_numpy(self.permutation(epoch)).to(device))
        ids = self._device_perm[1][i * self.gb:(i + 1) * self.gb]
        _, end, _, num_labels = self.index.tensors(device)
        if self.group_by_length:
            ids = ids[torch.argsort(end[ids], stable=True)]
        counts = num_labels[ids].double() if self.weighting == "labels" else torch.ones(len(ids), device=device,
                                                                                         dtype=torch.float64)
        weights = (counts.view(-1, self.mb).sum(1) / counts.sum()).float()
        blocks = [a * self.world + self.rank for a in range(self.accum)]
        return [(ids[b * self.mb:(b + 1) * self.mb], weights[b]) for b in blocks]


# ---------------------------------------------------------------- evaluation batches

def eval_rows(data: SequenceData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, target positions) of the users who have a `split` target and some history."""
    if split not in ("valid", "test"):
        raise ConfigError(f"split='{split}' is unknown; choose valid or test")
    pos = data.valid_pos if split == "valid" else data.test_pos
    rows = np.flatnonzero(pos >= 1)
    return rows, pos[rows]


def eval_users(data: SequenceData, split: str, max_users: int | None = None, seed: int = 0):
    """(user rows, target positions) of `split`; with max_users, a seeded random sample of them (in row
    order). The first N users in id order are no sample: ids follow the order users appear in the
    raw data (on Beauty, SASRec's NDCG@10 is 0.0132 on the first 3,000 and 0.0267 on all users). The
    sample depends on (seed, the split's users, max_users) only: the same at every validation and on
    every rank, whatever the worker count."""
    rows, pos = eval_rows(data, split)
    if max_users is not None and max_users < len(rows):
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), int(max_users), replace=False))
        rows, pos = rows[pick], pos[pick]
    return rows, pos


def user_sample(data: SequenceData, split: str, max_users: int | None, seed: int) -> dict | None:
    """What `eval_users` sampled, to record beside the metrics: None when every user is evaluated."""
    total = len(eval_rows(data, split)[0])
    if max_users is None or max_users >= total:
        return None
    return {"users": int(max_users), "of": total, "seed": int(seed)}


def collate_eval(data: SequenceData, rows, pos, max_history: int) -> dict:
    """History items[:pos] (last `max_history`, left-padded) and the target items[pos], on the device
    `rows` is on (numpy: the CPU)."""
    rows = torch.as_tensor(rows)
    pos = torch.as_tensor(pos, device=rows.device)
    t = data.tensors(rows.device)
    flat, valid = _gather(t, rows, pos, int(max_history))
    batch = {
        "input_ids": torch.where(valid, t.items[flat], 0),
        "target": t.items[t.offsets[rows] + pos],
        "user_ids": t.user_ids[rows],
    }
    return batch | _time_columns(t, flat, valid)


def eval_batches(data: SequenceData, split: str, max_history: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, max_users: int | None = None, seed: int = 0, device=None,
                 same_sizes: bool = False):
    """Yield (batch, n_real) for this worker's share of `split` (or of its seeded sample of max_users
    users: `eval_users`), built on `device` (default: the CPU). Every worker yields the same number of
    batches (ZeRO-3 needs all ranks in each forward); padding batches repeat users and have n_real < B.
    `same_sizes`: the i-th batch has the same number of rows on every worker (its users repeated), for
    ZeRO-3, where a model that cuts a batch into pieces must make as many calls on every rank."""
    all_rows, all_pos = eval_users(data, split, max_users, seed)
    per_rank = -(-len(all_rows) // world_size)
    mine = slice(rank * per_rank, min((rank + 1) * per_rank, len(all_rows)))
    device = torch.device(device or "cpu")
    # the whole share goes to the device at once; each batch is a slice of it
    rows, pos = (torch.from_numpy(a[mine].copy()).to(device) for a in (all_rows, all_pos))
    for start in range(0, per_rank, batch_size):
        r, p = rows[start:start + batch_size], pos[start:start + batch_size]
        n_real = len(r)
        if n_real == 0:  # this worker ran out: a dummy batch of one user keeps ranks in step
            r, p = (torch.from_numpy(a[:1].copy()).to(device) for a in (all_rows, all_pos))
        if same_sizes:
            take = torch.arange(min(batch_size, per_rank - start), device=device) % len(r)
            r, p = r[take], p[take]
        yield collate_eval(data, r, p, max_history), n_real
