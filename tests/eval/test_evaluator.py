"""The evaluator: exact ranks from top lists, history filtering, predictions, ties."""

import pytest
import torch
from torch import nn

from distrec.eval.evaluator import drop_history, evaluate
from distrec.eval.metrics import ranks_from_scores
from distrec.models.methods.sasrec import SASRec


class FixedScores(nn.Module):
    """Scores every item with a given table row per user (a model whose ranking we know)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = nn.Parameter(scores, requires_grad=False)

    def recommend(self, batch, k):
        s = self.scores[batch["user_ids"]].clone()
        s[:, 0] = float("-inf")
        top = s.topk(k, dim=1)
        return top.indices, top.values


def batch_of(users, targets, history):
    return {"user_ids": torch.tensor(users), "target": torch.tensor(targets), "input_ids": torch.tensor(history)}


def test_oracle_constant_and_history_filter():
    num_items = 30
    scores = torch.arange(num_items + 1, dtype=torch.float).repeat(3, 1)  # item 30 best, then 29, ...
    model = FixedScores(scores)
    batches = [batch_of([0, 1], [30, 28], [[0, 30], [29, 30]]), batch_of([2], [5], [[0, 1]])]
    r = evaluate(model, batches, ks=[1, 5], num_items=num_items).metrics.result()
    assert r["recall@1"] == pytest.approx(1 / 3) and r["recall@5"] == pytest.approx(2 / 3)
    # without the history items 30 and 29, user 1's target 28 becomes the top item
    r = evaluate(model, batches, ks=[1, 5], num_items=num_items, filter_history=True).metrics.result()
    assert r["recall@1"] == pytest.approx(1 / 3)  # user 0's target 30 is in its own history: a miss now
    constant = FixedScores(torch.zeros(3, num_items + 1))
    r = evaluate(constant, batches, ks=[1, 5, 10], num_items=num_items).metrics.result()
    assert r["recall@10"] == 0.0  # all tied: never credited


def test_drop_history_keeps_order_of_unseen_items():
    ids, scores = drop_history(torch.tensor([[5, 4, 3, 2]]), torch.tensor([[4.0, 3.0, 2.0, 1.0]]), torch.tensor([[0, 4]]))
    assert ids.tolist() == [[5, 3, 2, 4]]
    assert scores[0, -1] == float("-inf")


def test_top_list_ranks_equal_full_score_ranks_for_sasrec():
    torch.manual_seed(0)
    model = SASRec(num_items=40, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0, max_history=6).eval()
    history = torch.randint(1, 41, (64, 6))
    target = torch.randint(1, 41, (64,))
    batch = {"input_ids": history, "target": target, "user_ids": torch.arange(64)}
    out = evaluate(model, [batch], ks=[1, 5, 10], num_items=40, keep_predictions=True)
    full = ranks_from_scores(model.score_all(batch), target)
    listed = torch.tensor(out.predictions["rank"])
    inside = full < 10
    assert torch.equal(listed[inside], full[inside]) and (listed[~inside] >= 10).all()
    assert len(out.predictions["items"][0]) == 10 and out.predictions["user_id"] == list(range(64))
    assert model.training is False


def test_padding_rows_of_eval_batches_do_not_count():
    model = FixedScores(torch.arange(11, dtype=torch.float).repeat(3, 1))
    padded = (batch_of([0, 1, 1], [10, 9, 9], [[1], [1], [1]]), 2)  # the third row repeats a user
    empty = (batch_of([0], [10], [[1]]), 0)  # a rank that ran out still calls the model
    out = evaluate(model, [padded, empty], ks=[1], num_items=10, keep_predictions=True)
    assert out.metrics.users == 2 and out.metrics.result()["recall@1"] == 0.5
    assert out.predictions["user_id"] == [0, 1]


def test_filtered_evaluation_also_reports_the_unfiltered_ranking():
    num_items = 30
    model = FixedScores(torch.arange(num_items + 1, dtype=torch.float).repeat(3, 1))
    batches = [batch_of([0, 1], [30, 28], [[0, 30], [29, 30]]), batch_of([2], [5], [[0, 1]])]
    plain = evaluate(model, batches, ks=[1, 5], num_items=num_items)
    filtered = evaluate(model, batches, ks=[1, 5], num_items=num_items, filter_history=True)
    assert plain.unfiltered is None
    def quality(r):
        return {k: v for k, v in r.items() if not k.startswith("latency")}

    assert quality(filtered.unfiltered.result()) == quality(plain.metrics.result())
    assert quality(filtered.metrics.result()) != quality(plain.metrics.result())


def test_seen_at_k_is_the_share_of_the_top_k_already_in_the_history():
    num_items = 30
    model = FixedScores(torch.arange(num_items + 1, dtype=torch.float).repeat(3, 1))  # everyone: 30, 29, 28, ...
    batches = [batch_of([0, 1], [30, 28], [[0, 30], [29, 30]]), batch_of([2], [5], [[0, 1]])]
    plain = evaluate(model, batches, ks=[1, 5], num_items=num_items).metrics.result()
    assert plain["seen@1"] == pytest.approx(2 / 3)  # users 0 and 1 get an item of their history first
    assert plain["seen@5"] == pytest.approx((1 / 5 + 2 / 5 + 0) / 3)  # padding (0) is never "seen"
    filtered = evaluate(model, batches, ks=[1, 5], num_items=num_items, filter_history=True)
    assert filtered.metrics.result()["seen@5"] == 0.0
    assert filtered.unfiltered.result()["seen@5"] == pytest.approx(plain["seen@5"])
