"""Bring your own data: a parquet or CSV interaction table with a column mapping.

    data.format=table data.path=interactions.parquet (or .csv, or a folder of *.parquet)
    data.columns.user=... data.columns.item=... data.columns.timestamp=... (null = no time) data.columns.rating=...
    +data.files.items=items.csv   # optional item table: the item column plus any fields

Timestamps may be integers (unix seconds), floats or Arrow timestamps. Item-table columns become
fields by type: strings -> text, numbers -> numeric, lists -> multi_categorical.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from distrec.data.readers.base import RawData, RowErrors, require
from distrec.errors import DataError


def load(path: Path, raw: RawData) -> pa.Table:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataError("folder has no *.parquet files", path, hint="point data.path at a parquet/CSV file or folder")
    raw.files.extend(files)
    try:
        tables = [pcsv.read_csv(f) if is_csv(f) else pq.read_table(f) for f in files]
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read table ({e})", path, hint="a parquet file, or a CSV with a header row") from None
    table = pa.concat_tables(tables, promote_options="default")
    if table.num_rows == 0:
        raise DataError("file is empty (no data rows)", path, hint="point the config at the right file")
    return table


def is_csv(path: Path) -> bool:
    return path.suffix == ".csv" or path.name.endswith(".csv.gz")


def blank(value) -> bool:
    """A missing id: null, or an empty/whitespace string (a blank CSV cell reads as "", not null)."""
    return value is None or (isinstance(value, str) and not value.strip())


def column(table: pa.Table, name: str, key: str, path: Path) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise DataError(f"no column '{name}' (columns: {table.column_names})", path,
                        hint=f"set data.columns.{key} to the right column name")
    return table.column(name)


def to_seconds(values: pa.ChunkedArray, path: Path) -> list:
    if pa.types.is_timestamp(values.type):
        return pc.cast(pc.cast(values, pa.timestamp("s")), pa.int64()).to_pylist()
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return [None if v is None else int(v) for v in values.to_pylist()]
    raise DataError(f"timestamp column has type {values.type}; expected integers (unix seconds) or timestamps", path,
                    hint="convert it, or set data.columns.timestamp=null")


def read(cfg, errors: RowErrors) -> RawData:
    path = require(cfg.path, "interaction table")
    raw = RawData()
    if "items" in cfg.files:
        read_items(require(cfg.files["items"], "item table"), cfg, raw, errors)
    table = load(path, raw)
    cols = cfg.columns
    users = column(table, cols.user, "user", path).to_pylist()
    items = column(table, cols.item, "item", path).to_pylist()
    times = to_seconds(column(table, cols.timestamp, "timestamp", path), path) if cols.timestamp else None
    ratings = column(table, cols.rating, "rating", path).to_pylist() if cols.rating else None
    first_row = 2 if is_csv(path) else 1  # CSV: the line number in the file; parquet: the row number
    for row, (user, item) in enumerate(zip(users, items)):
        t = times[row] if times is not None else None
        r = ratings[row] if ratings is not None else None
        missing = [key for key, value, used in (("user", user, True), ("item", item, True),
                                                 ("timestamp", t, times is not None), ("rating", r, ratings is not None))
                   if used and blank(value)]
        if missing:
            errors.bad("missing_field", "empty " + ", ".join(f"{key} (column '{cols[key]}')" for key in missing),
                       path, row + first_row, hint="fill the value or drop the row")
            continue
        if raw.has_catalog and str(item) not in raw.items:
            errors.bad("unknown_item", f"item {item!r} is not in the item table", path, row + first_row,
                       hint="add it to data.files.items or drop the row")
            continue
        raw.log.add(str(user), str(item), t, r)
    return raw


def read_items(path: Path, cfg, raw: RawData, errors: RowErrors) -> None:
    table = load(path, raw)
    keys = column(table, cfg.columns.item, "item", path).to_pylist()
    others = [name for name in table.column_names if name != cfg.columns.item]
    for name in others:
        kind = table.schema.field(name).type
        raw.kinds[name] = ("numeric" if pa.types.is_integer(kind) or pa.types.is_floating(kind)
                           else "multi_categorical" if pa.types.is_list(kind) else "text")
    values = {name: table.column(name).to_pylist() for name in others}
    raw.has_catalog = True
    for row, key in enumerate(keys):
        if blank(key) or str(key) in raw.items:
            errors.bad("duplicate_item" if not blank(key) else "missing_field",
                       f"item {key!r} is missing or appears twice", path, row + (2 if is_csv(path) else 1),
                       hint="item ids must be present and unique")
            continue
        raw.items[str(key)] = {name: values[name][row] for name in others}
