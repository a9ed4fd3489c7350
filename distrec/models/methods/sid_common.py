"""What the semantic-ID methods share: the SID table as buffers and the token bookkeeping.

The data pipeline only moves item ids; these helpers turn them into SID tokens (vocabulary of
distrec.tokenize.sid_table: pad=0, bos=1, eos=2, digit l code c -> offsets[l] + c).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from distrec.decoding.trie import PrefixTrie
from distrec.errors import ConfigError

PAD, BOS = 0, 1


class SIDVocab(nn.Module):
    """The SID table held as (non-persistent) buffers so it follows the model across devices.

    codes [N + 1, L] (row 0 = -1), item_tokens [N + 1, L] (row 0 = PAD), level_of_token [V]
    (-1 for specials), and the prefix trie `children` when the IDs are unique (needed by beam search).
    """

    def __init__(self, sid_table, with_trie: bool = True):
        super().__init__()
        if sid_table is None:
            raise ConfigError("this method needs a SID table; run `distrec tokenize` first (paths.sids)")
        # copies: the module owns its buffers (a table that came through Ray's object store is read-only)
        codes = torch.tensor(sid_table.codes, dtype=torch.long)
        offsets = torch.tensor(sid_table.offsets, dtype=torch.long)
        self.codebook_sizes = [int(k) for k in sid_table.codebook_sizes]
        self.levels, self.vocab_size = len(self.codebook_sizes), int(sid_table.vocab_size)
        self.num_items = codes.shape[0] - 1
        self.register_buffer("codes", codes, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("item_tokens", torch.where(codes >= 0, codes + offsets, PAD), persistent=False)
        level_of_token = torch.full((self.vocab_size,), -1, dtype=torch.long)
        for level, (off, size) in enumerate(zip(offsets.tolist(), self.codebook_sizes)):
            level_of_token[off:off + size] = level
        self.register_buffer("level_of_token", level_of_token, persistent=False)
        self.num_children = 0
        if with_trie:
            for level, table in enumerate(sid_table.trie().children):
                self.register_buffer(f"children_{level}", torch.tensor(table, dtype=torch.long), persistent=False)
            self.num_children = self.levels

    @property
    def trie_children(self) -> list[torch.Tensor]:
        return [getattr(self, f"children_{level}") for level in range(self.num_children)]

    def children_from(self, first_item: int | None) -> list[torch.Tensor]:
        """The trie of items first_item..N only (a beam over the items added after training), or the whole
        trie for None; built once per first item, on the codes' device."""
        if first_item is None:
            return self.trie_children
        key = (first_item, self.codes.device)  # a model moved to another device builds it again
        if getattr(self, "_sub_trie", (None,))[0] != key:
            codes = self.codes[first_item:].cpu().numpy()
            trie = PrefixTrie.build(codes, np.arange(first_item, self.num_items + 1), self.codebook_sizes)
            self._sub_trie = (key, [torch.tensor(t, device=self.codes.device) for t in trie.children])
        return self._sub_trie[1]

    def level_logits(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        """The codes of one digit out of full-vocabulary logits [..., V] -> [..., K_level]."""
        start = int(self.offsets[level])
        return logits[..., start:start + self.codebook_sizes[level]]

    def digit_cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean CE of target tokens [S] under full-vocabulary logits [S, V], each softmax restricted
        to the codes of the target's own digit (as decoding normalises them)."""
        same_level = self.level_of_token.unsqueeze(0) == self.level_of_token[targets].unsqueeze(1)
        logits = logits.float().masked_fill(~same_level, float("-inf"))
        return nn.functional.cross_entropy(logits, targets)


def left_aligned_positions(pad: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] counted from each row's first real token (left padding gets 0), so a
    token's position does not depend on how much padding its batch needed."""
    return (torch.cumsum(~pad, dim=1) - 1).clamp(min=0)


def trim_left_padding(*tensors: torch.Tensor, pad: torch.Tensor):
    """Drop the leading columns that are padding in every row (left-padded batches)."""
    real = (~pad).any(0)
    first = int(real.float().argmax()) if bool(real.any()) else pad.shape[1] - 1
    return tuple(t[:, first:] for t in tensors) + (pad[:, first:],)


def prefix_windows(input_ids: torch.Tensor, target_ids: torch.Tensor, width: int):
    """Every labelled position as its own sample: (histories [S, width] left-padded, targets [S],
    row [S] = the batch row it came from). History of position t = the `width` items ending at t."""
    padded = nn.functional.pad(input_ids, (width - 1, 0))
    windows = padded.unfold(1, width, 1)  # [B, T, width]
    labelled = target_ids > 0
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(target_ids)
    return windows[labelled], target_ids[labelled], rows[labelled]
