"""The `embed` stage on Ray Data: input blocks -> map_batches(fitted embedder) -> embedding shards."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from distrec.artifacts import adopt_parts
from distrec.tokenize.embedders import embed_table


class _EmbedBatch:
    """Ray Data callable: holds the fitted embedder (shipped once per worker)."""

    def __init__(self, embedder, do_normalize: bool, seed: int):
        self.embedder, self.do_normalize, self.seed = embedder, do_normalize, seed

    def __call__(self, batch):
        return embed_table(self.embedder, batch, self.do_normalize, self.seed)


def embed_on_ray(embedder, inputs, out_dir: Path, cfg, cluster=None, progress: bool = True) -> int:
    """Embed the rows of `inputs` (the embedder's input table) with `cfg.num_workers` Ray Data
    workers, `cfg.num_shards` blocks; writes out_dir/part-*.parquet.

    Returns the number of rows written.
    """
    from distrec.parallel.ray_env import init_ray

    ray = init_ray(cluster)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    step = -(-inputs.num_rows // max(1, cfg.num_shards))
    ds = ray.data.from_arrow([inputs.slice(i, step) for i in range(0, inputs.num_rows, step)])
    ds = ds.map_batches(_EmbedBatch, fn_constructor_args=(embedder, cfg.normalize, cfg.seed), batch_format="pyarrow",
                        batch_size=cfg.batch_size, concurrency=cfg.num_workers, num_cpus=1)
    raw = Path(out_dir).with_name(Path(out_dir).name + ".ray")
    ds.write_parquet(str(raw))
    return sum(pq.ParquetFile(p).metadata.num_rows for p in adopt_parts(raw, out_dir))  # stable part-* names
