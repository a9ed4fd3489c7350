"""HSTU item-ID retrieval (Zhai et al., ICML'24; Meta's generative-recommenders benchmarks).

An HSTU over item-ID embeddings; at every position the L2-normalised hidden state (the user
embedding) is matched against L2-normalised item embeddings (shared with the input table).
Training: sampled softmax at temperature `method.temperature` (0.05) against `method.num_negatives`
uniform random items drawn for every labelled position (Meta's `LocalNegativesSampler`), plus (with
`method.in_batch_negatives`) up to as many distinct targets of the batch, shared by its positions;
accidental hits are masked out. `recommend` is an exact
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
from distrec.models.blocks.init import reinit
from distrec.models.blocks.negatives import sample_negatives, sampled_softmax_loss
from distrec.models.config import QueryTime
from distrec.models.presets import resolve_dims
from distrec.models.recommender import Recommender




def init_items(emb: nn.Embedding) -> None:
    """Meta's item table: truncated N(0, 0.02) at +-2 sigma, the padding row 0."""
    nn.init.trunc_normal_(emb.weight, std=0.02, a=-0.04, b=0.04)
    with torch.no_grad():
        emb.weight[0].zero_()

class HSTURetrieval(Recommender):
    name = "hstu_retrieval"
    uses_sids = False

    def __init__(self, num_items: int, d_model: int = 50, n_layers: int = 2, n_heads: int = 1, dropout: float = 0.2,
                 max_history: int = 200, num_negatives: int = 128, temperature: float = 0.05,
                 in_batch_negatives: bool = False, num_time_buckets: int = 128, attn_dim: int | None = None,
                 linear_dim: int | None = None, kernel: str = "pytorch", init: str = "meta", norm_affine: bool = False,
                 query_time: str = "next", activation_checkpointing: bool = False):
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"method.num_negatives={num_negatives} must be >= 1 for hstu_retrieval")
        self.query_time = QueryTime(query_time)  # the time a position's time-gap bias measures from
        self.num_items, self.max_history, self.d_model = num_items, max_history, d_model
        self.num_negatives, self.temperature, self.in_batch = num_negatives, temperature, in_batch_negatives
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        reinit(self.item_emb, init_items)
        self.backbone = HSTU(d_model, n_layers, n_heads, dropout, max_history, num_time_buckets, attn_dim, linear_dim,
                             kernel, init=init, norm_affine=norm_affine,
                             activation_checkpointing=activation_checkpointing)

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        dims = resolve_dims(model_cfg)
        return cls(num_items=catalog.num_items, d_model=dims.d_model, n_layers=dims.n_layers, n_heads=dims.n_heads,
                   dropout=dims.dropout, max_history=dims.max_history, num_negatives=method_cfg.num_negatives,
                   temperature=method_cfg.temperature, in_batch_negatives=method_cfg.in_batch_negatives,
                   num_time_buckets=dims.num_time_buckets, attn_dim=dims.head_dim, linear_dim=dims.linear_dim,
                   kernel=dims.kernel, init=dims.init, norm_affine=dims.norm_affine,
                   query_time=method_cfg.query_time, activation_checkpointing=dims.activation_checkpointing)

    def encode(self, input_ids: torch.Tensor, timestamps: torch.Tensor | None = None,
               next_timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state after every position [B, T, D] of left-padded histories (normalise to get
        the user embedding). With `method.query_time=next` the time-gap bias of position i measures
        from the time of the item after it (`next_timestamps`: the target's, or the request time),
        as Meta's `RelativeBucketedTimeAndPositionBasedBias` does; `current` from item i's own time."""
        input_ids = input_ids[:, -self.max_history:]
        if timestamps is not None:
            timestamps = timestamps[:, -self.max_history:]
        query_times = None
        if timestamps is not None and self.query_time == "next":
            if next_timestamps is None:  # the model was trained on them: without, its time bias means another thing
                raise ValueError("method.query_time=next needs the batch's next_timestamps (the time of the item "
                                 "after each position; at serving time the request time) beside timestamps")
            query_times = next_timestamps[:, -self.max_history:]
        T = input_ids.shape[1]
        pad = input_ids == 0
        positions = torch.arange(self.max_history - T, self.max_history, device=input_ids.device)
        x = self.item_emb(input_ids) * math.sqrt(self.d_model)
        return self.backbone(x, pad=pad, timestamps=timestamps, positions=positions, query_timestamps=query_times)

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised item vectors of `ids` (all items with None). When more ids are asked than the
        catalog holds (per-position negatives: [N, R]), the table is normalised once and then
        gathered: normalising every gathered copy cost 10x more on ML-1M."""
        if ids is None or ids.numel() > self.item_emb.num_embeddings:
            table = F.normalize(self.item_emb.weight.float(), dim=-1)
            return table if ids is None else table[ids]
        return F.normalize(self.item_emb(ids).float(), dim=-1)

    def _in_batch(self, target: torch.Tensor) -> torch.Tensor | None:
        if not self.in_batch:
            return None
        distinct = target.unique()
        return distinct[torch.randperm(len(distinct), device=target.device)[: self.num_negatives]]

    def forward(self, batch: dict) -> dict:
        input_ids = batch["input_ids"][:, -self.max_history:]
        target_ids = batch["target_ids"][:, -self.max_history:]
        hidden = self.encode(input_ids, batch.get("timestamps"), batch.get("next_timestamps"))
        labelled = target_ids > 0
        u, target = F.normalize(hidden[labelled].float(), dim=-1), target_ids[labelled]  # [N, D], [N]
        negatives = sample_negatives(target, self.num_negatives, self.num_items)
        loss = sampled_softmax_loss(u, target, self.item_vectors, negatives, self.temperature, self._in_batch(target))
        return {"loss": loss, "labelled_positions": labelled.sum().float()}

    @torch.no_grad()
    def score_all(self, batch: dict) -> torch.Tensor:
        """Cosine score of every item after each history [B, num_items + 1] (padding column -inf), fp32."""
        hidden = self.encode(batch["input_ids"], batch.get("timestamps"), batch.get("next_timestamps"))
        user = F.normalize(hidden[:, -1].float(), dim=-1)
        with torch.autocast(user.device.type, enabled=False):
            scores = user @ self.item_vectors().t()
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def recommend(self, batch: dict, k: int):
        """Full-catalog top-k item ids [B, k] (never the padding id) and their scores."""
        top = self.score_all(batch).topk(min(k, self.num_items), dim=1)
        return top.indices, top.values
