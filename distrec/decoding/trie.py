"""The prefix trie of a SID table: which codes may follow a prefix, for constrained beam search."""

from __future__ import annotations

import numpy as np


class PrefixTrie:
    """Valid code prefixes as per-level child tables, for vectorised constrained decoding.

    `children[l][node, code]` is the node at depth l + 1 reached from `node` (depth l) by `code`, or
    -1; at the last level it is the item id. Depth 0 has one node, the root (0). Memory is
    nodes x codebook size per level: fine for TIGER-style 3-4 digit IDs; long PQ IDs (32 x 256 codes)
    are decoded with holistic scoring instead of a trie.
    """

    def __init__(self, children: list[np.ndarray]):
        self.children = children

    @classmethod
    def build(cls, codes: np.ndarray, item_ids: np.ndarray, codebook_sizes: list[int]) -> "PrefixTrie":
        node = np.zeros(len(codes), dtype=np.int64)
        num_nodes = 1
        children = []
        for level, size in enumerate(codebook_sizes):
            table = np.full((num_nodes, size), -1, dtype=np.int64)
            if level == len(codebook_sizes) - 1:
                table[node, codes[:, level]] = item_ids
            else:
                key = node * size + codes[:, level]
                unique, node = np.unique(key, return_inverse=True)
                node = node.reshape(-1)
                table[unique // size, unique % size] = np.arange(len(unique))
                num_nodes = len(unique)
            children.append(table)
        return cls(children)

    def step(self, nodes: np.ndarray, level: int, codes: np.ndarray) -> np.ndarray:
        """Child node (or item id at the last level) for each (node, code); -1 where invalid."""
        return self.children[level][nodes, codes]

    def allowed(self, nodes: np.ndarray, level: int) -> np.ndarray:
        """Boolean mask [len(nodes), codebook_sizes[level]] of valid next codes."""
        return self.children[level][nodes] >= 0
