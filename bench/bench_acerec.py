"""ACERec's two efficiency claims, measured side by side on real Amazon Beauty histories.

(a) Inference throughput (users/s): ACERec's holistic scoring (one pass over the 250 merged slots,
    per-digit log-softmax, gather-sum over the 12,101-item catalog) vs TIGER's trie-constrained beam
    search (T5 encoder-decoder, width 20, 3 x 256 + dedup SIDs). Same users, same batch size.
(b) Training samples/s: ACERec (k = 4 latents + 1 intent slot per item: 50 items -> 250 slots) vs the
    flattened alternative, distrec's flat_decoder fed all m = 32 OPQ tokens of every item (50 items ->
    1,632 tokens) on the same Transformer shape (d 448, 2 layers, 4 heads, FFN 1024). Same windows.

Models are freshly initialised (cost does not depend on the weights); bf16 autocast as the engine
runs them; timings alternate between the two models and report medians, so the shared machine's
load hits both alike. Needs runs/gen_beauty/{data,sids,sids_opq32} (docs/acerec.md).

    .venv/bin/python bench/bench_acerec.py            # -> bench/results/acerec.json
    .venv/bin/python bench/bench_acerec.py --reps 2   # smoke run
    .venv/bin/python bench/bench_acerec.py --parts b  # one part; the JSON keeps the other's last result
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from distrec.config import compose
from distrec.data.batches import build_train_index, collate_eval, collate_train, eval_rows
from distrec.data.dataset import load_prepared
from distrec.models.recommender import Catalog, build_model
from distrec.tokenize.sid_table import SIDTable

BEAUTY = Path("runs/gen_beauty")
ACEREC_SHAPE = ["model=transformer", "model.d_model=448", "model.n_layers=2", "model.n_heads=4", "model.d_ff=1024"]


def load_beauty(root: Path = BEAUTY):
    data = load_prepared(root / "data")
    return data, data.sequence_data()


def make_model(overrides: list[str], sids: Path, data):
    cfg = compose(["stage=train", *overrides])
    torch.manual_seed(0)
    catalog = Catalog(data.num_items, SIDTable.load(sids), data.item_counts())
    return build_model(cfg.model, cfg.method, catalog)


def eval_batches(seqs, max_history: int, batch: int, count: int) -> list[dict]:
    rows, pos = eval_rows(seqs, "test")
    return [collate_eval(seqs, rows[i:i + batch], pos[i:i + batch], max_history)
            for i in range(0, batch * count, batch)]


def train_batches(seqs, max_history: int, batch: int, count: int, seed: int = 0) -> list[dict]:
    index = build_train_index(seqs, max_history)
    ids = np.random.default_rng(seed).permutation(len(index))[: batch * count]
    return [collate_train(seqs, index, ids[i:i + batch], max_history) for i in range(0, len(ids), batch)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(xs):
    return float(np.median(xs))


def alternate(fns: dict, reps: int) -> dict:
    """Seconds per call of each function, calls interleaved (A B A B ...) after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: median(ts) for name, ts in times.items()}


def inference_fn(model, batches: list[dict], k: int = 10):
    model.eval()

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for b in batches:
                model.recommend(b, k)

    return run


def train_step_fn(model, batches: list[dict], lr: float = 1e-3):
    """One AdamW step per batch (forward + backward + update), as the engine does it on one worker."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def run():
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(b)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def bench_inference(acerec, data, seqs, args) -> dict:
    """(a) holistic scoring vs TIGER beam search (width 20), the same test users."""
    tiger = make_model(["model=t5", "method=tiger", "model.max_history=20"], BEAUTY / "sids", data)
    users = args.infer_batch * args.infer_batches
    secs = alternate({"acerec_holistic": inference_fn(acerec, eval_batches(seqs, 50, args.infer_batch,
                                                                             args.infer_batches)),
                      "tiger_beam20": inference_fn(tiger, eval_batches(seqs, 20, args.infer_batch,
                                                                        args.infer_batches))}, args.reps)
    ups = {name: users / s for name, s in secs.items()}
    ratio = ups["acerec_holistic"] / ups["tiger_beam20"]
    print(f"(a) inference users/s: ACERec holistic {ups['acerec_holistic']:.1f}, TIGER beam-20 "
          f"{ups['tiger_beam20']:.1f}, ratio {ratio:.2f}x (paper ~2.2x)", flush=True)
    return {"users_per_s": ups, "seconds_per_call": secs, "users_per_call": users, "batch": args.infer_batch,
            "reps": args.reps, "ratio_acerec_over_tiger": ratio}


def bench_training(acerec, data, seqs, args) -> dict:
    """(b) 250 merged slots vs 1,632 flattened OPQ tokens per window, same windows and backbone shape."""
    flat = make_model([*ACEREC_SHAPE, "method=flat_decoder", "model.max_history=50"], BEAUTY / "sids_opq32", data)
    windows = train_batches(seqs, 50, args.train_batch, args.train_batches)
    samples = args.train_batch * args.train_batches
    secs = alternate({"acerec": train_step_fn(acerec, windows), "flat_opq32": train_step_fn(flat, windows)},
                     args.reps)
    sps = {name: samples / s for name, s in secs.items()}
    ratio = sps["acerec"] / sps["flat_opq32"]
    print(f"(b) training samples/s: ACERec {sps['acerec']:.2f}, flat over 32 OPQ tokens/item "
          f"{sps['flat_opq32']:.2f}, ratio {ratio:.2f}x", flush=True)
    return {"samples_per_s": sps, "seconds_per_call": secs, "samples_per_call": samples, "reps": args.reps,
            "acerec_slots_per_window": 50 * 5, "flat_tokens_per_window": 51 * 32, "ratio_acerec_over_flat": ratio}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--infer-batches", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-batches", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    p.add_argument("--out", default="bench/results/acerec.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    data, seqs = load_beauty()
    acerec = make_model([*ACEREC_SHAPE, "method=acerec", "model.max_history=50"], BEAUTY / "sids_opq32", data)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result["machine"] = {"platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    if "a" in args.parts:
        result["inference"] = bench_inference(acerec, data, seqs, args)
    if "b" in args.parts:
        result["training"] = bench_training(acerec, data, seqs, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
