"""`distrec tokenize`: item embeddings -> SID table, codebooks and quality report.

RQ-KMeans streams the embedding shards through k-means workers (in-process, or Ray actors when
`tokenizer.num_workers > 0`), so the catalog never has to fit in one process. The other quantizers
fit in memory on the catalog (or, with `tokenizer.train_items=train`, on the items seen in
training sequences) and encode every item. Collisions are then resolved (`tokenizer.dedup`).

`tokenizer.extend` (`distrec tokenize --extend`): items added after training get SIDs from the frozen
codebooks of the table being extended; no existing item's code changes (distrec/tokenize/extend.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from distrec.artifacts import Timer, staged_output, write_json, write_manifest, wrote
from distrec.clustering.vectors import VectorShards
from distrec.errors import ConfigError, DataError
from distrec.parallel.executor import executor
from distrec.tokenize.embedders import ItemEmbeddings
from distrec.tokenize.extend import extended_table, extends, new_item_codes
from distrec.tokenize.quantizers import build_quantizer, load_quantizer
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
    if cfg.tokenizer.extend:
        return extend(cfg)
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


SAME_CODE_SAMPLE = 10_000  # earlier items re-encoded to check the embeddings are the ones the parent saw


def extend(cfg):
    """The table at `tokenizer.extend` + SIDs for the items of paths.embeddings past its last item, written to
    paths.sids. In place (the default of --extend), the parent is kept beside it as `<sids>.<its hash>`."""
    parent_dir, out = Path(cfg.tokenizer.extend).resolve(), Path(cfg.paths.sids).resolve()
    timer = Timer()
    with timer("read"):
        parent = SIDTable.load(parent_dir)
        if not (parent_dir / "codebooks" / "quantizer.json").exists():
            raise DataError("no frozen quantizer to encode new items with (codebooks/ is missing)", parent_dir,
                            hint="extend a table written by `distrec tokenize`")
        q = load_quantizer(parent_dir / "codebooks")
        embeddings = ItemEmbeddings(cfg.paths.embeddings, cfg.data.name)
        ids, x = VectorShards(embeddings.shards).read_all()
        order = np.argsort(ids, kind="stable")
        ids, x = ids[order], x[order]
    n_old, n = parent.num_items, len(ids)
    if not np.array_equal(ids, np.arange(1, n + 1)):
        raise DataError(f"item ids must be dense 1..N to extend a SID table (got {n} ids)", embeddings.table_dir)
    if n <= n_old:
        raise DataError(f"no new items: the embeddings cover {n:,} items and the SID table already has {n_old:,}",
                        embeddings.table_dir, hint="embed the catalog with the new items (paths.embeddings) first; "
                        "new items take the ids after the table's last")
    with timer("encode"):
        codes, placed = new_item_codes(parent, q, x[n_old:])
        same = _same_code_rate(parent, q, x[:n_old], cfg.seed)
    if same < 0.9:
        log.warning("tokenize --extend: only %.0f%% of a sample of the %d earlier items get their recorded code "
                    "from these embeddings: are they the ones the parent was tokenized from?", 100 * same, n_old)
    kept = parent_dir if out != parent_dir else parent_dir.with_name(f"{parent_dir.name}.{parent.content_hash}")
    meta = {**parent.meta, "parent": {"content_hash": parent.content_hash, "num_items": n_old, "path": str(kept)},
            "embeddings": str(embeddings.table_dir)}
    table = extended_table(parent, codes, meta)
    assert extends(table, parent.content_hash, n_old)
    report = {"extended_from": parent.content_hash, "parent_items": n_old, "new_items": n - n_old,
              "new_items_on_a_taken_sid": placed["collisions"], "new_items_moved": placed["moved"],
              "earlier_items_same_code": round(same, 4), "collisions_after": table.num_collisions(),
              "num_items": n, "codebook_sizes": table.codebook_sizes, "content_hash": table.content_hash}
    if kept != parent_dir and not kept.exists():
        shutil.copytree(parent_dir, kept)  # the parent version stays readable (models trained on it name it)
    with staged_output(out) as tmp:
        with timer("write"):
            table.save(tmp, cfg.tokenizer.num_shards)
            shutil.copytree(parent_dir / "codebooks", tmp / "codebooks")  # frozen: extend it again later
        report["timings_s"] = {k: round(v, 3) for k, v in timer.phases.items()}
        write_json(tmp / "quality.json", report)
        write_manifest(tmp, stage="tokenize", config=cfg, timings=timer.phases,
                       inputs={"embeddings": embeddings.content_hash, "parent": parent.content_hash},
                       counts={"items": n, "new_items": n - n_old, "levels": table.levels},
                       extra={"content_hash": table.content_hash, "parent": meta["parent"]})
    print(f"tokenize --extend: {n - n_old:,} new items after the {n_old:,} of {parent.content_hash}; "
          f"{placed['collisions']:,} landed on a taken SID ({placed['moved']:,} moved to a free code), "
          f"{table.num_collisions():,} shared SIDs in the table; earlier items unchanged")
    wrote("tokenize", f"SID table of {n:,} items (parent {parent.content_hash} kept at {kept})", out)
    return out


def _same_code_rate(parent: SIDTable, q, x_old: np.ndarray, seed: int) -> float:
    """Share of a sample of the parent's items whose vectors the frozen quantizer encodes to their recorded
    code (before de-duplication, so a re-assigned item counts as different)."""
    rows = np.random.default_rng(seed).permutation(len(x_old))[:SAME_CODE_SAMPLE]
    codes = q.encode(x_old[rows])
    recorded = parent.codes[rows + 1, :codes.shape[1]]
    return float((codes == recorded).all(axis=1).mean()) if len(rows) else 1.0
