"""UniSRec downstream format (the Scientific set in ../shared/data/amazon-scientific-2018-subset/raw).

`<name>.{train,valid,test}.inter`: header `user_id:token item_id_list:token_seq item_id:token`, each line a
history and its target (indices). A user's sequence is their longest history + target (test.inter
normally); shorter ones must be prefixes of it. `<name>.item2index` / `<name>.user2index`: raw id \\t index.
`<name>.text`: `item_id:token text:token_seq`, keyed by raw item id, one string
"<title>. <category levels>. <brand>. " per item, kept as `text` and split best-effort into
title / categories / brand.
"""

from __future__ import annotations

from pathlib import Path

from distrec.data.readers.base import RawData, RowErrors, find, lines, require


def read(cfg, errors: RowErrors) -> RawData:
    root = require(cfg.path, "dataset folder")
    name = cfg.files.get("name", "*")
    raw = RawData()
    item_raw = index_file(find(root, [f"{name}.item2index"], "item2index file"), raw, errors)
    user_file = find(root, [f"{name}.user2index"], "user2index file", required=False)
    raw.user_raw = index_file(user_file, raw, errors) if user_file is not None else {}
    text_file = find(root, [f"{name}.text"], "item text file", required=False)
    if text_file is not None:
        texts = {}
        for number, line in lines(text_file, raw, skip_header=True):
            key, _, text = line.partition("\t")
            texts[key] = text
        by_raw = {v: k for k, v in item_raw.items()}
        for raw_id, text in texts.items():
            if raw_id in by_raw:
                raw.items[by_raw[raw_id]] = {"raw_id": raw_id, **split_text(text)}
    for key, raw_id in item_raw.items():
        raw.items.setdefault(key, {"raw_id": raw_id})
    raw.has_catalog = True

    sequences: dict[str, list[str]] = {}
    for split in ("test", "valid", "train"):
        path = find(root, [f"{name}.{split}.inter"], f"{split}.inter file", required=(split == "test"))
        if path is None:
            continue
        for number, line in lines(path, raw, skip_header=True):
            cells = line.split("\t")
            if len(cells) != 3:
                errors.bad("malformed_line", f"expected 3 tab-separated fields, found {len(cells)}", path, number)
                continue
            user, history, target = cells[0].strip(), cells[1].split(), cells[2].strip()
            sequence = history + [target]
            if any(i not in item_raw for i in sequence):
                errors.bad("unknown_item", "an item index is not in item2index", path, number,
                           hint="the .inter and .item2index files must come from the same export")
                continue
            known = sequences.get(user)
            if known is None or len(sequence) > len(known):
                if known is not None and sequence[: len(known)] != known:
                    errors.bad("inconsistent_sequence", f"user {user}'s sequences differ across files", path, number)
                    continue
                sequences[user] = sequence
            elif known[: len(sequence)] != sequence:
                errors.bad("inconsistent_sequence", f"user {user}'s sequence is not a prefix of a longer one", path, number)
    for user, sequence in sequences.items():
        raw.log.add_sequence(user, sequence)
    return raw


def index_file(path: Path, raw: RawData, errors: RowErrors) -> dict[str, str]:
    """index -> raw id, from `raw id \\t index` lines."""
    out: dict[str, str] = {}
    for number, line in lines(path, raw):
        parts = line.split("\t")
        if len(parts) != 2:
            errors.bad("malformed_line", "expected `raw id \\t index`", path, number)
            continue
        if parts[1].strip() in out:
            errors.bad("duplicate_item", f"index {parts[1].strip()} appears twice", path, number)
            continue
        out[parts[1].strip()] = parts[0].strip()
    return out


def split_text(text: str) -> dict:
    """"<title>. <categories>. <brand>. " -> fields; the split at the last two '. ' is best-effort."""
    text = text.strip()
    parts = text.rstrip(".").rsplit(". ", 2)
    fields = {"text": text}
    if len(parts) == 3:
        fields.update(title=parts[0], categories=[parts[1]] if parts[1] else None, brand=parts[2] or None)
    else:
        fields["title"] = parts[0]
    return fields
