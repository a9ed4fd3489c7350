"""Sampled softmax with per-position uniform negatives (Meta's `LocalNegativesSampler`).

Every labelled position draws its own `num_negatives` random items: with one set shared by a batch
of ~20k positions only ~3.5% of a 3.7k-item catalog gets a negative gradient per step, and HSTU on
ML-1M learned 5x slower (docs/parity.md). The negatives are one gather from the item table,
[N, R, D]; nothing of size [N, catalog] is built, so it scales to million-item catalogs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def sample_negatives(target: torch.Tensor, num_negatives: int, num_items: int) -> torch.Tensor:
    """Uniform item ids in 1..num_items, [N, num_negatives], drawn independently for every position."""
    return torch.randint(1, num_items + 1, (target.shape[0], num_negatives), device=target.device)


def sampled_softmax_loss(query: torch.Tensor, target: torch.Tensor, vectors: Callable[[torch.Tensor], torch.Tensor],
                         negatives: torch.Tensor, temperature: float = 1.0,
                         shared: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each target against its own negatives.

    query [N, D]; target [N]; vectors(ids) -> item vectors [..., D] (normalised by the caller when
    the method wants cosines); negatives [N, R] per position; shared [M] optional extra negatives
    every position sees (e.g. in-batch targets). Accidental hits (a negative equal to the target)
    are masked out.
    """
    with torch.autocast(query.device.type, enabled=False):  # fp32: a bf16 copy of [N, R, D] costs 1.5x
        query = query.float()
        pos = (query * vectors(target).float()).sum(-1, keepdim=True)
        neg = torch.einsum("nd,nrd->nr", query, vectors(negatives).float())
        columns = [pos, neg.masked_fill(negatives == target[:, None], float("-inf"))]
        if shared is not None:
            extra = query @ vectors(shared).float().t()
            columns.append(extra.masked_fill(shared[None, :] == target[:, None], float("-inf")))
        logits = torch.cat(columns, dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros_like(target))
