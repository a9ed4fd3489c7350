"""RecBole atomic files: tab-separated with typed headers (`name:type`, type token|token_seq|float|float_seq).

`<name>.inter`: user_id:token item_id:token [rating:float] [timestamp:float]  (columns renamed by data.columns)
`<name>.item`:  item_id:token then any fields. Known names become canonical fields (title, movie_title ->
title; class/genre -> genres; categories; brand; price; release_year/year -> year); other token columns
become categorical, token_seq multi_categorical (space-separated), float numeric.
"""

from __future__ import annotations

from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, first_line, lines, require
from distrec.errors import DataError

RENAME = {"movie_title": "title", "name": "title", "title": "title", "class": "genres", "genre": "genres",
          "genres": "genres", "categories": "categories", "brand": "brand", "price": "price",
          "release_year": "year", "year": "year", "description": "description"}
KIND_OF_TYPE = {"token": "categorical", "token_seq": "multi_categorical", "float": "numeric"}


def header(path: Path) -> list[tuple[str, str]]:
    columns = []
    for cell in first_line(path).split("\t"):
        name, _, kind = cell.partition(":")
        if kind not in ("token", "token_seq", "float", "float_seq"):
            raise DataError(f"header cell {cell!r} is not `name:type` (type token|token_seq|float|float_seq)",
                            path, 1, hint="RecBole atomic files start with a typed header line")
        columns.append((name, kind))
    return columns


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData()
    inter = find(root, [cfg.files.get("inter", "*.inter")], "interaction file (.inter)")
    item_file = find(root, [cfg.files.get("item", "*.item")], "item file (.item)", required=False)
    if item_file is not None:
        read_items(item_file, raw, errors, cfg.categories)
    names = [name for name, _ in header(inter)]
    cols = cfg.columns
    rating_name = cols.rating or ("rating" if "rating" in names else None)
    wanted = {"user": cols.user, "item": cols.item, "timestamp": cols.timestamp if cols.timestamp in names else None,
              "rating": rating_name}
    for role in ("user", "item"):
        if wanted[role] not in names:
            raise DataError(f"no column '{wanted[role]}' for the {role} (columns: {names})", inter, 1,
                            hint=f"set data.columns.{role} to the right column name")
    index = {role: names.index(name) for role, name in wanted.items() if name is not None}
    for number, line in lines(inter, raw, skip_header=True):
        cells = line.split("\t")
        if len(cells) != len(names):
            errors.bad("malformed_line", f"expected {len(names)} tab-separated fields, found {len(cells)}", inter, number)
            continue
        user, item = cells[index["user"]].strip(), cells[index["item"]].strip()
        if not user or not item:
            errors.bad("missing_field", "empty user or item id", inter, number)
            continue
        try:
            timestamp = int(float(cells[index["timestamp"]])) if "timestamp" in index else None
            rating = float(cells[index["rating"]]) if "rating" in index else None
        except ValueError:
            errors.bad("malformed_line", "timestamp/rating is not a number", inter, number)
            continue
        raw.log.add(user, item, timestamp, rating)
    return raw


def read_items(path: Path, raw: RawData, errors: RowErrors, categories: str) -> None:
    columns = header(path)
    if columns[0][0] != "item_id":
        raise DataError(f"first column is '{columns[0][0]}', expected item_id", path, 1)
    for number, line in lines(path, raw, skip_header=True):
        cells = line.split("\t")
        if len(cells) != len(columns):
            errors.bad("malformed_line", f"expected {len(columns)} tab-separated fields, found {len(cells)}", path, number)
            continue
        key = cells[0].strip()
        if key in raw.items:
            errors.bad("duplicate_item", f"item {key} appears twice", path, number, hint="remove the duplicate line")
            continue
        fields = {}
        for (name, kind), cell in zip(columns[1:], cells[1:]):
            cell = cell.strip()
            field = RENAME.get(name, name)
            if field == "categories" and categories == "tags":
                field = "genres"
            if kind == "float_seq" or not cell:
                continue
            if field in ("genres", "categories") or (field not in RENAME.values() and kind == "token_seq"):
                fields[field] = cell.split()
            elif kind == "float":
                fields[field] = float(cell)
            else:
                fields[field] = cell
            if field not in RENAME.values():
                raw.kinds[field] = KIND_OF_TYPE[kind]
        raw.items[key] = fields
