"""`distrec embed`: prepared items -> item embeddings (item_id, vector), by the embedder `embed.method`.

The embedder builds its inputs from the prepared data (e.g. item text with categorical ids decoded),
is fitted once (on at most `embed.fit_max_items` items), then applied per batch: in-process, or on
Ray Data workers when `embed.num_workers > 0`. `embed.method=famae` trains its model instead of
fitting (distrec/train/famae.py; settings: `famae.*`), on the workers `famae.engine.num_workers` names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distrec.artifacts import Timer, dir_hash, read_table, shard_paths, staged_output, write_manifest, wrote
from distrec.data.dataset import load_prepared
from distrec.errors import DataError
from distrec.parallel.executor import executor
from distrec.tokenize.embedders import build_embedder

log = logging.getLogger("distrec")


def make_embedder(cfg):
    if cfg.embed.method == "famae":  # trained with the engine on the sequences, not fitted on the items
        from distrec.train.famae import FAMAEEmbedder

        run_on = executor(cfg.famae.engine.num_workers, cfg.cluster, "famae.engine.num_workers")
        return FAMAEEmbedder(cfg.famae, cfg.embed.seed, run_on, cfg.progress)
    return build_embedder(cfg.embed)


def run(cfg):
    ecfg = cfg.embed
    data_dir, out = Path(cfg.paths.data), Path(cfg.paths.embeddings)
    timer = Timer()
    with timer("read"):
        data = load_prepared(data_dir, cfg.data.name)
        if data.items.num_rows == 0:
            raise DataError("the items table is empty", data_dir / "items", hint="check the prepare stage's output")
        embedder = make_embedder(cfg)
        inputs = embedder.inputs(data)
    fit_inputs = inputs
    earlier = data.stats.get("earlier_items")  # a grown catalog (data.item_ids_from): fit as before it grew
    if earlier is not None:
        fit_inputs = inputs.filter(pc.less_equal(inputs.column("item_id"), earlier))
        log.info("embed: fitted on the %d earlier items of the grown catalog (data.item_ids_from), as the "
                 "embeddings its SID table was built from; %d new items are transformed only",
                 fit_inputs.num_rows, inputs.num_rows - fit_inputs.num_rows)
    if fit_inputs.num_rows > ecfg.fit_max_items:  # fit on a seeded sample; transform everything
        rows = np.sort(np.random.default_rng(ecfg.seed).choice(fit_inputs.num_rows, ecfg.fit_max_items,
                                                               replace=False))
        fit_inputs = fit_inputs.take(pa.array(rows))
    with timer("fit"):
        embedder.fit(fit_inputs)
    fit_items = fit_inputs.num_rows
    del fit_inputs
    with staged_output(out) as tmp:
        with timer("transform"):
            run_on = executor(ecfg.num_workers, cfg.cluster, "embed.num_workers")
            run_on.embed(embedder, inputs, tmp / "item_embeddings", ecfg, cfg.progress)
            # ids and flags only: a large catalog's vectors need not fit in the driver (1M x 384: 1.5 GB)
            table = read_table(tmp / "item_embeddings", columns=["item_id", "no_content"])
            dim = pq.read_schema(shard_paths(tmp / "item_embeddings")[0]).field("vector").type.list_size
        no_content = table.filter(table.column("no_content")).column("item_id").to_pylist()
        if no_content:  # reported, never dropped (they get placeholder_vectors, not zeros)
            log.warning("embed: %d of %d items have no content for %s (e.g. item ids %s); each got a fixed random "
                        "unit vector", len(no_content), table.num_rows, embedder.cfg.method, no_content[:10])
        counts = {"items": table.num_rows, "dim": dim, "no_content": len(no_content), "fit_items": fit_items}
        write_manifest(tmp, stage="embed", config=cfg, inputs={"items": dir_hash(data_dir / "items")},
                       timings=timer.phases, counts=counts, extra={"no_content_items": no_content[:1000],
                                                                   "method": embedder.cfg.method,  # after a fallback
                                                                   **getattr(embedder, "info", {})})
    wrote("embed", f"{table.num_rows:,} items x {dim} dims ({embedder.cfg.method}) in item_embeddings/", out)
    return out
