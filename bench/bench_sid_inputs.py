"""What the tokenizer inputs give on a prepared catalog: cheap measures of embeddings and SID tables.

    python bench/bench_sid_inputs.py runs/sidin/data runs/sidin/embed_a runs/sidin/sids_a ... [--out FILE]

For an `embed/` directory: content-only next-item retrieval on the validation split (the last
history item's vector ranks every other item by cosine; ties count against the target), NDCG@10 and
Recall@10: how much of what users buy next is near in the embedding.
For a `sids/` directory: from its quality.json, collisions before de-duplication and H(c_l | c_<l) of
the first three digits; the same next-item retrieval scored by the codes alone (the number of digits
shared with the last item: the common prefix for RQ-KMeans, any position for unordered PQ/OPQ digits;
Recall@10 expected under random tie-breaking): how much of the neighbourhoods the quantizer keeps; and
the mutual information between the first digit of consecutive training items (bits): how much the
coarsest code says about the next item's coarsest code (hierarchical codes only).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from distrec.artifacts import read_json, shard_paths
from distrec.clustering.vectors import VectorShards
from distrec.data.dataset import load_prepared
from distrec.tokenize.report import entropy_bits
from distrec.tokenize.sid_table import SIDTable


def content_retrieval(data, vectors: np.ndarray, k: int = 10, batch: int = 2048) -> tuple[float, float]:
    """(NDCG@k, Recall@k) of ranking by cosine to the last validation-history item (itself excluded)."""
    _, histories, targets = data.eval_examples("valid")
    last = np.array([h[-1] for h in histories])
    ndcg = recall = 0.0
    for s in range(0, len(last), batch):
        rows = np.arange(len(last[s:s + batch]))
        scores = vectors[last[s:s + batch]] @ vectors.T
        scores[:, 0] = scores[rows, last[s:s + batch]] = -np.inf
        target = scores[rows, targets[s:s + batch]]
        rank = (scores >= target[:, None]).sum(1) - 1
        hit = rank < k
        recall += hit.sum()
        ndcg += (hit / np.log2(rank + 2)).sum()
    return ndcg / len(last), recall / len(last)


def code_retrieval(data, codes: np.ndarray, ordered: bool, k: int = 10, batch: int = 256) -> float:
    """Expected Recall@k of ranking items by the digits they share with the last validation-history item."""
    _, histories, targets = data.eval_examples("valid")
    last = np.array([h[-1] for h in histories])
    codes = codes.astype(np.int16)
    recall = 0.0
    for s in range(0, len(last), batch):
        rows = np.arange(len(last[s:s + batch]))
        equal = codes[last[s:s + batch], None, :] == codes[None, :, :]
        scores = (np.cumprod(equal, -1) if ordered else equal).sum(-1).astype(np.float32)
        scores[:, 0] = scores[rows, last[s:s + batch]] = -1
        target = scores[rows, targets[s:s + batch]]
        above, ties = (scores > target[:, None]).sum(1), (scores == target[:, None]).sum(1) - 1
        recall += np.clip((k - above) / (ties + 1), 0, 1).sum()
    return recall / len(last)


def first_digit_transition_mi(data, codes: np.ndarray) -> float:
    """I(c_1(item_t); c_1(item_t+1)) over consecutive items of the training prefixes (plug-in, bits)."""
    pairs = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in data.train_sequences() if len(s) > 1])
    a, b = codes[pairs[:, 0], 0], codes[pairs[:, 1], 0]
    k = int(codes[1:, 0].max()) + 1
    joint = np.bincount(a * k + b, minlength=k * k)
    return entropy_bits(np.bincount(a, minlength=k)) + entropy_bits(np.bincount(b, minlength=k)) - entropy_bits(joint)


def measure(data, d: Path) -> dict:
    if (d / "item_embeddings").exists():
        ids, x = VectorShards(shard_paths(d / "item_embeddings")).read_all()
        vectors = np.zeros((data.num_items + 1, x.shape[1]), np.float32)
        vectors[ids] = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        ndcg, recall = content_retrieval(data, vectors)
        return {"dim": x.shape[1], "content_ndcg10": round(ndcg, 4), "content_recall10": round(recall, 4)}
    q = read_json(d / "quality.json")
    codes = SIDTable.load(d).codes[:, : q["levels"]]  # without a de-duplication digit
    ordered = q["method"] not in ("pq", "opq")
    out = {"method": q["method"], "codebook_sizes": q["codebook_sizes"][:3],
           "collision_rate": round(q["collision_rate"], 4), "items_in_collisions": round(q["items_in_collisions"], 4),
           "max_items_per_sid": q["max_items_per_sid"],
           "conditional_entropy_bits": [round(p["conditional_entropy_bits"], 2) for p in q["per_level"][:3]],
           "code_recall10": round(code_retrieval(data, codes, ordered), 4)}
    if ordered:
        out["first_digit_transition_mi_bits"] = round(first_digit_transition_mi(data, codes), 3)
    if "reconstruction" in q:
        out["relative_mse"] = round(q["reconstruction"]["relative_mse"], 4)
    out["fit_s"] = q["timings_s"].get("fit", q["timings_s"].get("fit+encode"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="the prepared data/ directory")
    ap.add_argument("dirs", nargs="+", help="embed/ and sids/ directories of that catalog")
    ap.add_argument("--out", help="also write the measures as JSON here (e.g. bench/results/sid_inputs.json)")
    args = ap.parse_args()
    data = load_prepared(args.data)
    results = {}
    for d in args.dirs:
        results[d] = measure(data, Path(d))
        print(d, json.dumps(results[d]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"data": args.data, "cpus": os.cpu_count(), "results": results},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
