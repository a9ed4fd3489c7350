"""The normalised layout of ../shared/data: `sequences.jsonl.gz` (+ optional `items.jsonl.gz`).

sequences: {"user_id": int, "user_raw": str|null, "items": [int], "timestamps"?: [int], "ratings"?: [num]}
items:     {"item_id": int, "raw_id": str|null, "title", "brand", "categories", "price", "description", ...}
"""

from __future__ import annotations

import json
from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, known_item, lines, require
from distrec.errors import DataError


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData()
    seq_file = find(root, [cfg.files.get("sequences", "sequences.jsonl")], "sequences file")
    item_file = find(root, [cfg.files.get("items", "items.jsonl")], "items file", required=False)
    if item_file is not None:
        read_items(item_file, raw, errors, cfg.categories)
    read_sequences(seq_file, raw, errors)
    return raw


def parse_json(line: str, path: Path, number: int, errors: RowErrors) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        errors.bad("malformed_line", f"not valid JSON ({e.msg})", path, number, hint="fix or remove the line")
        return None
    if not isinstance(row, dict):
        errors.bad("malformed_line", "expected a JSON object per line", path, number, hint="fix or remove the line")
        return None
    return row


def missing(row: dict, keys: tuple[str, ...], path: Path, number: int, errors: RowErrors) -> bool:
    for key in keys:
        if row.get(key) is None:
            errors.bad("missing_field", f"required field '{key}' is missing", path, number,
                       hint=f"every line needs {', '.join(keys)}")
            return True
    return False


def read_items(path: Path, raw: RawData, errors: RowErrors, categories: str) -> None:
    raw.has_catalog = True
    for number, line in lines(path, raw):
        row = parse_json(line, path, number, errors)
        if row is None or missing(row, ("item_id",), path, number, errors):
            continue
        key = str(row.pop("item_id"))
        if key in raw.items:
            errors.bad("duplicate_item", f"item_id {key} appears twice", path, number,
                       hint="item ids must be unique; remove the duplicate line")
            continue
        row["raw_id"] = row.get("raw_id") or key
        if "attr_ids" in row:
            row["attributes"] = row.pop("attr_ids")
        if categories == "tags" and "categories" in row:
            row["genres"] = row.pop("categories")
        raw.items[key] = row


def read_sequences(path: Path, raw: RawData, errors: RowErrors) -> None:
    seen: set[str] = set()
    for number, line in lines(path, raw):
        row = parse_json(line, path, number, errors)
        if row is None or missing(row, ("user_id", "items"), path, number, errors):
            continue
        user, items = str(row["user_id"]), row["items"]
        times, ratings = row.get("timestamps"), row.get("ratings")
        if not isinstance(items, list) or any(not isinstance(i, (int, str)) for i in items):
            errors.bad("malformed_line", "'items' must be a list of item ids", path, number, hint="fix the line")
            continue
        if not items:
            errors.bad("empty_sequence", f"user_id {user} has no items", path, number,
                       hint="remove the line or give the user's interactions")
            continue
        if any(x is not None and not (isinstance(x, list) and len(x) == len(items)
                                      and all(isinstance(v, (int, float)) for v in x)) for x in (times, ratings)):
            errors.bad("malformed_line", "'timestamps'/'ratings' must be lists of numbers, one per item", path,
                       number, hint="fix the line")
            continue
        if user in seen:
            errors.bad("duplicate_user", f"user_id {user} appears twice", path, number,
                       hint="one line per user; merge or remove the duplicate")
            continue
        seen.add(user)
        if row.get("user_raw") is not None:
            raw.user_raw[user] = str(row["user_raw"])
        items = [str(i) for i in items]
        if raw.has_catalog and not all(i in raw.items for i in items):
            known = [k for k, i in enumerate(items) if known_item(raw, errors, i, path, number)]
            items = [items[k] for k in known]
            times = None if times is None else [times[k] for k in known]
            ratings = None if ratings is None else [ratings[k] for k in known]
        try:
            raw.log.add_sequence(user, items, times, ratings)
        except ValueError as e:
            raise DataError(str(e), path, number, hint="give every line timestamps (and ratings), or none") from None
