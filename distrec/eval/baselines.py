"""Reference recommenders evaluated beside a model, under the same protocol and users."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Popularity(nn.Module):
    """Recommends every user the most frequent training items (`item_counts` [num_items + 1], index 0
    padding), scored by their count: items seen equally often tie (and ties count against the target)."""

    def __init__(self, item_counts: np.ndarray):
        super().__init__()
        counts = torch.tensor(item_counts[1:], dtype=torch.float32)
        scores, order = torch.sort(counts, descending=True, stable=True)
        self.register_buffer("top_items", order + 1)
        self.register_buffer("top_scores", scores)

    def recommend(self, batch: dict, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(batch["input_ids"])
        return self.top_items[:width].expand(n, -1), self.top_scores[:width].expand(n, -1)
