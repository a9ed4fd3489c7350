"""Backbone speed on this machine: training samples/s and model FLOPs utilisation (MFU) of the
Transformer decoder, T5 encoder-decoder and HSTU at a few sizes, fp32 vs bf16 autocast, plus
KV-cache decoding against recomputing the whole prefix.

MFU = FLOPs per sample (FlopCounterMode, forward + backward) x samples/s / the bf16 matmul rate
measured in this same run (so ratios stay comparable on a noisy shared machine).

    .venv/bin/python bench/bench_backbones.py            # writes bench/results/backbones.json
    .venv/bin/python bench/bench_backbones.py --quick    # smaller, for a smoke run
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from distrec.models.backbones import HSTU, T5EncoderDecoder, TransformerDecoder
from distrec.scaling.counters import measured_flops

SIZES = {  # name: (d_model, n_layers, n_heads, d_ff)
    "small": (128, 2, 2, 256),
    "base": (256, 4, 4, 1024),
}


def timed(fn, min_time: float, max_reps: int = 50) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_rate(dtype, min_time) -> float:
    """FLOP/s of a transformer-shaped matmul (12800x448 @ 448x1024) in `dtype`."""
    a, b = torch.randn(12800, 448, dtype=dtype), torch.randn(448, 1024, dtype=dtype)
    return 2 * 12800 * 448 * 1024 / timed(lambda: a @ b, min_time)


def build(kind, size, T):
    d, L, H, ff = SIZES[size]
    if kind == "transformer":
        return TransformerDecoder(d, L, H, ff, dropout=0.1, max_len=T)
    if kind == "hstu":
        return HSTU(d, L, H, dropout=0.1, max_len=T)
    return T5EncoderDecoder(d, L, L, H, ff, dropout=0.1)


def train_step_fn(model, kind, d, B, T, T_dec, precision):
    """One forward + backward of the backbone on random inputs (left padding on a quarter of rows)."""
    x = torch.randn(B, T, d)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[: B // 4, : T // 2] = True
    y = torch.randn(B, T_dec, d)

    def run(_batch=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            h = model(x, y, pad=pad) if kind == "t5" else model(x, pad=pad)
        return h.float().square().mean()

    def step():
        run().backward()
        model.zero_grad(set_to_none=True)

    return run, step


def bench_training(kinds, sizes, B, T, T_enc, T_dec, min_time, peak_bf16):
    rows = []
    for kind in kinds:
        for size in sizes:
            torch.manual_seed(0)
            seq = T_enc if kind == "t5" else T
            model = build(kind, size, seq).train()
            for precision in ("fp32", "bf16"):
                run, step = train_step_fn(model, kind, SIZES[size][0], B, seq, T_dec, precision)
                flops = measured_flops(_Wrap(run), None, loss_fn=lambda out: out)
                sec = timed(step, min_time)
                row = {"backbone": kind, "size": size, "precision": precision, "batch": B, "seq_len": seq,
                       "dec_len": T_dec if kind == "t5" else None,
                       "params": sum(p.numel() for p in model.parameters()),
                       "flops_per_sample": flops / B, "step_s": sec, "samples_per_s": B / sec,
                       "mfu_vs_bf16_matmul": flops / sec / peak_bf16}
                rows.append(row)
                print(f"{kind:12s} {size:6s} {precision}: {row['samples_per_s']:8.1f} samples/s  "
                      f"{flops / sec / 1e9:7.1f} GFLOP/s  MFU {row['mfu_vs_bf16_matmul']:.3f}", flush=True)
    return rows


class _Wrap(torch.nn.Module):
    """Lets `measured_flops` (which calls model(batch)) count an arbitrary closure."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, _batch):
        return self.fn()


def bench_decoding(B, prompt, new_tokens, min_time):
    """Generate `new_tokens` after a `prompt`-token prefix: KV cache vs recomputing the prefix each step."""
    rows = []
    d, L, H, ff = SIZES["base"]
    for kind in ("transformer", "hstu", "t5"):
        torch.manual_seed(0)
        model = build(kind, "base", prompt + new_tokens).eval()
        x = torch.randn(B, prompt + new_tokens, d)

        @torch.no_grad()
        def cached():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if kind == "t5":
                    memory = model.encode(x[:, :prompt])
                    cache = model.init_cache()
                    for t in range(new_tokens):
                        model.decode(x[:, prompt + t:prompt + t + 1], memory, cache=cache)
                    return
                cache = model.init_cache()
                model(x[:, :prompt], cache=cache)
                for t in range(new_tokens - 1):
                    model(x[:, prompt + t:prompt + t + 1], cache=cache)

        @torch.no_grad()
        def recompute():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if kind == "t5":
                    memory = model.encode(x[:, :prompt])
                    for t in range(new_tokens):
                        model.decode(x[:, prompt:prompt + t + 1], memory)
                    return
                for t in range(new_tokens):
                    model(x[:, :prompt + t])

        sec_cached, sec_full = timed(cached, min_time), timed(recompute, min_time)
        rows.append({"backbone": kind, "size": "base", "batch": B, "prompt": prompt, "new_tokens": new_tokens,
                     "cached_s": sec_cached, "recompute_s": sec_full, "speedup": sec_full / sec_cached})
        print(f"decode {kind:12s}: cached {sec_cached * 1e3:7.1f} ms  recompute {sec_full * 1e3:7.1f} ms  "
              f"speedup {sec_full / sec_cached:.2f}x", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default); 1 is much faster on an oversubscribed machine")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "backbones.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    min_time = 0.5 if args.quick else 1.0
    B, T, T_enc, T_dec = (16, 64, 40, 5) if args.quick else (32, 128, 80, 5)
    peak = {"fp32": matmul_rate(torch.float32, min_time), "bf16": matmul_rate(torch.bfloat16, min_time)}
    print(f"matmul 12800x448x1024: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    training = bench_training(["transformer", "t5", "hstu"], list(SIZES), B, T, T_enc, T_dec, min_time, peak["bf16"])
    decoding = bench_decoding(B, 50 if args.quick else 128, 5, min_time)
    result = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "platform": platform.platform()},
              "matmul_flops_per_s": peak, "training": training, "decoding": decoding,
              "command": "python bench/bench_backbones.py" + (" --quick" if args.quick else "")
              + (f" --threads {args.threads}" if args.threads else ""),
              "note": "shared 2-core machine: compare ratios measured in one run, not across runs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
