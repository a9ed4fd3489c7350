"""IntRR on a 1,000,000-item catalog: a few training steps with 2 Ray Train workers under ZeRO-3 vs
ZeRO-0, and the parameter + optimizer bytes each worker holds (the engine's `params+optim / worker`).

IntRR's UID table grows with the catalog (1M x uid_dim). With the released uid_dim = 512 that is
512M parameters, ~7 GiB of bf16 weights + fp32 master weights + Adam moments per ZeRO-0 worker:
more than two replicas fit beside the other jobs of this 24 GiB machine, so the default here is
uid_dim = 128 (128M UID parameters); `--uid-dim 512` reproduces the released width where memory allows.

Pipeline (each stage once, reused on later runs): `distrec prepare data=synthetic
data.synthetic.num_items=1000000 data.synthetic.num_users=2000`, `distrec embed` (TF-IDF + SVD of the
generated titles), `distrec tokenize tokenizer=rq_kmeans_128`, then `distrec train method=intrr`
under engine=zero0 and engine=zero3 (2 workers each, debug-size backbone).

    .venv/bin/python bench/bench_intrr_scale.py        # -> bench/results/intrr_scale.json
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("runs/h_intrr_scale")
DISTREC = [sys.executable, "-m", "distrec"]


def stage(name: str, *overrides: str, log: Path) -> float:
    """Run one CLI stage (logs to `log`); returns its wall time."""
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run([*DISTREC, name, f"paths.root={ROOT}", "progress=false", *overrides], stdout=f,
                       stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--uid-dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--engines", nargs="+", default=["zero0", "zero3"])
    p.add_argument("--out", default="bench/results/intrr_scale.json")
    args = p.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    data = ["data=synthetic", f"data.synthetic.num_items={args.items}", f"data.synthetic.num_users={args.users}"]
    walls = {}
    for name, done, extra in (("prepare", ROOT / "data" / "manifest.json", []),
                              ("embed", ROOT / "embed" / "manifest.json", []),
                              ("tokenize", ROOT / "sids" / "manifest.json", ["tokenizer=rq_kmeans_128"])):
        if not done.exists():
            walls[name] = stage(name, *data, *extra, log=ROOT / f"{name}.log")
            print(f"{name}: {walls[name]:.0f} s")
    runs = {}
    for engine in args.engines:
        train_dir = ROOT / f"train_{engine}_uid{args.uid_dim}"
        walls[f"train_{engine}"] = stage(
            "train", *data, "tokenizer=rq_kmeans_128", "method=intrr", f"method.intrr.uid_dim={args.uid_dim}",
            "method.beam_width=10", "model.size=debug", "model.max_history=20", f"engine={engine}",
            "engine.num_workers=2", f"train.max_steps={args.steps}", "train.global_batch_size=16",
            "train.warmup_steps=0", "train.log_every=1", "train.val_max_users=16", "eval.batch_size=16",
            "train.resume=false", f"paths.train={train_dir}", log=ROOT / f"train_{engine}.log")
        summary = json.loads((train_dir / "manifest.json").read_text())["summary"]
        runs[engine] = {"memory_bytes_per_worker": summary["memory_bytes_per_worker"],
                        "peak_rss_bytes_per_worker": summary["peak_rss_bytes_per_worker"],
                        "params": summary.get("model", {}).get("params"), "steps": summary["steps"],
                        "final_loss": summary["final_loss"], "samples_per_s": summary.get("samples_per_s")}
        per_worker = [m["param_optimizer_bytes"] / 2**30 for m in summary["memory_bytes_per_worker"]]
        print(f"{engine}: params {runs[engine]['params']:,}, params+optim / worker "
              + ", ".join(f"{g:.3f} GiB" for g in per_worker) + f", wall {walls[f'train_{engine}']:.0f} s")
    if {"zero0", "zero3"} <= runs.keys():
        full = runs["zero0"]["memory_bytes_per_worker"][0]["param_optimizer_bytes"]
        part = max(m["param_optimizer_bytes"] for m in runs["zero3"]["memory_bytes_per_worker"])
        print(f"ZeRO-3 / ZeRO-0 params+optim per worker: {part / full:.2f}")
    result = {"items": args.items, "users": args.users, "uid_dim": args.uid_dim, "steps": args.steps,
              "wall_s": walls, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
