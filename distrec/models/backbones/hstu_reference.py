"""Plain HSTU written straight from the formulas, one query/key pair at a time. Slow; it exists to
check the vectorised layer (and any fused kernel) against. Reuses the parameters of an `HSTU`.

    X' = LayerNorm(X);  U, V, Q, K = split(SiLU(W X' + b))
    a_ij = SiLU(q_i . k_j + rab_pos[p_j - p_i] + rab_time[bucket(t_i - t_j)]) / n  if i may attend j, else 0
    Y_i = X_i + W_o (U_i * LayerNorm(sum_j a_ij v_j)) + b_o
"""

import math

import torch


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + norm.eps)
    return y if norm.weight is None else y * norm.weight + norm.bias


def _linear(x, linear):
    y = x @ linear.weight.t()
    return y if linear.bias is None else y + linear.bias


def _silu(x):
    return x / (1 + torch.exp(-x))


def reference_hstu(model, x, allowed, positions=None, timestamps=None):
    """x [B,T,D]; allowed [B,T,T] bool (True = may attend); positions [T]; timestamps [B,T] or None.
    Dropout is ignored (compare in eval mode)."""
    B, T, D = x.shape
    L = model.max_len
    positions = torch.arange(T) if positions is None else positions
    if model.pos is not None:
        x = x + model.pos.weight[positions]
    for layer in model.layers:
        H, da, dl = layer.n_heads, layer.attn_dim, layer.linear_dim
        y = torch.empty_like(x)
        for b in range(B):
            proj = _silu(_linear(_layer_norm(x[b], layer.norm_in), layer.uvqk))
            u, v, q, k = proj.split([H * dl, H * dl, H * da, H * da], dim=-1)
            av = torch.zeros(T, H * dl)
            for h in range(H):
                for i in range(T):
                    for j in range(T):
                        if not allowed[b, i, j]:
                            continue
                        s = q[i, h * da:(h + 1) * da] @ k[j, h * da:(h + 1) * da]
                        rel = min(max(int(positions[j] - positions[i]), -(L - 1)), L - 1)
                        s = s + layer.rab_pos[rel + L - 1]
                        if timestamps is not None:
                            dt = max(abs(int(timestamps[b, i] - timestamps[b, j])), 1)
                            bucket = min(int(math.floor(math.log(dt) / 0.301)), len(layer.rab_time) - 1)
                            s = s + layer.rab_time[bucket]
                        av[i, h * dl:(h + 1) * dl] += _silu(s) / L * v[j, h * dl:(h + 1) * dl]
            y[b] = x[b] + _linear(u * _layer_norm(av, layer.norm_attn), layer.out)
        x = y
    return x
