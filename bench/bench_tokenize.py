"""Benchmark: catalog-scale RQ-KMeans tokenization, distributed on Ray vs the single-process faiss floor.

1. A generated catalog of 1,000,000 items x 128 dims (clustered random vectors) is written as parquet
   shards. `distrec tokenize` (RQ-KMeans 3 x 256 + de-dup digit, tokenizer.num_workers=2) goes from
   those shards to a written SID table through 2 Ray actors. In the same process, on the same data,
   the floor: vectors in memory, faiss.Kmeans (sampled training, 256 points per centroid) + full
   assignment per level. Printed: both times and their ratio (targets: end to end <= 60 s,
   distributed <= 1.5 x floor).
2. 10,000,000 items x 32 dims, streamed through the same distributed path; peak memory of the whole
   process tree (driver + Ray workers, RSS summed, so shared pages count twice: an upper bound).

    .venv/bin/python bench/bench_tokenize.py            # both parts; writes bench/results/tokenize.json
    .venv/bin/python bench/bench_tokenize.py --items 200000 --big-items 0   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class PeakMemory:
    """Samples the RSS of this process and all its descendants (Ray's raylet and workers) every 0.1 s."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(0.1)

    def __enter__(self):
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_catalog(directory: Path, num_items: int, dim: int, shard_rows: int, clusters: int = 2000, seed: int = 0):
    """Clustered random vectors, written shard by shard (never the whole catalog in memory)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    for i, start in enumerate(range(0, num_items, shard_rows)):
        n = min(shard_rows, num_items - start)
        x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim), dtype=np.float32)
        table = pa.table({"item_id": pa.array(np.arange(start + 1, start + n + 1), pa.int64()),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)})
        pq.write_table(table, directory / f"part-{i:05d}.parquet")
    return sorted(directory.glob("part-*.parquet"))


def distributed_tokenize(root: Path, emb_root: Path, workers: int, levels: int, k: int, iters: int) -> dict:
    """The real stage, parquet shards -> SID table, on `workers` Ray actors; returns its timings."""
    from distrec.config import compose
    from distrec.stages import tokenize

    cfg = compose([f"paths.root={root}", f"paths.embeddings={emb_root}", "progress=false",
                   "tokenizer=rq_kmeans", f"tokenizer.levels={levels}", f"tokenizer.codebook_size={k}",
                   f"tokenizer.kmeans_iters={iters}", f"tokenizer.num_workers={workers}",
                   "tokenizer.normalize_residuals=false"])  # plain RQ, as the faiss floor it is compared with
    start = time.perf_counter()
    tokenize.run(cfg)
    total = time.perf_counter() - start
    quality = json.loads((root / "sids" / "quality.json").read_text())
    return {"total_s": total, "phases_s": quality["timings_s"], "collision_rate": quality["collision_rate"],
            "collisions_after": quality["dedup"]["collisions_after"],
            "relative_mse": quality["reconstruction"]["relative_mse"]}


def faiss_floor(paths, levels: int, k: int, iters: int, seed: int = 0, threads: int = 2) -> dict:
    """Single process: read vectors, then per level faiss.Kmeans on a sample + assignment of every item."""
    import faiss

    faiss.omp_set_num_threads(threads)
    from distrec.clustering.vectors import VectorShards
    from distrec.tokenize.sid_table import add_dedup_digit

    start = time.perf_counter()
    _, x = VectorShards(paths).read_all()
    read = time.perf_counter() - start
    start = time.perf_counter()
    residual = x.copy()
    codes = np.empty((len(x), levels), dtype=np.int64)
    for level in range(levels):
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed + level, max_points_per_centroid=256)
        km.train(residual)
        _, labels = km.index.search(residual, 1)
        codes[:, level] = labels[:, 0]
        residual -= km.centroids[labels[:, 0]]
    quantize = time.perf_counter() - start
    start = time.perf_counter()
    add_dedup_digit(codes)
    dedup = time.perf_counter() - start
    return {"threads": threads, "read_s": read, "train_assign_s": quantize, "dedup_s": dedup,
            "relative_mse": float(np.square(residual, dtype=np.float64).sum() / np.square(x, dtype=np.float64).sum())}


def run_catalog(args, work: Path, levels: int, k: int, result: dict) -> None:
    """Part 1: the distributed stage vs the single-process faiss floor on the same parquet shards."""
    from distrec.parallel.ray_env import init_ray

    t = time.perf_counter()
    write_catalog(work / "emb" / "item_embeddings", args.items, args.dim, shard_rows=125_000)
    result["generate_s"] = time.perf_counter() - t
    with PeakMemory() as mem:
        t = time.perf_counter()
        init_ray(None, num_cpus=args.workers)
        ray_start = time.perf_counter() - t
        dist = distributed_tokenize(work / "run", work / "emb", args.workers, levels, k, args.iters)
    paths = sorted((work / "emb" / "item_embeddings").glob("part-*.parquet"))
    with PeakMemory() as floor_mem:  # the faster of 2 and 1 faiss threads: the strictest floor
        floors = [faiss_floor(paths, levels, k, args.iters, threads=t) for t in (2, 1)]
    floor = min(floors, key=lambda f: f["train_assign_s"])
    dist_quant = dist["phases_s"]["fit+encode"]
    part = {
        "items": args.items, "dim": args.dim, "workers": args.workers,
        "ray_start_s": ray_start,
        "distributed": dist,
        "end_to_end_s": ray_start + dist["total_s"],
        "floor": floor,
        "floor_runs": floors,
        "ratio_fit_encode_vs_floor_train_assign": dist_quant / floor["train_assign_s"],
        "ratio_fit_encode_vs_floor_read_train_assign": dist_quant / (floor["read_s"] + floor["train_assign_s"]),
        "peak_rss_gb_distributed_tree": mem.peak / 1e9,
        "peak_rss_gb_floor_tree": floor_mem.peak / 1e9,
    }
    result["catalog"] = part
    print(f"\n{args.items:,} x {args.dim}: distributed ({args.workers} Ray workers) parquet -> SID table "
          f"{dist['total_s']:.1f} s (fit+encode {dist_quant:.1f} s) + Ray start {ray_start:.1f} s "
          f"= end to end {part['end_to_end_s']:.1f} s (target <= 60 s)")
    print(f"  floor (1 process, faiss {floor['threads']} threads, in memory): train+assign "
          f"{floor['train_assign_s']:.1f} s, + read {floor['read_s']:.1f} s "
          f"(runs: {[round(f['train_assign_s'], 1) for f in floors]})")
    print(f"  ratio distributed / floor: {part['ratio_fit_encode_vs_floor_train_assign']:.2f}x "
          f"(vs floor incl. read: {part['ratio_fit_encode_vs_floor_read_train_assign']:.2f}x; target <= 1.5x)")
    print(f"  peak memory (process tree RSS): distributed {part['peak_rss_gb_distributed_tree']:.2f} GB, "
          f"floor {part['peak_rss_gb_floor_tree']:.2f} GB")
    shutil.rmtree(work / "emb")
    shutil.rmtree(work / "run")


def run_big(args, work: Path, levels: int, k: int, result: dict) -> None:
    """Part 2: a 10M-item catalog streamed through the distributed path; peak memory of the tree."""
    from distrec.parallel.ray_env import init_ray

    t = time.perf_counter()
    write_catalog(work / "big" / "item_embeddings", args.big_items, args.big_dim, shard_rows=500_000)
    gen = time.perf_counter() - t
    with PeakMemory() as mem:
        init_ray(None, num_cpus=args.workers)
        big = distributed_tokenize(work / "bigrun", work / "big", args.workers, levels, k, args.iters)
    result["catalog_big"] = {"items": args.big_items, "dim": args.big_dim, "generate_s": gen,
                             "distributed": big, "peak_rss_gb_tree": mem.peak / 1e9}
    print(f"\n{args.big_items:,} x {args.big_dim}: distributed parquet -> SID table {big['total_s']:.1f} s, "
          f"peak memory (process tree RSS) {mem.peak / 1e9:.2f} GB (target < 8 GB)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000, help="0 = skip part 1 (keep its results in --out)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--big-items", type=int, default=10_000_000, help="0 = skip part 2")
    ap.add_argument("--big-dim", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tokenize.json"))
    args = ap.parse_args()
    levels, k = 3, 256
    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_"))
    command = " ".join(["python", *sys.argv])
    machine = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    if args.items == 0 and Path(args.out).exists():
        result = json.loads(Path(args.out).read_text())
        result["machine_big"], result["command_big"] = machine, command
    else:
        result = {"machine": machine, "command": command, "levels": levels, "codebook_size": k, "iters": args.iters}
    try:
        if args.items:
            run_catalog(args, work, levels, k, result)
        if args.big_items:
            run_big(args, work, levels, k, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
