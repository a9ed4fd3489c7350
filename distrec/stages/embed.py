"""`distrec embed`: items -> item embeddings (item_id, vector), by the embedder named in `embed.method`.

The embedder is fitted once (on at most `embed.fit_max_items` items), then applied per batch:
in-process, or on Ray Data workers when `embed.num_workers > 0`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from distrec.artifacts import (Timer, dir_hash, read_json, read_table, shard_paths, staged_output, write_manifest,
                               write_table)
from distrec.errors import DataError
from distrec.tokenize.embedders import build_embedder, embed_table

log = logging.getLogger("distrec")


def field_types(data_dir: Path) -> dict:
    stats = data_dir / "stats.json"
    if not stats.exists():
        return {}
    fields = read_json(stats).get("fields", {})
    return {k: (v.get("type") if isinstance(v, dict) else v) for k, v in fields.items()}


def run(cfg):
    ecfg = cfg.embed
    data_dir, out = Path(cfg.paths.data), Path(cfg.paths.embeddings)
    items_dir = data_dir / "items"
    timer = Timer()
    with timer("read"):
        items = read_table(items_dir)
    if items.num_rows == 0:
        raise DataError("the items table is empty", items_dir, hint="check the prepare stage's output")
    if "item_id" not in items.column_names:
        raise DataError(f"items have no item_id column (columns: {items.column_names})", items_dir)
    fit_items = items
    if items.num_rows > ecfg.fit_max_items:  # fit on a seeded sample; transform everything
        rows = np.sort(np.random.default_rng(ecfg.seed).choice(items.num_rows, ecfg.fit_max_items, replace=False))
        fit_items = items.take(pa.array(rows))
    with timer("fit"):
        embedder = build_embedder(ecfg, field_types(data_dir)).fit(fit_items)
    with staged_output(out) as tmp:
        with timer("transform"):
            if ecfg.num_workers > 0:
                from distrec.dist.embed import embed_on_ray

                del fit_items
                embed_on_ray(embedder, shard_paths(items_dir), tmp / "item_embeddings", ecfg, cfg.cluster, cfg.progress)
                table = read_table(tmp / "item_embeddings")
            else:
                parts = [embed_table(embedder, items.slice(i, ecfg.batch_size), ecfg.normalize)
                         for i in tqdm(range(0, items.num_rows, ecfg.batch_size), desc="embed", unit="batch",
                                       disable=not cfg.progress)]
                table = pa.concat_tables(parts)
                write_table(table, tmp / "item_embeddings", ecfg.num_shards)
        vectors = table.column("vector").combine_chunks()
        dim = vectors.type.list_size
        norms = np.linalg.norm(vectors.flatten().to_numpy().reshape(-1, dim), axis=1)
        zero = int((norms == 0).sum())
        if zero:  # items with no content: reported, never dropped
            log.warning("embed: %d of %d items have an all-zero vector (no content in %s)", zero, table.num_rows,
                        ecfg.method)
        counts = {"items": table.num_rows, "dim": dim, "zero_vectors": zero}
        write_manifest(tmp, stage="embed", config=cfg, inputs={"items": dir_hash(items_dir)},
                       timings=timer.phases, counts=counts)
    log.info("embed: %s items x %d dims (%s) -> %s", f"{table.num_rows:,}", dim, ecfg.method, out)
    return out
