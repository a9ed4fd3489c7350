"""Multi-head softmax attention on `scaled_dot_product_attention`, with optional KV cache and an
additive bias (T5 relative positions). Masks follow blocks/masks.py (bool, True = may attend)."""

import torch
import torch.nn.functional as F
from torch import nn

from distrec.models.blocks.masks import no_empty_rows


def sdpa_mask(allowed=None, bias=None, dtype=torch.float32):
    """The `attn_mask` for SDPA, built once per forward and shared by the layers: None, a bool
    [B|1, 1, Tq, Tk] from `allowed` [B|1, Tq, Tk], or `bias` [B|1, H, Tq, Tk] with -inf where not allowed."""
    if allowed is not None:
        allowed = no_empty_rows(allowed).unsqueeze(1)
    if bias is None:
        return allowed
    bias = bias.to(dtype)
    return bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))


# At most this many keys, CPU attention without dropout runs as an explicit softmax: SDPA's CPU
# kernels cost a fixed overhead per (batch, head) block, ~6x the whole work for ACERec's merger
# (4 queries over 32 tokens per item, hundreds of items per micro-batch; docs/benchmarks.md).
# With dropout, CPU attention of any length runs explicitly too: SDPA's CPU path for dropout is its
# math kernel (the scores materialised, as here) in fp32 with a bernoulli mask; here the matmuls
# stay in the autocast dtype and the mask is one uniform draw: ~2x faster forward + backward.
FEW_KEYS = 64


def explicit_attention(q, k, v, mask=None, dropout_p=0.0, is_causal=False):
    """softmax(q k^T / sqrt(d) + mask) v, the softmax in fp32; mask as in `attend`. With dropout_p,
    each probability is kept with 1 - dropout_p and scaled by 1 / (1 - dropout_p) (as SDPA does)."""
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if is_causal and mask is None:  # SDPA's convention: query i sees keys 0..i
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(-1)
    if dropout_p:
        probs = probs * (torch.rand_like(probs) >= dropout_p) * (1.0 / (1.0 - dropout_p))
    return probs.to(v.dtype) @ v


def attend(q, k, v, mask=None, dropout_p=0.0, is_causal=False):
    """q [B,H,Tq,d], k/v [B,H,Tk,d]; mask from `sdpa_mask` (None with is_causal = plain causal).

    k/v may have fewer rows than q, B = groups x rows (beam search: a user's beams, user-major, share
    the user's cross-attention memory): each group's queries are folded into the query axis, so the
    memory is never repeated per beam (TIGER's validation held 5 GB of repeated K/V at 256 users x 20
    beams). Then `mask` must be the same for every query ([rows, 1, 1, Tk]: key padding)."""
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    B, H, Tq, d = q.shape
    rows = k.shape[0]
    if rows == B and q.device.type == "cpu" and (dropout_p or k.shape[-2] <= FEW_KEYS):
        return explicit_attention(q, k, v, mask, dropout_p, is_causal)
    if rows == B:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              is_causal=is_causal and mask is None)
    if B % rows or is_causal or (mask is not None and mask.shape[-2] != 1):
        raise ValueError(f"{B} queries rows over {rows} key rows need whole groups, no causal or per-query mask")
    groups = B // rows
    q = q.view(rows, groups, H, Tq, d).transpose(1, 2).reshape(rows, H, groups * Tq, d)
    h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return h.view(rows, H, groups, Tq, d).transpose(1, 2).reshape(B, H, Tq, d)


class MultiHeadAttention(nn.Module):
    """Self-attention (fused QKV) or cross-attention (`memory` given; K/V cacheable as static).

    `qk_norm` layer-norms each head's queries and keys after projection (as ViT-22B does), without a
    learned gain or bias, so a logit is at most sqrt(head_dim) in size: under Adam the projections can
    otherwise grow until the softmax saturates and passes no gradient (ACERec's merger, docs/acerec.md)."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None, dropout: float = 0.0,
                 bias: bool = True, cross: bool = False, qk_norm: bool = False):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim or d_model // n_heads
        inner = n_heads * self.head_dim
        self.cross = cross
        if cross:
            self.q = nn.Linear(d_model, inner, bias=bias)
            self.kv = nn.Linear(d_model, 2 * inner, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, 3 * inner, bias=bias)
        self.out = nn.Linear(inner, d_model, bias=bias)
        self.q_norm = nn.LayerNorm(self.head_dim, elementwise_affine=False) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, elementwise_affine=False) if qk_norm else nn.Identity()
        self.dropout = dropout

    def _heads(self, x):  # [B,T,H*d] -> [B,H,T,d]
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x, memory=None):
        """q, k, v [B,H,T,d] (q and k normalised with qk_norm)."""
        if self.cross:
            q, (k, v) = self.q(x), self.kv(memory).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.q_norm(self._heads(q)), self.k_norm(self._heads(k)), self._heads(v)

    def forward(self, x, mask=None, is_causal=False, cache=None, layer=0, memory=None):
        """mask: from `sdpa_mask` (bool or additive float); see `attend`."""
        if not self.cross:
            q, k, v = self._project(x)
            if cache is not None:
                k, v = cache.append(layer, k, v)
        else:
            names = (f"cross_k{layer}", f"cross_v{layer}")
            if cache is not None and names[0] in cache.static:  # memory K/V computed once per generation
                q = self.q_norm(self._heads(self.q(x)))
                k, v = (cache.static[n] for n in names)
            else:
                q, k, v = self._project(x, memory)
                if cache is not None:
                    cache.static.update(zip(names, (k, v)))
        p = self.dropout if self.training else 0.0
        h = attend(q, k, v, mask, p, is_causal)
        B, H, T, d = h.shape
        return self.out(h.transpose(1, 2).reshape(B, T, H * d))

    @torch.no_grad()
    def probabilities(self, x, memory=None):
        """The attention weights [B, H, Tq, Tk] (no mask, no dropout): for diagnostics."""
        q, k, _ = self._project(x, memory)
        return ((q @ k.transpose(-1, -2)).float() * self.head_dim ** -0.5).softmax(-1)
