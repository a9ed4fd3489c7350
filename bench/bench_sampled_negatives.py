"""Sampled softmax with negatives drawn per position (distrec since issue 12, Meta's
`LocalNegativesSampler`) against one set shared by the batch (the earlier sampler), same recipe,
seed and budget: SASRec on Beauty, validation on all users after every `--eval-every` steps.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sampled_negatives.py      # -> bench/results/sampled_negatives.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sampled_negatives.py --steps 20 --eval-every 10   # smoke run

"shared" patches `sample_negatives` in the SASRec module to draw one row and expand it to every
position: exactly the old behaviour, with everything else the current code.
"""

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path("runs/bench_sampled_negatives").resolve()


def run(variant: str, steps: int, eval_every: int) -> dict:
    from distrec.config import compose
    from distrec.models.methods import sasrec
    from distrec.stages.train import run as train

    draw = sasrec.sample_negatives
    if variant == "shared":
        sasrec.sample_negatives = lambda t, n, v: draw(t[:1], n, v).expand(t.shape[0], n) if n > 1 else draw(t, n, v)
    try:
        start = time.perf_counter()
        train(compose(["stage=train", "experiment=sasrec_beauty", f"paths.root={ROOT}",
                       f"paths.train={ROOT}/train_{variant}", "engine=plain", "method.loss=sampled_softmax",
                       "method.num_negatives=128", f"train.max_steps={steps}", f"train.eval_every={eval_every}",
                       "train.patience=0", "train.val_max_users=null", "train.resume=false", "progress=false"]))
        seconds = time.perf_counter() - start
    finally:
        sasrec.sample_negatives = draw
    rows = [json.loads(line) for line in (ROOT / f"train_{variant}" / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": r["step"], "ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"]}
             for r in rows if r["split"] == "valid"]
    return {"seconds": seconds, "valid": curve}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--out", default="bench/results/sampled_negatives.json")
    a = ap.parse_args()
    from distrec.config import compose
    from distrec.stages.prepare import run as prepare

    prepare(compose(["stage=prepare", "experiment=sasrec_beauty", f"paths.root={ROOT}", "progress=false"]))
    result = {variant: run(variant, a.steps, a.eval_every) for variant in ("per_position", "shared")}
    last = {v: result[v]["valid"][-1]["ndcg@10"] for v in result}
    result["ndcg@10_ratio_per_position_over_shared"] = last["per_position"] / last["shared"]
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "steps": a.steps}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({v: result[v]["valid"][-1] for v in ("per_position", "shared")}, indent=1))
    print(f"NDCG@10 per position / shared: {result['ndcg@10_ratio_per_position_over_shared']:.2f}x")


if __name__ == "__main__":
    main()
