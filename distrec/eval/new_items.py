"""Room for items added after training in each top-K list (TIGER's cold-start experiment sets the share of
unseen items in the retrieved list with a parameter epsilon; this is that knob for every method).

A model trained before the catalog grew rarely ranks a new item above the items it was trained on: their
digits were never a target. `NewItemShare` keeps up to ceil(share * K) places of each list for the
best-scoring new items among the model's candidates (more when they score higher than the rest), fills
the list with the best of the others, and orders it by the model's own scores (so conservative ranks
stay consistent).
"""

from __future__ import annotations

import math

import torch
from torch import nn

CANDIDATES_PER_PLACE = 50  # the model is asked for this many candidates per place of the list (at most the catalog)


def candidates(k: int, num_items: int) -> int:
    """How many items to ask the model for, so that the best new items are among them."""
    return min(num_items, CANDIDATES_PER_PLACE * k)


def candidate_lists(recommend, model, batch: dict, width: int, first_new_item: int, share: float, num_items: int):
    """Candidate lists (ids, scores) [B, W], best first, holding the model's top `width` and its best new
    items, for `with_new_items`. `recommend(batch, n, **kwargs)` runs the model. A beam decoder runs a
    second beam of ceil(share * width) over the new items' sub-trie (a 50 x width beam would cost 50x);
    any other method is asked for its top 50 x width, cheap for a scorer of the whole catalog."""
    if not (getattr(model, "beams_new_items", False) and model.decoding_name == "beam"):
        return recommend(batch, candidates(width, num_items))
    ids, scores = recommend(batch, width)
    new_ids, new_scores = recommend(batch, math.ceil(share * width), items_from=first_new_item)
    ids, scores = torch.cat([new_ids, ids], 1), torch.cat([new_scores.float(), scores.float()], 1)
    repeated = (ids.unsqueeze(2) == ids.unsqueeze(1)).tril(-1).any(2)  # a new item both beams found: once
    scores = scores.masked_fill(repeated, float("-inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return ids.gather(1, order), scores.gather(1, order)


def with_new_items(ids: torch.Tensor, scores: torch.Tensor, first_new_item: int, share: float, k: int):
    """The top-k of candidate lists `ids`/`scores` [B, W] (best first) in which the best ceil(share * k) new
    items (ids >= first_new_item) are sure of a place; ordered by score."""
    scores = scores.float()
    is_new = ids >= first_new_item
    # the best new items are in; the rest of the list is the best of everything else
    reserved = is_new & (torch.cumsum(is_new.int(), 1) <= math.ceil(share * k))
    rest = ~reserved & (torch.cumsum((~reserved).int(), 1) <= k - reserved.sum(1, keepdim=True))
    top = scores.masked_fill(~(reserved | rest), float("-inf")).topk(min(k, ids.shape[1]), dim=1)
    return ids.gather(1, top.indices), top.values


class NewItemShare(nn.Module):
    """`model` whose `recommend` keeps room for new items (evaluation wraps the model in it)."""

    def __init__(self, model, first_new_item: int, share: float, num_items: int):
        super().__init__()
        self.model, self.first_new_item, self.share, self.num_items = model, first_new_item, share, num_items

    @property
    def beam_width(self):  # recommend_in_pieces sizes its pieces by the wrapped model's beam
        return getattr(self.model, "beam_width", None)

    def recommend(self, batch: dict, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, scores = candidate_lists(self.model.recommend, self.model, batch, k, self.first_new_item, self.share,
                                      self.num_items)
        return with_new_items(ids, scores, self.first_new_item, self.share, k)
