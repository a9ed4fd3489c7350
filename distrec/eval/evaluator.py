"""Run a model's `recommend` over evaluation batches and accumulate the metrics.

Used by the `evaluate` stage and by the training engine for validation (which all-reduces
`result.metrics.state()` across ranks before reading it).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from distrec.eval.metrics import MetricAccumulator, conservative_ranks


@dataclass
class Evaluation:
    metrics: MetricAccumulator
    # with filter_history: the same ranking before the history is removed (papers differ on this)
    unfiltered: MetricAccumulator | None = None
    # filled when keep_predictions: user_id, target, rank, items [K], scores [K] (one entry per user)
    predictions: dict[str, list] = field(default_factory=dict)


def drop_history(item_ids: torch.Tensor, scores: torch.Tensor, history: torch.Tensor):
    """Move the items of each user's history to the end of their top list (scores -inf), keeping
    the order of the rest, so the first columns are the best unseen items."""
    seen = (item_ids[:, :, None] == history[:, None, :]).any(-1) & (item_ids > 0)
    order = torch.sort(seen.to(torch.int8), dim=1, stable=True).indices
    item_ids, scores, seen = item_ids.gather(1, order), scores.float().gather(1, order), seen.gather(1, order)
    return item_ids, scores.masked_fill(seen, float("-inf"))


def precision_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def recommend_in_pieces(model, batch: dict, k: int, beam_rows: int | None = None, **kwargs):
    """`model.recommend(batch, k)`, on pieces of the batch small enough that a beam search holds at most
    `beam_rows` (user, beam) rows at once: each row carries its own decoder state (a flattened SID
    decoder's KV cache of the whole history), so memory grows with users x beam width, not with users.
    Rankings are per user, so the pieces give the same results. Models without `beam_width` run whole.
    `kwargs` go to `recommend` (items_from)."""
    width = getattr(model, "beam_width", None)
    users = len(batch["input_ids"])
    per_piece = max(1, beam_rows // max(width, k)) if width and beam_rows else users
    if per_piece >= users:
        return model.recommend(batch, k, **kwargs)
    pieces = [model.recommend({n: v[i:i + per_piece] if torch.is_tensor(v) else v for n, v in batch.items()}, k,
                              **kwargs)
              for i in range(0, users, per_piece)]
    return torch.cat([ids for ids, _ in pieces]), torch.cat([scores for _, scores in pieces])


@torch.no_grad()
def evaluate(model, batches, *, ks, num_items: int, filter_history: bool = False, keep_predictions: bool = False,
             precision: str = "fp32", progress: bool = False, total: int | None = None,
             beam_rows: int | None = None) -> Evaluation:
    """Evaluate `model` on `batches`: dicts with `input_ids` [B, T], `target` [B], `user_ids` [B],
    or (dict, n_real) pairs as `distrec.data.batches.eval_batches` yields them, where only the first
    n_real rows count (the rest pad a rank's share so every rank runs the same number of forwards).

    The model is asked for max(ks) + 1 items (plus the history width with `filter_history`), so
    every rank below max(ks) is exact under conservative tie-breaking. With `filter_history` the
    ranking before filtering is accumulated too (`Evaluation.unfiltered`), from the same forward.
    `beam_rows`: see `recommend_in_pieces` (eval.beam_rows).
    """
    ks = sorted(int(k) for k in ks)
    acc = MetricAccumulator(ks, num_items)
    out = Evaluation(acc, MetricAccumulator(ks, num_items) if filter_history else None)
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    try:
        for batch in tqdm(batches, total=total, desc="evaluate", unit="batch", disable=not progress):
            batch, n_real = batch if isinstance(batch, tuple) else (batch, None)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            width = ks[-1] + 1 + (batch["input_ids"].shape[1] if filter_history else 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with precision_context(device, precision):
                item_ids, scores = recommend_in_pieces(model, batch, width, beam_rows)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            if n_real is not None:
                batch = {k: v[:n_real] if torch.is_tensor(v) else v for k, v in batch.items()}
                item_ids, scores = item_ids[:n_real], scores[:n_real]
            if filter_history:
                top, top_scores = item_ids[:, :ks[-1] + 1], scores[:, :ks[-1] + 1]
                out.unfiltered.update(conservative_ranks(top, top_scores, batch["target"]), top[:, :ks[-1]], seconds,
                                      batch["input_ids"])
                item_ids, scores = drop_history(item_ids, scores, batch["input_ids"])
                item_ids, scores = item_ids[:, :ks[-1] + 1], scores[:, :ks[-1] + 1]
            ranks = conservative_ranks(item_ids, scores, batch["target"])
            acc.update(ranks, item_ids[:, :ks[-1]], seconds, batch["input_ids"])
            if keep_predictions:
                _keep(out.predictions, batch, ranks, item_ids[:, :ks[-1]], scores[:, :ks[-1]])
    finally:
        model.train(was_training)
    return out


def _keep(predictions: dict, batch: dict, ranks, item_ids, scores) -> None:
    columns = {"user_id": batch["user_ids"], "target": batch["target"], "rank": ranks,
               "items": item_ids, "scores": scores.float()}
    for name, values in columns.items():
        predictions.setdefault(name, []).extend(values.cpu().tolist())
