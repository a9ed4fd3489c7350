"""IntRR vs its flattened baseline, on the Transformer and HSTU backbones, on real Amazon Beauty.

Both models use the same SIDs (RQ-KMeans 3 x 128 + de-duplication digit, runs/gen_beauty/sids_rq128),
the same backbone shape (d 256, 4 layers, 6 heads x 64, d_ff 1024, dropout 0.15 as IntRR's released
config) and the same training windows (20 items): IntRR feeds one token per item (20 tokens), the
flat_decoder all 4 SID tokens per item (84 tokens with the target).

1. Training samples/s (forward + backward + AdamW step, bf16 autocast), the two models alternating,
   median per call.
2. Training peak memory: each model in its own process; the peak RSS of the training steps over
   the RSS right before them (gradients, optimizer state, activations: what flattening changes),
   with the high-water mark reset after loading the data.
3. Inference latency per batch of users vs beam width 10, 15, 20, 25, 30, 50: IntRR (one backbone
   pass, beam search over the RAN levels) vs flat_decoder (KV-cached beam search, one backbone call
   per level), alternating.

    .venv/bin/python bench/bench_intrr.py             # -> bench/results/intrr.json
    .venv/bin/python bench/bench_intrr.py --reps 2    # smoke run
"""

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_acerec import BEAUTY, alternate, eval_batches, load_beauty, make_model, train_batches, train_step_fn  # noqa: E402

SIDS = BEAUTY / "sids_rq128"
SHAPE = {"transformer": ["model=transformer", "model.n_heads=6", "model.head_dim=64"],
         "hstu": ["model=hstu", "model.n_heads=6", "model.head_dim=64"]}
COMMON = ["model.d_model=256", "model.n_layers=4", "model.d_ff=1024", "model.dropout=0.15", "model.max_history=20"]
METHODS = {"intrr": ["method=intrr"], "flat": ["method=flat_decoder"]}
WIDTHS = [10, 15, 20, 25, 30, 50]


def build(backbone: str, method: str, data, beam_width: int = 20):
    return make_model([*SHAPE[backbone], *COMMON, *METHODS[method], f"method.beam_width={beam_width}"], SIDS, data)


def status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def peak_memory(backbone: str, method: str, batch: int, steps: int) -> dict:
    """Run in a child process: the peak RSS of the training steps alone. Loading the data peaks
    higher than a small training step, so the high-water mark is reset (clear_refs 5) first."""
    data, seqs = load_beauty()
    model = build(backbone, method, data)
    run = train_step_fn(model, train_batches(seqs, 20, batch, steps, seed=1))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status_bytes("VmRSS")
    run()
    peak = status_bytes("VmHWM")
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "rss_before_bytes": before, "peak_rss_bytes": peak, "train_peak_growth_bytes": peak - before}


def memory_in_child(backbone: str, method: str, batch: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-of", backbone, method, "--train-batch", str(batch),
                          "--train-batches", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbones", nargs="+", default=["transformer", "hstu"])
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-batches", type=int, default=2)
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--widths", type=int, nargs="+", default=WIDTHS)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--memory-of", nargs=2, metavar=("BACKBONE", "METHOD"))
    p.add_argument("--memory-only", action="store_true", help="re-measure peak memory into the existing JSON")
    p.add_argument("--out", default="bench/results/intrr.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.memory_of:
        print(json.dumps(peak_memory(*args.memory_of, args.train_batch, args.train_batches)))
        return

    if args.memory_only:  # re-measure memory only, into the existing JSON
        result = json.loads(Path(args.out).read_text())
        for backbone in args.backbones:
            memory = {m: memory_in_child(backbone, m, args.train_batch, args.train_batches) for m in METHODS}
            growth = {m: memory[m]["train_peak_growth_bytes"] for m in METHODS}
            result["backbones"][backbone].update(memory=memory, peak_growth_change=growth["intrr"] / growth["flat"] - 1)
            print(f"[{backbone}] training peak memory growth: IntRR {growth['intrr'] / 2**20:.0f} MiB, flat "
                  f"{growth['flat'] / 2**20:.0f} MiB ({growth['intrr'] / growth['flat'] - 1:+.0%})", flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return
    data, seqs = load_beauty()
    windows = train_batches(seqs, 20, args.train_batch, args.train_batches)
    users = eval_batches(seqs, 20, args.infer_batch, 1)[0]
    samples = args.train_batch * args.train_batches
    result = {"machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
              "args": vars(args), "backbones": {}}
    for backbone in args.backbones:
        models = {m: build(backbone, m, data) for m in METHODS}
        train = alternate({m: train_step_fn(model, windows) for m, model in models.items()}, args.reps)
        sps = {m: samples / s for m, s in train.items()}
        memory = {m: memory_in_child(backbone, m, args.train_batch, args.train_batches) for m in METHODS}
        growth = {m: memory[m]["train_peak_growth_bytes"] for m in METHODS}
        print(f"[{backbone}] training samples/s: IntRR {sps['intrr']:.3g}, flat {sps['flat']:.3g} "
              f"({sps['intrr'] / sps['flat'] - 1:+.0%}; released {'+75%' if backbone == 'transformer' else '+36%'}); "
              f"peak memory growth: IntRR {growth['intrr'] / 2**20:.0f} MiB, flat {growth['flat'] / 2**20:.0f} MiB "
              f"({growth['intrr'] / growth['flat'] - 1:+.0%}; released {'-68%' if backbone == 'transformer' else '-7%'})", flush=True)
        latency = {}
        for width in args.widths:
            for model in models.values():
                model.beam_width = width
            fns = {m: (lambda model=model: _recommend(model, users)) for m, model in models.items()}
            latency[width] = alternate(fns, args.reps)
            print(f"[{backbone}] beam {width}: IntRR {latency[width]['intrr'] * 1e3:.0f} ms, flat "
                  f"{latency[width]['flat'] * 1e3:.0f} ms per batch of {args.infer_batch} "
                  f"-> {latency[width]['flat'] / latency[width]['intrr']:.2f}x faster", flush=True)
        result["backbones"][backbone] = {
            "train_samples_per_s": sps, "train_seconds_per_call": train, "samples_per_call": samples,
            "samples_per_s_gain": sps["intrr"] / sps["flat"] - 1, "memory": memory,
            "peak_growth_change": growth["intrr"] / growth["flat"] - 1,
            "latency_s_per_batch": {str(w): v for w, v in latency.items()},
            "speedup_by_width": {str(w): v["flat"] / v["intrr"] for w, v in latency.items()}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))  # after each backbone: slow machines
        print(f"wrote {args.out}")


@torch.no_grad()
def _recommend(model, batch):
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.recommend(batch, 10)


if __name__ == "__main__":
    main()
