"""S3-Rec / CIKM and SASRec text files of integer ids.

s3rec:  one line per user, `user item_1 item_2 ...` in chronological order (Beauty.txt, Yelp.txt).
sasrec: one `user item` pair per line, each user's pairs in chronological order (Video.txt).
Optional item attributes (S3-Rec `*_item2attributes.json`: {"item": [attr, ...]}) become the
multi_categorical field `attributes`.
"""

from __future__ import annotations

import json
from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, lines, open_text, require
from distrec.errors import DataError


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    raw = RawData()
    if "attributes" in cfg.files:
        read_attributes(find(root, [cfg.files["attributes"]], "item attributes file"), raw, errors)
    seq_file = find(root, [cfg.files.get("sequences", "*.txt")], "sequences file")
    if cfg.format == "sasrec":
        read_pairs(seq_file, raw, errors)
    else:
        read_user_lines(seq_file, raw, errors)
    return raw


def read_user_lines(path: Path, raw: RawData, errors: RowErrors) -> None:
    for number, line in lines(path, raw):
        user, *items = line.split()
        if not items:
            errors.bad("malformed_line", "a line needs a user id followed by at least one item id", path, number,
                       hint="format: `user item_1 item_2 ...`")
            continue
        if user in raw.log.user_codes:
            errors.bad("duplicate_user", f"user {user} has a second line", path, number,
                       hint="one line per user in this format (pairs of `user item` are data.format=sasrec)")
            continue
        raw.log.add_sequence(user, items)


def read_pairs(path: Path, raw: RawData, errors: RowErrors) -> None:
    for number, line in lines(path, raw):
        parts = line.split()
        if len(parts) != 2:
            errors.bad("malformed_line", f"expected `user item`, found {len(parts)} fields", path, number,
                       hint="one interaction per line (lines of whole sequences are data.format=s3rec)")
            continue
        raw.log.add(parts[0], parts[1])


def read_attributes(path: Path, raw: RawData, errors: RowErrors) -> None:
    raw.files.append(path)
    try:
        with open_text(path) as f:
            table = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", path, e.lineno, hint="the attributes file must be one JSON object") from None
    if not isinstance(table, dict) or not table:
        raise DataError("expected a non-empty JSON object {item: [attribute ids]}", path,
                        hint="check data.files.attributes")
    for item, attributes in table.items():
        if not isinstance(attributes, list):
            errors.bad("malformed_line", f"attributes of item {item!r} are not a list", path,
                       hint=f"fix the value of key {item!r}")
            continue
        raw.items[str(item)] = {"attributes": [str(a) for a in attributes]}
