"""Decoder-only pre-LN Transformer (GPT-2 / SASRec shape) with learned absolute positions and a
KV cache for incremental decoding. Input is already embedded: x [B, T, D] -> h [B, T, D]."""

import torch
from torch import nn

from distrec.models.blocks.attention import MultiHeadAttention, sdpa_mask
from distrec.models.blocks.cache import KVCache
from distrec.models.blocks.checkpointing import run_block
from distrec.models.blocks.init import reinit
from distrec.models.blocks.masks import build_allowed


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float, activation=nn.GELU):
        super().__init__(nn.Linear(d_model, d_ff), activation(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))


class TransformerBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout, head_dim=None):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, head_dim, dropout)
        self.ln_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, is_causal, cache, layer):
        x = x + self.drop(self.attn(self.ln_attn(x), mask, is_causal=is_causal, cache=cache, layer=layer))
        return x + self.ff(self.ln_ff(x))


class TransformerDecoder(nn.Module):
    """forward(x, mask=None, pad=None, cache=None, positions=None) -> h.

    mask: allowed [T,T] or [B,T,T] (default causal); pad: [B,T] True = padding (never attended to);
    positions: [T] or [B,T] absolute positions for the learned embedding (default: the running
    index, continuing after the cached positions). With `cache` the call appends x's positions.
    """

    uses_timestamps = False

    def __init__(self, d_model: int, n_layers: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 max_len: int = 512, head_dim: int | None = None, causal: bool = True, abs_positions: bool = True,
                 activation_checkpointing: bool = False):
        super().__init__()
        self.n_layers, self.max_len, self.causal = n_layers, max_len, causal
        self.activation_checkpointing = activation_checkpointing
        self.pos = nn.Embedding(max_len, d_model) if abs_positions else None
        if self.pos is not None:
            reinit(self.pos, lambda m: nn.init.normal_(m.weight, std=0.02))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff, dropout, head_dim) for _ in range(n_layers))
        self.ln_out = nn.LayerNorm(d_model)

    def init_cache(self, capacity: int = 64) -> KVCache:
        return KVCache(self.n_layers, capacity)

    def forward(self, x, mask=None, pad=None, cache=None, positions=None):
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        if self.pos is not None:
            if positions is None:
                if past + T > self.max_len:
                    raise ValueError(f"{past + T} positions exceed max_len={self.max_len}; raise the backbone's max_len")
                positions = torch.arange(past, past + T, device=x.device)
            x = x + self.pos(positions)
        key_pad = pad
        if cache is not None:
            step_pad = pad if pad is not None else torch.zeros(B, T, dtype=torch.bool, device=x.device)
            key_pad = cache.extend_seq("pad", step_pad)
            key_pad = key_pad if key_pad.any() else None
        # Fast path: plain causal attention lets SDPA skip building a mask.
        fast = mask is None and key_pad is None and past == 0 and self.causal
        attn_mask = None if fast else sdpa_mask(build_allowed(mask, key_pad, T, past + T, x.device, self.causal))
        h = self.drop(x)
        for i, block in enumerate(self.blocks):
            h = run_block(block, h, attn_mask, fast, cache, i, recompute=self.activation_checkpointing)
        if cache is not None:
            cache.advance(T)
        return self.ln_out(h)
