"""Benchmark: time and peak memory of the pretrained text encoder (embed=sentence_transformer,
all-MiniLM-L6-v2 from its package), through the real `distrec embed` stage.

1. Amazon Beauty (12,101 items, titles), in-process, torch on `--threads` threads (2: this machine), in
   fp32 and in bf16 autocast (`embed.precision`) side by side: the speed ratio and the cosine between
   the two vectors of every item.
2. A generated catalog (`data=synthetic`: titles of brand, adjective, category words and a model
   number) embedded by `--workers` Ray actors (1 CPU each; each loads the model once; `embed.precision=auto`:
   bf16 where the CPU has it). `--items`
   lists catalog sizes; with two or more, the transform time is fitted as a + b x items (a: Ray Data
   start and the model loads) and extrapolated to `--target` items (1,000,000), as marked in the
   output: the transform streams batch by batch, so its time grows linearly. Memory is not
   extrapolated: the workers' does not grow with the catalog; the driver holds the item text (tens of
   bytes a title), not the vectors.

Peak memory: RSS of this process and all its descendants (Ray's raylet and workers), sampled every
0.1 s and summed, so shared pages count twice: an upper bound.

    .venv/bin/python bench/bench_text_embed.py                                  # writes bench/results/text_embed.json
    .venv/bin/python bench/bench_text_embed.py --items 1000000                  # the 1M catalog measured (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_tokenize import PeakMemory  # noqa: E402


def embed_stage(root: Path, *overrides) -> dict:
    """`distrec embed embed=sentence_transformer` on root/data; wall time, phases, peak memory."""
    from distrec.artifacts import read_manifest
    from distrec.config import compose
    from distrec.stages import embed

    cfg = compose([f"paths.root={root}", "progress=false", "embed=sentence_transformer", *overrides])
    with PeakMemory() as mem:
        start = time.perf_counter()
        out = embed.run(cfg)
        wall = time.perf_counter() - start
    manifest = read_manifest(out)
    items, transform = manifest["counts"]["items"], manifest["timings_s"]["transform"]
    return {"items": items, "dim": manifest["counts"]["dim"], "model_sha256": manifest["model_sha256"],
            "precision": manifest["precision"],
            "wall_s": round(wall, 1), "phases_s": manifest["timings_s"],
            "items_per_s": round(items / transform, 1), "peak_rss_gb_tree": round(mem.peak / 1e9, 3)}


def prepare(root: Path, *overrides) -> None:
    from distrec.config import compose
    from distrec.stages import prepare as stage

    stage.run(compose([f"paths.root={root}", "progress=false", *overrides]))


def vectors(directory: Path) -> np.ndarray:
    from distrec.artifacts import read_table
    from distrec.clustering.vectors import vectors_from_arrow

    table = read_table(directory / "item_embeddings", ["item_id", "vector"]).sort_by("item_id")
    return vectors_from_arrow(table.column("vector"), directory)


def run_beauty(args, work: Path) -> dict:
    """Beauty in fp32 and in bf16 autocast, side by side: time ratio and how far the vectors moved."""
    import torch

    torch.set_num_threads(args.threads)
    prepare(work / "beauty", "data=beauty")
    part = {"threads": args.threads}
    for precision in ("fp32", "bf16"):
        run = embed_stage(work / "beauty", "data=beauty", f"embed.precision={precision}",
                          f"paths.embeddings={work / 'beauty' / f'embed_{precision}'}")
        part[precision] = run
        print(f"Beauty {precision}: {run['items']:,} items in {run['phases_s']['transform']:.1f} s "
              f"({run['items_per_s']} items/s, {args.threads} torch threads, in-process), wall {run['wall_s']:.1f} s, "
              f"peak RSS {run['peak_rss_gb_tree']} GB")
    x, y = (vectors(work / "beauty" / f"embed_{p}") for p in ("fp32", "bf16"))
    cosine = (x * y).sum(1)[np.linalg.norm(x, axis=1) > 0]  # unit vectors; items without text are all-zero
    part["bf16_speedup"] = round(part["fp32"]["phases_s"]["transform"] / part["bf16"]["phases_s"]["transform"], 2)
    part["bf16_cosine_to_fp32"] = {"min": round(float(cosine.min()), 5), "mean": round(float(cosine.mean()), 6)}
    print(f"Beauty: bf16 {part['bf16_speedup']}x the speed of fp32; cosine to fp32 min {cosine.min():.5f} "
          f"mean {cosine.mean():.6f}")
    return part


def run_generated(args, work: Path) -> dict:
    from distrec.parallel.ray_env import init_ray

    init_ray(None, num_cpus=args.workers)
    runs = []
    for n in args.items:
        root = work / f"synthetic{n}"
        prepare(root, "data=synthetic", f"data.synthetic.num_items={n}", "data.synthetic.num_users=1000")
        run = {"workers": args.workers, **embed_stage(root, "data=synthetic", f"embed.num_workers={args.workers}",
                                                     f"embed.num_shards={4 * args.workers}")}
        runs.append(run)
        print(f"generated: {n:,} items on {args.workers} Ray workers: transform {run['phases_s']['transform']:.1f} s "
              f"({run['items_per_s']} items/s), wall {run['wall_s']:.1f} s, peak RSS (tree) {run['peak_rss_gb_tree']} GB")
        shutil.rmtree(root)
    part = {"runs": runs}
    if len(runs) > 1:  # a + b x items, least squares
        b, a = np.polyfit([r["items"] for r in runs], [r["phases_s"]["transform"] for r in runs], 1)
        seconds = a + b * args.target
        part["extrapolated"] = {"items": args.target, "transform_s": round(seconds), "fixed_s": round(a, 1),
                                "items_per_s_marginal": round(1 / b, 1)}
        print(f"EXTRAPOLATED (linear fit of {len(runs)} sizes: {a:.1f} s + items / {1 / b:.1f} per s) to "
              f"{args.target:,} items: transform {seconds:.0f} s ({seconds / 3600:.2f} h)")
    return part


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2, help="torch threads for Beauty (0 = skip Beauty)")
    ap.add_argument("--items", type=int, nargs="*", default=[5000, 20000], help="generated catalog sizes")
    ap.add_argument("--target", type=int, default=1_000_000, help="catalog size to extrapolate to")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "text_embed.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_text_embed_"))
    result = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
              "command": " ".join(["python", *sys.argv])}
    try:
        if args.threads:
            result["beauty"] = run_beauty(args, work)
        if args.items:
            result["generated"] = run_generated(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
