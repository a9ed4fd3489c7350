"""Which history items a model ranks first, read from an evaluation's saved predictions.

`seen@K` (docs/evaluation.md) says how much of a top K is items the user already has; this says which:
for the users whose top-1 is a history item, how many steps back in the history it is (1 = the most
recent item), and how often the most recent item is anywhere in the top 10. At validation the most
recent history item is the user's last training target, which a model that remembers its training
users keeps predicting; at test it is the validation item, never a training target of that user.

    python bench/history_hits.py runs/acerec_beauty/snap2600/eval_valid_all --data runs/rpg_beauty/data \
        --out bench/results/history_hits.json --key acerec_step2600_valid

The histories are the evaluator's own: `eval_batches` with the protocol in the eval's metrics.json and the
evaluated model's max_history.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from distrec.artifacts import read_table
from distrec.data.batches import eval_batches
from distrec.data.dataset import load_prepared
from distrec.eval.evaluation import Evaluation
from distrec.train.export import TrainedModel

STEPS_BACK = 8  # listed one by one; the rest are summed


def history_hits(eval_dir: str | Path, data_dir: str | Path) -> dict:
    evaluation = Evaluation(eval_dir)
    protocol = evaluation.protocol
    max_history = int(TrainedModel(evaluation.report["model"]["train_dir"]).info["model"]["max_history"])
    predictions = read_table(Path(eval_dir) / "predictions", columns=["user_id", "items"]).to_pydict()
    top = dict(zip(predictions["user_id"], predictions["items"]))
    sequences = load_prepared(data_dir).sequence_data()
    back, last_in_top10, users = Counter(), 0, 0
    for batch, n_real in eval_batches(sequences, protocol["split"], max_history, 4096,
                                      max_users=protocol.get("max_users"), seed=protocol.get("sample_seed", 0)):
        for user, history in zip(batch["user_ids"][:n_real].tolist(), batch["input_ids"][:n_real].numpy()):
            history = history[history > 0]
            ranked = top[user]
            users += 1
            last_in_top10 += int(history[-1] in ranked[:10])
            where = np.flatnonzero(history == ranked[0])
            if len(where):
                back[min(len(history) - int(where[-1]), STEPS_BACK + 1)] += 1
    share = {f"{k}" if k <= STEPS_BACK else f">{STEPS_BACK}": round(back[k] / users, 4)
             for k in range(1, STEPS_BACK + 2)}
    return {"eval": str(eval_dir), "split": protocol["split"], "users": users,
            "ndcg@10": evaluation.metrics.get("ndcg@10"),
            "top1_in_history": round(sum(back.values()) / users, 4),
            "top1_in_history_by_steps_back": share,
            "last_item_in_top10": round(last_in_top10 / users, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir")
    parser.add_argument("--data", required=True, help="the prepared data/ the evaluation ran on")
    parser.add_argument("--out", help="a JSON file to add the result to, under --key")
    parser.add_argument("--key")
    args = parser.parse_args()
    result = history_hits(args.eval_dir, args.data)
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        doc = json.loads(out.read_text()) if out.exists() else {}
        doc[args.key or str(args.eval_dir)] = result
        out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
