"""The `prepare` stage: read a dataset (or generate one), build the tables, write the `data/` artifact.

Artifact layout (docs/data.md): items/ sequences/ maps/ splits.json stats.json manifest.json,
written inside `staged_output` so a half-written directory is never picked up.
"""

from __future__ import annotations

from pathlib import Path

from distrec.artifacts import Timer, file_hash, staged_output, write_json, write_manifest, write_table
from distrec.data import readers
from distrec.data.build import Prepared, build
from distrec.data.readers import base
from distrec.data.readers.base import RowErrors


def prepare(cfg) -> Path:
    """Run the stage for a composed top-level config; returns the artifact directory."""
    out = Path(cfg.paths.data)
    if cfg.data.format == "synthetic":
        from distrec.data.synthetic import generate

        return generate(cfg, out)
    timer = Timer()
    base.progress = bool(cfg.progress)
    errors = RowErrors(cfg.data.on_error)
    with timer("read"):
        raw = readers.read(cfg.data, errors)
    with timer("build"):
        prepared = build(raw, cfg.data, errors.dropped)
    with staged_output(out) as tmp:
        with timer("write"):
            write_prepared(tmp, prepared, cfg.data.num_shards)
        inputs = {str(p): file_hash(p) for p in dict.fromkeys(raw.files)}
        write_manifest(tmp, stage="prepare", config=cfg, inputs=inputs, timings=timer.phases,
                       counts=counts(prepared.stats))
    return out


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
