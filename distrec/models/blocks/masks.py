"""Attention masks. Convention everywhere: boolean `allowed`, True = query i may attend key j.

Shapes are [T, T] (shared by the batch) or [B, T, T]. With a KV cache the queries are the newest
`q_len` positions of `k_len`, so masks are sliced to their last `q_len` rows.
"""

import torch


def causal_mask(T: int, device=None) -> torch.Tensor:
    """[T, T]: position i sees positions j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def block_causal_mask(block_ids: torch.Tensor, last_sees_block: bool = False) -> torch.Tensor:
    """Block-causal mask from per-position block ids ([T] or [B, T]; blocks are usually items).

    Default: i sees j iff block[j] <= block[i] (its own block and every earlier block).
    `last_sees_block=True`: only the last slot of each block sees the whole block; the other slots
    see earlier blocks and themselves (useful when the last slot summarises its block).
    """
    bi, bj = block_ids.unsqueeze(-1), block_ids.unsqueeze(-2)
    allowed = bj <= bi
    if last_sees_block:
        T = block_ids.shape[-1]
        is_last = torch.ones_like(block_ids, dtype=torch.bool)
        is_last[..., :-1] = block_ids[..., 1:] != block_ids[..., :-1]
        same = bj == bi
        eye = torch.eye(T, dtype=torch.bool, device=block_ids.device)
        allowed = (bj < bi) | (same & (is_last.unsqueeze(-1) | eye))
    return allowed


def padding_mask(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """[B, T] True where `ids` is padding."""
    return ids == pad_id


def key_allowed(pad: torch.Tensor) -> torch.Tensor:
    """[B, 1, T]: keys that are not padding (broadcasts over queries)."""
    return ~pad.unsqueeze(1)


def build_allowed(mask, key_pad, q_len: int, k_len: int, device, causal: bool = True):
    """Combine a structural mask and key padding into one [B|1, q_len, k_len] `allowed`, or None
    when every query may attend every key (no mask, no padding, not causal).

    `mask` may cover all k_len positions ([.., k_len, k_len]) or only the queries ([.., q_len, k_len]);
    `key_pad` is [B, k_len] (True = padding).
    """
    if mask is None:
        allowed = causal_mask(k_len, device)[k_len - q_len :] if causal else None
    else:
        if mask.shape[-1] != k_len or mask.shape[-2] not in (q_len, k_len):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit {q_len} queries over {k_len} keys")
        allowed = mask[..., k_len - q_len :, :] if mask.shape[-2] == k_len else mask
        allowed = allowed.to(device=device, dtype=torch.bool)
    if key_pad is not None:
        keep = key_allowed(key_pad.to(device))
        allowed = keep if allowed is None else allowed & keep
    if allowed is not None and allowed.dim() == 2:
        allowed = allowed.unsqueeze(0)
    return allowed


def no_empty_rows(allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention over an empty row gives NaN. Rows with no allowed key (padding queries)
    attend everything instead: their output is finite and ignored downstream."""
    return allowed | ~allowed.any(-1, keepdim=True)
