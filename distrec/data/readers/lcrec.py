"""LC-Rec style JSON: `<name>.inter.json` {"user index": [item index, ...]} (chronological) and
`<name>.item.json` {"item index": {"title", "description", "brand", "categories", ...}}.
Categories may be a list or a comma-separated string (top level first).
"""

from __future__ import annotations

import json
from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, known_item, open_text, require
from distrec.errors import DataError


def load_object(path: Path, raw: RawData) -> dict:
    raw.files.append(path)
    try:
        with open_text(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", path, e.lineno, hint="the file must be one JSON object") from None
    if not isinstance(obj, dict) or not obj:
        raise DataError("expected a non-empty JSON object", path, hint="check data.files / data.path")
    return obj


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData()
    item_file = find(root, [cfg.files.get("items", "*.item.json")], "item file (.item.json)", required=False)
    if item_file is not None:
        raw.has_catalog = True
        for key, fields in load_object(item_file, raw).items():
            if not isinstance(fields, dict):
                errors.bad("malformed_line", f"item {key!r} is not an object", item_file, hint=f"fix key {key!r}")
                continue
            fields = dict(fields)
            if isinstance(fields.get("categories"), str):
                fields["categories"] = [c.strip() for c in fields["categories"].split(",") if c.strip()]
            if cfg.categories == "tags" and "categories" in fields:
                fields["genres"] = fields.pop("categories")
            raw.items[str(key)] = fields
    inter_file = find(root, [cfg.files.get("inter", "*.inter.json")], "interaction file (.inter.json)")
    for user, items in load_object(inter_file, raw).items():
        if not isinstance(items, list) or not items:
            errors.bad("malformed_line", f"user {user!r} has no item list", inter_file, hint=f"fix key {user!r}")
            continue
        items = [str(i) for i in items if known_item(raw, errors, str(i), inter_file, None)]
        raw.log.add_sequence(str(user), items)
    return raw
