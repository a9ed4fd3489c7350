"""The released RPG (facebookresearch/RPG_KDD2025), run end to end by its own code on distrec's split and SIDs
(docs/parity.md, "RPG against its released code": the short curves).

Its `Pipeline` does everything as released (the tokenizer's windows, GPT-2 + heads, AdamW, the cosine schedule
with warmup, validation every epoch, the best checkpoint, graph-constrained test decoding). Two things come
from distrec, so both codes see the same data:

- the dataset: a released `AbstractDataset` whose user sequences are distrec's prepared ones (item ids 1..N
  are distrec's), split by the released `_leave_one_out`;
- the SID table: written where the released tokenizer looks for its cached OPQ codes, so it loads them
  instead of calling the OpenAI embedding API.

The budget is `--steps` optimizer steps (whole epochs: the released trainer finishes the epoch it is in).
During the released 10,000-step warmup the LR does not depend on the total, so the first epochs are those
of the full 150-epoch recipe. Needs the released code and its dependencies beside (not in) distrec:

    MIRROR=/work/.mirror/facebookresearch+RPG_KDD2025/repo; mkdir -p runs/peer/RPG_KDD2025
    git -C $MIRROR archive HEAD genrec main.py | tar -x -C runs/peer/RPG_KDD2025
    pip install --target /tmp/rpgpkg --no-deps accelerate==1.2.1 datasets==3.2.0 dill==0.3.8 xxhash \\
        multiprocess==0.70.16 fsspec==2024.9.0 tiktoken
    OMP_NUM_THREADS=1 python bench/parity/rpg_released_run.py run --root runs/rpg_beauty --steps 600 \\
        --out bench/results/parity/rpg_released_curve.json
    python bench/parity/rpg_released_run.py table bench/results/parity/rpg_released_curve.json \\
        distrec=runs/rpg_beauty/train ...    # per epoch: train loss, validation NDCG@10 / Recall@10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

README_BEAUTY = {"lr": 0.01, "temperature": 0.03, "n_codebook": 32, "num_beams": 20, "n_edges": 200,
                 "propagation_steps": 3}  # the released README's Beauty command


class Curve(logging.Handler):
    """Collects the released trainer's per-epoch log lines into a JSON curve, rewritten after each one."""

    def __init__(self, out: Path | None, meta: dict):
        super().__init__()
        self.out, self.start, self.result = out, time.time(), {**meta, "curve": [], "test": None}

    def emit(self, record):
        msg = record.getMessage()
        if m := re.match(r"\[Epoch (\d+)\] Train Loss: (\S+)", msg):
            self.result["curve"].append({"epoch": int(m[1]), "train_loss": float(m[2]),
                                         "seconds": round(time.time() - self.start, 1)})
        elif m := re.match(r"\[Epoch (\d+)\] Val Results: (.*)", msg):
            self.result["curve"][-1]["valid"] = eval(m[2], {"OrderedDict": dict})
        elif m := re.match(r"Test Results: (.*)", msg):
            self.result["test"] = eval(m[1], {"OrderedDict": dict})
        else:
            return
        print(msg, flush=True)
        if self.out:
            self.out.write_text(json.dumps(self.result, indent=1))


def write_sids(table, path: Path):
    """distrec's codes as the released tokenizer's cache ({item: [code per digit]}, items named by id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(i): table.codes[i].tolist() for i in range(1, len(table.codes))}))


def table(released_json: Path, runs: list[str], steps_per_epoch: int = 100):
    """Markdown rows per epoch: the released curve, then each distrec run (name=train_dir): mean train
    loss over the epoch's logged steps, and validation NDCG@10 / Recall@10 at the epoch's end."""
    released = json.loads(released_json.read_text())["curve"]
    named = [r.split("=", 1) for r in runs]
    rows = {name: [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
            for name, d in named}
    print("| epoch | released loss | released NDCG@10 / R@10 | "
          + " | ".join(f"{n} loss (steps logged) | {n} NDCG@10 / R@10" for n, _ in named) + " |")
    print("|---" * (3 + 2 * len(named)) + "|")
    for c in released:
        e, v = c["epoch"], c.get("valid", {})
        cells = [str(e), f"{c['train_loss']:.3f}", f"{v.get('ndcg@10', float('nan')):.5f} / {v.get('recall@10', float('nan')):.5f}"]
        for name, _ in named:
            lo, hi = (e - 1) * steps_per_epoch, e * steps_per_epoch
            loss = [r["loss"] for r in rows[name] if r["split"] == "train" and lo < r["step"] <= hi]
            val = [r for r in rows[name] if r["split"] == "valid" and r["step"] == hi]
            cells.append(f"{sum(loss) / len(loss):.3f} ({len(loss)})" if loss else "")
            cells.append(f"{val[0]['ndcg@10']:.5f} / {val[0]['recall@10']:.5f}" if val else "")
        print("| " + " | ".join(cells) + " |")


def main():
    top = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="side-by-side markdown table of a released curve and distrec runs")
    t.add_argument("released", type=Path, help="the JSON `run --out` wrote")
    t.add_argument("runs", nargs="+", help="name=distrec train directory (holding metrics.jsonl)")
    p = sub.add_parser("run", help="run the released pipeline")
    p.add_argument("--root", required=True, help="distrec run root with data/ and sids/ (the rpg_beauty run)")
    p.add_argument("--released", default="runs/peer/RPG_KDD2025", help="extract of the released code")
    p.add_argument("--packages", nargs="*", default=["/tmp/rpgpkg", "/tmp/intrrpkg"],
                   help="side directories with its dependencies (accelerate, datasets, transformers 4.47)")
    p.add_argument("--work", default="runs/parity/rpg_released", help="its cache, logs and checkpoints")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-batch", type=int, default=256, help="validation batch (released default 32)")
    p.add_argument("--out", type=Path, default=None)
    args = top.parse_args()
    if args.command == "table":
        return table(args.released, args.runs)
    root, released, work = Path(args.root).resolve(), Path(args.released).resolve(), Path(args.work).resolve()
    out = args.out.resolve() if args.out else None
    sys.path[:0] = [str(released), *args.packages]

    import torch
    from distrec.data.dataset import load_prepared
    from distrec.tokenize.sid_table import SIDTable
    import genrec.datasets
    from genrec.dataset import AbstractDataset
    from genrec.pipeline import Pipeline

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seq = load_prepared(root / "data").sequence_data()
    sids = SIDTable.load(root / "sids")
    cache = work / "cache"
    write_sids(sids, cache / "processed" / "text-embedding-3-large_OPQ32,IVF1,PQ32x8.sem_ids")

    class DistrecData(AbstractDataset):
        """distrec's prepared sequences as a released dataset (users and items named by distrec's ids)."""

        def __init__(self, config):
            super().__init__(config)
            self.cache_dir = str(cache)
            m = self.id_mapping
            for i in range(1, len(sids.codes)):
                m["item2id"][str(i)] = i
                m["id2item"].append(str(i))
            for u, user in enumerate(seq.user_ids):
                name = str(user)
                m["user2id"][name] = len(m["id2user"])
                m["id2user"].append(name)
                self.all_item_seqs[name] = [str(i) for i in seq.items[seq.offsets[u]:seq.offsets[u + 1]]]

    genrec.datasets.DistrecData = DistrecData  # found by the released get_dataset(name)
    config_dir = released / "genrec" / "datasets" / "DistrecData"  # get_config reads the dataset's yaml
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.yaml").write_text("split: leave_one_out\n")

    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the released log, tensorboard and checkpoint directories are relative
    curve = Curve(out, {"reference": "facebookresearch/RPG_KDD2025 a7463a2", "root": str(root),
                        "steps": args.steps, "threads": torch.get_num_threads(), **README_BEAUTY})
    pipeline = Pipeline(model_name="RPG", dataset_name="DistrecData",
                        config_dict={**README_BEAUTY, "steps": args.steps, "eval_batch_size": args.eval_batch,
                                     "faiss_omp_num_threads": 1, "num_proc": 1})
    logging.getLogger().addHandler(curve)  # after the pipeline's logging.basicConfig, which skips a set-up root
    pipeline.run()


if __name__ == "__main__":
    main()
