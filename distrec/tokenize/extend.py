"""Semantic IDs for items added after training, without retraining anything (`distrec tokenize --extend`).

The parent table's quantizer is frozen: it encodes the new items' vectors, and every item of the parent
keeps its code. A new item whose code tuple is taken is placed as the parent's `dedup` says:

- `digit`: the next free value of the de-dup digit under its tuple (the digit numbers the items that share
  a tuple, so the first free value is one past the largest). When all of the digit's values are taken,
  the vocabulary would have to grow; the item goes instead to the nearest last-level code whose tuple
  still has a free digit, and it is counted as `moved`.
- `balanced`: the nearest last-level code still free under its prefix (as the tokenizer re-assigns).
- `none`: the tuple is shared (methods without a trie, e.g. RPG's long unordered IDs, allow that).

The codebook sizes never change, so the model's vocabulary and every trained embedding stay valid.
"""

from __future__ import annotations

import numpy as np

from distrec.errors import DataError
from distrec.tokenize.sid_table import SIDTable

FULL_HINT = ("re-tokenize the whole catalog (`distrec tokenize` without --extend) and retrain, or extend with "
             "a parent tokenized with a larger codebook or de-dup digit")


def new_item_codes(parent: SIDTable, quantizer, vectors: np.ndarray) -> tuple[np.ndarray, dict]:
    """Codes [len(vectors), parent.levels] for items numbered parent.num_items + 1, ... in the order of
    `vectors`, placed beside the parent's codes; and what happened ({"collisions", "moved"})."""
    base = quantizer.encode(vectors).astype(np.int64)
    digit = parent.dedup == "digit"
    tuples = parent.codes[1:, :-1] if digit else parent.codes[1:]
    # tuple -> its next free slot: one past the largest de-dup digit, or (balanced) 1 when an item holds it
    used: dict = {}
    slots = parent.codebook_sizes[-1] if digit else 1
    for key, slot in zip(_keys(tuples).tolist(), parent.codes[1:, -1].tolist() if digit else [0] * len(tuples)):
        used[key] = max(used.get(key, 0), slot + 1)
    if parent.dedup == "none":
        collisions = sum(key in used for key in _keys(base).tolist())
        return base, {"collisions": int(collisions), "moved": 0}
    chosen = np.empty(len(base), np.int64)
    collisions, full = 0, []
    for i, key in enumerate(_keys(base).tolist()):
        slot = used.get(key, 0)
        collisions += slot > 0
        if slot >= slots:
            full.append(i)
        else:
            chosen[i], used[key] = slot, slot + 1
    if full:  # their tuple has no free slot: the nearest last-level code whose tuple has one
        distances = quantizer.last_level_distances(vectors[np.asarray(full)])
        for j, i in enumerate(full):
            for code in np.argsort(distances[j], kind="stable"):
                candidate = base[i].copy()
                candidate[-1] = code
                key = _keys(candidate[None]).tolist()[0]
                if used.get(key, 0) < slots:
                    base[i], chosen[i], used[key] = candidate, used.get(key, 0), used.get(key, 0) + 1
                    break
            else:
                raise DataError(f"new item {parent.num_items + 1 + i}: every last-level code under its prefix "
                                f"{base[i, :-1].tolist()} is taken", hint=FULL_HINT)
    codes = np.column_stack([base, chosen]) if digit else base
    return codes, {"collisions": int(collisions), "moved": len(full)}


def extended_table(parent: SIDTable, new_codes: np.ndarray, meta: dict) -> SIDTable:
    """The parent's rows followed by `new_codes`; same codebook sizes, so the same vocabulary."""
    codes = np.concatenate([parent.codes, new_codes]).astype(np.int64)
    return SIDTable(codes, parent.codebook_sizes, parent.dedup, meta)


def extends(table: SIDTable, parent_hash: str, parent_items: int) -> bool:
    """Whether `table` is the table hashed `parent_hash` (of `parent_items` items) or an extension of it."""
    return table.num_items >= parent_items and table.prefix(parent_items).content_hash == parent_hash


def _keys(codes: np.ndarray) -> np.ndarray:
    """One hashable key per code row (its raw bytes)."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    return codes.view(np.dtype((np.void, 8 * codes.shape[1]))).reshape(-1)
