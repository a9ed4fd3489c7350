"""`distrec recommend` on Ray Data: read_parquet -> map_batches(one Predictor per actor) -> write_parquet.

Ray streams the blocks: neither the driver nor a worker holds the whole user table. Rows keep the input's
order (`preserve_order`), so the output equals the in-process one row for row.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from distrec.errors import DistrecError
from distrec.inference.batch import PATH, output_schema, recommend_rows

IO_CPUS = 0.25  # each read and write task
MIN_FILE_ROWS = 100_000  # output rows gathered into one file (else one small file per block)
# Ray Data's file listing takes one whole CPU (not settable in Ray 2.60): the actors must leave it one,
# or on a small machine (2 CPUs, 2 actors) the pipeline waits for it forever
LISTING_CPUS = 1.0


class _RecommendBatch:
    """Ray Data callable: loads its own Predictor once (from the files, not shipped by the driver)."""

    def __init__(self, load_args: dict, k: int, raw_ids: bool):
        import torch

        from distrec.inference.predictor import Predictor

        torch.set_num_threads(1)  # an actor has at most one CPU (actor_cpus)
        self.predictor, self.k, self.raw_ids = Predictor.load(**load_args), k, raw_ids

    def __call__(self, batch):
        return recommend_rows(self.predictor, batch, self.k, self.raw_ids)


def actor_cpus(total: float, num_workers: int) -> float:
    """CPUs per actor: one, or less when the actors would leave none to the listing, read and write tasks."""
    return max(0.1, min(1.0, (total - LISTING_CPUS) / num_workers))


def block_bytes(files: list[Path], columns: list[str], batch_size: int) -> int:
    """Bytes of about two batches of rows of `columns` (from the parquet metadata): Ray Data reads a file in
    blocks of at most this size and hands each block to one actor, so a file of 100k users keeps every actor
    busy (with the default 128 MiB it would be one block, one actor)."""
    import pyarrow.parquet as pq

    size = rows = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size += sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                        if group.column(c).path_in_schema.split(".")[0] in columns)
    return max(1 << 16, int(size / max(rows, 1) * batch_size * 2))


def recommend_on_ray(load_args: dict, files: list[Path], columns: list[str], out_dir: Path, rcfg, raw_items: bool,
                     cluster=None, progress: bool = True) -> dict:
    """The rows of `files` (the first rcfg.max_users) through `rcfg.num_workers` Predictor actors, written to
    out_dir/part-*.parquet (at most rcfg.rows_per_file rows each). Returns {"ray_start": seconds}."""
    from distrec.artifacts import adopt_parts, write_table
    from distrec.parallel.ray_env import init_ray

    start = time.perf_counter()
    ray = init_ray(cluster)
    started = time.perf_counter() - start
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.execution_options.preserve_order = True
    ctx.raise_original_map_exception = True  # a worker's DataError, not Ray's UserCodeException
    ctx.target_max_block_size = block_bytes(files, columns, rcfg.batch_size)
    ds = ray.data.read_parquet([str(f) for f in files], include_paths=True, num_cpus=IO_CPUS)
    ds = ds.select_columns([*columns, PATH])  # PATH: the file a bad row came from, for the error
    if rcfg.max_users is not None:
        ds = ds.limit(rcfg.max_users)
    cpus = actor_cpus(ray.cluster_resources().get("CPU", 1.0), rcfg.num_workers)
    ds = ds.map_batches(_RecommendBatch, fn_constructor_args=(load_args, rcfg.k, rcfg.raw_ids), batch_format="pyarrow",
                        batch_size=rcfg.batch_size, compute=ray.data.ActorPoolStrategy(size=rcfg.num_workers),
                        num_cpus=cpus)
    raw = Path(out_dir).with_name(Path(out_dir).name + ".ray")
    try:
        ds.write_parquet(str(raw), min_rows_per_file=min(rcfg.rows_per_file, MIN_FILE_ROWS),
                         max_rows_per_file=rcfg.rows_per_file, ray_remote_args={"num_cpus": IO_CPUS})
    except Exception as e:  # a DataError in an actor (an unknown item id) reaches here wrapped by Ray
        found = user_error(e)
        if found is None:
            raise
        raise found from None
    if not adopt_parts(raw, out_dir):  # no rows: one empty part, as in-process
        write_table(output_schema(columns, raw_items).empty_table(), out_dir)
    return {"ray_start": started}


# what Ray Data appends to the message of an error raised in a map task (ray.data._internal.util)
RAY_SUFFIX = re.compile(r"\nFailed to [^\n]* after \d+/\d+ attempts .*", re.S)


def user_error(error: BaseException) -> DistrecError | None:
    """The DistrecError a worker raised, as it raised it, found in the chain of Ray's wrappers (None if none)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DistrecError) and type(error).__module__.startswith("distrec"):  # not Ray's subclass
            return type(error)(RAY_SUFFIX.sub("", str(error)))
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None
