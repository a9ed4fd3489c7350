"""Constrained beam search over semantic-ID digits.

The model is seen through two callbacks, so the same search drives an encoder-decoder (TIGER) and a
decoder-only model (flattened SIDs) with their KV caches:

- `step(level, prev_codes) -> logits [rows, K_level]`: the next digit's logits for every live row.
  At level 0 there is one row per user and `prev_codes` is None; afterwards one row per beam
  (user-major: row = user * beams + beam) and `prev_codes` [rows] are the codes chosen at level-1.
- `reorder(rows)`: keep the decoder state rows `rows` (a LongTensor), in that order, e.g.
  `cache.reorder(rows)`; called after each level except the last.

The prefix trie (`SIDTable.trie().children`) keeps every beam on a path that ends at a real item:
`children[l][node, code]` is the child node (or -1), and at the last level the item id. Each beam
carries its trie node; disallowed codes get -inf before the top-k, so no invalid ID is ever emitted.
Scores are sums of per-level log-softmax over that level's codes (normalised before masking), which
is exactly the teacher-forced log-likelihood the exhaustive scorer computes. With `renormalise` each
level's softmax runs over the beam's valid codes only (the released IntRR's beam search): a code that
is its prefix's only child then costs nothing.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


@torch.no_grad()
def constrained_beam_search(step, reorder, batch_size: int, children: list[torch.Tensor], beam_width: int, k: int,
                            renormalise: bool = False):
    """Return (item_ids [B, k] int64, scores [B, k] float32), best first.

    Rows whose catalog has fewer than k reachable items are padded with item 0 and score -inf.
    """
    if beam_width < k:
        raise ValueError(f"beam width {beam_width} must be >= k={k}")
    device = children[0].device
    B = batch_size
    beam_scores = torch.zeros(B, 1, device=device)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # the trie root
    prev_codes = None
    levels = len(children)
    for level in range(levels):
        width = nodes.shape[1]
        logits = step(level, prev_codes)
        num_codes = logits.shape[-1]
        allowed = children[level][nodes] >= 0  # [B, width, K]
        logits = logits.float().view(B, width, num_codes)
        if renormalise:
            logits = logits.masked_fill(~allowed, NEG_INF)
        logp = torch.log_softmax(logits, dim=-1)
        total = torch.where(allowed, beam_scores.unsqueeze(-1) + logp, NEG_INF)
        keep = min(beam_width, width * num_codes)
        beam_scores, flat = total.view(B, width * num_codes).topk(keep, dim=1)
        origin, codes = flat // num_codes, flat % num_codes
        parents = nodes.gather(1, origin)
        nodes = children[level][parents, codes]  # -1 only where the score is -inf
        dead = torch.isinf(beam_scores)
        nodes = nodes.masked_fill(dead, 0)
        if level < levels - 1:
            rows = (torch.arange(B, device=device).unsqueeze(1) * width + origin).reshape(-1)
            reorder(rows)
            prev_codes = codes.reshape(-1)
    item_ids = nodes.masked_fill(dead, 0)
    if item_ids.shape[1] < k:  # tiny catalogs: fewer beams than k
        pad = k - item_ids.shape[1]
        item_ids = torch.cat([item_ids, item_ids.new_zeros(B, pad)], dim=1)
        beam_scores = torch.cat([beam_scores, beam_scores.new_full((B, pad), NEG_INF)], dim=1)
    return item_ids[:, :k], beam_scores[:, :k]
