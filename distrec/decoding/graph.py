"""RPG's graph-constrained decoding.

Items are nodes; item i links to the `n_edges` items most similar to it, where similarity is the
mean over digits of (cos(token_d(i), token_d(j)) + 1) / 2 under the model's learned token
embeddings. Decoding starts from random items and, for a few propagation steps, scores the current
beams and all their neighbours holistically and keeps the best `num_beams`. Only real items are
ever visited, and far fewer than the catalog when the graph is sparse.
"""

from __future__ import annotations

import torch




@torch.no_grad()
def build_item_graph(token_emb: torch.Tensor, codes: torch.Tensor, n_edges: int, block_size: int = 1024,
                     progress: bool = False) -> torch.Tensor:
    """Adjacency [N + 1, n_edges] (row 0, the padding item, points at item 1) from token
    embeddings [m, M, d] and codes [N + 1, m] (row 0 ignored).

    Per digit the code-code cosine table S_d = E_d E_d^T is tiny ([M, M]), so the similarity of a
    block of items to all items is a sum of m gathers from S_d: [block, N] memory, never N^2.
    The (x + 1) / 2 affine map and the 1/m mean do not change the ranking and are skipped.
    """
    from tqdm import tqdm

    unit = torch.nn.functional.normalize(token_emb.float(), dim=-1)
    code_cos = unit @ unit.transpose(1, 2)  # [m, M, M]
    item_codes = codes[1:]
    n, m = item_codes.shape
    n_edges = min(n_edges, n - 1)
    adjacency = torch.empty(n + 1, n_edges, dtype=torch.long)
    for start in tqdm(range(0, n, block_size), desc="item graph", disable=not progress):
        rows = item_codes[start:start + block_size]
        sim = torch.zeros(rows.shape[0], n)
        for d in range(m):
            sim += code_cos[d][rows[:, d]].index_select(1, item_codes[:, d])
        own = torch.arange(start, start + rows.shape[0])
        sim[torch.arange(rows.shape[0]), own] = float("-inf")  # no self loops
        adjacency[start + 1:start + 1 + rows.shape[0]] = sim.topk(n_edges, dim=1).indices + 1
    adjacency[0] = 1
    return adjacency


@torch.no_grad()
def graph_decode(digit_logprobs: torch.Tensor, codes: torch.Tensor, adjacency: torch.Tensor, k: int,
                 num_beams: int, steps: int, generator: torch.Generator | None = None):
    """Return (item_ids [B, k], scores [B, k] (mean digit log-prob), visited [B] distinct items scored).

    digit_logprobs [B, m, M]; codes [N + 1, m]; adjacency [N + 1, E] from `build_item_graph`.
    """
    if num_beams < k:
        raise ValueError(f"graph decoding needs num_beams ({num_beams}) >= k ({k})")
    B, m, M = digit_logprobs.shape
    num_items = codes.shape[0] - 1
    device = digit_logprobs.device
    flat_logp = digit_logprobs.reshape(B, m * M)
    digit_offset = torch.arange(m, device=device) * M

    def score(items):  # items [B, C] -> mean digit log-prob [B, C]
        index = (codes[items] + digit_offset).reshape(B, -1)
        return flat_logp.gather(1, index).view(B, items.shape[1], m).float().mean(-1)

    beams = torch.randint(1, num_items + 1, (B, num_beams), generator=generator).to(device)
    visited = torch.zeros(B, num_items + 1, dtype=torch.bool, device=device)
    visited.scatter_(1, beams, True)
    beam_scores = score(beams)
    for _ in range(steps):
        candidates = torch.cat([beams, adjacency[beams].reshape(B, -1)], dim=1)
        visited.scatter_(1, candidates, True)
        candidates, _ = candidates.sort(dim=1)
        cand_scores = score(candidates)
        repeat = torch.zeros_like(candidates, dtype=torch.bool)
        repeat[:, 1:] = candidates[:, 1:] == candidates[:, :-1]  # an item enters the top-k once
        cand_scores = cand_scores.masked_fill(repeat, float("-inf"))
        beam_scores, pos = cand_scores.topk(num_beams, dim=1)
        beams = candidates.gather(1, pos)
    return beams[:, :k], beam_scores[:, :k], visited[:, 1:].sum(1)

