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


def test_a_share_outside_zero_to_one_is_refused_naming_the_key(tmp_path):
    """eval.new_item_share (the protocol) and recommend/serve's (the Predictor, before it reads a model)."""
    import pytest

    from distrec.config import compose
    from distrec.errors import ConfigError
    from distrec.eval.protocol import EvalProtocol
    from distrec.inference.predictor import Predictor

    for share in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=rf"eval.new_item_share={share} must be in \[0, 1\]"):
            EvalProtocol.from_config(compose(["stage=evaluate", f"eval.new_item_share={share}"]))
        with pytest.raises(ConfigError, match=rf"new_item_share={share} must be in \[0, 1\]"):
            Predictor.load(tmp_path / "no_run_here", new_item_share=share)
