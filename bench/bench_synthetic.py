"""Synthetic catalog generation at scale: wall time and peak memory of `distrec prepare data=synthetic`
for 1M and 10M items (users = items / 10), each in its own process so peak RSS is that run's alone.

Generation is shard by shard (items in `shard_items` chunks, users in `shard_users` chunks; the bench
sets data.num_shards=1 so the chunk sizes alone decide the shards), so with the same chunk sizes peak
memory should stay flat while time grows linearly: the printed ratios check exactly that.

    .venv/bin/python bench/bench_synthetic.py                  # 1M and 10M; writes bench/results/synthetic.json
    .venv/bin/python bench/bench_synthetic.py --sizes 100000   # a quick smoke run
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(num_items: int, num_users: int, root: Path, shard_items: int, shard_users: int) -> dict:
    """Run prepare in a child process; wall seconds and its peak RSS (ru_maxrss of that child only)."""
    cmd = [sys.executable, "-m", "distrec", "prepare", "data=synthetic", f"data.synthetic.num_items={num_items}",
           f"data.synthetic.num_users={num_users}", f"data.synthetic.shard_items={shard_items}",
           f"data.synthetic.shard_users={shard_users}", "data.num_shards=1", f"paths.root={root}", "progress=false"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"prepare failed: {proc.stderr.read().decode()[-2000:]}")
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in (root / "data").rglob("*.parquet"))
    return {
        "num_items": num_items,
        "num_users": num_users,
        "shard_items": shard_items,
        "shard_users": shard_users,
        "interactions": manifest["counts"]["interactions"],
        "wall_s": round(wall, 2),
        "phases_s": manifest["timings_s"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "parquet_mib": round(size / 2**20, 1),
        "items_per_s": round(num_items / manifest["timings_s"]["items"]),
        "interactions_per_s": round(manifest["counts"]["interactions"] / manifest["timings_s"]["sequences"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--users-per-item", type=float, default=0.1)
    parser.add_argument("--shard-items", type=int, default=1_000_000)
    parser.add_argument("--shard-users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synthetic.json")
    args = parser.parse_args()

    runs = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_synthetic_") as tmp:
            run = run_one(n, max(1, int(n * args.users_per_item)), Path(tmp), args.shard_items, args.shard_users)
        runs.append(run)
        print(f"{n:>11,} items {run['num_users']:>10,} users {run['interactions']:>12,} interactions: "
              f"{run['wall_s']:7.1f} s wall, peak RSS {run['peak_rss_mib']:7.1f} MiB, "
              f"{run['items_per_s']:,} items/s, {run['interactions_per_s']:,} interactions/s")
    ratios = {}
    if len(runs) > 1:
        small, big = runs[0], runs[-1]
        ratios = {
            "size": big["num_items"] / small["num_items"],
            "wall": round(big["wall_s"] / small["wall_s"], 2),
            "peak_rss": round(big["peak_rss_mib"] / small["peak_rss_mib"], 2),
        }
        print(f"{ratios['size']:.0f}x the items: {ratios['wall']}x the time, {ratios['peak_rss']}x the peak memory")
    result = {"benchmark": "synthetic catalog generation (distrec prepare data=synthetic)",
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
              "command": "python bench/bench_synthetic.py " + " ".join(sys.argv[1:]),
              "runs": runs, "ratios_last_vs_first": ratios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
