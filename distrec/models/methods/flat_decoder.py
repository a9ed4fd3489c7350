"""Flattened decoder-only baseline (the one IntRR compares against): the SID tokens of the history
form one causal sequence on a TransformerDecoder or HSTU (`model.backbone`), and the next item's L
tokens are predicted autoregressively.

Training uses the causal structure: the sequence is the window's items plus the last target, so in
one forward every labelled item is predicted from the tokens before it: digit 0 at the last token
of the previous item, digit l at the item's own digit l-1 (teacher forcing). Each digit's softmax is
restricted to its own codebook. Positions count from each row's first real token. With HSTU and
timestamps, every token carries its item's time (the target's tokens the time of the last history
item, both in training and in generation, since the target's time is unknown at inference).

`recommend`: the history fills the KV cache once, then trie-constrained beam search feeds one token
per level (`cache.reorder` follows the beams); or exhaustive teacher-forced scoring.
"""

from __future__ import annotations

import torch
from torch import nn

from distrec.decoding import constrained_beam_search, topk_over_catalog
from distrec.errors import ConfigError
from distrec.models.blocks.init import reinit
from distrec.models.methods.sid_common import PAD, SIDVocab, left_aligned_positions, trim_left_padding
from distrec.models.recommender import Recommender


class FlatDecoder(Recommender):
    name = "flat_decoder"
    auto_decoding = "beam"
    beams_new_items = True  # recommend(..., items_from=) searches the new items' sub-trie
    decodings = ("auto", "beam", "exhaustive")

    def __init__(self, sid_table, backbone: nn.Module, d_model: int, max_history: int = 20, beam_width: int = 20,
                 decoding: str = "auto"):
        super().__init__()
        self.check_decoding(decoding)
        self.sid = SIDVocab(sid_table)
        self.max_history, self.beam_width, self.decoding = max_history, beam_width, decoding
        self.embed = nn.Embedding(self.sid.vocab_size, d_model, padding_idx=PAD)
        self.backbone = backbone
        self.head = nn.Linear(d_model, self.sid.vocab_size, bias=False)
        reinit(self.embed, lambda m: nn.init.normal_(m.weight, std=0.02))
        self.uses_time = hasattr(backbone, "num_time_buckets")

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog):
        from distrec.models.backbones import build_backbone
        from distrec.models.presets import resolve_dims

        dims = resolve_dims(model_cfg)
        if dims.backbone not in ("transformer", "hstu"):
            raise ConfigError(f"method=flat_decoder runs on model.backbone=transformer or hstu (got '{dims.backbone}')")
        levels = len(catalog.sid_table.codebook_sizes) if catalog.sid_table is not None else 1
        backbone = build_backbone(dims, max_len=(dims.max_history + 1) * levels)
        return cls(catalog.sid_table, backbone, dims.d_model, dims.max_history, method_cfg.beam_width,
                   method_cfg.decoding)

    def run(self, tokens, pad, times=None, cache=None, positions=None):
        extra = {"timestamps": times} if self.uses_time and times is not None else {}
        return self.backbone(self.embed(tokens), pad=pad, cache=cache, positions=positions, **extra)

    def flatten(self, items, times=None):
        """Item ids [B, T] (+ times) -> tokens, pad, times [B, T*L], trimmed of all-padding columns."""
        L = self.sid.levels
        tokens = self.sid.item_tokens[items].flatten(1)
        times = times.repeat_interleave(L, dim=1) if times is not None and self.uses_time else None
        if times is None:
            tokens, pad = trim_left_padding(tokens, pad=tokens == PAD)
            return tokens, pad, None
        tokens, times, pad = trim_left_padding(tokens, times, pad=tokens == PAD)
        return tokens, pad, times

    # ------------------------------------------------------------------ training

    def forward(self, batch):
        L = self.sid.levels
        inputs, targets = batch["input_ids"][:, -self.max_history:], batch["target_ids"][:, -self.max_history:]
        items = torch.cat([inputs, targets[:, -1:]], dim=1)  # the window plus its last target
        times = batch.get("timestamps")
        if times is not None:
            times = times[:, -self.max_history:]
            times = torch.cat([times, times[:, -1:]], dim=1)
        labelled = torch.cat([torch.zeros_like(targets[:, :1], dtype=torch.bool), targets > 0], dim=1)
        labelled = labelled.repeat_interleave(L, dim=1)  # [B, (T+1)L]: tokens of labelled items
        tokens, pad, times = self.flatten(items, times)
        labelled = labelled[:, labelled.shape[1] - tokens.shape[1]:]
        h = self.run(tokens[:, :-1], pad[:, :-1], None if times is None else times[:, :-1],
                     positions=left_aligned_positions(pad[:, :-1]))
        predict = labelled[:, 1:]  # h[:, p] predicts token p + 1
        logits = self.head(h[predict])
        loss = self.sid.digit_cross_entropy(logits, tokens[:, 1:][predict])
        return {"loss": loss}

    # ------------------------------------------------------------------ inference

    def prefill(self, batch):
        """Run the history into a fresh KV cache; return (last hidden [B, D], cache, next positions, times)."""
        items = batch["input_ids"][:, -self.max_history:]
        times = batch.get("timestamps")
        times = times[:, -self.max_history:] if times is not None else None
        tokens, pad, times = self.flatten(items, times)
        positions = left_aligned_positions(pad)
        cache = self.backbone.init_cache(capacity=tokens.shape[1] + self.sid.levels)
        h = self.run(tokens, pad, times, cache=cache, positions=positions)
        last_time = times[:, -1:] if times is not None else None
        return h[:, -1], cache, positions[:, -1:] + 1, last_time

    @torch.no_grad()
    def recommend(self, batch, k: int, decoding: str | None = None, beam_width: int | None = None,
                  items_from: int | None = None):
        """Top-k items; `items_from`: among items items_from..N only (beam decoding: a beam over their
        sub-trie, for the items added after training; eval.new_item_share)."""
        decoding = decoding or self.decoding
        if decoding == "exhaustive":
            return topk_over_catalog(lambda ids: self.item_loglik(batch, ids), self.sid.num_items, k,
                                     chunk_size=4096, device=batch["input_ids"].device)
        last, cache, next_pos, last_time = self.prefill(batch)
        state = {"pos": next_pos, "time": last_time}

        def step(level, prev_codes):
            if prev_codes is None:
                return self.sid.level_logits(self.head(last), level)
            tokens = (self.sid.offsets[level - 1] + prev_codes).unsqueeze(1)
            h = self.run(tokens, torch.zeros_like(tokens, dtype=torch.bool), state["time"], cache=cache,
                         positions=state["pos"] + level - 1)
            return self.sid.level_logits(self.head(h[:, -1]), level)

        def reorder(rows):
            cache.reorder(rows)
            state["pos"] = state["pos"][rows]
            state["time"] = state["time"][rows] if state["time"] is not None else None

        width = max(beam_width or self.beam_width, k)
        return constrained_beam_search(step, reorder, len(last), self.sid.children_from(items_from), width, k)

    @torch.no_grad()
    def item_loglik(self, batch, item_ids):
        """Teacher-forced log-likelihood [B, C] of every (user, item) pair (exhaustive scorer): the
        history's cache is computed once and copied to each candidate's L-1 extra tokens."""
        last, cache, next_pos, last_time = self.prefill(batch)
        B, C, L = len(last), len(item_ids), self.sid.levels
        codes = self.sid.codes[item_ids]  # [C, L]
        logp0 = torch.log_softmax(self.sid.level_logits(self.head(last), 0).float(), -1)  # [B, K0]
        total = logp0[:, codes[:, 0]]
        if L == 1:
            return total
        cache.reorder(torch.arange(B, device=last.device).repeat_interleave(C))
        tokens = self.sid.item_tokens[item_ids][:, :-1].repeat(B, 1)  # [B*C, L-1]
        positions = next_pos.repeat_interleave(C, dim=0) + torch.arange(L - 1, device=last.device)
        times = last_time.repeat_interleave(C, dim=0).expand(-1, L - 1) if last_time is not None else None
        h = self.run(tokens, torch.zeros_like(tokens, dtype=torch.bool), times, cache=cache, positions=positions)
        logits = self.head(h).float()  # [B*C, L-1, V]
        for level in range(1, L):
            logp = torch.log_softmax(self.sid.level_logits(logits[:, level - 1], level), -1)
            total += logp.gather(1, codes[:, level].repeat(B).unsqueeze(1)).view(B, C)
        return total
