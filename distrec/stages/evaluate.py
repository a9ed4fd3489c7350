"""`distrec evaluate`: trained model + prepared data (+ SID table) -> eval/.

    eval/metrics.json    metrics (Recall/NDCG@K, MRR, invalid-ID rate, coverage, latency), the
                         evaluation protocol, the evaluated model, timings, and the popularity
                         baseline's Recall/NDCG/MRR on the same users and protocol (`baselines`)
    eval/predictions/    parquet: user_id, target, rank, items (top-K ids), scores
    eval/manifest.json

Full-catalog ranking of the held-out item of every user with a target in `eval.split`
(protocol: distrec/eval/protocol.py, docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.artifacts import Timer, staged_output, write_json, write_manifest, write_table, wrote
from distrec.errors import ConfigError
from distrec.eval.baselines import Popularity
from distrec.eval.evaluation import METRICS_JSON
from distrec.eval.new_items import NewItemShare
from distrec.eval.protocol import EvalProtocol


def run(cfg) -> dict:
    import torch

    from distrec.data.batches import eval_batches, eval_users, user_sample
    from distrec.data.dataset import load_prepared
    from distrec.eval.evaluator import evaluate
    from distrec.train.export import TrainedModel

    timer = Timer()
    train_dir = Path(cfg.paths.train)
    protocol = EvalProtocol.from_config(cfg)  # bad eval.* values fail before any loading
    with timer("load"):
        trained = TrainedModel(train_dir)
        info = trained.info
        if info.get("include_valid") and protocol.split == "valid":
            raise ConfigError(f"{train_dir / 'model.json'}: this model was trained on the validation items "
                              "(train.include_valid=true); evaluate it on eval.split=test")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = trained.load(str(cfg.eval.checkpoint), cfg.paths.sids, device)
        sid_table = trained.sid_table(cfg.paths.sids)
        data = load_prepared(cfg.paths.data, cfg.data.name)
        trained.check_data(data, sid_table)
        sequences = data.sequence_data()
    sid_hash = sid_table.content_hash if sid_table is not None else None  # the trained table's, or its extension's
    protocol = replace(protocol, data_hash=data.content_hash, sid_hash=sid_hash,
                       checkpoint_selection=_checkpoint_selection(info, protocol.checkpoint),
                       user_sample=user_sample(sequences, protocol.split, protocol.max_users, protocol.sample_seed))
    model.use_decoding(protocol.decoding, protocol.beam_width)  # evaluation's choice over the trained one
    decoding = model.decoding_name
    if protocol.new_item_share and trained.new_items(sid_table):
        model = NewItemShare(model, trained.num_items + 1, protocol.new_item_share, data.num_items)

    max_history = int(info["model"]["max_history"])
    users = len(eval_users(sequences, protocol.split, protocol.max_users, protocol.sample_seed)[0])
    if users == 0:
        raise ConfigError(f"{cfg.paths.data}: no user has a '{protocol.split}' target; "
                          "check data.split or choose eval.split=valid|test")
    batch_size = int(cfg.eval.batch_size)

    def batches():
        return eval_batches(sequences, protocol.split, max_history, batch_size, max_users=protocol.max_users,
                            seed=protocol.sample_seed, device=device)

    with timer("evaluate"):
        result = evaluate(model, batches(), ks=protocol.ks, num_items=data.num_items,
                          filter_history=protocol.filter_history, keep_predictions=True,
                          precision=cfg.engine.precision, progress=cfg.progress, total=-(-users // batch_size),
                          beam_rows=cfg.eval.beam_rows)
    metrics = result.metrics.result()
    with timer("popularity baseline"):  # the same users and protocol; one sort of the item counts
        popular = evaluate(Popularity(data.item_counts()).to(device), batches(), ks=protocol.ks,
                           num_items=data.num_items, filter_history=protocol.filter_history,
                           keep_predictions=bool(trained.new_items(sid_table)))
        popularity = popular.metrics.result()
    metric = info.get("select_metric", "ndcg@10")  # the validation metric that chose the checkpoint

    report = {
        "metrics": metrics,
        # filter_history: the same ranking with the history left in (papers report either)
        **({"unfiltered_metrics": result.unfiltered.result()} if result.unfiltered is not None else {}),
        # every user gets the most frequent training items
        "baselines": {"popularity": {k: v for k, v in popularity.items() if k.startswith(("recall", "ndcg", "mrr"))}},
        "protocol": protocol.to_dict(),
        "model": {"method": info["method"]["name"], "weights": str(cfg.eval.checkpoint), "decoding": decoding,
                  "best_step": info.get("best_step"), "last_step": info.get("last_step"),
                  "select_metric": metric, f"best_val_{metric}": info.get(f"best_val_{metric}"),
                  "params": info.get("params"),
                  "model_hash": info.get("model_hash"), "train_dir": str(train_dir.resolve())},
        "device": device,
        "precision": cfg.engine.precision,
    }
    if trained.new_items(sid_table):  # the catalog grew since training: the users whose target is a new item
        report["cold_start"] = cold_start(result.predictions, popular.predictions, trained.num_items,
                                          trained.new_items(sid_table), protocol.ks)
    with staged_output(cfg.paths.eval) as out:
        write_table(_predictions_table(result.predictions), out / "predictions")
        report["timings_s"] = {k: round(v, 3) for k, v in timer.phases.items()}
        write_json(out / METRICS_JSON, report)
        write_manifest(out, stage="evaluate", config=cfg, timings=timer.phases,
                       inputs={"data": data.content_hash, "sids": sid_hash, "model": info.get("model_hash")},
                       counts={"users": metrics["users"]})
    print(metrics_table(report))
    wrote("evaluate", f"metrics.json, predictions/ ({metrics['users']:,} users)", cfg.paths.eval)
    return report


def cold_start(predictions: dict, popular: dict, trained_items: int, new_items: int, ks) -> dict:
    """Recall/NDCG@K of the model and of popularity over the users whose target was added after training
    (ids past `trained_items`: `distrec tokenize --extend`)."""
    import torch

    from distrec.eval.metrics import hits_and_ndcg

    def metrics(p):
        ranks = torch.tensor(p["rank"])[torch.tensor(p["target"]) > trained_items]
        return {name: float(v.mean()) if len(ranks) else 0.0 for name, v in hits_and_ndcg(ranks, ks).items()}

    users = int(sum(t > trained_items for t in predictions["target"]))
    return {"new_items": new_items, "trained_items": trained_items, "users": users,
            "metrics": metrics(predictions), "popularity": metrics(popular)}


def _checkpoint_selection(info: dict, checkpoint: str) -> str:
    """How the evaluated weights were chosen, in words, from the trained model's model.json."""
    if info.get("include_valid"):
        return "last step (train.include_valid: trained on the validation items, no selection)"
    if checkpoint == "last":
        return "last step"
    return f"best validation {info.get('select_metric', 'ndcg@10')}"


def _predictions_table(p: dict) -> pa.Table:
    return pa.table({
        "user_id": pa.array(p["user_id"], pa.int64()),
        "target": pa.array(p["target"], pa.int64()),
        "rank": pa.array(p["rank"], pa.int64()),  # conservative 0-based rank; max(ks)+1 = not in the list
        "items": pa.array(p["items"], pa.list_(pa.int64())),
        "scores": pa.array([np.asarray(s, np.float32) for s in p["scores"]], pa.list_(pa.float32())),
    })


def metrics_table(report: dict) -> str:
    m, p = report["metrics"], report["protocol"]
    ks = p["ks"]
    sample = p.get("user_sample")
    users = f"{m['users']} of {sample['of']} users (seeded sample)" if sample else f"{m['users']} users"
    lines = [f"evaluate {report['model']['method']} on {p['dataset']} [{p['split']}], {users}, "
             f"{p['ranking']}, {p['ties']} ties, weights: {report['model']['weights']}",
             " " * 10 + "".join(f"{'@' + str(k):>9}" for k in ks)]
    seen = ("seen",) if f"seen@{ks[0]}" in m else ()  # the share of the top K already in the history
    for name in ("recall", "ndcg", "coverage", *seen):
        lines.append(f"  {name:<8}" + "".join(f"{m[f'{name}@{k}']:9.4f}" for k in ks))
    unfiltered = report.get("unfiltered_metrics")
    if unfiltered:  # history filtered above; the same ranking with it left in
        for name in ("recall", "ndcg", *seen):
            lines.append(f"  {name:<8}" + "".join(f"{unfiltered[f'{name}@{k}']:9.4f}" for k in ks)
                         + "   (history not filtered)")
    lines.append(f"  mrr@{ks[-1]} {m[f'mrr@{ks[-1]}']:.4f}   invalid ids {m['invalid_id_rate']:.4f}   "
                 f"latency {m['latency_ms_per_user']:.3f} ms/user")
    popularity = report.get("baselines", {}).get("popularity")
    if popularity:  # the same users and protocol: the most frequent training items for everyone
        for name in ("recall", "ndcg"):
            lines.append(f"  {name:<8}" + "".join(f"{popularity[f'{name}@{k}']:9.4f}" for k in ks)
                         + "   (popularity baseline)")
    cold = report.get("cold_start")
    if cold:  # the catalog grew since training (`tokenize --extend`): users whose target is a new item
        lines.append(f"  cold start: {cold['users']} users whose target is one of the {cold['new_items']} items "
                     "added after training")
        for who, m in (("model", cold["metrics"]), ("popularity", cold["popularity"])):
            lines.append(f"  {who:<11}" + "  ".join(f"R@{k} {m[f'recall@{k}']:.4f} N@{k} {m[f'ndcg@{k}']:.4f}"
                                                   for k in ks))
    return "\n".join(lines)
