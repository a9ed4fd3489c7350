"""Batch recommendations at catalog scale: users/s and peak memory of `distrec recommend` on a generated
catalog of 1M items and 1M users, in this process (`recommend.num_workers=0`) and on 2 Ray Data actors.

The models are tiny and trained a few steps, only to have weights: this measures inference, not quality.
RPG reads a random SID table (8 digits x 16 codes, as tests/conftest.py makes them; an OPQ fit of 1M
vectors is a benchmark of its own, docs/benchmarks.md), SASRec scores the whole catalog for each user.
Peak RSS: VmHWM of the driver and of each Ray actor (`ray::MapWorker...`), read every 0.5 s; Ray's own
processes (raylet, GCS) are reported apart.

    .venv/bin/python bench/bench_recommend.py                         # -> bench/results/recommend_1m.json
    .venv/bin/python bench/bench_recommend.py --max-users 20000       # a subset of the 1M users
    .venv/bin/python bench/bench_recommend.py --items 20000 --users 20000 --max-users 2000 --out /tmp/r.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
METHODS = {"sasrec": ["method=sasrec"], "rpg": ["method=rpg", "method.beam_width=20"]}
TRAIN = ["model.size=debug", "model.max_history=20", "engine=plain", "train.max_steps=3", "train.warmup_steps=1",
         "train.global_batch_size=64", "train.eval_every=3", "train.patience=0", "train.val_max_users=32",
         "eval.batch_size=16"]


def distrec(stage: str, *overrides: str, log: Path) -> None:
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "distrec", stage, *overrides], cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"distrec {stage} failed (exit {done.returncode}); its log: {log}")


def hwm_mib(proc: psutil.Process) -> float:
    """Peak resident memory of a live process (VmHWM), MiB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(cmd: list[str], log: Path) -> dict:
    """Run `cmd`, sampling the peak RSS of it and of every process under it until it ends."""
    peaks: dict[int, tuple[str, float]] = {}
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [driver, *driver.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    peaks[p.pid] = (" ".join(p.cmdline())[:120], max(hwm_mib(p), peaks.get(p.pid, ("", 0.0))[1]))
                except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                    pass
            time.sleep(0.5)
        wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); its log: {log}")
    actors = [mib for name, mib in peaks.values() if "MapWorker" in name]
    ray = [mib for pid, (name, mib) in peaks.items() if pid != proc.pid and "MapWorker" not in name]
    return {"wall_s": round(wall, 1), "driver_peak_rss_mib": round(peaks[proc.pid][1], 1),
            "actor_peak_rss_mib": [round(m, 1) for m in actors], "other_processes_peak_rss_mib": round(sum(ray), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--max-users", type=int, default=None, help="recommend for the first N users only")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0], help="recommend.num_workers to measure")
    parser.add_argument("--batch-size", type=int, default=64, help="recommend.batch_size (SASRec scores batch x items)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "bench_recommend")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recommend_1m.json")
    args = parser.parse_args()

    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = ["data=synthetic", f"data.synthetic.num_items={args.items}", f"data.synthetic.num_users={args.users}",
            f"paths.root={root}", "progress=false"]
    timings = {}
    start = time.perf_counter()
    if not (root / "data" / "manifest.json").exists():
        distrec("prepare", *data, log=root / "prepare.log")
    timings["prepare_s"] = round(time.perf_counter() - start, 1)
    if not (root / "sids" / "sid_meta.json").exists():
        from distrec.tokenize.sid_table import SIDTable

        codes = np.random.default_rng(0).integers(0, 16, (args.items, 8))
        SIDTable.from_codes(np.arange(1, args.items + 1), codes, [16] * 8).save(root / "sids")
    results = []
    for method in args.methods:
        train_dir = root / method
        if not (train_dir / "model.json").exists():
            start = time.perf_counter()
            distrec("train", *data, *TRAIN, *METHODS[method], f"paths.train={train_dir}", f"paths.sids={root / 'sids'}",
                    log=root / f"train_{method}.log")
            timings[f"train_{method}_s"] = round(time.perf_counter() - start, 1)
        for workers in args.workers:
            out = root / f"recommend_{method}_{workers}"
            cmd = [sys.executable, "-m", "distrec", "recommend", *data, f"paths.train={train_dir}",
                   f"paths.sids={root / 'sids'}", f"paths.recommendations={out}", f"recommend.k={args.k}",
                   f"recommend.num_workers={workers}", f"recommend.batch_size={args.batch_size}",
                   *([f"recommend.max_users={args.max_users}"] if args.max_users else [])]
            print(f"{method}, {workers} workers: {' '.join(cmd[1:])}", flush=True)
            measured = measure(cmd, root / f"recommend_{method}_{workers}.log")
            manifest = json.loads((out / "manifest.json").read_text())
            results.append({"method": method, "num_workers": workers, **manifest["counts"],
                            "users_per_s": manifest["users_per_s"], "timings_s": manifest["timings_s"],
                            "decoding": manifest["model"]["decoding"], **measured})
            print(json.dumps(results[-1]), flush=True)
    report = {"items": args.items, "users": args.users, "max_users": args.max_users, "batch_size": args.batch_size,
              "k": args.k, "train": TRAIN, "setup_timings": timings, "results": results,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
