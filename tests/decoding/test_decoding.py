"""Constrained beam search, exhaustive and holistic scoring, graph decoding — on a toy scorer whose
digit logits depend on the whole prefix, so beam search can go wrong if the bookkeeping is wrong."""

import numpy as np
import pytest
import torch

from distrec.decoding import (
    build_item_graph,
    constrained_beam_search,
    graph_decode,
    holistic_scores,
    holistic_topk,
    topk_over_catalog,
)


def make_trie(codes: np.ndarray, sizes: list[int]) -> list[torch.Tensor]:
    """children[l][node, code] -> child node (-1 if none); at the last level the item id."""
    children, parents = [], np.zeros(len(codes) - 1, dtype=np.int64)
    for level, size in enumerate(sizes):
        col = codes[1:, level]
        last = level == len(sizes) - 1
        keys = parents * size + col
        uniq, node_of = np.unique(keys, return_inverse=True)
        table = np.full((int(parents.max()) + 1, size), -1, dtype=np.int64)
        if last:
            table[parents, col] = np.arange(1, len(codes))
        else:
            table[uniq // size, uniq % size] = np.arange(len(uniq))
        children.append(torch.from_numpy(table))
        parents = node_of
    return children


def toy_catalog(num_items=300, sizes=(6, 8, 9), seed=0):
    rng = np.random.default_rng(seed)
    all_codes = np.array(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")).reshape(len(sizes), -1).T
    pick = rng.choice(len(all_codes), num_items, replace=False)
    codes = np.concatenate([np.full((1, len(sizes)), -1), all_codes[pick]]).astype(np.int64)
    return codes, list(sizes)


class ToyDecoder(torch.nn.Module):
    """h_0 = user vector; h_l = tanh(h_{l-1} + E_l[code_{l-1}]); logits_l = h_l V_l^T."""

    def __init__(self, sizes, dim=16, users=8):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.user = torch.randn(users, dim, generator=g)
        self.emb = [torch.randn(s, dim, generator=g) for s in sizes]
        self.out = [torch.randn(s, dim, generator=g) * 2 for s in sizes]

    def beam(self, children, width, k):
        state = {"h": self.user.clone()}

        def step(level, prev):
            if prev is not None:
                state["h"] = torch.tanh(state["h"] + self.emb[level - 1][prev])
            return state["h"] @ self.out[level].T

        def reorder(rows):
            state["h"] = state["h"][rows]

        return constrained_beam_search(step, reorder, len(self.user), children, width, k)

    def loglik(self, codes):  # codes [C, L] -> [B, C]
        B, C = len(self.user), len(codes)
        h = self.user.unsqueeze(1).expand(B, C, -1)
        total = torch.zeros(B, C)
        for level in range(codes.shape[1]):
            if level:
                h = torch.tanh(h + self.emb[level - 1][codes[:, level - 1]])
            logp = torch.log_softmax(h @ self.out[level].T, -1)
            total += logp.gather(2, codes[:, level].expand(B, C).unsqueeze(-1)).squeeze(-1)
        return total


def test_trie_masking_only_real_items():
    codes, sizes = toy_catalog()
    children = make_trie(codes, sizes)
    ids, scores = ToyDecoder(sizes).beam(children, width=20, k=20)
    assert (ids >= 1).all() and (ids <= len(codes) - 1).all()
    assert torch.isfinite(scores).all()
    for row in ids:  # distinct items per user
        assert len(set(row.tolist())) == len(row)


def test_beam_matches_exhaustive():
    """With the beam as wide as the widest trie level the search is exact: same items, same scores
    (fp32, atol 1e-5). With a narrower beam the top-10 still agree on this toy model."""
    codes, sizes = toy_catalog()
    children = make_trie(codes, sizes)
    model = ToyDecoder(sizes)
    codes_t = torch.from_numpy(codes)
    ex_ids, ex_scores = topk_over_catalog(lambda ids: model.loglik(codes_t[ids]), len(codes) - 1, k=10, chunk_size=37)
    wide = max(c.shape[0] * c.shape[1] for c in children)
    bm_ids, bm_scores = model.beam(children, width=wide, k=10)
    assert torch.equal(bm_ids, ex_ids)
    torch.testing.assert_close(bm_scores, ex_scores, atol=1e-5, rtol=0)
    narrow_ids, narrow_scores = model.beam(children, width=30, k=10)
    assert torch.equal(narrow_ids, ex_ids)
    # every beam score is the item's exact log-likelihood
    exact = model.loglik(codes_t[narrow_ids.reshape(-1)]).view(len(narrow_ids), -1, 10)
    exact = exact[torch.arange(len(narrow_ids)), torch.arange(len(narrow_ids))]
    torch.testing.assert_close(narrow_scores, exact, atol=1e-5, rtol=0)


def test_renormalised_beam_matches_exhaustive_over_valid_children():
    """renormalise=True (released IntRR): each level's softmax runs over the prefix's valid children;
    the widest beam then returns the exhaustive top-10 of that score, which differs from the default's."""
    codes, sizes = toy_catalog()
    children = make_trie(codes, sizes)
    model = ToyDecoder(sizes)
    codes_t = torch.from_numpy(codes[1:])
    h, total = model.user.unsqueeze(1).expand(-1, len(codes_t), -1), torch.zeros(len(model.user), len(codes_t))
    nodes = torch.zeros(len(codes_t), dtype=torch.long)
    for level in range(len(sizes)):
        if level:
            h = torch.tanh(h + model.emb[level - 1][codes_t[:, level - 1]])
        logits = (h @ model.out[level].T).masked_fill(children[level][nodes] < 0, float("-inf"))
        total += torch.log_softmax(logits, -1).gather(2, codes_t[:, level].expand_as(total).unsqueeze(-1)).squeeze(-1)
        nodes = children[level][nodes, codes_t[:, level]]
    ex_scores, ex_ids = total.topk(10, dim=1)
    wide = max(c.shape[0] * c.shape[1] for c in children)
    state = {"h": model.user.clone()}

    def step(level, prev):
        if prev is not None:
            state["h"] = torch.tanh(state["h"] + model.emb[level - 1][prev])
        return state["h"] @ model.out[level].T

    ids, scores = constrained_beam_search(step, lambda rows: state.update(h=state["h"][rows]), len(model.user),
                                          children, wide, 10, renormalise=True)
    assert torch.equal(ids, ex_ids + 1)
    torch.testing.assert_close(scores, ex_scores, atol=1e-5, rtol=0)
    assert not torch.equal(ids, model.beam(children, width=wide, k=10)[0])


def test_beam_masks_forbidden_codes():
    """A model that prefers a code no item has must still return only real items."""
    codes, sizes = toy_catalog(num_items=40)
    children = make_trie(codes, sizes)
    missing = int(np.setdiff1d(np.arange(sizes[0]), codes[1:, 0])[0]) if len(np.unique(codes[1:, 0])) < sizes[0] else None
    state = {}

    def step(level, prev):
        logits = torch.zeros(4 if prev is None else len(prev), sizes[level])
        if level == 0 and missing is not None:
            logits[:, missing] = 100.0
        return logits

    ids, scores = constrained_beam_search(step, lambda rows: state.update(r=rows), 4, children, beam_width=10, k=10)
    valid = set(range(1, len(codes)))
    assert set(ids.reshape(-1).tolist()) <= valid
    with pytest.raises(ValueError):
        constrained_beam_search(step, lambda rows: None, 4, children, beam_width=5, k=10)


def test_beam_tiny_catalog_pads():
    codes = np.array([[-1, -1], [0, 1], [1, 0]])
    children = make_trie(codes, [2, 2])
    ids, scores = constrained_beam_search(lambda lv, p: torch.zeros(1 if p is None else len(p), 2),
                                          lambda r: None, 1, children, beam_width=5, k=4)
    assert sorted(ids[0, :2].tolist()) == [1, 2] and ids[0, 2:].tolist() == [0, 0]
    assert torch.isinf(scores[0, 2:]).all()


def test_holistic_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    B, m, M, N = 3, 8, 16, 500
    logp = torch.log_softmax(torch.randn(B, m, M, generator=g), -1)
    codes = torch.cat([torch.full((1, m), -1), torch.randint(0, M, (N, m), generator=g)])
    brute = torch.tensor([[sum(float(logp[b, d, codes[i, d]]) for d in range(m)) for i in range(1, N + 1)]
                          for b in range(B)])
    torch.testing.assert_close(holistic_scores(logp, codes[1:], "sum"), brute, atol=1e-4, rtol=0)
    torch.testing.assert_close(holistic_scores(logp, codes[1:], "mean"), brute / m, atol=1e-5, rtol=0)
    ids, scores = holistic_topk(logp, codes, k=10, chunk_size=64, reduce="sum")
    best = brute.topk(10, dim=1)
    torch.testing.assert_close(scores, best.values, atol=1e-4, rtol=0)
    assert torch.equal(ids, best.indices + 1)


def test_graph_decoding():
    """Neighbours are the most similar items; with a dense enough graph decoding finds the holistic
    top items, and every returned id is a real item."""
    g = torch.Generator().manual_seed(0)
    m, M, N, d = 4, 8, 400, 6
    emb = torch.randn(m, M, d, generator=g)
    codes = torch.cat([torch.full((1, m), -1), torch.randint(0, M, (N, m), generator=g)])
    adj = build_item_graph(emb, codes, n_edges=20, block_size=64)
    assert adj.shape == (N + 1, 20) and (adj >= 1).all() and (adj <= N).all()
    unit = torch.nn.functional.normalize(emb, dim=-1)
    vec = torch.cat([unit[dd][codes[1:, dd]] for dd in range(m)], dim=1)  # concat of unit tokens
    sim = vec @ vec.T
    sim.fill_diagonal_(float("-inf"))
    expect = sim.topk(20, dim=1).values
    got = sim.gather(1, adj[1:] - 1)
    torch.testing.assert_close(got.sort(1, descending=True).values, expect, atol=1e-4, rtol=0)

    logp = torch.log_softmax(torch.randn(5, m, M, generator=g), -1)
    ids, scores, visited = graph_decode(logp, codes, adj, k=5, num_beams=10, steps=4,
                                        generator=torch.Generator().manual_seed(0))
    assert ids.shape == (5, 5) and (ids >= 1).all() and (ids <= N).all()
    torch.testing.assert_close(scores, holistic_scores(logp, codes[1:], "mean").gather(1, ids - 1))
    assert (visited <= N).all() and (visited > 10).all()
    full = holistic_topk(logp, codes, k=5, reduce="mean")[0]
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(ids, full)])
    assert overlap >= 0.6
