"""Decoding for semantic-ID recommenders (pure torch).

- `beam.constrained_beam_search`: token-by-token beam search over SID digits, masked by the SID
  table's prefix trie (`trie.PrefixTrie`) so only real items come out (TIGER, flattened decoder).
- `scoring.topk_over_catalog` + `scoring.holistic_scores`: score every item of the catalog in
  chunks (exhaustive teacher-forced log-likelihood, RPG's per-digit holistic scoring).
- `graph.build_item_graph` / `graph.graph_decode`: RPG's graph-constrained decoding.
"""

from distrec.decoding.beam import constrained_beam_search
from distrec.decoding.graph import build_item_graph, graph_decode
from distrec.decoding.scoring import holistic_scores, holistic_topk, topk_over_catalog

__all__ = [
    "constrained_beam_search",
    "topk_over_catalog",
    "holistic_scores",
    "holistic_topk",
    "build_item_graph",
    "graph_decode",
]
