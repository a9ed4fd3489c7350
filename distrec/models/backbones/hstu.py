"""HSTU (Zhai et al., ICML'24): pointwise-SiLU attention with relative position and time-gap
biases. Per layer:

    U, V, Q, K = split(SiLU(Linear(LayerNorm(X))))
    A = SiLU(Q K^T + rab_pos + rab_time) / n      (masked to 0 where not allowed; no softmax)
    Y = Linear(Dropout(U * LayerNorm(A V))) + X

n is the backbone's fixed `max_len` (Meta's code divides by the padded length, which is the max
length there). A constant keeps a position's output independent of padding and of how much of the
sequence is processed at once, so incremental decoding with the KV cache equals the full forward.

Initialisation (`init`): "meta" follows Meta's research code (`research/modeling/sequential/hstu.py`):
the U/V/Q/K projection is a bias-free N(0, 0.02) matrix, the output projection xavier-uniform, and
both layer norms have no learnable scale or shift (`norm_affine=False`, eps 1e-6). "torch" keeps
nn.Linear's defaults (Kaiming-uniform with bias) and learnable norms. On ML-1M, Meta's init reached
1.3-2x the validation HR@10 of "torch" over the first 4 epochs (issue 12; docs/parity.md, "What changed in distrec").
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from distrec.errors import ConfigError
from distrec.models.blocks.cache import KVCache
from distrec.models.blocks.checkpointing import run_block
from distrec.models.blocks.init import reinit
from distrec.models.blocks.masks import build_allowed
from distrec.models.config import HSTUInit

TIME_BUCKET_DIVISOR = 0.301  # bucket = floor(ln(max(|dt|, 1)) / 0.301), as in the paper's code


def time_buckets(q_times: torch.Tensor, k_times: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """[B, Tq], [B, Tk] unix seconds -> [B, Tq, Tk] bucket ids in 0..num_buckets."""
    dt = (q_times.unsqueeze(-1) - k_times.unsqueeze(-2)).abs().clamp(min=1).float()
    return (torch.log(dt) / TIME_BUCKET_DIVISOR).floor().long().clamp(0, num_buckets)


MASKED = -1.0e4  # SiLU(MASKED + score) is exactly 0 (and so is its gradient) in fp32 and bf16


def pytorch_hstu_attention(q, k, v, bias, allowed, n):
    """q/k [B,H,Tq|Tk,dqk], v [B,H,Tk,dv] (zero for padding keys); bias [B|1,Tq,Tk] float or None
    (shared by heads); allowed [B|1,Tq,Tk] bool or None; n the normaliser. Returns [B,H,Tq,dv].

    The mask is folded into the bias (a large negative score has SiLU 0) and 1/n is applied to the
    [.., Tq, dv] output rather than the [.., Tq, Tk] scores: two fewer passes over the big tensor."""
    scores = q @ k.transpose(-1, -2)
    if allowed is not None:
        bias = (torch.zeros((), dtype=scores.dtype, device=q.device) if bias is None else bias).to(scores.dtype)
        bias = bias.masked_fill(~allowed, MASKED)
    if bias is not None:
        scores = scores + bias.unsqueeze(1).to(scores.dtype)
    return (F.silu(scores) @ v) / n


# Attention kernels behind one signature; a fused (Triton/CUDA) kernel can register here.
HSTU_KERNELS = {"pytorch": pytorch_hstu_attention}


class HSTULayer(nn.Module):
    def __init__(self, d_model, n_heads, attn_dim, linear_dim, dropout, max_len, num_time_buckets, kernel="pytorch",
                 init="meta", norm_affine=False):
        super().__init__()
        if kernel not in HSTU_KERNELS:
            raise ConfigError(f"model.kernel='{kernel}' is unknown for HSTU; choose one of {sorted(HSTU_KERNELS)}")
        init = HSTUInit(init)
        self.n_heads, self.attn_dim, self.linear_dim = n_heads, attn_dim, linear_dim
        self.max_len, self.kernel = max_len, HSTU_KERNELS[kernel]
        meta = init == "meta"
        eps = 1e-6 if meta else 1e-5
        self.norm_in = nn.LayerNorm(d_model, eps=eps, elementwise_affine=norm_affine)
        self.uvqk = nn.Linear(d_model, n_heads * (2 * linear_dim + 2 * attn_dim), bias=not meta)
        self.norm_attn = nn.LayerNorm(n_heads * linear_dim, eps=eps, elementwise_affine=norm_affine)
        self.out = nn.Linear(n_heads * linear_dim, d_model)
        if meta:
            reinit(self.uvqk, lambda m: nn.init.normal_(m.weight, std=0.02))
            reinit(self.out, lambda m: nn.init.xavier_uniform_(m.weight))
        self.drop = nn.Dropout(dropout)
        # rab_pos[r + max_len - 1] for relative position r = key_pos - query_pos; rab_time per bucket.
        self.rab_pos = nn.Parameter(torch.randn(2 * max_len - 1) * 0.02)
        self.rab_time = nn.Parameter(torch.randn(num_time_buckets + 1) * 0.02)

    def bias(self, rel_idx, buckets):
        """Relative attention bias [B|1, Tq, Tk] from precomputed indices (shared by the layers)."""
        b = self.rab_pos[rel_idx]
        return b if buckets is None else b + self.rab_time[buckets]

    def forward(self, x, allowed, rel_idx, buckets, key_keep=None, cache=None, layer=0):
        B, T, _ = x.shape
        H, da, dl = self.n_heads, self.attn_dim, self.linear_dim
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([H * dl, H * dl, H * da, H * da], dim=-1)
        q, k, v = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(layer, k, v)
        if key_keep is not None:
            # A padding key with a zero value adds nothing to A V (and gets no gradient), whatever its
            # score: cheaper than a per-row [B, T, T] mask, which stays [T, T] and shared.
            v = v * key_keep[:, None, :, None].to(v.dtype)
        a = self.kernel(q, k, v, self.bias(rel_idx, buckets), allowed, self.max_len)
        a = a.transpose(1, 2).reshape(B, T, H * dl)
        return x + self.out(self.drop(u * self.norm_attn(a)))


class HSTU(nn.Module):
    """forward(x, mask=None, pad=None, timestamps=None, cache=None, positions=None, query_timestamps=None)
    -> h [B,T,D].

    Same masks as TransformerDecoder (allowed [T,T]/[B,T,T], default causal; pad [B,T]). Padding
    keys get zero attention. `timestamps` [B,T] (unix seconds) add the time-gap bias between query
    and key times; `query_timestamps` [B,T], when given, are the queries' times instead (HSTU
    retrieval passes each position's next-item time, as Meta's code). `positions` ([T] or [B,T])
    feed the learned absolute embedding and the relative position bias.
    """

    uses_timestamps = True  # methods pass `timestamps=` only to backbones that take them

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.2, max_len: int = 200,
                 num_time_buckets: int = 128, attn_dim: int | None = None, linear_dim: int | None = None,
                 kernel: str = "pytorch", abs_positions: bool = True, causal: bool = True, init: str = "meta",
                 norm_affine: bool = False, activation_checkpointing: bool = False):
        super().__init__()
        self.n_layers, self.max_len, self.causal = n_layers, max_len, causal
        self.activation_checkpointing = activation_checkpointing
        self.num_time_buckets = num_time_buckets
        attn_dim = attn_dim or d_model // n_heads
        linear_dim = linear_dim or d_model // n_heads
        self.pos = nn.Embedding(max_len, d_model) if abs_positions else None
        if self.pos is not None:  # Meta re-initialises its positional table xavier-normal (reset_params)
            if init == "meta":
                reinit(self.pos, lambda m: nn.init.xavier_normal_(m.weight))
            else:
                reinit(self.pos, lambda m: nn.init.trunc_normal_(m.weight, std=math.sqrt(1.0 / d_model)))
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            HSTULayer(d_model, n_heads, attn_dim, linear_dim, dropout, max_len, num_time_buckets, kernel, init,
                      norm_affine)
            for _ in range(n_layers)
        )

    def init_cache(self, capacity: int = 64) -> KVCache:
        return KVCache(self.n_layers, capacity)

    def forward(self, x, mask=None, pad=None, timestamps=None, cache=None, positions=None, query_timestamps=None):
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        if positions is None:
            if past + T > self.max_len:
                raise ValueError(f"{past + T} positions exceed max_len={self.max_len}; raise the backbone's max_len")
            positions = torch.arange(past, past + T, device=x.device)
        positions = positions.unsqueeze(0) if positions.dim() == 1 else positions  # [1|B, T]
        q_times = timestamps if query_timestamps is None else query_timestamps
        q_pos, k_pos, k_times, key_pad = positions, positions, timestamps, pad
        if cache is not None:
            k_pos = cache.extend_seq("positions", positions.expand(B, T))
            key_pad = cache.extend_seq("pad", pad if pad is not None else torch.zeros(B, T, dtype=torch.bool, device=x.device))
            if timestamps is not None:
                k_times = cache.extend_seq("timestamps", timestamps)
        if self.pos is not None:
            x = x + self.pos(q_pos)
        allowed = build_allowed(mask, None, T, past + T, x.device, self.causal)  # padding: see HSTULayer
        key_keep = None if key_pad is None or not key_pad.any() else ~key_pad
        rel = (k_pos.unsqueeze(1) - q_pos.unsqueeze(2)).clamp(-(self.max_len - 1), self.max_len - 1) + self.max_len - 1
        buckets = None if timestamps is None else time_buckets(q_times, k_times, self.num_time_buckets)
        h = self.drop(x)
        for i, layer in enumerate(self.layers):
            h = run_block(layer, h, allowed, rel, buckets, key_keep, cache, i, recompute=self.activation_checkpointing)
        if cache is not None:
            cache.advance(T)
        return h
