"""Metrics against hand-computed cases; conservative ties; the all-reducible accumulator."""

import math

import pytest
import torch

from distrec.eval.metrics import MetricAccumulator, conservative_ranks, hits_and_ndcg, ranks_from_scores


def test_recall_and_ndcg_hand_computed():
    ranks = torch.tensor([0, 1, 4, 9, 30])  # 0-based ranks of five users' targets
    m = hits_and_ndcg(ranks, [1, 5, 10])
    assert m["recall@1"].tolist() == [1, 0, 0, 0, 0]
    assert m["recall@5"].tolist() == [1, 1, 1, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 1, 1, 0]
    assert m["ndcg@1"].tolist() == [1, 0, 0, 0, 0]
    assert m["ndcg@5"].tolist() == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(6), 0, 0])
    assert m["ndcg@10"].tolist() == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(11), 0])


def test_ranks_from_top_lists():
    items = torch.tensor([[7, 3, 9, 1], [5, 6, 2, 8], [4, 3, 2, 1]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.5, 0.4, 0.3, 0.2], [1.0, 0.9, 0.8, 0.7]])
    target = torch.tensor([9, 5, 42])
    assert conservative_ranks(items, scores, target).tolist() == [2, 0, 4]  # 42 not listed: rank = width


def test_ties_are_broken_against_the_target():
    # the target (3) ties with two other items for first place: it ranks third, not first by luck
    items = torch.tensor([[1, 3, 2, 4]])
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    assert conservative_ranks(items, scores, torch.tensor([3])).tolist() == [2]
    # a constant model gets no credit at any K
    full = torch.zeros(1, 100)
    assert ranks_from_scores(full, torch.tensor([17])).tolist() == [99]
    full[0, 17] = 1.0
    assert ranks_from_scores(full, torch.tensor([17])).tolist() == [0]


def test_accumulator_metrics_invalid_ids_coverage_latency():
    acc = MetricAccumulator([1, 2], num_items=10)
    acc.update(torch.tensor([0, 3]), torch.tensor([[1, 2], [3, 0]]), seconds=0.5)  # id 0 is invalid
    acc.update(torch.tensor([1]), torch.tensor([[1, 11]]), seconds=0.25)  # 11 is outside the catalog
    r = acc.result()
    assert r["users"] == 3
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@2"] == pytest.approx(2 / 3)
    assert r["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert r["mrr@2"] == pytest.approx((1 + 0.5) / 3)
    assert r["invalid_id_rate"] == pytest.approx(2 / 6)
    assert r["coverage@1"] == pytest.approx(2 / 10)  # items 1, 3
    assert r["coverage@2"] == pytest.approx(3 / 10)  # items 1, 2, 3
    assert r["latency_ms_per_user"] == pytest.approx(250.0)


def test_accumulator_state_sums_like_one_big_run():
    # what the engine does across ranks: sum the state tensors, load, read
    whole = MetricAccumulator([1, 5], num_items=8)
    parts = [MetricAccumulator([1, 5], num_items=8) for _ in range(2)]
    ranks = torch.tensor([0, 2, 7, 1])
    items = torch.tensor([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [1, 1, 1, 1, 1], [8, 7, 6, 5, 4]])
    history = torch.tensor([[0, 1], [0, 0], [1, 2], [4, 8]])
    whole.update(ranks, items, history=history)
    parts[0].update(ranks[:2], items[:2], history=history[:2])
    parts[1].update(ranks[2:], items[2:], history=history[2:])
    merged = MetricAccumulator([1, 5], num_items=8)
    merged.load(parts[0].state() + parts[1].state())
    assert merged.result() == pytest.approx(whole.result())
    assert merged.result()["coverage@5"] == 1.0
    assert merged.result()["seen@1"] == pytest.approx(3 / 4)  # users 0, 2 and 3 get an item they have first
    assert merged.result()["seen@5"] == pytest.approx((1 / 5 + 0 + 5 / 5 + 2 / 5) / 4)
