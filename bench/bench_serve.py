"""Load test of `distrec serve` on loopback: latency percentiles and requests/s at a few concurrencies.

    .venv/bin/python bench/bench_serve.py                       # a tiny SASRec trained here first
    .venv/bin/python bench/bench_serve.py --train-dir runs/rpg_beauty/train --data-dir runs/rpg_beauty/data \\
        --sids-dir runs/rpg_beauty/sids --requests 400 --concurrency 1 8

Ray Serve runs in this process's local Ray cluster (127.0.0.1, one replica, serve.* defaults for the
batching); client threads (one keep-alive HTTP session each) send `--requests` POST /recommend per
concurrency, each a random real history (a user's items before their test item, the model's last
`max_history`), k = `--k`. Bounded: a level stops at `--time-limit` seconds. Latency is the client's
(request sent to answer parsed); requests/s = answered / the level's wall time. The model's own time
for one history (`Predictor.recommend` in this process, no HTTP) is measured first for comparison.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TOKEN = "bench-token"


def tiny_model(root: Path) -> tuple[str, str, None]:
    """A SASRec trained for a few steps on a generated catalog (train, data, sids dirs)."""
    import importlib

    from distrec.config import compose

    overrides = ["data.synthetic.num_items=2000", "data.synthetic.num_users=3000", "model.size=debug",
                 "engine=plain", "train.max_steps=20", "train.eval_every=20", "train.val_max_users=100",
                 "progress=false", f"paths.root={root}"]
    for stage in ("prepare", "train"):
        importlib.import_module(f"distrec.stages.{stage}").run(compose([f"stage={stage}", *overrides]))
    return str(root / "train"), str(root / "data"), None


def histories(data_dir: str, n: int, max_history: int, seed: int) -> list[list[int]]:
    """`n` random users' items before their test item (or all of them), the last `max_history`."""
    import pyarrow.parquet as pq

    seqs = pq.read_table(Path(data_dir) / "sequences", columns=["items", "test_pos"]).to_pydict()
    rng = np.random.default_rng(seed)
    out = []
    for u in rng.integers(len(seqs["items"]), size=n):
        items, pos = seqs["items"][u], seqs["test_pos"][u]
        items = items[:pos] if pos > 0 else items
        out.append(items[-max_history:] or seqs["items"][u][:1])
    return out


def percentile(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2) if ms else None


def level(url: str, bodies: list[dict], concurrency: int, time_limit: float) -> dict:
    """Send `bodies` from `concurrency` threads (each its own keep-alive session); stop at `time_limit`."""
    import requests

    todo, lock, latencies, errors = iter(bodies), threading.Lock(), [], []
    start = time.perf_counter()
    deadline = start + time_limit

    def client():
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        while time.perf_counter() < deadline:
            with lock:
                body = next(todo, None)
            if body is None:
                return
            t = time.perf_counter()
            r = session.post(url + "/recommend", json=body, timeout=60)
            ok = r.status_code == 200 and len(r.json()["items"]) > 0
            with lock:
                (latencies if ok else errors).append((time.perf_counter() - t) * 1000 if ok else r.text[:200])

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "sent": len(latencies) + len(errors), "answered": len(latencies),
            "errors": len(errors), "first_error": errors[0] if errors else None, "wall_s": round(wall, 2),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": round(float(np.mean(latencies)), 2) if latencies else None,
            "requests_per_s": round(len(latencies) / wall, 1), "timed_out": len(latencies) + len(errors) < len(bodies)}


def model_only(predictor, sample: list[list[int]], k: int) -> float:
    """p50 ms of `Predictor.recommend` on one history (the model's share of a batch-1 request)."""
    times = []
    for h in sample:
        t = time.perf_counter()
        predictor.recommend([h], k)
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-dir", help="a trained model (default: train a tiny one in a temp dir)")
    ap.add_argument("--data-dir", help="its prepared data (the histories to send; needed with --train-dir)")
    ap.add_argument("--sids-dir", help="its SID table (default: where training read it)")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait", type=float, default=0.005, help="serve.batch_wait_timeout_s")
    ap.add_argument("--time-limit", type=float, default=120, help="seconds per level at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/serve_load.json")
    args = ap.parse_args()
    if args.train_dir and not args.data_dir:
        ap.error("--train-dir needs --data-dir (the histories to send)")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from distrec.parallel.ray_env import init_ray

    init_ray(None)  # before distrec.parallel.serve imports Ray: the local cluster's environment first
    from distrec.inference.predictor import Predictor
    from distrec.parallel.serve import start, stats, stop

    tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
    train_dir, data_dir, sids_dir = ((args.train_dir, args.data_dir, args.sids_dir) if args.train_dir
                                     else tiny_model(Path(tmp.name)))
    load = {"train_dir": train_dir, "data_dir": data_dir, "sids_dir": sids_dir, "max_k": 100}
    predictor = Predictor.load(**load)
    sample = histories(data_dir, args.requests, predictor.max_history, args.seed)
    model_ms = model_only(predictor, sample[:50], args.k)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load_before = os.getloadavg()
    handle = start(load, token=TOKEN, host="127.0.0.1", port=port, replicas=1, max_history=1000,
                   max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait, local=True)
    url = f"http://127.0.0.1:{port}"
    try:
        level(url, [{"history": h, "k": args.k} for h in sample[:10]], 1, 30)  # warm-up
        levels = []
        for c in args.concurrency:
            before = stats(handle)
            row = level(url, [{"history": h, "k": args.k} for h in sample], c, args.time_limit)
            after = stats(handle)
            calls = after["batches"] - before["batches"]
            row |= {"model_calls": calls, "mean_batch": round((after["requests"] - before["requests"]) / max(calls, 1), 2)}
            levels.append(row)
    finally:
        stop()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": predictor.identity | {"max_history": predictor.max_history},
        "serve": {"replicas": 1, "max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait,
                  "k": args.k, "host": "127.0.0.1"},
        "model_only_p50_ms": model_ms,
        "levels": levels,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()], "gpu": None},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{predictor.identity['method']}, {predictor.num_items:,} items, k={args.k}; model alone (1 history, "
          f"in-process): p50 {model_ms} ms")
    print(f"{'clients':>7} {'answered':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'mean batch':>10}")
    for r in levels:
        print(f"{r['concurrency']:>7} {r['answered']:>8} {r['errors']:>6} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['requests_per_s']:>7} {r['mean_batch']:>10}" + ("  (time limit)" if r["timed_out"] else ""))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
