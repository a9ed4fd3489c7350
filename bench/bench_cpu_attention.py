"""CPU attention: SDPA against the explicit softmax `attend` runs on CPU for at most FEW_KEYS keys and
for any attention with dropout (distrec.models.blocks.attention), forward + backward under bf16
autocast, side by side in one process.

(a) attention alone, on the shapes distrec's models make: ACERec's merger (4 queries over an item's
    32 OPQ tokens) and reconstruction decoder (32 over 4), RPG / SASRec self-attention over 50 items,
    beam decoding (1 query over 60 cached keys), 64 / 128 / 250 keys without dropout (SDPA kept past
    64), and training with each recipe's attention dropout: ACERec's decoder (250 slots, 0.1), RPG
    (50, 0.5), SASRec (50, 0.2).
(b) ACERec training steps on real Beauty windows (256 windows length-grouped into 8 micro-batches of
    32, as `acerec_beauty` trains): `attend` as it is, as it was (explicit for few keys without
    dropout only), and SDPA everywhere, alternated.

    .venv/bin/python bench/bench_cpu_attention.py        # -> bench/results/cpu_attention.json
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

SHAPES = {  # name: (batch, heads, queries, keys, head dim, backward, dropout)
    "acerec merger (4 over 32)": (429, 4, 4, 32, 112, True, 0.0),
    "acerec recon (32 over 4)": (428, 4, 32, 4, 112, True, 0.0),
    "rpg self-attention (50)": (32, 4, 50, 50, 112, True, 0.0),
    "sasrec self-attention (50)": (256, 2, 50, 50, 32, True, 0.0),
    "beam decoding (1 over 60)": (1280, 4, 1, 60, 112, False, 0.0),
    "64 keys": (32, 4, 64, 64, 112, True, 0.0),
    "128 keys (SDPA kept)": (32, 4, 128, 128, 112, True, 0.0),
    "250 keys (SDPA kept)": (32, 4, 250, 250, 112, True, 0.0),
    "acerec decoder (250 slots), dropout 0.1": (32, 4, 250, 250, 112, True, 0.1),
    "rpg self-attention (50), dropout 0.5": (32, 4, 50, 50, 112, True, 0.5),
    "sasrec self-attention (50), dropout 0.2": (256, 2, 50, 50, 32, True, 0.2),
}


def bench_shapes(reps: int) -> dict:
    out = {}
    for name, (B, H, Tq, Tk, dh, grad, p) in SHAPES.items():
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

        sdpa = run(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=p))
        explicit = run(lambda q, k, v, m: attention.explicit_attention(q, k, v, m, p))
        row = {key: s * 1000 for key, s in alternate({"sdpa": sdpa, "explicit": explicit}, reps).items()}
        row["ratio_sdpa_over_explicit"] = row["sdpa"] / row["explicit"]
        print(f"(a) {name:28s} SDPA {row['sdpa']:7.1f} ms  explicit {row['explicit']:7.1f} ms  "
              f"{row['ratio_sdpa_over_explicit']:.2f}x", flush=True)
        out[name] = {"shape": [B, H, Tq, Tk, dh], "backward": grad, "dropout": p, **row}
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
    explicit = attention.explicit_attention

    def sdpa(q, k, v, mask=None, dropout_p=0.0, is_causal=False):  # what `attend` ran before
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              is_causal=is_causal and mask is None)

    def few_keys_only(q, k, v, mask=None, dropout_p=0.0, is_causal=False):  # the rule before dropout was added
        return (sdpa if dropout_p or is_causal else explicit)(q, k, v, mask, dropout_p, is_causal)

    times = {"explicit": [], "few_keys_only": [], "sdpa": []}
    for micro in batches:
        for name, kernel in (("explicit", explicit), ("few_keys_only", few_keys_only), ("sdpa", sdpa)):
            attention.explicit_attention = kernel  # `attend` looks it up at each call
            try:
                times[name].append(timed(lambda: step(micro)))
            finally:
                attention.explicit_attention = explicit
    row = {f"{k}_s_per_step": float(np.median(v)) for k, v in times.items()}
    for base in ("sdpa", "few_keys_only"):
        row[f"ratio_{base}_over_explicit"] = row[f"{base}_s_per_step"] / row["explicit_s_per_step"]
    print(f"(b) ACERec step (256 windows): SDPA everywhere {row['sdpa_s_per_step']:.2f} s, explicit for few "
          f"keys only {row['few_keys_only_s_per_step']:.2f} s, explicit also with dropout "
          f"{row['explicit_s_per_step']:.2f} s: {row['ratio_sdpa_over_explicit']:.2f}x, "
          f"{row['ratio_few_keys_only_over_explicit']:.2f}x", flush=True)
    return {"steps": steps, **row}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/cpu_attention.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
              "few_keys": attention.FEW_KEYS, "shapes": bench_shapes(args.reps), "acerec_step": bench_acerec(args.steps)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
