"""A model too large for one worker, trained under ZeRO-3 on 1, 2 and 4 Ray Train workers (gloo) with a
per-worker memory cap, recording each rank's peak RSS (issue 19).

SASRec with the `model.size=200m` Transformer (16 layers, d_model 1024: 201M parameters, 3.2 GB of fp32
weights + gradients + Adam state) on ml-100k, activation checkpointing on, bf16 autocast, 3 steps of 8
windows, one validation (32 users) and the final checkpoint. Each run is `distrec train` in a child
process; this script polls every worker's RSS (/proc/<pid>/status, the pids in train/workers/) and stops
the run when one passes the cap, as a memory limit would. The summary adds each rank's own peak RSS
(getrusage) and its parameter + optimizer bytes.

    .venv/bin/python bench/bench_zero3.py                       # -> bench/results/zero3.json
    .venv/bin/python bench/bench_zero3.py --workers 2 --cap-gib 3.5 --size 200m

The defaults keep the whole bench under ~12 GiB on the 24 GiB CI host (two other trainings run there).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def available() -> int:
    """MemAvailable of the host: the bench must never push the other jobs into the OOM killer."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run(workers: int, args, root: Path) -> dict:
    train_dir = root / f"train_{args.size}_w{workers}"
    subprocess.run(["rm", "-rf", str(train_dir)], check=True)
    command = [sys.executable, "-m", "distrec", "train", "data=ml100k", f"data.path={args.data}", f"paths.root={root}",
               f"paths.train={train_dir}", "method=sasrec", f"model.size={args.size}", "model.max_history=20",
               "model.activation_checkpointing=true", "engine=zero3", f"engine.num_workers={workers}",
               f"engine.cpus_per_worker={2 / workers}", f"train.max_steps={args.steps}", "train.global_batch_size=8",
               "train.warmup_steps=0", f"train.eval_every={args.steps}", "train.val_max_users=32",
               "eval.batch_size=8", "train.keep_checkpoints=1", "train.resume=false", "progress=false"]
    start = time.perf_counter()
    log = open(root / f"w{workers}.log", "w")
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peaks, over = {}, None
    while child.poll() is None:
        for pid_file in (train_dir / "workers").glob("rank-*.pid"):
            rank = int(pid_file.stem.split("-")[1])
            peaks[rank] = max(peaks.get(rank, 0), rss(int(pid_file.read_text())))
            if peaks[rank] > args.cap_gib * GIB and over is None:
                over = rank
                os.killpg(child.pid, signal.SIGTERM)  # the workers stop with the driver
        if available() < args.reserve_gib * GIB and over is None:
            over = "host"  # the host runs short: stop, whatever the cap says
            os.killpg(child.pid, signal.SIGTERM)
        time.sleep(0.2)
    row = {"workers": workers, "cap_bytes": int(args.cap_gib * GIB), "wall_s": time.perf_counter() - start,
           "polled_peak_rss_bytes": [peaks.get(r, 0) for r in range(workers)], "returncode": child.returncode,
           "stopped_over_cap_rank": over}
    manifest = train_dir / "manifest.json"
    if over is None and child.returncode == 0 and manifest.exists():
        s = json.loads(manifest.read_text())["summary"]
        row.update(trained=True, steps=s["steps"], final_loss=s["final_loss"], params=s["model"]["params"],
                   valid_users=s["valid"]["users"], peak_rss_bytes=s["peak_rss_bytes_per_worker"],
                   memory_bytes=s["memory_bytes_per_worker"])
    else:
        row["trained"] = False
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[4, 2, 1])
    p.add_argument("--size", default="200m")
    p.add_argument("--cap-gib", type=float, default=3.5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--reserve-gib", type=float, default=3.0, help="stop a run when the host has less available")
    p.add_argument("--data", default=str(Path(os.environ.get("DISTREC_DATA", REPO.parent / "shared" / "data")) / "ml-100k"))
    p.add_argument("--root", default=str(REPO / "runs" / "h_zero3"))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "zero3.json"))
    args = p.parse_args()
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data" / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "distrec", "prepare", "data=ml100k", f"data.path={args.data}",
                        f"paths.root={root}", "progress=false"], check=True, stdout=subprocess.DEVNULL)
    rows = []
    for workers in args.workers:
        row = run(workers, args, root)
        rows.append(row)
        shown = row.get("peak_rss_bytes") or row["polled_peak_rss_bytes"]
        print(f"{workers} worker(s): {'trained' if row['trained'] else 'did NOT train'}"
              + ("" if row["stopped_over_cap_rank"] is None else " (stopped: the host ran short of memory)"
                 if row["stopped_over_cap_rank"] == "host" else
                 f" (stopped: rank {row['stopped_over_cap_rank']} over the {args.cap_gib} GiB cap)")
              + "; peak RSS per rank " + ", ".join(f"{b / GIB:.2f}" for b in shown) + f" GiB; {row['wall_s']:.0f} s",
              flush=True)
        Path(args.out).write_text(json.dumps({"created": time.strftime("%F %T"), "size": args.size,
                                              "cap_gib": args.cap_gib, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
