"""TIGER (Rajput et al., NeurIPS'23): a T5 encoder-decoder that reads the SID tokens of the history
and generates the next item's SID digit by digit.

Encoder input: the L tokens of each of the last `max_history` items, flattened (left-padded), plus
an optional hashed user token after the history (`method.user_tokens` buckets; 0 = none). The
decoder starts at BOS and is trained with teacher forcing: CE over the L digits of the target,
each digit's softmax restricted to its own codebook (that is how beam search normalises them).

Training samples: every labelled position of the batch (every prefix of a user's history) is one
sample. The batches of distrec.data.batches label every position of a window, so the model expands
them itself (`prefix_windows`: one vectorised unfold, no extra data passes), then trims the columns
that are padding in every prefix. This is cheaper than materialising prefixes in the data pipeline
and keeps the batch format the same for every method; the number of samples per step is the number
of labels in the batch (about mean history length x users).

`recommend`: trie-constrained beam search (KV cache, cross-attention K/V computed once), or
exhaustive teacher-forced scoring of every item for small catalogs (`decoding="exhaustive"`).
"""

from __future__ import annotations

import torch
from torch import nn

from distrec.decoding import constrained_beam_search, topk_over_catalog
from distrec.errors import ConfigError
from distrec.models.blocks.init import reinit
from distrec.models.methods.sid_common import BOS, PAD, SIDVocab, prefix_windows, trim_left_padding
from distrec.models.recommender import Recommender


class TIGER(Recommender):
    name = "tiger"
    auto_decoding = "beam"
    beams_new_items = True  # recommend(..., items_from=) searches the new items' sub-trie
    decodings = ("auto", "beam", "exhaustive")

    def __init__(self, sid_table, backbone: nn.Module, d_model: int, max_history: int = 20, user_tokens: int = 0,
                 beam_width: int = 20, decoding: str = "auto"):
        super().__init__()
        self.check_decoding(decoding)
        self.sid = SIDVocab(sid_table)
        self.max_history, self.user_tokens = max_history, user_tokens
        self.beam_width, self.decoding = beam_width, decoding
        self.embed = nn.Embedding(self.sid.vocab_size + user_tokens, d_model, padding_idx=PAD)
        self.backbone = backbone
        self.head = nn.Linear(d_model, self.sid.vocab_size, bias=False)
        reinit(self.embed, lambda m: nn.init.normal_(m.weight, std=d_model ** -0.5))

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        from distrec.models.backbones import build_backbone
        from distrec.models.presets import resolve_dims

        dims = resolve_dims(model_cfg)
        if dims.backbone != "t5":
            raise ConfigError(f"method=tiger needs model.backbone=t5 (got '{dims.backbone}'); use model=t5")
        return cls(catalog.sid_table, build_backbone(dims), dims.d_model, dims.max_history,
                   method_cfg.user_tokens, method_cfg.beam_width, method_cfg.decoding)

    # ------------------------------------------------------------------ encoder side

    def encode(self, histories: torch.Tensor, user_ids: torch.Tensor | None):
        """histories [S, H] left-padded item ids -> (memory [S, T, D], memory_pad [S, T])."""
        tokens = self.sid.item_tokens[histories[:, -self.max_history:]].flatten(1)  # [S, H*L]
        tokens, pad = trim_left_padding(tokens, pad=tokens == PAD)
        if self.user_tokens and user_ids is not None:
            user = self.sid.vocab_size + user_ids.remainder(self.user_tokens)
            tokens = torch.cat([tokens, user.unsqueeze(1)], dim=1)
            pad = torch.cat([pad, pad.new_zeros(len(pad), 1)], dim=1)
        return self.backbone.encode(self.embed(tokens), pad), pad

    def decoder_inputs(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs [S, L]: BOS then the first L-1 tokens of each item."""
        tokens = self.sid.item_tokens[item_ids]
        return torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], dim=1)

    # ------------------------------------------------------------------ training

    def forward(self, batch):
        histories, targets, rows = prefix_windows(batch["input_ids"], batch["target_ids"], self.max_history)
        user_ids = batch["user_ids"][rows] if "user_ids" in batch else None
        memory, memory_pad = self.encode(histories, user_ids)
        h = self.backbone.decode(self.embed(self.decoder_inputs(targets)), memory, memory_pad)
        logits = self.head(h)  # [S, L, V]
        target_tokens = self.sid.item_tokens[targets]
        loss = self.sid.digit_cross_entropy(logits.flatten(0, 1), target_tokens.flatten())
        return {"loss": loss, "samples": torch.tensor(float(len(targets)))}

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def recommend(self, batch, k: int, decoding: str | None = None, beam_width: int | None = None,
                  items_from: int | None = None):
        """Top-k items; `items_from`: among items items_from..N only (beam decoding: a beam over their
        sub-trie, for the items added after training; eval.new_item_share)."""
        decoding = decoding or self.decoding
        memory, memory_pad = self.encode(batch["input_ids"], batch.get("user_ids"))
        if decoding == "exhaustive":
            return topk_over_catalog(lambda ids: self.item_loglik(memory, memory_pad, ids), self.sid.num_items, k,
                                     chunk_size=max(1, 65536 // len(memory)), device=memory.device)
        cache = self.backbone.init_cache(capacity=self.sid.levels)
        first = {"memory_pad": memory_pad}

        def step(level, prev_codes):
            if prev_codes is None:
                tokens = torch.full((len(memory), 1), BOS, dtype=torch.long, device=memory.device)
            else:
                tokens = (self.sid.offsets[level - 1] + prev_codes).unsqueeze(1)
            h = self.backbone.decode(self.embed(tokens), memory, first.pop("memory_pad", None), cache=cache)
            return self.sid.level_logits(self.head(h[:, -1]), level)

        width = max(beam_width or self.beam_width, k)
        return constrained_beam_search(step, cache.reorder, len(memory), self.sid.children_from(items_from), width, k)

    def item_loglik(self, memory, memory_pad, item_ids):
        """Teacher-forced log-likelihood [B, C] of every (user, item) pair: the exhaustive scorer."""
        B, C = len(memory), len(item_ids)
        inputs = self.decoder_inputs(item_ids).repeat(B, 1)  # [B*C, L], user-major
        mem = memory.repeat_interleave(C, dim=0)
        h = self.backbone.decode(self.embed(inputs), mem, memory_pad.repeat_interleave(C, dim=0))
        logits = self.head(h).float()  # [B*C, L, V]
        codes = self.sid.codes[item_ids].repeat(B, 1)
        total = torch.zeros(B * C, device=memory.device)
        for level in range(self.sid.levels):
            logp = torch.log_softmax(self.sid.level_logits(logits[:, level], level), dim=-1)
            total += logp.gather(1, codes[:, level:level + 1]).squeeze(1)
        return total.view(B, C)
