"""Markdown side-by-side table of the HSTU golden curves (bench/results/parity/*.json) for docs/parity.md.

usage: python bench/parity/table.py [--dir bench/results/parity] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def load(path: Path) -> dict:
    return {r["step"]: r for r in json.loads(path.read_text())["curve"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "parity")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args(argv)
    meta = [load(a.dir / f"hstu_meta_seed{s}.json") for s in a.seeds]
    ours = [load(a.dir / f"hstu_distrec_seed{s}.json") for s in a.seeds]
    steps = sorted(set.intersection(*(set(c) for c in meta + ours)))
    cols = ["step", "epoch (Meta / distrec)"]
    for name in ("Meta", "distrec"):
        cols += [f"{name} HR@10 s{s}" for s in a.seeds] + [f"{name} NDCG@10 s{s}" for s in a.seeds]
    cols += ["HR@10 mean Meta - distrec", "NDCG@10 mean Meta - distrec"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for st in steps:
        row = [str(st), f"{meta[0][st]['epoch']:.2f} / {ours[0][st]['epoch']:.2f}"]
        for runs in (meta, ours):
            row += [f"{r[st]['hr@10']:.4f}" for r in runs] + [f"{r[st]['ndcg@10']:.4f}" for r in runs]
        for k in ("hr@10", "ndcg@10"):
            d = sum(r[st][k] for r in meta) / len(meta) - sum(r[st][k] for r in ours) / len(ours)
            row.append(f"{d:+.4f}")
        print("| " + " | ".join(row) + " |")
    # binomial standard error of one HR@10 figure over the evaluated users, at the last step
    last = steps[-1]
    p = sum(r[last]["hr@10"] for r in meta + ours) / len(meta + ours)
    n = meta[0][last]["users"]
    print(f"\nbinomial s.e. of one HR@10 at step {last}: {math.sqrt(p * (1 - p) / n):.4f} ({n} users)")
    print("\nloss (mean over each eval interval):")
    for st in steps:
        print(st, " ".join(f"{r[st]['train_loss_mean']:.3f}" for r in meta), "|",
              " ".join(f"{r[st]['train_loss_mean']:.3f}" for r in ours))


if __name__ == "__main__":
    main()
