"""CPU driver for Meta's HSTU research code (meta-recsys/generative-recommenders,
`generative_recommenders/research/...`) on distrec's prepared ML-1M split: the reference side of
the HSTU golden curves in docs/parity.md.

Nothing of Meta's code is copied here: it is imported from a local extract (default
runs/peer/generative-recommenders, git-ignored; make it with
`git -C /work/.mirror/meta-recsys+generative-recommenders/repo archive HEAD | tar -x -C runs/peer/generative-recommenders`).
Meta's `train_fn` needs DDP + CUDA, so this driver builds the same components with Meta's own
functions, as `train_fn` does (its frozen gin config, `configs/ml-1m/hstu-sampled-softmax-n128-final.gin`,
is parsed and read back, so d 50, 2 blocks, 1 head, dqk = dv = 50, dropout 0.2, l2-normalised
user and item embeddings, 128 local negatives, temperature 0.05, lr 1e-3, wd 0, batch 128 and
max_sequence_length 200 all come from that file):

    DatasetV2 (train: ignore_last_n=1, eval: ignore_last_n=0; chronological, padding 201)
    create_data_loader (DistributedSampler, world 1, shuffle, seed 0; num_workers=0 here)
    LocalEmbeddingModule, get_similarity_function("DotProduct"),
    LearnablePositionalEmbeddingInputFeaturesPreprocessor, L2NormEmbeddingPostprocessor,
    get_sequential_encoder("HSTU") (hstu_encoder bound by the gin file),
    SampledSoftmaxLoss, LocalNegativesSampler, AdamW(betas 0.9, 0.98),
    movielens_seq_features_from_row, get_eval_state, eval_metrics_v2_from_tensors
    (its default filter_invalid_ids=True), get_top_k_module("MIPSBruteForceTopK").

The training step is `train_fn`'s loop body (scatter the target into past_ids, encode, sampled
softmax over positions 1..len) run on the CPU, without DDP. Not reproduced: DDP (one process),
tf32 (CUDA only), `torch.autograd.set_detect_anomaly(True)` (a debugging aid that does not change
the numbers), the partial eval on the training batch every `eval_interval` batches, tensorboard
and checkpoints. The evaluation here is the full one of `train_fn`'s end of epoch (all users),
run every `--eval-every` steps instead of once per epoch.

Meta's three fbgemm jagged ops (jagged_to_padded_dense, dense_to_jagged,
asynchronous_complete_cumsum) get plain-torch CPU stand-ins from our harness
/work/shared/reference/peer/hstu_peer_bench.py (fbgemm-gpu does not load beside torch here).

Data. Meta's input is `sasrec_format.csv` as its preprocessor writes it (`DataProcessor.to_seq_data`:
user_id, sequence_item_ids, sequence_ratings, sequence_timestamps as comma-joined strings,
chronological, plus the pandas `index` column). It is written from distrec's `sequences` table with
each user's sequence cut after the validation item, so Meta's eval target (the last item) is
distrec's validation item and Meta's training sequence (`ignore_last_n=1`) is distrec's training
prefix. Item ids are distrec's (1..num_items, 0 = padding); `all_item_ids` = 1..num_items (the
ranking catalog and the negatives' support, as distrec's). distrec's ML-1M data has no timestamps
or ratings (docs/data.md): both columns are written as zeros, so Meta's time-gap bias sees
|dt| = 0 everywhere (bucket 0: one learned scalar per layer) and its rating-filtered metrics are
empty. Rows are shuffled with --seed (Meta's preprocessor shuffles the CSV once, unseeded; its
sampler's seed is fixed at 0, so the CSV order decides the batches).

usage: python bench/parity/hstu_meta.py --data runs/hstu_ml1m/data --steps 282 --eval-every 47 \
           --seed 0 --threads 1 --out bench/results/parity/hstu_meta_seed0.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_META = REPO / "runs" / "peer" / "generative-recommenders"
DEFAULT_PEER = Path("/work/shared/reference/peer")
META_MIRROR = Path("/work/.mirror/meta-recsys+generative-recommenders/repo")
GIN = "configs/ml-1m/hstu-sampled-softmax-n128-final.gin"


def write_meta_csv(data_dir: Path, out_csv: Path, seed: int, max_users: int | None = None) -> dict:
    """Meta's sasrec_format.csv from distrec's split, each sequence cut after its validation item."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(Path(data_dir) / "sequences").sort_by("user_id")
    user_ids = table.column("user_id").to_numpy()
    items = table.column("items").to_pylist()
    valid_pos = table.column("valid_pos").to_numpy()
    rows = []
    for uid, seq, vp in zip(user_ids, items, valid_pos):
        if vp < 1:  # no validation item or no history before it: distrec does not evaluate the user either
            continue
        seq = seq[: vp + 1]
        zeros = ",".join(["0"] * len(seq))
        rows.append((int(uid), ",".join(map(str, seq)), zeros, zeros))
    if max_users is not None:
        rows = rows[:max_users]
    frame = pd.DataFrame(rows, columns=["user_id", "sequence_item_ids", "sequence_ratings", "sequence_timestamps"])
    # Meta: seq_ratings_data.sample(frac=1).reset_index().to_csv(..., index=False)
    frame = frame.sample(frac=1, random_state=np.random.RandomState(seed)).reset_index()
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False, sep=",")
    num_items = int(max(max(s) for s in items))
    lengths = [s.count(",") + 1 for s in frame.sequence_item_ids]
    return {"users": len(frame), "num_items": num_items, "interactions": int(sum(lengths))}


def load_meta(meta_src: Path, peer_dir: Path):
    """Import Meta's research code from the extract, with the fbgemm stand-ins registered first."""
    if not (meta_src / "generative_recommenders" / "research").is_dir():
        raise SystemExit(f"Meta's extract not found at {meta_src}; make it with\n  mkdir -p {meta_src} && "
                         f"git -C {META_MIRROR} archive HEAD | tar -x -C {meta_src}")
    sys.path.insert(0, str(peer_dir))
    sys.path.insert(0, str(meta_src))
    import hstu_peer_bench  # our harness: plain-torch CPU versions of Meta's 3 fbgemm ops

    import torch
    try:
        torch.ops.fbgemm.asynchronous_complete_cumsum  # a real fbgemm (or an earlier shim) is loaded
        shim = None
    except (AttributeError, RuntimeError):
        shim = hstu_peer_bench.register_fbgemm_shim()
    return shim


def meta_config(meta_src: Path) -> dict:
    """Parse Meta's frozen ML-1M gin file and read train_fn's settings back (defaults where unbound)."""
    import inspect

    import gin
    from generative_recommenders.research.trainer import train as meta_train  # registers train_fn et al.

    gin.clear_config()
    gin.parse_config_file(str(meta_src / GIN))
    defaults = {k: p.default for k, p in inspect.signature(meta_train.train_fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    cfg = {}
    for k, v in defaults.items():
        try:
            cfg[k] = gin.query_parameter(f"train_fn.{k}")
        except ValueError:
            cfg[k] = v
    for k in ("num_blocks", "num_heads", "dqk", "dv", "linear_dropout_rate"):
        cfg[f"hstu_encoder.{k}"] = gin.query_parameter(f"hstu_encoder.{k}")
    return cfg


def build(cfg: dict, csv_path: Path, num_items: int):
    """Meta's components, assembled as train_fn assembles them (single process, CPU)."""
    import torch
    from generative_recommenders.research.data.dataset import DatasetV2
    from generative_recommenders.research.modeling.sequential.autoregressive_losses import LocalNegativesSampler
    from generative_recommenders.research.modeling.sequential.embedding_modules import LocalEmbeddingModule
    from generative_recommenders.research.modeling.sequential.encoder_utils import get_sequential_encoder
    from generative_recommenders.research.modeling.sequential.input_features_preprocessors import (
        LearnablePositionalEmbeddingInputFeaturesPreprocessor,
    )
    from generative_recommenders.research.modeling.sequential.losses.sampled_softmax import SampledSoftmaxLoss
    from generative_recommenders.research.modeling.sequential.output_postprocessors import (
        L2NormEmbeddingPostprocessor,
        LayerNormEmbeddingPostprocessor,
    )
    from generative_recommenders.research.modeling.similarity_utils import get_similarity_function
    from generative_recommenders.research.trainer.data_loader import create_data_loader

    assert cfg["main_module"] == "HSTU" and cfg["loss_module"] == "SampledSoftmaxLoss"
    assert cfg["sampling_strategy"] == "local" and cfg["embedding_module_type"] == "local"
    max_len = cfg["max_sequence_length"]
    # get_reco_dataset("ml-1m", ...) with the CSV path swapped for ours
    train_ds = DatasetV2(ratings_file=str(csv_path), padding_length=max_len + 1, ignore_last_n=1,
                         chronological=True, sample_ratio=cfg["positional_sampling_ratio"])
    eval_ds = DatasetV2(ratings_file=str(csv_path), padding_length=max_len + 1, ignore_last_n=0,
                        chronological=True, sample_ratio=1.0)
    all_item_ids = list(range(1, num_items + 1))
    # world_size 1: drop_last=False as in train_fn; no worker processes on a 2-core machine
    train_sampler, train_loader = create_data_loader(train_ds, batch_size=cfg["local_batch_size"], world_size=1,
                                                     rank=0, shuffle=True, drop_last=False, num_workers=0,
                                                     prefetch_factor=None)
    eval_sampler, eval_loader = create_data_loader(eval_ds, batch_size=cfg["eval_batch_size"], world_size=1,
                                                   rank=0, shuffle=True, drop_last=False, num_workers=0,
                                                   prefetch_factor=None)
    d = cfg["item_embedding_dim"]
    embedding_module = LocalEmbeddingModule(num_items=num_items, item_embedding_dim=d)
    interaction_module, _ = get_similarity_function(module_type=cfg["interaction_module_type"],
                                                    query_embedding_dim=d, item_embedding_dim=d)
    if cfg["user_embedding_norm"] == "l2_norm":
        output_postproc = L2NormEmbeddingPostprocessor(embedding_dim=d, eps=1e-6)
    else:
        output_postproc = LayerNormEmbeddingPostprocessor(embedding_dim=d, eps=1e-6)
    input_preproc = LearnablePositionalEmbeddingInputFeaturesPreprocessor(
        max_sequence_len=max_len + cfg["gr_output_length"] + 1, embedding_dim=d, dropout_rate=cfg["dropout_rate"])
    model = get_sequential_encoder(module_type="HSTU", max_sequence_length=max_len,
                                   max_output_length=cfg["gr_output_length"] + 1, embedding_module=embedding_module,
                                   interaction_module=interaction_module, input_preproc_module=input_preproc,
                                   output_postproc_module=output_postproc, verbose=False)
    ar_loss = SampledSoftmaxLoss(num_to_sample=cfg["num_negatives"], softmax_temperature=cfg["temperature"],
                                 model=model, activation_checkpoint=cfg["loss_activation_checkpoint"])
    sampler = LocalNegativesSampler(num_items=num_items, item_emb=model._embedding_module._item_emb,
                                    all_item_ids=all_item_ids, l2_norm=cfg["item_l2_norm"],
                                    l2_norm_eps=cfg["l2_norm_eps"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], betas=(0.9, 0.98),
                            weight_decay=cfg["weight_decay"])
    return dict(model=model, ar_loss=ar_loss, negatives_sampler=sampler, opt=opt, all_item_ids=all_item_ids,
                train_sampler=train_sampler, train_loader=train_loader, eval_sampler=eval_sampler,
                eval_loader=eval_loader, train_users=len(train_ds))


def evaluate(parts: dict, cfg: dict, epoch: int, unfiltered: bool = False) -> dict:
    """train_fn's end-of-epoch full evaluation (every user of the eval set), on the CPU."""
    import torch
    from generative_recommenders.research.data.eval import eval_metrics_v2_from_tensors, get_eval_state
    from generative_recommenders.research.indexing.utils import get_top_k_module
    from generative_recommenders.research.modeling.sequential.features import movielens_seq_features_from_row

    model = parts["model"]
    model.eval()
    parts["eval_sampler"].set_epoch(epoch)
    with torch.no_grad():
        eval_state = get_eval_state(
            model=model, all_item_ids=parts["all_item_ids"], negatives_sampler=parts["negatives_sampler"],
            top_k_module_fn=lambda item_embeddings, item_ids: get_top_k_module(
                top_k_method=cfg["top_k_method"], model=model, item_embeddings=item_embeddings, item_ids=item_ids),
            device="cpu", float_dtype=None)
    out = {}
    for filt in ([True, False] if unfiltered else [True]):
        acc: dict[str, list] = {}
        for row in parts["eval_loader"]:
            seq_features, target_ids, target_ratings = movielens_seq_features_from_row(
                row, device="cpu", max_output_length=cfg["gr_output_length"] + 1)
            metrics = eval_metrics_v2_from_tensors(eval_state, model, seq_features, target_ids=target_ids,
                                                   target_ratings=target_ratings, filter_invalid_ids=filt,
                                                   user_max_batch_size=cfg["eval_user_max_batch_size"], dtype=None)
            for k in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"):
                acc.setdefault(k, []).append(metrics[k].float())
        vals = {k: torch.cat(v) for k, v in acc.items()}
        mrr = vals["mrr"]
        res = {k: float(v.mean()) for k, v in vals.items()}
        # ranks are 1/mrr (Meta caps them at 2501); MRR@50 = distrec's mrr@50 definition
        res["mrr@50"] = float(torch.where(mrr >= 1.0 / 50 - 1e-9, mrr, torch.zeros_like(mrr)).mean())
        res["users"] = int(mrr.numel())
        prefix = "" if filt else "unfiltered_"
        out.update({prefix + k: v for k, v in res.items() if prefix == "" or k != "users"})
    model.train()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "hstu_ml1m" / "data",
                    help="distrec prepared data dir (reads its `sequences` table)")
    ap.add_argument("--steps", type=int, default=282)
    ap.add_argument("--eval-every", type=int, default=47, help="full evaluation every this many steps (and at the end)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON curve")
    ap.add_argument("--work", type=Path, default=None, help="where Meta's CSV goes (default runs/parity/meta_seed{S})")
    ap.add_argument("--meta-src", type=Path, default=Path(os.environ.get("DISTREC_META_SRC", DEFAULT_META)))
    ap.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="dir of hstu_peer_bench.py (fbgemm stand-ins)")
    ap.add_argument("--max-users", type=int, default=None, help="only the first N users (smoke tests)")
    ap.add_argument("--unfiltered", action="store_true", help="also evaluate with filter_invalid_ids=False")
    ap.add_argument("--eval-at-start", action="store_true", help="also evaluate the initial model (step 0)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    work = args.work or REPO / "runs" / "parity" / f"meta_seed{args.seed}"
    csv_path = work / "sasrec_format.csv"
    data_info = write_meta_csv(args.data, csv_path, args.seed, args.max_users)
    shim = load_meta(args.meta_src, args.peer)  # noqa: F841 (keeps the op library alive)
    cfg = meta_config(args.meta_src)

    # train_fn seeds only `random`; torch is seeded too here so a seed reproduces the run
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    parts = build(cfg, csv_path, data_info["num_items"])
    model, opt, ar_loss, negatives_sampler = parts["model"], parts["opt"], parts["ar_loss"], parts["negatives_sampler"]

    from generative_recommenders.research.modeling.sequential.features import movielens_seq_features_from_row
    from generative_recommenders.research.trainer.train import get_weighted_loss

    try:
        commit = subprocess.run(["git", "-C", str(META_MIRROR), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except Exception:
        commit = None
    result = {
        "implementation": "meta-research (generative_recommenders/research), CPU driver bench/parity/hstu_meta.py",
        "meta_commit": commit, "meta_src": str(args.meta_src), "gin": GIN,
        "data_dir": str(Path(args.data).resolve()), "data": data_info,
        "seed": args.seed, "steps": args.steps, "eval_every": args.eval_every, "threads": args.threads,
        "torch": torch.__version__, "host": {"cpu": platform.processor() or platform.machine(),
                                             "nproc": os.cpu_count(), "load_at_start": os.getloadavg()},
        "config": {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "notes": "timestamps and ratings are zeros (distrec's ML-1M has neither); all_item_ids = 1..num_items",
        "curve": [],
    }

    def record(step, epoch_float, losses, start, train_seconds):
        t0 = time.perf_counter()
        metrics = evaluate(parts, cfg, int(epoch_float), args.unfiltered)
        eval_s = time.perf_counter() - t0
        row = {"step": step, "epoch": round(epoch_float, 4), **metrics,
               "train_loss": losses[-1] if losses else None,
               "train_loss_mean": sum(losses) / len(losses) if losses else None,
               "train_s": round(train_seconds, 1), "eval_s": round(eval_s, 1),
               "wall_s": round(time.perf_counter() - start, 1)}
        result["curve"].append(row)
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    start = time.perf_counter()
    train_seconds, samples, losses = 0.0, 0, []
    batch_id, epoch = 0, 0
    model.train()
    if args.eval_at_start:
        record(0, 0.0, [], start, 0.0)
    while batch_id < args.steps:
        parts["train_sampler"].set_epoch(epoch)
        for row in iter(parts["train_loader"]):
            t0 = time.perf_counter()
            # ---- train_fn's loop body (model.module -> model: no DDP) ----
            seq_features, target_ids, target_ratings = movielens_seq_features_from_row(
                row, device="cpu", max_output_length=cfg["gr_output_length"] + 1)
            seq_features.past_ids.scatter_(dim=1, index=seq_features.past_lengths.view(-1, 1),
                                           src=target_ids.view(-1, 1))
            opt.zero_grad()
            input_embeddings = model.get_item_embeddings(seq_features.past_ids)
            seq_embeddings = model(past_lengths=seq_features.past_lengths, past_ids=seq_features.past_ids,
                                   past_embeddings=input_embeddings, past_payloads=seq_features.past_payloads)
            supervision_ids = seq_features.past_ids
            negatives_sampler._item_emb = model._embedding_module._item_emb
            ar_mask = supervision_ids[:, 1:] != 0
            loss, aux_losses = ar_loss(lengths=seq_features.past_lengths, output_embeddings=seq_embeddings[:, :-1, :],
                                       supervision_ids=supervision_ids[:, 1:],
                                       supervision_embeddings=input_embeddings[:, 1:, :],
                                       supervision_weights=ar_mask.float(), negatives_sampler=negatives_sampler,
                                       **seq_features.past_payloads)
            loss = get_weighted_loss(loss, aux_losses, weights=cfg["loss_weights"] or {})
            loss.backward()
            opt.step()  # num_warmup_steps = 0: constant lr
            batch_id += 1
            # ----
            train_seconds += time.perf_counter() - t0
            samples += int(target_ids.shape[0])
            losses.append(float(loss.detach()))
            if batch_id % args.eval_every == 0 or batch_id == args.steps:
                record(batch_id, samples / parts["train_users"], losses, start, train_seconds)
                losses = []
            if batch_id >= args.steps:
                break
        epoch += 1
    return result


if __name__ == "__main__":
    main()
