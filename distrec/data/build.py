"""From a reader's RawData to the prepared tables: filter, order, remap ids, split.

Order of operations: min_rating -> chronological order -> iterative k-core -> max_history ->
dense ids -> split. Every interaction removed on the way is counted in `filtered` (stats.json).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from distrec.data import splits
from distrec.data.items import build_items_table
from distrec.data.readers.base import RawData
from distrec.errors import ConfigError, DataError


@dataclass
class Prepared:
    items: pa.Table
    sequences: pa.Table
    user_map: pa.Table  # user_id, source_id, raw_user_id
    item_map: pa.Table  # item_id, source_id, raw_id
    vocabs: dict  # categorical field -> Vocab
    split: dict
    stats: dict


def dense_order(keys: list[str]) -> np.ndarray:
    """Order in which keys get dense ids: numeric when every key is an integer, else lexicographic,
    so ids that are already dense integers (the normalised datasets) are kept as they are."""
    if all(k.lstrip("-").isdigit() for k in keys):
        return np.argsort(np.array([int(k) for k in keys], dtype=np.int64), kind="stable")
    return np.argsort(np.array(keys, dtype=object), kind="stable")


def k_core(user: np.ndarray, item: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray, int]:
    """Mask of interactions kept by iterative k-core filtering, and the number of rounds it took."""
    keep = np.ones(len(user), bool)
    rounds = 0
    while min_user > 1 or min_item > 1:
        u, i = user[keep], item[keep]
        ok = (np.bincount(u)[u] >= min_user) & (np.bincount(i)[i] >= min_item)
        if ok.all():
            break
        keep[np.flatnonzero(keep)[~ok]] = False
        rounds += 1
    return keep, rounds


def last_n(user_sorted: np.ndarray, n: int) -> np.ndarray:
    """Mask keeping the last `n` interactions of each user (interactions grouped by user, in order)."""
    starts = np.r_[0, np.flatnonzero(np.diff(user_sorted)) + 1]
    ends = np.r_[starts[1:], len(user_sorted)]
    group_end = np.repeat(ends, ends - starts)
    return group_end - np.arange(len(user_sorted)) <= n


def build(raw: RawData, cfg, dropped: Counter, earlier_items: list[str] | None = None) -> Prepared:
    """The tables of `raw`. `earlier_items`: the source ids of an earlier preparation in item-id order
    (`data.item_ids_from`); they keep their ids, and the items new here are numbered after them."""
    log = raw.log
    if len(log) == 0:
        raise DataError("no interactions left after reading", raw.files[0] if raw.files else cfg.path,
                        hint="every row was skipped; check the file format and data.format")
    user = np.frombuffer(log.user, np.int32).copy()
    item = np.frombuffer(log.item, np.int32).copy()
    time = np.frombuffer(log.timestamp, np.int64).copy() if log.has_time else None
    rating = np.frombuffer(log.rating, np.float64).copy() if log.has_rating else None
    filtered: Counter = Counter()

    def apply(mask, reason):
        nonlocal user, item, time, rating
        filtered[reason] += int((~mask).sum())
        user, item = user[mask], item[mask]
        time = time[mask] if time is not None else None
        rating = rating[mask] if rating is not None else None

    if cfg.min_rating is not None:
        if rating is None:
            raise ConfigError(f"data.min_rating={cfg.min_rating} but {cfg.name} has no ratings; remove data.min_rating")
        apply(rating >= cfg.min_rating, "below_min_rating")

    # chronological within each user (stable: ties keep file order), users grouped
    order = np.argsort(time, kind="stable") if time is not None else np.arange(len(user))
    order = order[np.argsort(user[order], kind="stable")]
    user, item = user[order], item[order]
    time = time[order] if time is not None else None
    rating = rating[order] if rating is not None else None

    keep, rounds = k_core(user, item, cfg.min_user_interactions, cfg.min_item_interactions)
    apply(keep, "k_core")
    if cfg.max_history is not None:
        apply(last_n(user, cfg.max_history), "max_history")
    if len(user) == 0:
        raise DataError("no interactions left after filtering", cfg.path,
                        hint="lower data.min_user_interactions / min_item_interactions / min_rating")

    # split each user's sequence (grouped by user code, chronological)
    groups, lengths = np.unique(user, return_counts=True)
    offsets = np.r_[0, np.cumsum(lengths)]
    split, valid, test = make_split(cfg, offsets, time, lengths)
    if "keep" in split:  # temporal: interactions after a user's last target are cut
        keep_len = split.pop("keep")
        apply(np.arange(len(user)) - np.repeat(offsets[:-1], lengths) < np.repeat(keep_len, lengths),
              "after_last_target_or_test_without_valid")
        nonempty = keep_len > 0
        groups, valid, test = groups[nonempty], valid[nonempty], test[nonempty]
        split["counts"]["users"] = int(nonempty.sum())

    # dense ids: 1..U and 1..N in the order of the source keys (numeric when integer)
    user_keys = np.array(list(log.user_codes), dtype=object)
    item_keys = np.array(list(log.item_codes), dtype=object)
    used_items = np.unique(item)
    user_dense = np.zeros(len(user_keys), np.int64)
    item_dense = np.zeros(len(item_keys), np.int64)
    u_order = groups[dense_order(list(user_keys[groups]))]
    user_dense[u_order] = np.arange(1, len(u_order) + 1)
    earlier_ids = {k: i for i, k in enumerate(earlier_items or [], start=1)}
    kept = np.array([str(k) in earlier_ids for k in item_keys[used_items]], bool)
    new_items = used_items[~kept]
    i_order = new_items[dense_order(list(item_keys[new_items]))]
    item_dense[used_items[kept]] = [earlier_ids[str(k)] for k in item_keys[used_items[kept]]]
    item_dense[i_order] = np.arange(len(earlier_ids) + 1, len(earlier_ids) + len(i_order) + 1)
    user, item = user_dense[user], item_dense[item]
    regroup = np.argsort(user, kind="stable")
    item = item[regroup]
    time = time[regroup] if time is not None else None
    by_dense = np.argsort(user_dense[groups])
    valid, test = valid[by_dense], test[by_dense]
    lengths = np.bincount(user, minlength=len(u_order) + 1)[1:]
    offsets = np.r_[0, np.cumsum(lengths)]

    user_source = [str(k) for k in user_keys[u_order]]
    user_raw = [raw.user_raw.get(k, k) for k in user_source]
    columns = {
        "user_id": pa.array(np.arange(1, len(lengths) + 1), pa.int64()),
        "raw_user_id": pa.array(user_raw, pa.string()),
        "items": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(item, pa.int64())),
    }
    if time is not None:
        columns["timestamps"] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(time, pa.int64()))
    columns["valid_pos"] = pa.array(valid, pa.int32())
    columns["test_pos"] = pa.array(test, pa.int32())
    sequences = pa.table(columns)

    item_source = list(earlier_ids) + [str(k) for k in item_keys[i_order]]
    items, fields, vocabs, coverage = build_items_table(item_source, raw.items, raw.kinds)
    item_map = pa.table({"item_id": items.column("item_id"), "source_id": pa.array(item_source, pa.string()),
                         "raw_id": items.column("raw_id")})
    user_map = pa.table({"user_id": sequences.column("user_id"), "source_id": pa.array(user_source, pa.string()),
                         "raw_user_id": sequences.column("raw_user_id")})
    if raw.items:
        filtered["catalog_items_without_interactions"] = len(set(raw.items) - set(item_source))
    if earlier_items is not None:  # kept in the catalog (their ids stay), though nobody interacted with them here
        filtered["earlier_items_without_interactions"] = len(earlier_ids) - int(kept.sum())

    stats = {
        "name": cfg.name,
        "format": cfg.format,
        "users": int(len(lengths)),
        "items": int(len(item_source)),
        "interactions": int(lengths.sum()),
        "has_timestamps": time is not None,
        "sequence_length": length_stats(lengths),
        "fields": fields,
        "field_coverage": coverage,
        "dropped": dict(dropped),
        "filtered": dict(filtered),
        "k_core_rounds": rounds,
    }
    if earlier_items is not None:
        stats["earlier_items"] = len(earlier_ids)  # ids 1..earlier_items; the new ones follow
    return Prepared(items, sequences, user_map, item_map, vocabs, split, stats)


def make_split(cfg, offsets, time, lengths):
    if cfg.split == "leave_one_out":  # else temporal (data.config.Split)
        valid, test = splits.leave_one_out(lengths)
        spec = {"kind": "leave_one_out", "valid": "second to last item", "test": "last item",
                "min_length_for_targets": 3}
    else:
        if time is None:
            raise ConfigError(f"data.split=temporal needs timestamps and {cfg.name} has none; use data.split=leave_one_out")
        valid_start, test_start = splits.temporal_cutoffs(time, cfg)
        valid, test, keep, test_without_valid = splits.temporal(offsets, time, valid_start, test_start)
        spec = {"kind": "temporal", "valid_start": valid_start, "test_start": test_start,
                "valid_frac": cfg.temporal_valid_frac, "test_frac": cfg.temporal_test_frac,
                "users_with_test_but_no_valid_period_interaction": test_without_valid, "keep": keep}
    spec["counts"] = {"users": int(len(lengths)), "valid_users": int((valid >= 0).sum()),
                      "test_users": int((test >= 0).sum())}
    spec["train_prefix"] = "items[:valid_pos]; all items when valid_pos = -1 (then test_pos = -1 too)"
    return spec, valid, test


def length_stats(lengths: np.ndarray) -> dict:
    return {"min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 3),
            "median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90))}
