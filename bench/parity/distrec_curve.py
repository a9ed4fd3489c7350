"""Convert a distrec training run's validation log (runs/<name>/train/metrics.jsonl) into the JSON
curve shape of bench/parity/hstu_meta.py, for docs/parity.md.

usage: python bench/parity/distrec_curve.py runs/parity_hstu_seed0/train --out bench/results/parity/hstu_distrec_seed0.json \
           [--wall-s SECONDS] [--command "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def convert(train_dir: Path, wall_s: float | None = None, command: str | None = None) -> dict:
    rows = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid"]
    manifest = {}
    for name in ("manifest.json", "summary.json"):
        if (train_dir / name).exists():
            manifest[name] = json.loads((train_dir / name).read_text())
    steps_per_epoch = None  # the log rounds epoch to 4 places: read it off the latest row
    for r in reversed(train):
        if r.get("epoch"):
            steps_per_epoch = round(r["step"] / r["epoch"])
            break
    curve, prev, train_s = [], 0, 0.0
    by_step = {r["step"]: r for r in train}
    for v in valid:
        interval = [by_step[s] for s in range(prev + 1, v["step"] + 1) if s in by_step]
        train_s += sum(r.get("global_batch", 128) / r["samples_per_s"] for r in interval if r.get("samples_per_s"))
        losses = [r["loss"] for r in interval]
        curve.append({
            "step": v["step"],
            "epoch": round(v["step"] / steps_per_epoch, 4) if steps_per_epoch else None,
            "hr@10": v.get("recall@10"), "ndcg@10": v.get("ndcg@10"), "hr@50": v.get("recall@50"),
            "ndcg@50": v.get("ndcg@50"), "mrr@50": v.get("mrr@50"),
            "unfiltered_hr@10": v.get("unfiltered_recall@10"), "unfiltered_ndcg@10": v.get("unfiltered_ndcg@10"),
            "users": v.get("users"),
            "train_loss": losses[-1] if losses else None,
            "train_loss_mean": sum(losses) / len(losses) if len(losses) == v["step"] - prev else None,
            "train_s": round(train_s, 1) if len(interval) == v["step"] - prev else None,
        })
        prev = v["step"]
    cfg = (manifest.get("manifest.json") or {}).get("config", {})
    return {
        "implementation": "distrec (hstu_retrieval)", "train_dir": str(train_dir.resolve()), "command": command,
        "seed": cfg.get("seed"), "steps": (cfg.get("train") or {}).get("max_steps"),
        "eval_every": (cfg.get("train") or {}).get("eval_every"),
        "data_dir": (cfg.get("paths") or {}).get("data"),
        "host": {"cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count()},
        "wall_s_total": wall_s,
        "notes": "hr@K = distrec's recall@K (one target per user); mrr@50 = MRR with ranks > 50 counted 0",
        "curve": curve,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("train_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wall-s", type=float, default=None)
    ap.add_argument("--command", default=None)
    a = ap.parse_args(argv)
    result = convert(a.train_dir, a.wall_s, a.command)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in result["curve"]:
        print(r["step"], r["epoch"], r["hr@10"], r["ndcg@10"], r["train_loss_mean"])


if __name__ == "__main__":
    main()
