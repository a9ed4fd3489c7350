"""Batch recommendations over parquet tables of histories: one batch of rows in, its top-K rows out.

`distrec recommend` runs `recommend_rows` in this process over the record batches of each file
(`recommend_files`: one batch in memory at a time, written as it comes), or in each Ray Data actor
(distrec/parallel/recommend.py); both write the same rows. Bad input is a DataError naming the file
and the user; users with an empty history get empty lists (counted by `summarize`, never dropped).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distrec.errors import DataError
from distrec.inference.predictor import RequestError

log = logging.getLogger("distrec")

REQUIRED = ("user_id", "items")
CARRIED = "raw_user_id"  # copied to the output when the input has it
PATH = "path"  # the source file of each row, when Ray Data reads with include_paths


def input_files(path: str | Path) -> list[Path]:
    """A parquet file, or the *.parquet files of a directory (sorted: the output keeps their order)."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise DataError("no parquet file of histories here", path,
                        hint="recommend.input takes a parquet file or a directory of them (columns user_id, items)")
    return files


def input_columns(files: list[Path], raw_ids: bool) -> list[str]:
    """The columns to read, after checking every file has `user_id` (integers) and `items` (a list of item
    ids: integers, or raw ids with recommend.raw_ids); `raw_user_id` when all files have it."""
    columns = list(REQUIRED)
    schemas = [pq.read_schema(f) for f in files]
    for f, schema in zip(files, schemas):
        missing = [c for c in REQUIRED if c not in schema.names]
        if missing:
            raise DataError(f"missing column(s) {missing}; it has {schema.names}", f,
                            hint="histories need `user_id` (integers) and `items` (a list of item ids, oldest first)")
        if not pa.types.is_integer(schema.field("user_id").type):
            raise DataError(f"user_id is {schema.field('user_id').type}, not integers", f,
                            hint="put integer user ids in user_id and the raw ones in a raw_user_id column")
        items = schema.field("items").type
        if not (pa.types.is_list(items) or pa.types.is_large_list(items)) or not (
                pa.types.is_integer(items.value_type) or raw_ids and pa.types.is_string(items.value_type)):
            kind = "strings or integers (recommend.raw_ids=true)" if raw_ids else "integers (dense item ids)"
            found = f"a list of {items.value_type}" if hasattr(items, "value_type") else str(items)
            raise DataError(f"items is {found}, not a list of {kind}", f,
                            hint="set recommend.raw_ids=true for the catalog's raw ids" if not raw_ids else None)
    if all(CARRIED in s.names for s in schemas):
        columns.insert(1, CARRIED)
    return columns


def output_schema(columns: list[str], raw_items: bool) -> pa.Schema:
    return pa.schema([("user_id", pa.int64())] + ([(CARRIED, pa.string())] if CARRIED in columns else [])
                     + [("items", pa.list_(pa.int64())), ("scores", pa.list_(pa.float32()))]
                     + ([("raw_items", pa.list_(pa.string()))] if raw_items else []))


def _where(batch, row: int, source) -> str:
    return str(batch.column(PATH)[row]) if PATH in batch.column_names else str(source)


def _histories(predictor, batch, raw_ids: bool, source) -> tuple[np.ndarray, np.ndarray]:
    """(flat dense item ids, offsets [rows + 1]) of the batch's `items`; DataError for ids not in the catalog."""
    items = batch.column("items")
    items = items.combine_chunks() if isinstance(items, pa.ChunkedArray) else items
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = pc.list_flatten(items)
    row_of = lambda i: int(np.searchsorted(offsets, i, "right") - 1)  # noqa: E731 (flat index -> row)

    def bad(row: int, what: str):
        user = batch.column("user_id")[row]
        return DataError(f"user {user}: {what}", _where(batch, row, source),
                         hint="send item ids of the catalog the model was trained on (or drop the user)")

    if values.null_count:
        raise bad(row_of(int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])), "a null item id")
    if raw_ids:
        raw = values.cast(pa.string()).to_pylist()
        try:
            flat = np.asarray(predictor.item_ids(raw), np.int64)
        except RequestError:  # find the first user with an unknown one, to name them
            for row in range(len(lengths)):
                try:
                    predictor.item_ids(raw[offsets[row]:offsets[row + 1]])
                except RequestError as e:
                    raise bad(row, str(e)) from None
            raise
    else:
        flat = values.to_numpy(zero_copy_only=False).astype(np.int64)
        out = np.flatnonzero((flat < 1) | (flat > predictor.num_items))
        if out.size:
            row = row_of(int(out[0]))
            ids = [x for x in flat[offsets[row]:offsets[row + 1]].tolist() if not 1 <= x <= predictor.num_items]
            raise bad(row, f"item id(s) {ids[:5]} outside the catalog's 1..{predictor.num_items}")
    return flat, offsets


def recommend_rows(predictor, batch: pa.Table | pa.RecordBatch, k: int, raw_ids: bool = False,
                   source=None) -> pa.Table:
    """The top-k of each row of `batch` (columns user_id, items[, raw_user_id][, path]) as output rows:
    user_id, [raw_user_id], items (best first), scores, [raw_items when the predictor has raw ids]. A row
    lists fewer than k items when its history is empty (none) or the decoder found fewer."""
    flat, offsets = _histories(predictor, batch, raw_ids, source)
    users = batch.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.flatnonzero(np.diff(offsets) > 0)
    counts = np.zeros(len(users), np.int64)
    ids, scores = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    if rows.size:
        ids, scores = predictor.recommend([flat[offsets[r]:offsets[r + 1]] for r in rows], k, users[rows], check=False)
        counts[rows] = (ids > 0).sum(1)  # the padding of a short list (id 0, score -inf) is left out
    keep = ids > 0  # row-major: each row's items in rank order
    list_offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    columns = {"user_id": pa.array(users, pa.int64())}
    if CARRIED in batch.column_names:
        columns[CARRIED] = batch.column(CARRIED).cast(pa.string())
    columns["items"] = pa.ListArray.from_arrays(list_offsets, pa.array(ids[keep], pa.int64()))
    columns["scores"] = pa.ListArray.from_arrays(list_offsets, pa.array(scores[keep], pa.float32()))
    if predictor.raw_ids is not None:
        columns["raw_items"] = pa.ListArray.from_arrays(list_offsets, pa.array(predictor.raw(ids[keep]), pa.string()))
    return pa.table(columns)


class PartWriter:
    """part-00000.parquet, part-00001.parquet, ... of at most `rows_per_file` rows, written as rows come."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_file: int):
        self.directory, self.schema, self.rows_per_file = Path(directory), schema, max(1, rows_per_file)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files, self.writer, self.rows = 0, None, 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None or self.rows == self.rows_per_file:
                self._next()
            take = min(table.num_rows, self.rows_per_file - self.rows)
            self.writer.write_table(table.slice(0, take))
            self.rows, table = self.rows + take, table.slice(take)

    def _next(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = pq.ParquetWriter(self.directory / f"part-{self.files:05d}.parquet", self.schema)
        self.files, self.rows = self.files + 1, 0

    def close(self) -> None:
        if self.writer is None:  # no rows at all: one empty part, so the table still reads
            self._next()
        self.writer.close()


def total_rows(files: list[Path], max_users: int | None) -> int:
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return rows if max_users is None else min(rows, max_users)


def recommend_files(predictor, files: list[Path], columns: list[str], out_dir: Path, rcfg, progress: bool) -> None:
    """In this process: stream the record batches of `files`, write each batch's rows to out_dir as it comes."""
    from tqdm import tqdm

    left = total_rows(files, rcfg.max_users)
    out = PartWriter(out_dir, output_schema(columns, predictor.raw_ids is not None), rcfg.rows_per_file)
    with tqdm(total=left, desc="recommend", unit="user", disable=not progress, smoothing=0.1) as bar:
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(rcfg.batch_size, columns=columns):
                if left == 0:
                    break
                batch = batch.slice(0, left)
                out.write(recommend_rows(predictor, batch, rcfg.k, rcfg.raw_ids, path))
                left -= batch.num_rows
                bar.update(batch.num_rows)
    out.close()


def summarize(out_dir: Path, k: int) -> dict:
    """Counts of the written table, read a column at a time: users, those with an empty history (empty
    lists) and those with fewer than k items; the first empty-history user ids."""
    from distrec.artifacts import shard_paths

    users, empty, short, examples = 0, 0, 0, []
    for path in shard_paths(out_dir):
        for batch in pq.ParquetFile(path).iter_batches(65536, columns=["user_id", "items"]):
            n = pc.list_value_length(batch.column("items")).to_numpy(zero_copy_only=False)
            users, empty, short = users + len(n), empty + int((n == 0).sum()), short + int(((n > 0) & (n < k)).sum())
            if len(examples) < 10:
                examples += batch.column("user_id").to_numpy()[n == 0][:10 - len(examples)].tolist()
    return {"users": users, "empty_history": empty, "short_lists": short, "empty_history_users": examples}
