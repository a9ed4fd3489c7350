"""`distrec recommend`: a trained model's top-K for every user (or a parquet of histories) -> recommend/.

    recommend/recommendations/part-*.parquet   user_id, [raw_user_id], items (best first), scores, [raw_items]
    recommend/manifest.json                    the model that answered (method, model and SID hashes,
                                               decoding), counts, users/s, timings

The input streams through: in this process one record batch at a time (`recommend.num_workers=0`), or
on Ray Data actors holding one model each (docs/inference.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distrec.artifacts import Timer, check_same_dataset, shard_paths, staged_output, write_manifest, wrote
from distrec.errors import ConfigError, DataError
from distrec.inference.batch import input_columns, input_files, summarize
from distrec.inference.predictor import Predictor, RequestError
from distrec.parallel.executor import executor

log = logging.getLogger("distrec")
TABLE = "recommendations"


def sources(cfg, data_dir: Path | None) -> tuple[list[Path], list[str]]:
    """The parquet files of histories and the columns to read from them."""
    rc = cfg.recommend
    if rc.input is not None:
        files = input_files(Path(rc.input).resolve())
        return files, input_columns(files, rc.raw_ids)
    if rc.raw_ids:
        raise ConfigError("recommend.raw_ids=true describes recommend.input's items; the prepared data's users "
                          "(recommend.input=null) are read in dense ids and written with raw ids anyway")
    if data_dir is None:
        raise DataError("no prepared data (manifest.json) to take the users from", cfg.paths.data,
                        hint="run `distrec prepare` with this data=, set paths.data, or give recommend.input")
    return shard_paths(data_dir / "sequences"), ["user_id", "raw_user_id", "items"]


def run(cfg) -> dict:
    import torch

    rc, timer = cfg.recommend, Timer()
    if rc.max_users is not None and rc.max_users < 0:
        raise ConfigError(f"recommend.max_users={rc.max_users} must be >= 0 (null = every user)")
    if rc.batch_size < 1 or rc.rows_per_file < 1:
        raise ConfigError("recommend.batch_size and recommend.rows_per_file must be >= 1")
    run_on = executor(rc.num_workers, cfg.cluster, "recommend.num_workers")
    data_dir = Path(cfg.paths.data) if (Path(cfg.paths.data) / "manifest.json").exists() else None
    if data_dir is not None:
        check_same_dataset(data_dir, cfg.data.name)
    elif rc.raw_ids:
        raise ConfigError(f"recommend.raw_ids=true needs the prepared data the model was trained on, to map raw ids; "
                          f"none at paths.data={cfg.paths.data}")
    files, columns = sources(cfg, data_dir)
    load_args = {"train_dir": cfg.paths.train, "sids_dir": cfg.paths.sids, "data_dir": data_dir and str(data_dir),
                 "checkpoint": str(rc.checkpoint), "decoding": str(rc.decoding), "beam_width": rc.beam_width,
                 "exclude_history": rc.exclude_history, "max_k": rc.k, "precision": rc.precision,
                 "new_item_share": rc.new_item_share,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
    with timer("load"):
        predictor = Predictor.load(**load_args)
    try:
        predictor.check([], rc.k)
    except RequestError as e:
        raise ConfigError(f"recommend.k: {e}") from None
    with staged_output(cfg.paths.recommendations) as tmp:
        start = time.perf_counter()
        with timer("recommend"):
            startup = run_on.recommend(predictor, load_args, files, columns, tmp / TABLE, rc, cfg.progress)
        with timer("summary"):
            counts = summarize(tmp / TABLE, rc.k)
        seconds = time.perf_counter() - start
        timer.phases.update(startup)  # e.g. starting Ray: part of "recommend", left out of users/s
        users_per_s = counts["users"] / max(timer.phases["recommend"] - sum(startup.values()), 1e-9)
        examples = counts.pop("empty_history_users")
        if counts["empty_history"]:  # written with empty lists, never dropped
            log.warning("recommend: %d of %d users have an empty history and got empty lists (e.g. user ids %s)",
                        counts["empty_history"], counts["users"], examples)
        write_manifest(tmp, stage="recommend", config=cfg, timings=timer.phases, counts={**counts, "k": rc.k},
                       inputs={"histories": [str(f) for f in files], "model": predictor.identity["model_hash"],
                               "sids": predictor.identity["sid_hash"]},
                       extra={"model": predictor.identity, "users_per_s": round(users_per_s, 1),
                              "num_workers": rc.num_workers, "empty_history_users": examples})
    log.info("recommend: %d users in %.1f s (%.0f users/s)", counts["users"], seconds, users_per_s)
    wrote("recommend", f"top-{rc.k} for {counts['users']:,} users ({users_per_s:,.0f} users/s, "
                       f"{predictor.identity['method']}, {predictor.identity['decoding']}) in {TABLE}/",
          cfg.paths.recommendations)
    return {"counts": counts, "users_per_s": users_per_s, "model": predictor.identity}
