"""Training-loss components of trained runs on the same training windows (eval mode: no dropout).

A run whose validation stalls may be underfitting (its training loss stalls too) or overfitting (the
training loss keeps falling). This scores saved weights of several runs on one seeded sample of
training windows and prints every loss term each model reports (ACERec: mtp, isa, recon; RPG: loss),
so methods trained on the same SIDs can be compared on their token-level loss.

    python bench/loss_parts.py acerec=runs/acerec_beauty/cooldown_4100:best rpg=runs/rpg_beauty/train:best \
        --data runs/rpg_beauty/data --sids runs/rpg_beauty/sids --out bench/results/beauty_loss_parts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.data.batches import build_train_index, collate_train  # noqa: E402
from distrec.data.dataset import load_prepared  # noqa: E402
from distrec.train.export import TrainedModel  # noqa: E402


def seeded_windows(index, n: int, seed: int) -> np.ndarray:
    """n distinct training windows of `index` (all of them if fewer), the same for the same seed."""
    return np.random.default_rng(seed).choice(len(index.user_row), min(n, len(index.user_row)), replace=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=train_dir[:weights] (weights: best | last, default best)")
    parser.add_argument("--data", required=True, help="the prepared data/ the runs trained on")
    parser.add_argument("--sids", default=None, help="the SID table (semantic-ID methods)")
    parser.add_argument("--windows", type=int, default=512, help="training windows scored (a seeded sample)")
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON of the results")
    args = parser.parse_args(argv)
    data = load_prepared(args.data).sequence_data()
    index = build_train_index(data, args.max_history)
    ids = seeded_windows(index, args.windows, args.seed)
    results = {}
    for spec in args.runs:
        label, sep, rest = spec.partition("=")
        if not sep:
            parser.error(f"expected label=train_dir[:weights], got {spec!r}")
        directory, _, weights = rest.partition(":")
        model = TrainedModel(directory).load(weights or "best", args.sids)
        parts: dict[str, list[float]] = {}
        with torch.no_grad():
            for chunk in np.array_split(ids, max(1, len(ids) // 64)):
                for key, value in model(collate_train(data, index, chunk, args.max_history)).items():
                    parts.setdefault(key, []).append(float(value))
        results[label] = {"train_dir": directory, "weights": weights or "best",
                          **{k: round(float(np.mean(v)), 4) for k, v in parts.items()}}
        print(f"{label:>16}  " + "  ".join(f"{k} {v}" for k, v in results[label].items()
                                            if k not in ("train_dir", "weights")), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"windows": len(ids), "seed": args.seed, "data": args.data,
                                        "runs": results}, indent=1))
        print(f"loss_parts: {args.out}")


if __name__ == "__main__":
    main()
