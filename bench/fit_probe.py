"""Can a model fit a fixed small set of training windows? A capacity / gradient-flow probe.

A run whose training loss stalls on the full data may be held back by its regularisation and
schedule, or by its architecture (a bottleneck, a term that fights the main loss, gradients that do
not reach a part). This trains each named configuration with plain AdamW (constant LR after a short
warmup, dropout off, no weight decay) on the same seeded sample of training windows, cycling through
them, and prints each loss term the model reports as it goes: a model that cannot memorise a few
hundred windows that another fits on the same targets has a defect, not a schedule problem.

    python bench/fit_probe.py rpg="experiment=rpg_beauty" acerec="experiment=acerec_beauty" \
        --data runs/rpg_beauty/data --sids runs/rpg_beauty/sids --out bench/results/fit_probe.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.config import compose  # noqa: E402
from distrec.data.batches import build_train_index, collate_train  # noqa: E402
from distrec.data.dataset import load_prepared  # noqa: E402
from distrec.models.recommender import Catalog, build_model  # noqa: E402
from distrec.tokenize.sid_table import SIDTable  # noqa: E402
from loss_parts import seeded_windows  # noqa: E402  (the same windows as bench/loss_parts.py for a seed)


def probe(cfg, data, index, ids, catalog, args) -> list[dict]:
    torch.manual_seed(args.seed)
    model = build_model(cfg.model, cfg.method, catalog)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    batches = np.array_split(ids, max(1, len(ids) // args.batch))
    rows, start = [], time.time()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(collate_train(data, index, batches[step % len(batches)], cfg.model.max_history))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0:
            rows.append({"step": step, "seconds": round(time.time() - start, 1),
                         **{k: round(v.item(), 4) for k, v in out.items()}})
            print("  ", rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help='label="hydra overrides" (quoted, space separated)')
    parser.add_argument("--data", required=True, help="a prepared data/ directory")
    parser.add_argument("--sids", default=None, help="the SID table (semantic-ID methods)")
    parser.add_argument("--windows", type=int, default=512, help="training windows to fit (a seeded sample)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON of the curves (merged into an existing file)")
    args = parser.parse_args(argv)
    prepared = load_prepared(args.data)
    data = prepared.sequence_data()
    catalog = Catalog(prepared.num_items, SIDTable.load(args.sids) if args.sids else None, prepared.item_counts())
    results = json.loads(args.out.read_text()) if args.out and args.out.exists() else {"runs": {}}
    for spec in args.configs:
        label, sep, overrides = spec.partition("=")
        if not sep:
            parser.error(f"expected label=\"overrides\", got {spec!r}")
        overrides = shlex.split(overrides)
        cfg = compose(["stage=train", *overrides, "model.dropout=0"])
        index = build_train_index(data, cfg.model.max_history)
        ids = seeded_windows(index, args.windows, args.seed)
        print(f"{label}: {' '.join(overrides)}", flush=True)
        rows = probe(cfg, data, index, ids, catalog, args)
        results["runs"][label] = {"overrides": overrides, "curve": rows}
        results["settings"] = {k: v for k, v in vars(args).items() if k not in ("configs", "out")}
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
