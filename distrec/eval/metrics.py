"""Ranking metrics of a single held-out target: Recall@K (= HR@K) and NDCG@K.

Ranks are 0-based: rank r means r other items are placed above the target. Ties are broken
against the target (conservative): an item scoring exactly as much as the target counts as
ranked above it, so a model that scores everything equally gets no credit.

`MetricAccumulator` keeps only sums, counts and a coverage bitmap in one float64 tensor, so the
engine can all-reduce it across ranks (`dist.all_reduce(acc.state(), SUM)`, then `acc.load(...)`).
"""

from __future__ import annotations

import torch


def conservative_ranks(item_ids: torch.Tensor, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of `target` [B] given a top-W list `item_ids`/`scores` [B, W] sorted by score.

    A target missing from the list gets rank W. A target in the list is ranked below every other
    listed item with a score >= its own. Ask the model for one more item than the largest K: then
    every rank < K is exact (the extra item shows whether ties run past the end of the list).
    """
    B, W = item_ids.shape
    is_target = item_ids == target[:, None]
    found = is_target.any(dim=1)
    scores = scores.float()
    target_score = torch.where(is_target, scores, torch.full_like(scores, float("-inf"))).max(dim=1).values
    above_or_tied = ((scores >= target_score[:, None]) & ~is_target).sum(dim=1)
    return torch.where(found, above_or_tied, torch.full_like(above_or_tied, W))


def ranks_from_scores(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based conservative rank of `target` [B] among all columns of full scores [B, V]."""
    target_score = scores.gather(1, target[:, None])
    return (scores >= target_score).sum(dim=1) - 1


def hits_and_ndcg(ranks: torch.Tensor, ks) -> dict[str, torch.Tensor]:
    """Per-user Recall@K (0/1) and NDCG@K (1/log2(rank+2) when rank < K) for each K."""
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    out = {}
    for k in ks:
        hit = (ranks < k).double()
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = hit * gain
    return out


class MetricAccumulator:
    """Running sums of the metrics over users (and ranks). All state is one float64 tensor:

    [metric sums..., reciprocal-rank sum (MRR@max K), users, returned ids, invalid ids, recommend seconds,
     seen@K sums..., coverage bitmap over (len(ks), num_items + 1)]

    seen@K: the share of the top K taken by items of the user's own history. A dataset without repeats
    (Amazon's: no target is in its history) makes every such slot a wasted one.
    """

    def __init__(self, ks, num_items: int):
        self.ks = sorted(int(k) for k in ks)
        self.num_items = num_items
        self.names = [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]
        self.scalars = torch.zeros(len(self.names) + 5 + len(self.ks), dtype=torch.float64)
        self.covered = torch.zeros(len(self.ks), num_items + 1, dtype=torch.float64)

    def update(self, ranks: torch.Tensor, item_ids: torch.Tensor | None = None, seconds: float = 0.0,
               history: torch.Tensor | None = None) -> None:
        """Add a batch: target ranks [B], the returned top lists [B, W] (for invalid-ID rate and
        coverage), the wall time spent recommending for these users, and their histories [B, T]
        (padding 0; for seen@K)."""
        ranks = ranks.detach().cpu()
        per_user = hits_and_ndcg(ranks, self.ks)
        n = len(self.names)
        self.scalars[:n] += torch.stack([per_user[name].sum() for name in self.names])
        top_k = ranks < self.ks[-1]
        self.scalars[n] += torch.where(top_k, 1.0 / (ranks.double() + 1.0), 0.0).sum()  # MRR@max(ks)
        self.scalars[n + 1] += ranks.numel()
        self.scalars[n + 4] += seconds
        if item_ids is not None:
            item_ids = item_ids.detach().cpu()
            valid = (item_ids >= 1) & (item_ids <= self.num_items)
            self.scalars[n + 2] += item_ids.numel()
            self.scalars[n + 3] += (~valid).sum()
            top = item_ids[:, :self.ks[-1]]  # the lists may be wider (ties, filter_history): seen@K needs no more
            seen = None if history is None else \
                ((top[:, :, None] == history.detach().cpu()[:, None, :]).any(-1) & (top > 0)).double()
            for i, k in enumerate(self.ks):
                ids = item_ids[:, :k][valid[:, :k]]
                self.covered[i, ids] = 1.0
                if seen is not None:
                    self.scalars[n + 5 + i] += seen[:, :k].sum() / k

    def state(self) -> torch.Tensor:
        """All state as one flat float64 tensor (all-reduce it with SUM)."""
        return torch.cat([self.scalars, self.covered.flatten()])

    def load(self, state: torch.Tensor) -> None:
        """Replace the state by a (reduced) tensor from `state()`."""
        state = state.detach().cpu().double()
        n = self.scalars.numel()
        self.scalars = state[:n].clone()
        self.covered = (state[n:].view_as(self.covered) > 0).double()

    @property
    def users(self) -> int:
        return int(self.scalars[len(self.names) + 1])

    def result(self) -> dict[str, float]:
        n, users = len(self.names), max(self.users, 1)
        out = {name: float(self.scalars[i] / users) for i, name in enumerate(self.names)}
        out[f"mrr@{self.ks[-1]}"] = float(self.scalars[n] / users)
        returned = float(self.scalars[n + 2])
        out["invalid_id_rate"] = float(self.scalars[n + 3] / returned) if returned else 0.0
        for i, k in enumerate(self.ks):
            out[f"coverage@{k}"] = float(self.covered[i, 1:].sum() / max(self.num_items, 1))
            out[f"seen@{k}"] = float(self.scalars[n + 5 + i] / users)
        out["latency_ms_per_user"] = 1000.0 * float(self.scalars[n + 4]) / users
        out["users"] = self.users
        return out

