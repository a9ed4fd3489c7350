"""HSTU item-ID retrieval (Zhai et al., ICML'24; Meta's generative-recommenders benchmarks).

An HSTU over item-ID embeddings; at every position the L2-normalised hidden state (the user
embedding) is matched against L2-normalised item embeddings (shared with the input table).
Training: sampled softmax at temperature `method.temperature` (0.05) against `method.num_negatives`
uniform random items shared by the batch, plus (with `method.in_batch_negatives`) up to as many
distinct targets of the batch; accidental hits are masked out. `recommend` is an exact
full-catalog top-K of cosine similarities.

Histories are left-padded, so positions count from the right (the newest item sits at
max_history - 1), as in SASRec here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distrec.errors import ConfigError
from distrec.models.backbones.hstu import HSTU
from distrec.models.presets import resolve_dims


class HSTURetrieval(nn.Module):
    def __init__(self, num_items: int, d_model: int = 50, n_layers: int = 2, n_heads: int = 1, dropout: float = 0.2,
                 max_history: int = 200, num_negatives: int = 128, temperature: float = 0.05,
                 in_batch_negatives: bool = False, num_time_buckets: int = 128, attn_dim: int | None = None,
                 linear_dim: int | None = None, kernel: str = "pytorch"):
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"method.num_negatives={num_negatives} must be >= 1 for hstu_retrieval")
        self.num_items, self.max_history, self.d_model = num_items, max_history, d_model
        self.num_negatives, self.temperature, self.in_batch = num_negatives, temperature, in_batch_negatives
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.backbone = HSTU(d_model, n_layers, n_heads, dropout, max_history, num_time_buckets, attn_dim, linear_dim, kernel)

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        dims = resolve_dims(model_cfg)
        return cls(num_items=catalog.num_items, d_model=dims.d_model, n_layers=dims.n_layers, n_heads=dims.n_heads,
                   dropout=dims.dropout, max_history=dims.max_history, num_negatives=method_cfg.num_negatives,
                   temperature=method_cfg.temperature, in_batch_negatives=method_cfg.in_batch_negatives,
                   num_time_buckets=dims.num_time_buckets, attn_dim=dims.head_dim, linear_dim=dims.linear_dim,
                   kernel=dims.kernel)

    def encode(self, input_ids: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state after every position [B, T, D] of left-padded histories (normalise to get
        the user embedding)."""
        input_ids = input_ids[:, -self.max_history:]
        if timestamps is not None:
            timestamps = timestamps[:, -self.max_history:]
        T = input_ids.shape[1]
        pad = input_ids == 0
        positions = torch.arange(self.max_history - T, self.max_history, device=input_ids.device)
        x = self.item_emb(input_ids) * math.sqrt(self.d_model)
        return self.backbone(x, pad=pad, timestamps=timestamps, positions=positions)

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.item_emb.weight if ids is None else self.item_emb(ids)
        return F.normalize(weight.float(), dim=-1)

    def _negatives(self, target: torch.Tensor) -> torch.Tensor:
        negatives = torch.randint(1, self.num_items + 1, (self.num_negatives,), device=target.device)
        if self.in_batch:
            distinct = target.unique()
            distinct = distinct[torch.randperm(len(distinct), device=target.device)[: self.num_negatives]]
            negatives = torch.cat([negatives, distinct])
        return negatives

    def forward(self, batch: dict) -> dict:
        input_ids = batch["input_ids"][:, -self.max_history:]
        target_ids = batch["target_ids"][:, -self.max_history:]
        hidden = self.encode(input_ids, batch.get("timestamps"))
        labelled = target_ids > 0
        u, target = F.normalize(hidden[labelled].float(), dim=-1), target_ids[labelled]  # [N, D], [N]
        negatives = self._negatives(target)
        pos = (u * self.item_vectors(target)).sum(-1, keepdim=True)
        neg = u @ self.item_vectors(negatives).t()
        neg = neg.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros_like(target))
        return {"loss": loss, "labelled_positions": labelled.sum().float()}

    @torch.no_grad()
    def score_all(self, batch: dict) -> torch.Tensor:
        """Cosine score of every item after each history [B, num_items + 1] (padding column -inf), fp32."""
        user = F.normalize(self.encode(batch["input_ids"], batch.get("timestamps"))[:, -1].float(), dim=-1)
        with torch.autocast(user.device.type, enabled=False):
            scores = user @ self.item_vectors().t()
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def recommend(self, batch: dict, k: int):
        """Full-catalog top-k item ids [B, k] (never the padding id) and their scores."""
        top = self.score_all(batch).topk(min(k, self.num_items), dim=1)
        return top.indices, top.values
