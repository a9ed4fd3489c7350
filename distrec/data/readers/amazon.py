"""Amazon review dumps (McAuley lab).

amazon2014: reviews `reviews_<Category>_5.json(.gz)` {reviewerID, asin, overall, unixReviewTime (s)} and
            metadata `meta_<Category>.json(.gz)` {asin, title, price, brand, categories [[path], ...],
            description}. The metadata lines are Python dict literals (single quotes), not JSON.
amazon2023: reviews `<Category>.jsonl(.gz)` {user_id, parent_asin, asin, rating, timestamp (ms)} and
            metadata `meta_<Category>.jsonl(.gz)` {parent_asin, title, main_category, categories [path],
            store, price, description [..], details {..}}. Items are parent ASINs, as in the 2023 benchmarks.
Metadata is side information: reviewed items without a metadata line are kept (fields null).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, lines, require


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData()
    v2023 = cfg.format == "amazon2023"
    if "reviews" in cfg.files or not v2023:
        reviews = find(root, [cfg.files.get("reviews", "reviews_*.json")], "reviews file")
    else:  # 2023 reviews are named by category alone: the .jsonl file that is not meta_*
        found = sorted(p for p in root.glob("*.jsonl*") if not p.name.startswith("meta_"))
        reviews = found[0] if found else find(root, ["<Category>.jsonl"], "reviews file")
    meta = find(root, [cfg.files.get("meta", "meta_*.jsonl" if v2023 else "meta_*.json")], "metadata file",
                required=False)
    if meta is not None:
        for number, row in records(meta, raw, errors):
            key = row.get("parent_asin" if v2023 else "asin")
            if key is None:
                errors.bad("missing_field", f"metadata line has no {'parent_asin' if v2023 else 'asin'}", meta, number)
                continue
            if str(key) in raw.items:
                errors.bad("duplicate_item", f"item {key} has a second metadata line", meta, number,
                           hint="remove the duplicate line")
                continue
            raw.items[str(key)] = (fields_2023 if v2023 else fields_2014)(row)
    user_key, item_key, time_key, rating_key = (("user_id", "parent_asin", "timestamp", "rating") if v2023
                                                else ("reviewerID", "asin", "unixReviewTime", "overall"))
    for number, row in records(reviews, raw, errors):
        absent = [k for k in (user_key, item_key, time_key) if row.get(k) is None]
        if absent:
            errors.bad("missing_field", f"review has no '{absent[0]}'", reviews, number,
                       hint=f"every review needs {user_key}, {item_key}, {time_key}")
            continue
        try:
            timestamp = int(row[time_key]) // (1000 if v2023 else 1)  # 2023 timestamps are milliseconds
            rating = float(row[rating_key]) if row.get(rating_key) is not None else float("nan")
        except (TypeError, ValueError):
            errors.bad("malformed_line", f"'{time_key}'/'{rating_key}' is not a number", reviews, number)
            continue
        raw.log.add(str(row[user_key]), str(row[item_key]), timestamp, rating)
    return raw


def records(path: Path, raw: RawData, errors: RowErrors):
    """(line number, dict) per line: JSON, or a Python literal as in the 2014 metadata files."""
    for number, line in lines(path, raw):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            try:
                row = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                errors.bad("malformed_line", "line is neither JSON nor a Python dict literal", path, number,
                           hint="fix or remove the line")
                continue
        if not isinstance(row, dict):
            errors.bad("malformed_line", "expected one object per line", path, number)
            continue
        yield number, row


def fields_2014(row: dict) -> dict:
    categories = row.get("categories") or []
    path = categories[0] if categories and isinstance(categories[0], list) else categories
    return {"raw_id": row.get("asin"), "title": row.get("title"), "brand": row.get("brand"),
            "categories": path or None, "price": row.get("price"), "description": row.get("description")}


def fields_2023(row: dict) -> dict:
    details = row.get("details") or {}
    path = row.get("categories") or ([row["main_category"]] if row.get("main_category") else None)
    return {"raw_id": row.get("parent_asin"), "title": row.get("title"),
            "brand": row.get("store") or details.get("Brand"), "categories": path,
            "price": row.get("price"), "description": row.get("description") or row.get("features")}
