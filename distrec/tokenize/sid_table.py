"""The SID table: item id <-> semantic-ID codes, the token vocabulary, and the prefix trie.

Every generative model reads this one contract (docs/architecture.md):
- `codes`: int64 [num_items + 1, L], row 0 (padding) = -1;
- vocabulary: pad=0, bos=1, eos=2, then digit l code c is token `offsets[l] + c`;
- `trie()`: `PrefixTrie.children[l]` int64 [nodes at depth l, codebook_sizes[l]] -> child node at
  depth l + 1, or -1; at the last level the item id. Constrained decoding indexes it with arrays;
- `content_hash`: recorded by every checkpoint, so a model is never run against another tokenizer.

Collisions (several items with one code tuple) are resolved before a table is built:
`add_dedup_digit` (TIGER/GRID: an extra digit numbering the items that share a tuple) or
`reassign_last_level` (move colliding items to their next-nearest free last-level code).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.artifacts import read_json, read_table, write_json, write_table
from distrec.decoding.trie import PrefixTrie
from distrec.errors import DataError

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3
META = "sid_meta.json"


# ------------------------------------------------------------------ collisions

def row_keys(codes: np.ndarray) -> np.ndarray:
    """One sortable key per code row: a mixed-radix int64 when the digits fit (fast 1-D sorts), else
    the raw bytes of the row."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    radix = codes.max(axis=0, initial=0) + 1 if len(codes) else np.ones(codes.shape[1], np.int64)
    if np.log2(radix.astype(np.float64)).sum() < 62:
        keys = np.zeros(len(codes), dtype=np.int64)
        for digit, base in zip(codes.T, radix):
            keys = keys * base + digit
        return keys
    return codes.view(np.dtype((np.void, 8 * codes.shape[1]))).reshape(-1)


def group_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inverse group id per row, group sizes, rank of each row inside its group in row order)."""
    if codes.shape[1] == 0:
        inverse = np.zeros(len(codes), dtype=np.int64)
    else:
        _, inverse = np.unique(row_keys(codes), return_inverse=True)
        inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, sizes)
    return inverse, sizes, rank


def add_dedup_digit(codes: np.ndarray, groups=None) -> tuple[np.ndarray, int]:
    """Append a digit numbering items that share a code tuple (0 for the first, in item order).

    `groups`: `group_rows(codes)` when the caller already has it (one sort fewer at 10M items).
    Returns (codes [n, L + 1], size of the new digit = the largest group).
    """
    _, sizes, rank = groups if groups is not None else group_rows(codes)
    return np.column_stack([codes, rank]), int(sizes.max(initial=1))


def reassign_last_level(codes: np.ndarray, distances_fn, codebook_size: int) -> tuple[np.ndarray, int]:
    """Move colliding items to the nearest last-level code still free under their prefix.

    `distances_fn(rows) -> [len(rows), codebook_size]` distances of those items to every last-level
    code. In each colliding group the item nearest its code keeps it. Returns (codes, items moved);
    raises DataError when a prefix holds more items than the last level has codes.
    """
    codes = codes.copy()
    inverse, sizes, _ = group_rows(codes)
    colliding = np.flatnonzero(sizes[inverse] > 1)
    if colliding.size == 0:
        return codes, 0
    prefix_inv, prefix_sizes, _ = group_rows(codes[:, :-1])
    if prefix_sizes.max() > codebook_size:
        raise DataError(f"a prefix holds {int(prefix_sizes.max())} items but the last level has only "
                        f"{codebook_size} codes, so re-assignment cannot make IDs unique",
                        hint="use tokenizer.dedup=digit (an extra disambiguation digit)")
    dist = distances_fn(colliding)
    row_to_j = {int(r): j for j, r in enumerate(colliding)}
    by_prefix = np.argsort(prefix_inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(prefix_sizes)])
    moved = 0
    for prefix in np.unique(prefix_inv[colliding]):
        members = by_prefix[starts[prefix]:starts[prefix + 1]]
        used = set(codes[members, -1].tolist())
        owners: set[int] = set()
        rows = [int(r) for r in members if int(r) in row_to_j]
        rows.sort(key=lambda r: dist[row_to_j[r], codes[r, -1]])  # nearest item keeps the shared code
        for row in rows:
            code = int(codes[row, -1])
            if code not in owners:
                owners.add(code)
                continue
            free = [c for c in np.argsort(dist[row_to_j[row]]) if int(c) not in used]
            codes[row, -1] = free[0]
            used.add(int(free[0]))
            owners.add(int(free[0]))
            moved += 1
    return codes, moved


# ------------------------------------------------------------------ the table

class SIDTable:
    def __init__(self, codes: np.ndarray, codebook_sizes: list[int], dedup: str = "none", meta: dict | None = None):
        self.codes = np.asarray(codes, dtype=np.int64)  # [num_items + 1, L], row 0 = -1
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        self.dedup = dedup
        self.meta = dict(meta or {})
        if self.codes.shape[1] != len(self.codebook_sizes):
            raise DataError(f"codes have {self.codes.shape[1]} digits but {len(self.codebook_sizes)} codebook sizes")

    @classmethod
    def from_codes(cls, item_ids: np.ndarray, codes: np.ndarray, codebook_sizes: list[int], dedup: str = "none",
                   meta: dict | None = None) -> "SIDTable":
        """Build from (item_ids, codes) rows in any order; item ids must be exactly 1..N."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        n = len(item_ids)
        if n == 0:
            raise DataError("cannot build a SID table for an empty catalog")
        if item_ids.min() < 1 or item_ids.max() != n or len(np.unique(item_ids)) != n:
            raise DataError(f"item ids must be dense 1..N (got {n} ids in [{item_ids.min()}, {item_ids.max()}])",
                            hint="tokenize embeddings of a prepared catalog (the prepare stage assigns dense ids)")
        table = np.full((n + 1, codes.shape[1]), -1, dtype=np.int64)
        table[item_ids] = codes
        sizes = [int(k) for k in codebook_sizes]
        if (table[1:] < 0).any() or (table[1:] >= np.array(sizes)).any():
            raise DataError("codes out of range of the codebook sizes")
        return cls(table, sizes, dedup, meta)

    # ---- shape and vocabulary
    @property
    def num_items(self) -> int:
        return len(self.codes) - 1

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def offsets(self) -> np.ndarray:
        return NUM_SPECIAL + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]).astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + sum(self.codebook_sizes)

    def tokens(self, item_ids) -> np.ndarray:
        """Token ids [..., L] of item ids (any shape); padding item 0 -> PAD tokens."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        codes = self.codes[item_ids]
        return np.where(codes >= 0, codes + self.offsets, PAD)

    def prefix(self, num_items: int) -> "SIDTable":
        """The table of items 1..num_items only (what an extended table's parent held)."""
        return SIDTable(self.codes[:num_items + 1], self.codebook_sizes, self.dedup)

    @property
    def parent(self) -> dict | None:
        """{"content_hash", "num_items", "path"} of the table this one extends (`distrec tokenize --extend`)."""
        return self.meta.get("parent")

    def num_collisions(self) -> int:
        """Items whose full code tuple is shared with an earlier item (0 for a usable table)."""
        return self.num_items - len(np.unique(row_keys(self.codes[1:])))

    @cached_property
    def _lookup(self):
        keys = np.ascontiguousarray(self.codes[1:]).view(np.dtype((np.void, 8 * self.levels))).reshape(-1)
        order = np.argsort(keys, kind="stable")
        return keys[order], order + 1

    def item_for_codes(self, codes) -> np.ndarray:
        """Item id of each code tuple [..., L]; -1 where no item has it."""
        codes = np.asarray(codes, dtype=np.int64)
        shape = codes.shape[:-1]
        keys_sorted, items = self._lookup
        query = np.ascontiguousarray(codes.reshape(-1, self.levels)).view(keys_sorted.dtype).reshape(-1)
        pos = np.clip(np.searchsorted(keys_sorted, query), 0, len(keys_sorted) - 1)
        found = keys_sorted[pos] == query
        return np.where(found, items[pos], -1).reshape(shape)

    def trie(self) -> PrefixTrie:
        if not hasattr(self, "_trie"):
            if self.num_collisions():
                raise DataError(f"{self.num_collisions()} items share a code tuple; the trie needs unique IDs",
                                hint="tokenize with tokenizer.dedup=digit or balanced")
            self._trie = PrefixTrie.build(self.codes[1:], np.arange(1, self.num_items + 1), self.codebook_sizes)
        return self._trie

    @cached_property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"codebook_sizes": self.codebook_sizes, "offsets": self.offsets.tolist()}).encode())
        h.update(np.ascontiguousarray(self.codes).tobytes())
        return h.hexdigest()[:16]

    # ---- persistence
    def layout(self) -> dict:
        return {"levels": self.levels, "codebook_sizes": self.codebook_sizes, "dedup": self.dedup,
                "pad": PAD, "bos": BOS, "eos": EOS, "offsets": self.offsets.tolist(), "vocab_size": self.vocab_size,
                "num_items": self.num_items, "content_hash": self.content_hash}

    def save(self, directory: str | Path, num_shards: int = 1) -> None:
        directory = Path(directory)
        codes = pa.FixedSizeListArray.from_arrays(pa.array(self.codes[1:].astype(np.int32).ravel()), self.levels)
        table = pa.table({"item_id": pa.array(np.arange(1, self.num_items + 1, dtype=np.int64)),
                          "codes": codes.cast(pa.list_(pa.int32()))})
        write_table(table, directory / "sids", num_shards)
        write_json(directory / META, {**self.layout(), **{k: v for k, v in self.meta.items() if k not in self.layout()}})

    @classmethod
    def load(cls, directory: str | Path) -> "SIDTable":
        directory = Path(directory)
        meta = read_json(directory / META)
        table = read_table(directory / "sids")
        codes = np.asarray(table.column("codes").combine_chunks().flatten().to_numpy(), dtype=np.int64)
        sid = cls.from_codes(table.column("item_id").to_numpy(), codes.reshape(table.num_rows, -1),
                             meta["codebook_sizes"], meta.get("dedup", "none"), meta)
        if meta.get("content_hash") and sid.content_hash != meta["content_hash"]:
            raise DataError(f"content hash {sid.content_hash} does not match the recorded {meta['content_hash']}",
                            directory / META, hint="the SID table was modified; re-run `distrec tokenize`")
        return sid
