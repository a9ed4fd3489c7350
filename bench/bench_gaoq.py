"""GAOQ quantization wall time on a generated catalog, beside RQ-KMeans and RQ-VAE, same run.

    .venv/bin/python bench/bench_gaoq.py                       # 1,000,000 items x 64, 2 Ray workers
    .venv/bin/python bench/bench_gaoq.py --items 100000 --out bench/results/gaoq_100k.json

The catalog is a seeded mixture of Gaussians (hierarchical: 64 groups x 64 sub-centres). Every
quantizer gets the same float32 array. Times are fit + encode of the whole catalog (what the
`tokenize` stage spends), measured one after the other in this process; the Ray cluster start
is timed separately. RQ-VAE runs `--rqvae-epochs` epochs (TIGER uses 200): its per-epoch time
and the 200-epoch extrapolation are reported as such. Target: GAOQ on 1M items < 10 minutes
with 2 Ray workers on a 2-core machine. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def catalog(num_items: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = rng.standard_normal((64, dim)) * 4
    subs = groups[np.repeat(np.arange(64), 64)] + rng.standard_normal((64 * 64, dim)) * 1.5
    x = np.empty((num_items, dim), dtype=np.float32)
    for s in range(0, num_items, 250_000):
        n = min(250_000, num_items - s)
        x[s:s + n] = subs[rng.integers(len(subs), size=n)] + rng.standard_normal((n, dim)) * 0.5
    return x


LOAD = []  # (what, 1-min load average before, after): the machine is shared, timings are noisy


def timed(fn, what=""):
    before = os.getloadavg()[0]
    start = time.perf_counter()
    out = fn()
    LOAD.append((what, round(before, 1), round(os.getloadavg()[0], 1)))
    return out, time.perf_counter() - start


def collisions(codes: np.ndarray) -> int:
    return int(len(codes) - len(np.unique(codes, axis=0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="Ray workers for GAOQ subtrees (0 = in-process, no Ray)")
    ap.add_argument("--rqvae-epochs", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["rq_kmeans", "rq_vae", "gaoq_local"])
    ap.add_argument("--out", default="bench/results/gaoq.json")
    args = ap.parse_args()

    from distrec.parallel.executor import executor
    from distrec.parallel.ray_env import init_ray
    from distrec.tokenize.quantizers.gaoq import GAOQ

    x, t_gen = timed(lambda: catalog(args.items, args.dim))
    print(f"catalog {x.shape} generated in {t_gen:.1f} s")
    results = {"items": args.items, "dim": args.dim, "cpus": os.cpu_count(), "platform": platform.platform(),
               "ray_workers": args.workers, "runs": {}}

    def start_ray():  # init_ray retries a start that a busy machine makes time out
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")  # Ray's default: ~20-30 s
        return init_ray(None, num_cpus=max(2, args.workers))

    main_run = "gaoq_ray" if args.workers > 0 else "gaoq_in_process"
    if args.workers > 0:
        _, t_ray = timed(start_ray)
        results["ray_init_s"] = round(t_ray, 2)

    def gaoq(num_workers):
        q = GAOQ(levels=3, progress=True).run_on(executor(num_workers))
        q.fit(x)
        return q, q.encode(x)

    (q, codes), t = timed(lambda: gaoq(args.workers), main_run)
    results["runs"][main_run] = {"seconds": round(t, 1), "branching": q.branching, "collisions": collisions(codes),
                                   "phases_s": q.stats["timings_s"], "alignment": q.stats["per_level"]}
    print(f"GAOQ ({args.workers} Ray workers) {q.branching}: {t:.1f} s, collisions {collisions(codes)}")
    save(results, args.out)
    if "rq_kmeans" not in args.skip:
        from distrec.tokenize.quantizers.rq_kmeans import RQKMeans

        def rqk():
            q = RQKMeans(levels=3, codebook_size=256, progress=True).fit(x)
            return q.encode(x)

        codes, t = timed(rqk, "rq_kmeans")
        results["runs"]["rq_kmeans"] = {"seconds": round(t, 1), "codebooks": [256] * 3,
                                        "collisions_before_dedup": collisions(codes)}
        print(f"RQ-KMeans 3x256: {t:.1f} s, collisions before dedup {collisions(codes)}")
        save(results, args.out)

    if "rq_vae" not in args.skip:
        from distrec.tokenize.quantizers.rq_vae import RQVAE

        def rqv():
            q = RQVAE(levels=3, codebook_size=256, epochs=args.rqvae_epochs, progress=True).fit(x)
            return q.encode(x)

        codes, t = timed(rqv, "rq_vae")
        results["runs"]["rq_vae"] = {"seconds": round(t, 1), "epochs": args.rqvae_epochs,
                                     "seconds_per_epoch_upper_bound": round(t / args.rqvae_epochs, 1),
                                     "extrapolated_200_epochs_s": round(t / args.rqvae_epochs * 200, 0),
                                     "collisions_before_dedup": collisions(codes)}
        print(f"RQ-VAE ({args.rqvae_epochs} epochs): {t:.1f} s (200 epochs ~ {t / args.rqvae_epochs * 200:.0f} s)")

    if "gaoq_local" not in args.skip and args.workers > 0:
        (q, codes), t = timed(lambda: gaoq(0), "gaoq_in_process")
        results["runs"]["gaoq_in_process"] = {"seconds": round(t, 1), "collisions": collisions(codes)}
        print(f"GAOQ in-process: {t:.1f} s")

    save(results, args.out)
    print(json.dumps(results["ratios_vs_gaoq"], indent=2), f"\nwritten {args.out}")


def save(results: dict, out: str) -> None:
    """Write what has been measured so far (a long RQ-VAE run may be cut short)."""
    main_run = "gaoq_ray" if "gaoq_ray" in results["runs"] else "gaoq_in_process"
    base = results["runs"][main_run]["seconds"]
    results["ratios_vs_gaoq"] = {name: round(r["seconds"] / base, 2) for name, r in results["runs"].items()}
    if "rq_vae" in results["runs"]:
        results["ratios_vs_gaoq"]["rq_vae_200_epochs_extrapolated"] = round(
            results["runs"]["rq_vae"]["extrapolated_200_epochs_s"] / base, 1)
    results["gaoq_under_10_min"] = base < 600
    results["load_average_1min_before_after"] = LOAD
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
