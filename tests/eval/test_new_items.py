"""`eval.new_item_share`: places of each top-K list kept for items added after training."""

import torch
from torch import nn

from distrec.eval.new_items import NewItemShare


class FixedScores(nn.Module):
    """Scores every item of a 10-item catalog the same for every user: item i scores -i (1 best)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def recommend(self, batch, k):
        scores = -torch.arange(1, 11, dtype=torch.float32).expand(len(batch["input_ids"]), -1)
        top = scores.topk(k, dim=1)
        return top.indices + 1, top.values


def test_new_items_take_their_share_of_the_list_in_score_order():
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long)}
    model = FixedScores()
    ids, scores = NewItemShare(model, first_new_item=8, share=0.5, num_items=10).recommend(batch, 4)
    # items 8, 9, 10 are new: the best two of them take half of the 4 places; the best two others the rest
    assert ids.tolist() == [[1, 2, 8, 9]] * 2
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # still ordered by the model's scores
    same, _ = NewItemShare(model, first_new_item=8, share=0.0, num_items=10).recommend(batch, 4)
    assert same.tolist() == model.recommend(batch, 4)[0].tolist()
    ids, _ = NewItemShare(model, first_new_item=8, share=1.0, num_items=10).recommend(batch, 4)
    assert ids.tolist() == [[1, 8, 9, 10]] * 2  # only three new items exist: the fourth place is the best other
    ids, _ = NewItemShare(model, first_new_item=2, share=0.25, num_items=10).recommend(batch, 4)
    assert ids.tolist() == [[1, 2, 3, 4]] * 2  # new items that outscore the others keep their places (at least 1)
