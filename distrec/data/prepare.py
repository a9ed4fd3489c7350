"""The `prepare` stage: read a dataset (or generate one), build the tables, write the `data/` artifact.

Artifact layout (docs/data.md): items/ sequences/ maps/ splits.json stats.json manifest.json,
written inside `staged_output` so a half-written directory is never picked up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distrec.artifacts import (Timer, dir_hash, file_hash, read_table, staged_output, write_json, write_manifest,
                               write_table)
from distrec.data import readers
from distrec.data.build import Prepared, build
from distrec.data.readers import base
from distrec.data.readers.base import RowErrors
from distrec.errors import ConfigError, DataError


def prepare(cfg) -> Path:
    """Run the stage for a composed top-level config; returns the artifact directory."""
    out = Path(cfg.paths.data)
    if cfg.data.format == "synthetic":
        if cfg.data.item_ids_from:
            raise ConfigError("data.item_ids_from keeps the item ids of real data; a synthetic dataset is "
                              "generated whole (leave it null)")
        from distrec.data.synthetic import generate

        return generate(cfg, out)
    timer = Timer()
    base.progress = bool(cfg.progress)
    errors = RowErrors(cfg.data.on_error)
    with timer("read"):
        raw = readers.read(cfg.data, errors)
    earlier = earlier_items(cfg.data.item_ids_from) if cfg.data.item_ids_from else None
    with timer("build"):
        prepared = build(raw, cfg.data, errors.dropped, earlier)
    with staged_output(out) as tmp:
        with timer("write"):
            write_prepared(tmp, prepared, cfg.data.num_shards)
        inputs = {str(p): file_hash(p) for p in dict.fromkeys(raw.files)}
        if earlier is not None:
            maps = Path(cfg.data.item_ids_from) / "maps" / "items"
            inputs[str(maps)] = dir_hash(maps)
        write_manifest(tmp, stage="prepare", config=cfg, inputs=inputs, timings=timer.phases,
                       counts=counts(prepared.stats))
    return out


def earlier_items(data_dir: str) -> list[str]:
    """The source ids of an earlier prepared dataset, in item-id order (data.item_ids_from)."""
    maps = Path(data_dir) / "maps" / "items"
    if not maps.is_dir():
        raise ConfigError(f"data.item_ids_from={data_dir}: no item map at {maps}; name the data/ directory of an "
                          "earlier `distrec prepare` (the one the SID table and the model were built from)")
    table = read_table(maps, ["item_id", "source_id"]).sort_by("item_id")
    ids = table.column("item_id").to_numpy()
    if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
        raise DataError("item ids are not 1..N", maps, hint="it is not a distrec prepare output; prepare it again")
    return table.column("source_id").to_pylist()


def write_prepared(directory: Path, prepared: Prepared, num_shards: int) -> None:
    write_table(prepared.items, directory / "items", num_shards)
    write_table(prepared.sequences, directory / "sequences", num_shards)
    write_table(prepared.user_map, directory / "maps" / "users")
    write_table(prepared.item_map, directory / "maps" / "items")
    for name, vocab in prepared.vocabs.items():
        write_table(vocab.table(), directory / "maps" / name)
    write_json(directory / "splits.json", prepared.split)
    write_json(directory / "stats.json", prepared.stats)


def counts(stats: dict) -> dict:
    return {k: stats[k] for k in ("users", "items", "interactions")}
