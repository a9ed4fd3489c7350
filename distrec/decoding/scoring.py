"""Score every item of the catalog, chunk by chunk, keeping a running top-k.

Two scorers share the loop:
- exhaustive log-likelihood (small catalogs): the model scores a chunk of items by the
  teacher-forced log-probability of their full SIDs (`score_chunk` is the model's);
- RPG's holistic scoring: one forward gives per-digit log-probabilities P [B, m, M] and an item's
  score is the sum (or mean) over its digits of P[b, d, codes[item, d]] (`holistic_scores`).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def topk_over_catalog(score_chunk, num_items: int, k: int, chunk_size: int = 4096, device=None):
    """Top-k items 1..num_items under `score_chunk(item_ids [C]) -> scores [B, C]`.

    Memory stays at [B, k + chunk_size] however large the catalog is.
    Returns (item_ids [B, k] int64, scores [B, k] float32), best first.
    """
    best_ids = best_scores = None
    for start in range(1, num_items + 1, chunk_size):
        ids = torch.arange(start, min(start + chunk_size, num_items + 1), device=device)
        scores = score_chunk(ids).float()
        ids = ids.unsqueeze(0).expand_as(scores)
        if best_ids is not None:
            scores = torch.cat([best_scores, scores], dim=1)
            ids = torch.cat([best_ids, ids], dim=1)
        best_scores, pos = scores.topk(min(k, scores.shape[1]), dim=1)
        best_ids = ids.gather(1, pos)
    return best_ids, best_scores


def holistic_scores(digit_logprobs: torch.Tensor, codes: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Scores [B, C] of C items with codes [C, m] under per-digit log-probs [B, m, M].

    One gather per digit keeps memory at [B, C] (a [B, C, m] gather would not fit large chunks).
    """
    scores = torch.zeros(digit_logprobs.shape[0], codes.shape[0], device=digit_logprobs.device)
    for digit in range(codes.shape[1]):
        scores += digit_logprobs[:, digit].index_select(1, codes[:, digit]).float()
    if reduce == "mean":
        scores /= codes.shape[1]
    elif reduce != "sum":
        raise ValueError(f"reduce must be 'sum' or 'mean', not {reduce!r}")
    return scores


@torch.no_grad()
def holistic_topk(digit_logprobs: torch.Tensor, codes: torch.Tensor, k: int, chunk_size: int = 4096,
                  reduce: str = "mean"):
    """Exhaustive holistic top-k over the whole catalog; codes [N + 1, m] (row 0 = padding)."""
    return topk_over_catalog(lambda ids: holistic_scores(digit_logprobs, codes[ids], reduce),
                             codes.shape[0] - 1, k, chunk_size, device=digit_logprobs.device)
