"""The typed items table: canonical item fields from any reader -> columns of known kinds.

Kinds (listed in stats.json["fields"]): `text` (string), `categorical` (int64 id, 0 = missing),
`multi_categorical` (list<int64>), `numeric` (float64, null = missing). Categorical vocabularies
(value -> id) are written to maps/<field>.parquet so ids can be turned back into names.
"""

from __future__ import annotations

import math

import pyarrow as pa

# Canonical field names readers use, and what they become.
KINDS = {
    "title": "text",
    "description": "text",
    "text": "text",
    "brand": "categorical",
    "categories": "hierarchy",  # list[str], top level first -> category_1..3 + a `categories` text path
    "genres": "multi_categorical",  # unordered tags (MovieLens genres)
    "attributes": "multi_categorical",  # S3-Rec attr_ids
    "price": "numeric",
    "year": "numeric",
}
HIERARCHY_LEVELS = 3
NOT_FIELDS = {"item_id", "raw_id"}


def guess_kind(value) -> str | None:
    """Kind of an extra (non-canonical) field from its value; None = not representable (dicts)."""
    if isinstance(value, bool) or isinstance(value, dict):
        return None
    if isinstance(value, (int, float)):
        return "numeric"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return "multi_categorical"
    return None


def to_number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().lstrip("$").replace(",", "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_text(value) -> str | None:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


class Vocab:
    """value -> id, 1-based in order of first appearance (0 = missing)."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, value) -> int:
        if value is None or value == "":
            return 0
        value = str(value)
        if value not in self.ids:
            self.ids[value] = len(self.ids) + 1
        return self.ids[value]

    def table(self) -> pa.Table:
        return pa.table({"value": pa.array(list(self.ids), pa.string()),
                         "id": pa.array(list(self.ids.values()), pa.int64())})


def field_kinds(items: dict[str, dict], declared: dict[str, str] | None = None) -> dict[str, str]:
    """Every field any item has, with its kind, in order of first appearance."""
    declared = declared or {}
    kinds: dict[str, str] = {}
    for fields in items.values():
        for name, value in fields.items():
            if name in NOT_FIELDS or name in kinds or value is None:
                continue
            kind = declared.get(name) or KINDS.get(name) or guess_kind(value)
            if kind is not None:
                kinds[name] = kind
    return kinds


def build_items_table(keys: list[str], items: dict[str, dict], declared: dict[str, str] | None = None):
    """(table, fields {name: kind}, vocabularies {name: Vocab}, coverage {name: fraction}) for items
    `keys` in dense-id order (item_id = position + 1)."""
    kinds = field_kinds(items, declared)
    rows = [items.get(k, {}) for k in keys]
    columns = {
        "item_id": pa.array(range(1, len(keys) + 1), pa.int64()),
        "raw_id": pa.array([str(r.get("raw_id") or k) for r, k in zip(rows, keys)], pa.string()),
    }
    fields, vocabs = {}, {}
    for name, kind in kinds.items():
        values = [r.get(name) for r in rows]
        if kind == "hierarchy":
            paths = [[str(v) for v in p if v] if isinstance(p, list) else ([p] if p else []) for p in values]
            for level in range(HIERARCHY_LEVELS):
                column = f"category_{level + 1}"
                vocab = vocabs[column] = Vocab()
                # the id of a level is keyed by its whole path prefix, so equal names under different parents differ
                ids = [vocab(" > ".join(p[: level + 1])) if len(p) > level else 0 for p in paths]
                columns[column], fields[column] = pa.array(ids, pa.int64()), "categorical"
            columns[name] = pa.array([" > ".join(p) or None for p in paths], pa.string())
            fields[name] = "text"
        elif kind == "text":
            columns[name], fields[name] = pa.array([to_text(v) for v in values], pa.string()), kind
        elif kind == "numeric":
            columns[name], fields[name] = pa.array([to_number(v) for v in values], pa.float64()), kind
        elif kind == "categorical":
            vocab = vocabs[name] = Vocab()
            columns[name], fields[name] = pa.array([vocab(to_text(v)) for v in values], pa.int64()), kind
        elif kind == "multi_categorical":
            vocab = vocabs[name] = Vocab()
            lists = [[vocab(x) for x in v] if isinstance(v, list) else ([vocab(v)] if v else []) for v in values]
            columns[name], fields[name] = pa.array(lists, pa.list_(pa.int64())), kind
    table = pa.table(columns)
    coverage = {name: round(coverage_of(table.column(name), kind), 4) for name, kind in fields.items()}
    return table, fields, vocabs, coverage


def coverage_of(column: pa.ChunkedArray, kind: str) -> float:
    n = len(column) or 1
    values = column.to_pylist()
    if kind == "categorical":
        return sum(v > 0 for v in values) / n
    if kind == "multi_categorical":
        return sum(bool(v) for v in values) / n
    return sum(v is not None for v in values) / n
