"""RPG (Hou et al., KDD'25): long unordered semantic IDs (OPQ, m digits x M codes) generated in
parallel.

- Each history item is the mean of its m token embeddings (one shared table `tokens`, digit d code c
  at row offsets[d] + c), fed to a GPT-2-style TransformerDecoder (RPG: d 448, 2 layers, 4 heads,
  d_ff 1024) set up as the released code's HF GPT2Model: GPT-2's initialisation, dropout 0.5 on the
  item + position embeddings (embd_pdrop) and on attention probabilities (attn_pdrop), residual
  dropout 0 (resid_pdrop = `model.dropout`).
- m parallel heads, one per digit: x + SiLU(W_d x) with W_d zero-initialised (identity at start).
- Digit d's logits: cos(head_d(h), token embedding of each code of digit d) / temperature — tied to
  the input table, L2-normalised, temperature 0.03 (`method.temperature`).
- Loss: mean over digits of the CE of the target's code, at every labelled position.
- `recommend`: per-digit log-softmax P [B, m, M], then either holistic scoring of every item
  (score = mean over digits of P[d, code_d], exhaustive, chunked; `decoding=auto|holistic`) or
  graph-constrained decoding (`decoding=graph`): an item graph from the learned token embeddings,
  built once per set of weights and dropped when the model trains again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distrec.decoding import build_item_graph, graph_decode, holistic_topk
from distrec.errors import ConfigError
from distrec.models.blocks.init import reinit, small_linear
from distrec.models.methods.sid_common import PAD, SIDVocab, left_aligned_positions, trim_left_padding
from distrec.models.recommender import Recommender


class DigitHeads(nn.Module):
    """m residual blocks x + SiLU(W_d x + b_d), zero-initialised, applied in one einsum."""

    def __init__(self, digits: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(digits, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(digits, d_model))

    def forward(self, h):  # [S, D] -> [S, m, D]
        return h.unsqueeze(1) + F.silu(torch.einsum("sd,mde->sme", h, self.weight) + self.bias)


def gpt2_init(backbone: nn.Module) -> None:
    """GPT-2's initialisation (the released RPG's GPT2Model): Linear weights N(0, 0.02), biases 0, and
    the projections back into the residual stream N(0, 0.02 / sqrt(2 n_layers))."""
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            reinit(module, small_linear)
    for block in backbone.blocks:
        for proj in (block.attn.out, block.ff[2]):
            reinit(proj, lambda m: nn.init.normal_(m.weight, std=0.02 / math.sqrt(2 * len(backbone.blocks))))


def gpt2_dropouts(backbone: nn.Module, embd_dropout: float, attn_dropout: float) -> None:
    """GPT-2's two other dropouts on a TransformerDecoder (its residual dropout is `model.dropout`):
    embd_pdrop on the backbone's input (item + position embeddings), attn_pdrop on attention
    probabilities."""
    backbone.drop.p = embd_dropout
    for block in backbone.blocks:
        block.attn.dropout = attn_dropout


class RPG(Recommender):
    name = "rpg"
    auto_decoding = "holistic"
    decodings = ("auto", "holistic", "graph")

    def __init__(self, sid_table, backbone: nn.Module, d_model: int, max_history: int = 50, temperature: float = 0.03,
                 decoding: str = "auto", graph_edges: int = 200, graph_beams: int = 20, graph_steps: int = 3):
        super().__init__()
        self.check_decoding(decoding)
        if len(set(sid_table.codebook_sizes)) != 1:
            raise ConfigError("RPG needs equal codebook sizes for every digit (OPQ/PQ IDs: tokenizer=opq)")
        self.sid = SIDVocab(sid_table, with_trie=False)  # long unordered IDs: no trie, no dedup needed
        self.digits, self.codes_per_digit = self.sid.levels, self.sid.codebook_sizes[0]
        self.max_history, self.temperature = max_history, temperature
        self.decoding = decoding
        self.graph_edges, self.graph_beams, self.graph_steps = graph_edges, graph_beams, graph_steps
        self.tokens = nn.Embedding(self.sid.vocab_size, d_model, padding_idx=PAD)
        reinit(self.tokens, lambda m: nn.init.normal_(m.weight, std=0.02))
        self.backbone = backbone
        gpt2_init(backbone)
        self.heads = DigitHeads(self.digits, d_model)
        self._graph = None  # (adjacency) cached for the current weights

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        from distrec.models.backbones import build_backbone
        from distrec.models.presets import resolve_dims

        dims = resolve_dims(model_cfg)
        if dims.backbone != "transformer":
            raise ConfigError(f"method=rpg runs on model.backbone=transformer (got '{dims.backbone}')")
        backbone = build_backbone(dims)
        gpt2_dropouts(backbone, method_cfg.rpg.embd_dropout, method_cfg.rpg.attn_dropout)
        return cls(catalog.sid_table, backbone, dims.d_model, dims.max_history, method_cfg.temperature,
                   method_cfg.decoding, method_cfg.rpg.graph_edges, method_cfg.rpg.graph_beams,
                   method_cfg.rpg.graph_steps)

    def train(self, mode: bool = True):
        if mode:
            self._graph = None  # weights will change: the item graph is stale
        return super().train(mode)

    def code_embeddings(self) -> torch.Tensor:
        """Token embeddings per digit [m, M, D] (rows offsets[d] .. offsets[d] + M)."""
        start = int(self.sid.offsets[0])
        return self.tokens.weight[start:start + self.digits * self.codes_per_digit].view(
            self.digits, self.codes_per_digit, -1)

    def hidden(self, input_ids):
        """Decoder states [B, T, D] of left-padded histories [B, T] (trimmed of all-padding columns)."""
        items = input_ids[:, -self.max_history:]
        items, pad = trim_left_padding(items, pad=items == PAD)
        x = self.tokens(self.sid.item_tokens[items]).mean(2)  # [B, T, D]: mean of the m token embeddings
        h = self.backbone(x, pad=pad, positions=left_aligned_positions(pad))
        return h, items

    def digit_logits(self, h):
        """[S, D] -> cosine logits [S, m, M] / temperature."""
        states = F.normalize(self.heads(h), dim=-1)
        codes = F.normalize(self.code_embeddings(), dim=-1)
        return torch.einsum("smd,mcd->smc", states, codes) / self.temperature

    def forward(self, batch):
        h, items = self.hidden(batch["input_ids"])
        targets = batch["target_ids"][:, -items.shape[1]:]
        labelled = targets > 0
        logits = self.digit_logits(h[labelled]).float()  # [S, m, M]
        target_codes = self.sid.codes[targets[labelled]]  # [S, m]
        loss = F.cross_entropy(logits.flatten(0, 1), target_codes.flatten())  # mean over samples and digits
        return {"loss": loss}

    @torch.no_grad()
    def recommend(self, batch, k: int, decoding: str | None = None, beam_width: int | None = None):
        decoding = decoding or self.decoding
        h, _ = self.hidden(batch["input_ids"])
        logp = torch.log_softmax(self.digit_logits(h[:, -1]).float(), dim=-1)  # [B, m, M]
        if decoding == "graph":
            if self._graph is None:
                self._graph = build_item_graph(self.code_embeddings().detach().float().cpu(), self.sid.codes.cpu(),
                                               self.graph_edges).to(logp.device)
            gen = torch.Generator().manual_seed(0)
            ids, scores, _ = graph_decode(logp, self.sid.codes, self._graph, k, max(self.graph_beams, k),
                                          self.graph_steps, gen)
            return ids, scores
        return holistic_topk(logp, self.sid.codes, k, chunk_size=4096, reduce="mean")
