"""Item vectors read in batches from parquet shards (or an in-memory array), checked as they stream.

Every consumer of embeddings (k-means workers, quantizers, the tokenize stage) reads through here, so
NaN/inf values, mismatched dimensions and empty catalogs fail the same way, naming the file and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.errors import DataError


def vectors_from_arrow(column: pa.Array | pa.ChunkedArray, where, first_row: int = 0) -> np.ndarray:
    """An Arrow list / fixed_size_list column of floats -> float32 [n, d], checked."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)):
        raise DataError(f"vector column has type {column.type}, expected a list of floats", where,
                        hint="write vectors as fixed_size_list<float32> (the `embed` stage does)")
    if column.null_count:
        row = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"row {row} has a null vector", where, hint="embed every item, or drop it from the catalog")
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
    else:
        lengths = column.value_lengths().to_numpy()
        d = int(lengths[0]) if n else 0
        bad = np.flatnonzero(lengths != d)
        if bad.size:
            raise DataError(f"row {first_row + int(bad[0])} has a vector of length {int(lengths[bad[0]])}, "
                            f"row {first_row} has {d}", where, hint="all vectors must have the same dimension")
    values = column.flatten().to_numpy(zero_copy_only=False)
    x = np.ascontiguousarray(values, dtype=np.float32).reshape(n, d)
    check_finite(x, where, first_row)
    return x


def check_finite(x: np.ndarray, where=None, first_row: int = 0) -> None:
    if not np.isfinite(x).all():
        row = first_row + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise DataError(f"row {row} has a NaN or inf value in its vector", where,
                        hint="fix the embedding step (e.g. an all-zero text normalised by zero) and re-run it")


class VectorShards:
    """Batches of (item_ids, vectors) from parquet files, or from an array (item ids 1..n).

    Only one batch is in memory at a time, so a worker can hold a catalog larger than its RAM.
    """

    def __init__(self, paths: list[str | Path] | None = None, array: np.ndarray | None = None,
                 column: str = "vector", id_column: str = "item_id", batch_rows: int = 65_536,
                 item_ids: np.ndarray | None = None):
        self.paths = [Path(p) for p in paths or []]
        self.column, self.id_column, self.batch_rows = column, id_column, batch_rows
        if array is not None:
            array = np.ascontiguousarray(array, dtype=np.float32)
            if array.ndim != 2:
                raise DataError(f"vectors must be a 2-D array, got shape {array.shape}")
            check_finite(array)
            self.array = array
            self.item_ids = np.arange(1, len(array) + 1) if item_ids is None else np.asarray(item_ids, np.int64)
            self.num_rows, self.dim = array.shape
            return
        self.array = None
        self.num_rows, self.dim = 0, None
        for path in self.paths:
            meta = pq.ParquetFile(path)
            schema = meta.schema_arrow
            for name in (column, id_column):
                if name not in schema.names:
                    raise DataError(f"column '{name}' is missing (columns: {schema.names})", path,
                                    hint="point tokenize at an `embed` artifact (item_id, vector)")
            field_type = schema.field(column).type
            if pa.types.is_fixed_size_list(field_type):
                if self.dim is not None and field_type.list_size != self.dim:
                    raise DataError(f"vectors have dimension {field_type.list_size}, earlier shards have {self.dim}",
                                    path, hint="all shards must come from the same embedding run")
                self.dim = field_type.list_size
            self.num_rows += meta.metadata.num_rows

    def batches(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (first_row, item_ids int64 [b], vectors float32 [b, d]) in a fixed order."""
        if self.array is not None:
            for start in range(0, self.num_rows, self.batch_rows):
                stop = start + self.batch_rows
                yield start, self.item_ids[start:stop], self.array[start:stop]
            return
        row = 0
        for path in self.paths:
            for batch in pq.ParquetFile(path).iter_batches(self.batch_rows, columns=[self.id_column, self.column]):
                ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                x = vectors_from_arrow(batch.column(1), path, row)
                if self.dim is None:
                    self.dim = x.shape[1]
                elif x.shape[1] != self.dim:
                    raise DataError(f"vectors have dimension {x.shape[1]}, earlier rows have {self.dim}", path,
                                    hint="all vectors must come from the same embedding run")
                yield row, ids, x
                row += len(ids)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at sorted row positions (a sample), read batch by batch."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.array is not None:
            return self.array[positions]
        out = np.empty((len(positions), self.dim or 0), dtype=np.float32)
        done = 0
        for first, ids, x in self.batches():
            lo, hi = np.searchsorted(positions, [first, first + len(ids)])
            if hi > lo:
                if out.shape[1] != x.shape[1]:
                    out = np.empty((len(positions), x.shape[1]), dtype=np.float32)
                out[lo:hi] = x[positions[lo:hi] - first]
                done = hi
            if done == len(positions):
                break
        return out

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(item_ids, vectors) of every row; for in-memory quantizers on catalogs that fit."""
        if self.num_rows == 0:
            raise DataError("the catalog is empty (0 item vectors)", self.paths[0] if self.paths else None,
                            hint="check the items table the embeddings were computed from")
        ids, xs = zip(*[(i, x) for _, i, x in self.batches()])
        return np.concatenate(ids), np.concatenate(xs)
