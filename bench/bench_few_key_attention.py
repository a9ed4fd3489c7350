"""Few-key attention on CPU: SDPA against the explicit softmax `attend` uses for at most FEW_KEYS keys
(distrec.models.blocks.attention), forward + backward under bf16 autocast, side by side in one process.

(a) attention alone, on the shapes distrec's models make: ACERec's merger (4 queries over an item's
    32 OPQ tokens) and reconstruction decoder (32 over 4), RPG / SASRec self-attention over 50 items,
    beam decoding (1 query over 60 cached keys), and 64 / 128 / 250 keys (where the explicit path stops).
(b) ACERec training steps on real Beauty windows (256 windows length-grouped into 8 micro-batches of
    32, as `acerec_beauty` trains), the explicit path against SDPA everywhere, alternated.

    .venv/bin/python bench/bench_few_key_attention.py        # -> bench/results/few_key_attention.json
Needs runs/rpg_beauty/{data,sids} (`distrec prepare/embed/tokenize experiment=rpg_beauty`) for (b).
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import distrec.models.blocks.attention as attention

sys.path.insert(0, str(Path(__file__).parent))
from bench_acerec import ACEREC_SHAPE, alternate, load_beauty, make_model, timed  # noqa: E402

SHAPES = {  # name: (batch, heads, queries, keys, head dim, backward)
    "acerec merger (4 over 32)": (429, 4, 4, 32, 112, True),
    "acerec recon (32 over 4)": (428, 4, 32, 4, 112, True),
    "rpg self-attention (50)": (32, 4, 50, 50, 112, True),
    "sasrec self-attention (50)": (256, 2, 50, 50, 32, True),
    "beam decoding (1 over 60)": (1280, 4, 1, 60, 112, False),
    "64 keys": (32, 4, 64, 64, 112, True),
    "128 keys (SDPA kept)": (32, 4, 128, 128, 112, True),
    "250 keys (SDPA kept)": (32, 4, 250, 250, 112, True),
}


def bench_shapes(reps: int) -> dict:
    out = {}
    for name, (B, H, Tq, Tk, dh, grad) in SHAPES.items():
        q = torch.randn(B, H, Tq, dh, requires_grad=grad)
        k, v = (torch.randn(B, H, Tk, dh, requires_grad=grad) for _ in range(2))
        mask = torch.rand(B, 1, Tq, Tk) > 0.2
        mask[..., 0] = True

        def run(kernel):
            def call():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    o = kernel(q, k, v, mask)
                if grad:
                    o.float().sum().backward()
            return call

        sdpa = run(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m))
        explicit = run(attention.explicit_attention)
        row = {key: s * 1000 for key, s in alternate({"sdpa": sdpa, "explicit": explicit}, reps).items()}
        row["ratio_sdpa_over_explicit"] = row["sdpa"] / row["explicit"]
        print(f"(a) {name:28s} SDPA {row['sdpa']:7.1f} ms  explicit {row['explicit']:7.1f} ms  "
              f"{row['ratio_sdpa_over_explicit']:.2f}x", flush=True)
        out[name] = {"shape": [B, H, Tq, Tk, dh], "backward": grad, **row}
    return out


def bench_acerec(steps: int) -> dict:
    from distrec.data.batches import build_train_index, collate_train

    root = Path("runs/rpg_beauty")
    data, seqs = load_beauty(root)
    model = make_model([*ACEREC_SHAPE, "method=acerec", "model.max_history=50", "model.dropout=0.1"],
                       root / "sids", data).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    index = build_train_index(seqs, 50)
    rng = np.random.default_rng(0)

    def global_batch():
        ids = rng.permutation(len(index.end))[:256]
        ids = ids[np.argsort(index.end[ids])]  # train.group_by_length
        return [collate_train(seqs, index, ids[i:i + 32], 50) for i in range(0, 256, 32)]

    def step(micro):
        opt.zero_grad()
        for b in micro:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(b)["loss"] / len(micro)
            loss.backward()
        opt.step()

    batches = [global_batch() for _ in range(steps)]
    step(batches[0])
    times = {"explicit": [], "sdpa": []}
    for micro in batches:
        for name, few in (("explicit", attention.FEW_KEYS), ("sdpa", 0)):
            saved, attention.FEW_KEYS = attention.FEW_KEYS, few
            try:
                times[name].append(timed(lambda: step(micro)))
            finally:
                attention.FEW_KEYS = saved
    row = {f"{k}_s_per_step": float(np.median(v)) for k, v in times.items()}
    row["ratio_sdpa_over_explicit"] = row["sdpa_s_per_step"] / row["explicit_s_per_step"]
    print(f"(b) ACERec step (256 windows): SDPA {row['sdpa_s_per_step']:.2f} s, explicit "
          f"{row['explicit_s_per_step']:.2f} s, {row['ratio_sdpa_over_explicit']:.2f}x", flush=True)
    return {"steps": steps, **row}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/few_key_attention.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
              "few_keys": attention.FEW_KEYS, "shapes": bench_shapes(args.reps), "acerec_step": bench_acerec(args.steps)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
