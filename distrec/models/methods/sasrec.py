"""SASRec (Kang & McAuley, ICDM'18): causal self-attention over item-ID embeddings.

The history is left-padded, so the newest item always sits in the last column; learned positions
are counted from the right (the newest item always gets position `max_history - 1`), as in the
original fixed-length formulation. Output item scores reuse the input item embeddings (tied).

Losses (`method.loss`):
- `softmax`: full cross-entropy over the whole catalog (the strongest; cheap up to ~1e5 items);
- `sampled_softmax`: the target against `method.num_negatives` uniform negatives drawn for every
  position (accidental hits masked out; distrec/models/blocks/negatives.py);
- `bce`: the original paper's loss: one uniform negative per position, binary cross-entropy.
Pure torch: no loops over tokens, works under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.errors import ConfigError
from distrec.models.blocks.checkpointing import run_block
from distrec.models.blocks.negatives import sample_negatives, sampled_softmax_loss
from distrec.models.config import Loss
from distrec.models.presets import resolve_dims
from distrec.models.recommender import Recommender

GROUP_WIDTHS = (8, 16, 32)  # histories are encoded in groups up to these lengths (then max_history)


class CausalSelfAttentionBlock(nn.Module):
    """Pre-LayerNorm Transformer block: masked multi-head self-attention, then a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(B, T, D)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class SASRec(Recommender):
    name = "sasrec"
    uses_sids = False

    def __init__(self, num_items: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 1, d_ff: int = 256,
                 dropout: float = 0.2, max_history: int = 50, loss: str = "softmax", num_negatives: int = 128,
                 temperature: float = 1.0, activation_checkpointing: bool = False):
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        loss = Loss(loss)
        if loss == "sampled_softmax" and num_negatives < 1:
            raise ConfigError(f"method.num_negatives={num_negatives} must be >= 1 for loss=sampled_softmax")
        self.num_items, self.max_history = num_items, max_history
        self.loss_kind, self.num_negatives, self.temperature = loss, num_negatives, temperature
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(max_history, d_model)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalSelfAttentionBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        dims = resolve_dims(model_cfg)
        return cls(num_items=catalog.num_items, d_model=dims.d_model, n_layers=dims.n_layers, n_heads=dims.n_heads,
                   d_ff=dims.d_ff, dropout=dims.dropout, max_history=dims.max_history, loss=method_cfg.loss,
                   num_negatives=method_cfg.num_negatives, temperature=method_cfg.temperature,
                   activation_checkpointing=dims.activation_checkpointing)

    # ------------------------------------------------------------------ encoder

    def trim(self, input_ids: torch.Tensor) -> int:
        """Number of trailing columns to keep: at most max_history, and no column that is padding in
        every row (positions count from the right, so dropping them changes nothing but the cost)."""
        T = min(input_ids.shape[1], self.max_history)
        used = (input_ids[:, -T:] > 0).any(dim=0)
        return T - int(used.to(torch.int8).argmax()) if bool(used.any()) else 1

    def length_groups(self, input_ids: torch.Tensor, *aligned: torch.Tensor):
        """Yield (rows, input_ids[rows], *aligned[rows]) for rows of similar history length, cut to
        that length. Real histories are mostly short with a few long ones: encoding each group at
        its own width skips most of the padding (rows are independent, so results are the same).
        Empty groups are yielded too: every rank then makes the same module calls, which ZeRO-3's
        parameter gathering (a collective per module call) needs."""
        T = min(input_ids.shape[1], self.max_history)
        lengths = (input_ids[:, -T:] > 0).sum(dim=1)
        lower = -1
        for width in [w for w in GROUP_WIDTHS if w < T] + [T]:
            rows = ((lengths > lower) & (lengths <= width)).nonzero().squeeze(1)
            lower = width
            yield (rows, input_ids[rows, -width:], *(a[rows, -width:] for a in aligned))

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden state at every kept position [B, T', d] of left-padded histories [B, T]."""
        input_ids = input_ids[:, -self.trim(input_ids):]  # the newest items, no all-padding columns
        T = input_ids.shape[1]
        valid = input_ids > 0
        positions = torch.arange(self.max_history - T, self.max_history, device=input_ids.device)
        x = self.emb_dropout((self.item_emb(input_ids) + self.pos_emb(positions)) * valid.unsqueeze(-1))
        # Causal, padding keys hidden; every query also sees itself so no row is fully masked
        # (padding queries produce garbage that no loss or score reads).
        causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
        mask = (causal & valid[:, None, :]) | torch.eye(T, dtype=torch.bool, device=input_ids.device)
        mask = mask.unsqueeze(1)  # [B, 1, T, T], broadcast over heads
        for block in self.blocks:
            x = run_block(block, x, mask, recompute=self.activation_checkpointing)
        return self.final_norm(x)

    def item_scores(self, hidden: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Scores of every catalog item (column 0, the padding id, is -inf) [N, num_items + 1].

        `exact` computes them in fp32 even under bf16 autocast: bf16 scores (8-bit mantissa) tie
        often among thousands of items, and ranking treats ties conservatively.
        """
        weight = self.item_emb.weight
        if exact:
            with torch.autocast(hidden.device.type, enabled=False):
                scores = hidden.float() @ weight.float().t()
        else:
            scores = (hidden @ weight.t()).float()
        if self.temperature != 1.0:
            scores = scores / self.temperature
        scores[:, 0] = float("-inf")
        return scores

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict) -> dict:
        hs, targets = [], []
        for _, input_ids, target_ids in self.length_groups(batch["input_ids"], batch["target_ids"]):
            hidden = self.encode(input_ids)
            target_ids = target_ids[:, -hidden.shape[1]:]
            labelled = target_ids > 0
            hs.append(hidden[labelled])
            targets.append(target_ids[labelled])
        h, target = torch.cat(hs), torch.cat(targets)  # every labelled position: [N, d], [N]
        if self.loss_kind == "softmax":
            loss = F.cross_entropy(self.item_scores(h), target)
        elif self.loss_kind == "sampled_softmax":
            loss = self._sampled_softmax(h, target)
        else:
            loss = self._bce(h, target)
        return {"loss": loss, "labelled_positions": torch.tensor(float(target.numel()))}

    def _sampled_softmax(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        negatives = sample_negatives(target, self.num_negatives, self.num_items)
        return sampled_softmax_loss(h, target, self.item_emb, negatives, self.temperature)

    def _bce(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        negatives = sample_negatives(target, 1, self.num_items)[:, 0]
        pos = (h * self.item_emb(target)).sum(-1).float() / self.temperature
        neg = (h * self.item_emb(negatives)).sum(-1).float() / self.temperature
        keep = negatives != target  # an accidental hit is not a negative
        return F.softplus(-pos).mean() + (F.softplus(neg) * keep).sum() / keep.sum().clamp(min=1)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def score_all(self, batch: dict) -> torch.Tensor:
        """Scores of every item for the next step after each history [B, num_items + 1]."""
        rows, last = [], []
        for r, input_ids in self.length_groups(batch["input_ids"]):
            rows.append(r)
            last.append(self.encode(input_ids)[:, -1])
        order, last = torch.cat(rows), torch.cat(last)
        hidden = torch.empty_like(last)
        hidden[order] = last
        return self.item_scores(hidden, exact=True)

    @torch.no_grad()
    def recommend(self, batch: dict, k: int):
        """Full-catalog top-k item ids [B, k] (never the padding id) and their scores."""
        scores = self.score_all(batch)
        top = scores.topk(min(k, self.num_items), dim=1)
        return top.indices, top.values
