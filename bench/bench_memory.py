"""Peak memory of CPU training: every shipped Beauty experiment for a few steps and one validation.

Each experiment runs `distrec train` in a child process, in-process DeepSpeed ZeRO-0 (`engine=local`),
its own model, batch and validation settings, with `train.val_max_users` capped (memory peaks per
evaluation batch, so fewer users change the time, not the peak); the child's peak RSS comes from the
kernel (`wait4`). A ZeRO-2 Ray worker holds at most this: its gradients and Adam state are partitioned
and it validates half the users. The bound (docs/benchmarks.md): no experiment above 4 GiB.

    .venv/bin/python bench/bench_memory.py                      # -> bench/results/memory.json
    .venv/bin/python bench/bench_memory.py --only tiger_beauty --steps 2

Inputs (prepared data, embeddings, SID tables) are built once under runs/inputs/, the cache
bench/gpu/pack uses too. resid_beauty's FAMAE embeddings take hours to train on this CPU: its SID
table here is GAOQ over TF-IDF embeddings, the same shape (levels, codebook sizes) FAMAE's would have,
and its model is TIGER's.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))

from headlines import build_inputs  # noqa: E402

BOUND = 4 * 2 ** 30
EXPERIMENTS = ["sasrec_beauty", "tiger_beauty", "resid_beauty", "flat_decoder_beauty", "flat_beauty_rq128",
               "flat_hstu_beauty", "intrr_beauty", "intrr_beauty_hstu", "rpg_beauty", "acerec_beauty",
               "acerec_beauty_hstu"]
SUBSTITUTES = {"resid_beauty": ["embed=tfidf"]}  # see the module doc


def measure(experiment: str, runs: Path, args) -> dict:
    from distrec.config import compose

    cfg = compose(["stage=train", f"experiment={experiment}", *SUBSTITUTES.get(experiment, [])])
    keys = build_inputs(cfg, runs)
    users = min(cfg.train.val_max_users or args.val_users, args.val_users)
    train_dir = runs / "train" / experiment
    command = [sys.executable, "-m", "distrec", "train", f"experiment={experiment}",
               *SUBSTITUTES.get(experiment, []), f"paths.data={cfg.paths.data}", f"paths.sids={cfg.paths.sids}",
               f"paths.train={train_dir}", "engine=local", f"train.max_steps={args.steps}",
               f"train.eval_every={args.steps}", f"train.val_max_users={users}", "train.resume=false",
               "progress=false"]
    subprocess.run(["rm", "-rf", str(train_dir)], check=True)
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{experiment}: distrec train failed\n{output[-3000:]}")
    summary = json.loads((train_dir / "manifest.json").read_text())["summary"]
    return {"experiment": experiment, "method": cfg.method.name, "backbone": cfg.model.backbone,
            "sids": keys["sids"], "substitute": SUBSTITUTES.get(experiment), "params": summary["model"]["params"],
            "global_batch": summary["global_batch"], "micro_batch": summary["micro_batch"], "steps": args.steps,
            "val_users": users, "eval_batch": cfg.eval.batch_size, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "wall_s": time.perf_counter() - start, "within_bound": usage.ru_maxrss * 1024 <= BOUND}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated experiments (default: every shipped Beauty one)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--val-users", type=int, default=512, help="validation users at most")
    parser.add_argument("--runs", default=str(REPO / "runs" / "inputs"),
                        help="inputs cache (shared with bench/gpu/pack)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "memory.json"))
    args = parser.parse_args()
    runs = Path(args.runs).resolve()
    rows = []
    for experiment in args.only.split(",") if args.only else EXPERIMENTS:
        row = measure(experiment, runs, args)
        rows.append(row)
        print(f"{experiment:<22} {row['params']:>12,} params  peak RSS {row['peak_rss_bytes'] / 2 ** 30:5.2f} GiB  "
              f"{row['wall_s']:6.0f} s", flush=True)
    Path(args.out).write_text(json.dumps({"created": time.strftime("%F %T"), "bound_bytes": BOUND,
                                          "torch_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}, indent=2))
    worst = max(rows, key=lambda r: r["peak_rss_bytes"])
    print(f"highest: {worst['experiment']} {worst['peak_rss_bytes'] / 2 ** 30:.2f} GiB "
          f"(bound {BOUND / 2 ** 30:.0f} GiB)")


if __name__ == "__main__":
    main()
