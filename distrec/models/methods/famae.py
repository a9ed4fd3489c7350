"""FAMAE (ReSID): field-aware masked auto-encoding of the target item of a history.

Every item is described by J fields (item id first, then e.g. attribute sets, category levels,
year bucket). A position's token is the sum of its item's field embeddings (a multi-valued field
is mean-pooled) plus a position embedding; a bidirectional Transformer reads the history plus the
target item as the last position. Only the TARGET is masked: K ~ U{1..J} of its fields are
replaced by field-specific mask tokens, and the hidden state there predicts each masked field:

    L = sum_{k masked} alpha_k * -log q_k(f_k | h_T),  q_k = softmax over field k's vocabulary of
        sqrt(d) * cos(W_k h_T, e_v)   (a per-field linear head W_k; e_v the field's own embeddings)

Large vocabularies (the item id) use a sampled softmax (the positive + `negatives` uniformly
drawn values shared by the batch); multi-valued fields average -log q over the item's values.
The item representation for quantization is the concatenation of the item's field embeddings
(`item_representations`), not h_T. Pure torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FieldSpec:
    name: str
    vocab: int  # values 1..vocab-1; 0 = missing / padding
    multi: bool = False  # multi-valued (a set of ids per item)
    weight: float = 1.0  # alpha_k


def masked_mean(emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of the embeddings of the non-zero ids along the last id axis: [..., V, d] -> [..., d]."""
    keep = (ids > 0).unsqueeze(-1).to(emb.dtype)
    return (emb * keep).sum(-2) / keep.sum(-2).clamp(min=1)


class FAMAE(nn.Module):
    def __init__(self, fields: list[FieldSpec], item_values: list[torch.Tensor], dim: int = 128, layers: int = 2,
                 heads: int = 4, ffn: int = 512, dropout: float = 0.1, max_len: int = 33, negatives: int = 128,
                 sampled_min_vocab: int = 2048):
        """`item_values[j]`: field j of every item, int64 [num_items + 1] (single) or
        [num_items + 1, max values] (multi, 0-padded); row 0 is padding. Field 0 must be the item id."""
        super().__init__()
        self.fields, self.dim, self.max_len = fields, dim, max_len
        self.negatives, self.sampled_min_vocab = negatives, sampled_min_vocab
        for j, values in enumerate(item_values):
            self.register_buffer(f"values_{j}", values.long(), persistent=True)
        self.embeddings = nn.ModuleList(nn.Embedding(f.vocab, dim, padding_idx=0) for f in fields)
        self.mask_tokens = nn.Parameter(torch.randn(len(fields), dim) * 0.02)
        self.heads = nn.ModuleList(nn.Linear(dim, dim) for _ in fields)
        self.position = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="relu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.position.weight, std=0.02)  # same scale as the fields: items must not drown
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                emb.weight[0].zero_()

    @property
    def num_items(self) -> int:
        return self.values_0.shape[0] - 1

    def values(self, j: int) -> torch.Tensor:
        return getattr(self, f"values_{j}")

    # ---------------------------------------------------------------- encoding
    def field_embedding(self, j: int, items: torch.Tensor) -> torch.Tensor:
        """Embedding of field j for item ids of any shape -> [..., d] (zeros where missing)."""
        ids = self.values(j)[items]
        emb = self.embeddings[j](ids)
        return masked_mean(emb, ids) if self.fields[j].multi else emb

    def encode(self, seq: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """h at the last position. `seq` [B, L] item ids (left-padded, target last);
        `target_mask` [B, J] bool: the target's fields replaced by their mask token."""
        B, L = seq.shape
        tokens = torch.zeros(B, L, self.dim, device=seq.device)
        for j in range(len(self.fields)):
            emb = self.field_embedding(j, seq)
            last = torch.where(target_mask[:, j, None], self.mask_tokens[j].expand(B, -1), emb[:, -1])
            tokens = tokens + torch.cat([emb[:, :-1], last[:, None]], 1)
        pad = seq == 0
        pad[:, -1] = False  # the target slot always attends (it may be all-masked)
        tokens = tokens + self.position(torch.arange(L, device=seq.device) + self.max_len - L)[None]
        h = self.encoder(self.dropout(tokens), src_key_padding_mask=pad)
        return self.norm(h[:, -1])

    def logits(self, j: int, h: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """sqrt(d) * cos(W_j h, e_v) for every value v (or for `candidates` [C]).

        Over the whole vocabulary, value 0 (missing / padding) gets -inf: it is never a target, and
        its embedding must stay the zero vector the padding positions rely on."""
        table = self.embeddings[j].weight if candidates is None else self.embeddings[j](candidates)
        q = F.normalize(self.heads[j](h).float(), dim=-1)
        logits = math.sqrt(self.dim) * q @ F.normalize(table.float(), dim=-1).T
        if candidates is None:
            logits[:, 0] = float("-inf")
        return logits

    # ---------------------------------------------------------------- training
    @staticmethod
    def sample_masks(batch: int, num_fields: int, generator=None, device=None) -> torch.Tensor:
        """[B, J] bool: K ~ U{1..J} fields of each target, chosen uniformly."""
        k = torch.randint(1, num_fields + 1, (batch, 1), generator=generator, device=device)
        rank = torch.rand(batch, num_fields, generator=generator, device=device).argsort(1).argsort(1)
        return rank < k

    def field_loss(self, j: int, h: torch.Tensor, target_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample -log q_j of the target's value(s) [B] and whether the target has one [B]."""
        spec, truth = self.fields[j], self.values(j)[target_items]
        if spec.multi:
            logp = F.log_softmax(self.logits(j, h), -1)
            present = truth > 0
            nll = -logp.gather(1, truth).masked_fill(~present, 0.0).sum(1) / present.sum(1).clamp(min=1)
            return nll, present.any(1)
        if spec.vocab > self.sampled_min_vocab:  # sampled softmax: positive + shared uniform negatives
            neg = torch.randint(1, spec.vocab, (self.negatives,), device=h.device)
            pos_logit = (math.sqrt(self.dim) * F.normalize(self.heads[j](h).float(), dim=-1)
                         * F.normalize(self.embeddings[j](truth).float(), dim=-1)).sum(-1, keepdim=True)
            neg_logits = self.logits(j, h, neg).masked_fill(neg[None, :] == truth[:, None], float("-inf"))
            nll = -F.log_softmax(torch.cat([pos_logit, neg_logits], 1), -1)[:, 0]
        else:
            nll = F.cross_entropy(self.logits(j, h), truth, reduction="none")
        return nll, truth > 0

    def forward(self, batch: dict) -> dict:
        seq = famae_sequences(batch["input_ids"], batch["target_ids"], self.max_len)
        target = seq[:, -1]
        mask = self.sample_masks(len(seq), len(self.fields), device=seq.device)
        h = self.encode(seq, mask)
        total = torch.zeros(len(seq), device=seq.device)
        out = {}
        for j, spec in enumerate(self.fields):
            nll, present = self.field_loss(j, h, target)
            use = mask[:, j] & present
            total = total + spec.weight * torch.where(use, nll, torch.zeros_like(nll))
            out[f"loss_{spec.name}"] = (nll[use].mean() if use.any() else nll.sum() * 0).detach()
        out["loss"] = total.mean()
        return out

    # ---------------------------------------------------------------- inference and diagnostics
    def with_target_slot(self, history: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] history (left-padded) -> [B, <= max_len] with the target (or 0) appended."""
        slot = torch.zeros(len(history), 1, dtype=history.dtype, device=history.device) if target is None \
            else target[:, None]
        return torch.cat([history[:, -(self.max_len - 1):], slot], 1)

    @torch.no_grad()
    def recommend(self, batch: dict, k: int):
        """Diagnostic 1: next items from h_T with ALL target fields masked (item-id head)."""
        seq = self.with_target_slot(batch["input_ids"])
        mask = torch.ones(len(seq), len(self.fields), dtype=torch.bool, device=seq.device)
        return self._top_items(self.encode(seq, mask), k)

    @torch.no_grad()
    def recommend_id_masked(self, batch: dict, k: int):
        """Diagnostic 2: the target's id from h_T with ONLY the item-id field masked."""
        seq = self.with_target_slot(batch["input_ids"], batch["target"])
        mask = torch.zeros(len(seq), len(self.fields), dtype=torch.bool, device=seq.device)
        mask[:, 0] = True
        return self._top_items(self.encode(seq, mask), k)

    def _top_items(self, h, k):
        scores = self.logits(0, h)  # padding (0) is -inf: never recommended
        top = scores.topk(k, dim=1)
        return top.indices, top.values

    @torch.no_grad()
    def item_representations(self) -> torch.Tensor:
        """[num_items + 1, J * d]: the concatenated field embeddings of every item (row 0 = padding)."""
        items = torch.arange(self.num_items + 1, device=self.values_0.device)
        return torch.cat([self.field_embedding(j, items) for j in range(len(self.fields))], 1).float()


def famae_sequences(input_ids: torch.Tensor, target_ids: torch.Tensor, max_len: int) -> torch.Tensor:
    """Training windows -> FAMAE samples: the history up to a labelled position plus its target.

    One labelled position t is drawn per row (windows from the engine label one or all positions);
    the sample is input_ids[:t+1] (left-padded to max_len - 1) followed by target_ids[t].
    """
    B, T = input_ids.shape
    labelled = target_ids > 0
    weights = labelled.float() + (~labelled.any(1, keepdim=True)).float() * 1e-6  # rows with no label: any
    t = torch.multinomial(weights, 1)[:, 0]
    width = max_len - 1
    j = torch.arange(width, device=input_ids.device)[None, :]
    src = t[:, None] - (width - 1) + j  # left-pad: the history ends at column width - 1
    history = torch.where(src >= 0, input_ids.gather(1, src.clamp(min=0)), torch.zeros_like(src))
    target = target_ids.gather(1, t[:, None])
    return torch.cat([history, target], 1)
