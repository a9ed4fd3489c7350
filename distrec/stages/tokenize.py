"""`distrec tokenize`: item embeddings -> SID table, codebooks and quality report.

RQ-KMeans streams the embedding shards through k-means workers (in-process, or Ray actors when
`tokenizer.num_workers > 0`), so the catalog never has to fit in one process. The other quantizers
fit in memory on the catalog (or, with `tokenizer.train_items=train`, on the items seen in
training sequences) and encode every item. Collisions are then resolved (`tokenizer.dedup`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from distrec.artifacts import Timer, staged_output, write_json, write_manifest, wrote
from distrec.clustering.vectors import VectorShards
from distrec.errors import ConfigError, DataError
from distrec.parallel.executor import executor
from distrec.tokenize.embedders import ItemEmbeddings
from distrec.tokenize.quantizers import build_quantizer
from distrec.tokenize.report import format_report, quality_report
from distrec.tokenize.sid_table import SIDTable, add_dedup_digit, group_rows, reassign_last_level, row_keys

log = logging.getLogger("distrec")


def training_items(data_dir: Path) -> np.ndarray:
    """Item ids that appear in some user's training prefix (the prepared split decides)."""
    from distrec.data.dataset import load_prepared

    if not (data_dir / "sequences").exists():
        raise ConfigError(f"tokenizer.train_items=train needs the prepared data at {data_dir} "
                          "(run `distrec prepare`, or set paths.data)")
    return load_prepared(data_dir).train_item_ids()


def streamed_rq_kmeans(q, tcfg, paths, checkpoint_dir, run_on):
    """Fit + encode RQ-KMeans over the shards; returns (item_ids, codes, sq_err, sq_norm)."""
    pool = run_on.kmeans_pool(paths, tcfg)
    try:
        q.fit_pool(pool, checkpoint_dir)
        parts = pool.call("encode", None, q.codebooks)
    finally:
        pool.shutdown()
    ids = np.concatenate([p[0] for p in parts])
    codes = np.concatenate([p[1] for p in parts]).astype(np.int64)
    sq_err = None if tcfg.normalize_residuals else sum(p[2] for p in parts)
    return ids, codes, sq_err, sum(p[3] for p in parts)


def resolve_collisions(codes, kind, q, vectors_of_rows):
    """Apply `tokenizer.dedup`; returns (final codes, codebook sizes, dedup info)."""
    sizes = list(q.codebook_sizes)
    groups = group_rows(codes)
    before = after = int(len(codes) - len(groups[1]))
    moved = 0
    if kind == "digit":
        final, digit = add_dedup_digit(codes, groups)
        sizes.append(digit)
        after = 0  # unique by construction
    elif kind == "balanced":
        final, moved = reassign_last_level(codes, lambda rows: q.last_level_distances(vectors_of_rows(rows)), sizes[-1])
        after = int(len(final) - len(np.unique(row_keys(final))))
    else:
        final = codes
    if after:
        log.warning("tokenize: %d items share a semantic ID (dedup=%s); use tokenizer.dedup=digit or balanced",
                    after, kind)
    return final, sizes, {"kind": kind, "collisions_before": before, "collisions_after": after,
                          "items_reassigned": int(moved), "levels_after": final.shape[1]}


def run(cfg):
    tcfg = cfg.tokenizer
    embeddings = ItemEmbeddings(cfg.paths.embeddings, cfg.data.name)
    emb_dir, paths, out = embeddings.table_dir, embeddings.shards, Path(cfg.paths.sids)
    run_on = executor(tcfg.num_workers, cfg.cluster, "tokenizer.num_workers")
    q = build_quantizer(tcfg, progress=cfg.progress).run_on(run_on)
    timer = Timer()
    with staged_output(out) as tmp:
        x = None
        if tcfg.method == "rq_kmeans" and tcfg.train_items == "all":
            with timer("fit+encode"):
                ids, codes, sq_err, sq_norm = streamed_rq_kmeans(q, tcfg, paths, tmp / "checkpoints", run_on)
            fit_items = len(ids)
        else:
            with timer("read"):
                ids, x = VectorShards(paths).read_all()
            train = x
            if tcfg.train_items == "train":
                train = x[np.isin(ids, training_items(Path(cfg.paths.data)))]
                log.info("tokenize: fitting on %d of %d items (seen in training sequences)", len(train), len(x))
            fit_items = len(train)
            with timer("fit"):
                q.fit(train)
            with timer("encode"):
                codes = q.encode(x)
            sq_err, sq_norm = reconstruction(q, x, codes)
        if len(ids) == 0:
            raise DataError("the catalog is empty (0 item vectors)", emb_dir)

        def vectors_of_rows(rows):
            return x[rows] if x is not None else VectorShards(paths).rows(rows)

        with timer("dedup"):
            final, sizes, dedup = resolve_collisions(codes, tcfg.dedup, q, vectors_of_rows)
        meta = {"tokenizer": OmegaConf.to_container(tcfg, resolve=True) if not isinstance(tcfg, dict) else tcfg,
                "embeddings": str(emb_dir)}
        table = SIDTable.from_codes(ids, final, sizes, tcfg.dedup, meta)
        with timer("write"):
            table.save(tmp, tcfg.num_shards)
            q.save(tmp / "codebooks")
        report = quality_report(codes, q.codebook_sizes, sq_err=sq_err, sq_norm=sq_norm, timings=timer.phases,
                                dedup=dedup, method=tcfg.method)
        report["fit_items"] = int(fit_items)
        report["content_hash"] = table.content_hash
        write_json(tmp / "quality.json", report)
        write_manifest(tmp, stage="tokenize", config=cfg, inputs={"embeddings": embeddings.content_hash},
                       timings=timer.phases, counts={"items": table.num_items, "levels": table.levels,
                                                     "collisions_after": dedup["collisions_after"]},
                       extra={"content_hash": table.content_hash})
    print(format_report(report))
    wrote("tokenize", f"SID table of {table.num_items:,} items x {table.levels} digits (sids/), codebooks/, "
          "quality.json", out)
    return out


def reconstruction(q, x, codes, batch: int = 65_536):
    """(summed squared error, summed squared norm), or (None, norm) when the quantizer has no decoder."""
    sq_norm = float(np.square(x, dtype=np.float64).sum())
    try:
        sq_err = sum(float(np.square(x[i:i + batch] - q.decode(codes[i:i + batch]), dtype=np.float64).sum())
                     for i in range(0, len(x), batch))
    except NotImplementedError:
        return None, sq_norm
    return sq_err, sq_norm
