"""T5-style encoder-decoder (TIGER's generator): RMSNorm pre-norm blocks, ReLU feed-forward,
bucketed relative position bias computed once per stack and shared by its layers, no absolute
positions. Decoding keeps a self-attention KV cache; cross-attention K/V are computed once."""

import math

import torch
from torch import nn

from distrec.models.backbones.transformer import FeedForward
from distrec.models.blocks.attention import MultiHeadAttention, sdpa_mask
from distrec.models.blocks.cache import KVCache
from distrec.models.blocks.checkpointing import run_block
from distrec.models.blocks.masks import build_allowed


def relative_position_bucket(rel: torch.Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
    """T5 bucketing of rel = key_pos - query_pos: exact buckets for small distances, then
    log-spaced up to max_distance; bidirectional splits the buckets between past and future."""
    bucket = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (rel > 0).long() * num_buckets
        dist = rel.abs()
    else:
        dist = (-rel).clamp(min=0)  # future keys fall in bucket 0 (they are masked anyway)
    exact = num_buckets // 2
    far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (num_buckets - exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(dist < exact, dist, far)


class RelativePositionBias(nn.Module):
    def __init__(self, n_heads, num_buckets, max_distance, bidirectional):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.table = nn.Embedding(num_buckets, n_heads)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q_pos [Tq], k_pos [Tk] -> bias [1, H, Tq, Tk]."""
        rel = k_pos[None, :] - q_pos[:, None]
        buckets = relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1).unsqueeze(0)


class T5Block(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout, head_dim, cross: bool):
        super().__init__()
        self.norm_self = nn.RMSNorm(d_model, eps=1e-6)
        self.self_attn = MultiHeadAttention(d_model, n_heads, head_dim, dropout, bias=False)
        self.norm_cross = nn.RMSNorm(d_model, eps=1e-6) if cross else None
        self.cross_attn = MultiHeadAttention(d_model, n_heads, head_dim, dropout, bias=False, cross=True) if cross else None
        self.norm_ff = nn.RMSNorm(d_model, eps=1e-6)
        self.ff = FeedForward(d_model, d_ff, dropout, activation=nn.ReLU)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, cache=None, layer=0, memory=None, memory_mask=None):
        x = x + self.drop(self.self_attn(self.norm_self(x), mask, cache=cache, layer=layer))
        if self.cross_attn is not None:
            x = x + self.drop(self.cross_attn(self.norm_cross(x), memory_mask, cache=cache, layer=layer, memory=memory))
        return x + self.ff(self.norm_ff(x))


class T5EncoderDecoder(nn.Module):
    """encode(x, pad=None, mask=None) -> memory; decode(y, memory, memory_pad=None, cache=None,
    mask=None, pad=None) -> h. Encoder attention is bidirectional unless `mask` says otherwise;
    decoder self-attention is causal by default. Inputs are already embedded."""

    def __init__(self, d_model: int, n_enc_layers: int = 4, n_dec_layers: int = 4, n_heads: int = 6,
                 d_ff: int = 1024, dropout: float = 0.1, rel_buckets: int = 32, rel_max_distance: int = 128,
                 head_dim: int | None = None, activation_checkpointing: bool = False):
        super().__init__()
        self.n_dec_layers = n_dec_layers
        self.activation_checkpointing = activation_checkpointing
        self.enc_bias = RelativePositionBias(n_heads, rel_buckets, rel_max_distance, bidirectional=True)
        self.dec_bias = RelativePositionBias(n_heads, rel_buckets, rel_max_distance, bidirectional=False)
        self.encoder = nn.ModuleList(T5Block(d_model, n_heads, d_ff, dropout, head_dim, cross=False) for _ in range(n_enc_layers))
        self.decoder = nn.ModuleList(T5Block(d_model, n_heads, d_ff, dropout, head_dim, cross=True) for _ in range(n_dec_layers))
        self.enc_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.dec_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.drop = nn.Dropout(dropout)

    def init_cache(self, capacity: int = 16) -> KVCache:
        return KVCache(self.n_dec_layers, capacity)

    def encode(self, x, pad=None, mask=None):
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)
        attn_mask = sdpa_mask(build_allowed(mask, pad, T, T, x.device, causal=False), self.enc_bias(pos, pos))
        h = self.drop(x)
        for block in self.encoder:
            h = run_block(block, h, attn_mask, recompute=self.activation_checkpointing)
        return self.drop(self.enc_norm(h))

    def decode(self, y, memory, memory_pad=None, cache=None, mask=None, pad=None):
        B, T, _ = y.shape
        past = cache.length if cache is not None else 0
        key_pad = pad
        if cache is not None:
            key_pad = cache.extend_seq("pad", pad if pad is not None else torch.zeros(B, T, dtype=torch.bool, device=y.device))
            key_pad = key_pad if key_pad.any() else None
            if memory_pad is not None:
                memory_pad = cache.static.setdefault("memory_pad", memory_pad)
            elif "memory_pad" in cache.static:
                memory_pad = cache.static["memory_pad"]
        bias = self.dec_bias(torch.arange(past, past + T, device=y.device), torch.arange(past + T, device=y.device))
        attn_mask = sdpa_mask(build_allowed(mask, key_pad, T, past + T, y.device, causal=True), bias)
        memory_mask = None if memory_pad is None else sdpa_mask(~memory_pad[:, None, :])
        h = self.drop(y)
        for i, block in enumerate(self.decoder):
            h = run_block(block, h, attn_mask, cache, i, memory, memory_mask, recompute=self.activation_checkpointing)
        if cache is not None:
            cache.advance(T)
        return self.drop(self.dec_norm(h))

    def forward(self, x, y, pad=None, y_pad=None):
        return self.decode(y, self.encode(x, pad), pad, pad=y_pad)
