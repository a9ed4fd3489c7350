"""KV cache for incremental decoding, shared by every backbone.

Per layer it keeps keys/values [B, H, T, d] in a buffer that grows by doubling (no copy per step),
plus per-position side data ([B, T] tensors: key padding, timestamps, positions) and static
per-layer tensors (T5 cross-attention K/V). `reorder(beam_idx)` follows beam search.

Static tensors are kept once per *user*, not per beam: beam search reorders rows only within a user
(row = user x beams + beam), so a user's memory K/V serve all of its beams (`attention.attend` folds
the beams into the query axis) and are never reordered or repeated.
"""

import torch


class KVCache:
    def __init__(self, n_layers: int, capacity: int = 64):
        self.n_layers = n_layers
        self.capacity = capacity
        self.length = 0  # positions already cached
        self.keys = [None] * n_layers
        self.values = [None] * n_layers
        self.seq = {}  # name -> [B, length] side data (e.g. "pad", "timestamps", "positions")
        self.static = {}  # name -> tensor with one row per user (e.g. cross-attention K/V), fixed over steps

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new keys/values of `layer` after the cached ones; return all of them."""
        start, end = self.length, self.length + k.shape[2]
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if buf_k is None or buf_k.shape[2] < end or buf_k.dtype != k.dtype:
            cap = max(self.capacity, end)
            while cap < end:
                cap *= 2
            new_k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            new_v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
            if buf_k is not None and start:
                new_k[:, :, :start] = buf_k[:, :, :start]
                new_v[:, :, :start] = buf_v[:, :, :start]
            self.keys[layer], self.values[layer] = buf_k, buf_v = new_k, new_v
            self.capacity = cap
        buf_k[:, :, start:end] = k
        buf_v[:, :, start:end] = v
        return buf_k[:, :, :end], buf_v[:, :, :end]

    def extend_seq(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Append [B, T_new] side data for the new positions; return it for all positions."""
        old = self.seq.get(name)
        if old is not None and old.shape[1] != self.length:
            raise RuntimeError(f"cache side data '{name}' covers {old.shape[1]} positions, cache has {self.length}")
        self.seq[name] = values if old is None else torch.cat([old, values.to(old.dtype)], dim=1)
        return self.seq[name]

    def advance(self, n: int) -> None:
        """Called once per forward by the backbone, after every layer appended `n` positions."""
        self.length += n

    def reorder(self, beam_idx: torch.Tensor) -> "KVCache":
        """Keep batch rows `beam_idx` (in that order), in place; returns self. Rows must stay within
        their user (beam search); static tensors, one row per user, are left as they are."""
        for i in range(self.n_layers):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i].index_select(0, beam_idx)
                self.values[i] = self.values[i].index_select(0, beam_idx)
        self.seq = {n: t.index_select(0, beam_idx) for n, t in self.seq.items()}
        return self
