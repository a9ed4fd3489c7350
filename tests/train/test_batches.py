"""Training windows, evaluation batches and the world-size-independent sampler."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from distrec.data.batches import (SequenceData, TrainSampler, build_train_index, collate_eval, collate_train,
                                  eval_batches, eval_rows, user_sample)
from distrec.errors import ConfigError, DataError


def table(seqs, valid, test):
    return pa.table({"user_id": list(range(1, len(seqs) + 1)), "items": seqs, "valid_pos": valid, "test_pos": test})


def test_windows_label_all_positions_first_then_only_the_newest():
    # user 1: training prefix [1..6] (valid 7, test 8); T = 3 -> first window + 2 sliding ones
    data = SequenceData.from_arrow(table([[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11]], [6, 1], [7, 2]))
    index = build_train_index(data, 3)
    b = collate_train(data, index, np.arange(len(index)), 3)
    assert b["input_ids"].tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, 5]]  # user 2 has a 1-item prefix: no sample
    assert b["target_ids"].tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 6]]
    assert index.num_labels.tolist() == [3, 1, 1]
    short = SequenceData.from_arrow(table([[4, 5, 6, 7]], [2], [3]))
    b = collate_train(short, build_train_index(short, 5), np.array([0]), 5)
    assert b["input_ids"].tolist() == [[0, 0, 0, 0, 4]] and b["target_ids"].tolist() == [[0, 0, 0, 0, 5]]


def test_include_valid_makes_the_validation_item_a_training_target():
    # Meta's HSTU protocol: prefixes end before the test item, never at or after it
    # (a temporal split can leave a user a validation item without a test item: user 4)
    data = SequenceData.from_arrow(table([[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11], [12, 13], [14, 15, 16]],
                                         [6, 1, -1, 2], [7, 2, -1, -1]))
    assert data.train_lengths().tolist() == [6, 1, 2, 2]
    assert data.train_lengths(include_valid=True).tolist() == [7, 2, 2, 3]
    index = build_train_index(data, 10, include_valid=True)
    b = collate_train(data, index, np.arange(len(index)), 10)
    assert [row[row > 0].tolist() for row in b["target_ids"]] == [[2, 3, 4, 5, 6, 7], [10], [13], [15, 16]]


def test_eval_batches_hold_out_the_target_and_left_pad():
    data = SequenceData.from_arrow(table([[1, 2, 3, 4, 5]], [3], [4]))
    rows, pos = eval_rows(data, "test")
    b = collate_eval(data, rows, pos, 3)
    assert b["input_ids"].tolist() == [[2, 3, 4]] and b["target"].tolist() == [5]
    b = collate_eval(data, *eval_rows(data, "valid"), 5)
    assert b["input_ids"].tolist() == [[0, 0, 1, 2, 3]] and b["target"].tolist() == [4]


def test_batches_carry_each_positions_next_item_time():
    """HSTU's time-gap bias measures from the next item's time (Meta's code): in training the
    target's, in evaluation the held-out item's for the newest position."""
    t = table([[1, 2, 3, 4, 5]], [3], [4]).append_column("timestamps", pa.array([[10, 20, 30, 40, 50]]))
    data = SequenceData.from_arrow(t)
    b = collate_train(data, build_train_index(data, 3), np.array([0]), 3)
    assert b["timestamps"].tolist() == [[0, 10, 20]] and b["next_timestamps"].tolist() == [[0, 20, 30]]
    b = collate_eval(data, *eval_rows(data, "test"), 3)
    assert b["timestamps"].tolist() == [[20, 30, 40]] and b["next_timestamps"].tolist() == [[30, 40, 50]]


def test_bad_sequences_are_named():
    with pytest.raises(DataError, match="valid_pos"):
        SequenceData.from_arrow(table([[1, 2]], [5], [1]))
    with pytest.raises(DataError, match="lacks columns"):
        SequenceData.from_arrow(pa.table({"user_id": [1]}))


@pytest.fixture(scope="module")
def ml100k(prepared):
    from distrec.artifacts import read_table

    return SequenceData.from_arrow(read_table(prepared / "data" / "sequences"))


def test_real_data_windows_never_leak_validation_or_test_items(ml100k):
    index = build_train_index(ml100k, 50)
    pairs = np.maximum(ml100k.train_lengths() - 1, 0)
    assert len(index) == (pairs > 0).sum() + np.maximum(pairs - 50, 0).sum()
    assert index.num_labels.sum() == pairs.sum()  # every training transition labelled exactly once
    b = collate_train(ml100k, index, np.arange(len(index)), 50)
    # the newest target of every window lies inside its user's training prefix
    assert (index.end < ml100k.train_lengths()[index.user_row]).all()
    assert int((b["target_ids"] > 0).sum()) == pairs.sum()
    assert ((b["input_ids"] == 0) <= (b["target_ids"] == 0)).all()  # no label on padding


@pytest.mark.parametrize("world,micro", [(2, 32), (4, 8)])
def test_global_batches_do_not_depend_on_the_worker_count(ml100k, world, micro):
    index = build_train_index(ml100k, 50)
    one = TrainSampler(index, 64, 64, 1, 0, seed=3)
    ranks = [TrainSampler(index, 64, micro, world, r, seed=3) for r in range(world)]
    for step in (0, 5, one.steps_per_epoch + 1):  # the second epoch is reshuffled
        (ids, weight), = one.micro_batches(step)
        parts = [mb for s in ranks for mb in s.micro_batches(step)]
        assert sorted(np.concatenate([p for p, _ in parts])) == sorted(ids) and weight == 1.0
        assert sum(w for _, w in parts) == pytest.approx(1.0)
        # weights are each micro-batch's share of labelled positions
        p, w = parts[0]
        assert w == pytest.approx(index.num_labels[p].sum() / index.num_labels[ids].sum())
    assert not np.array_equal(one.global_batch(0), one.global_batch(one.steps_per_epoch))
    with pytest.raises(ConfigError, match="global_batch_size"):
        TrainSampler(index, 10 ** 7, 10 ** 7, 1, 0, seed=0)


def test_grouping_by_length_keeps_the_global_batch_and_cuts_padding():
    lengths = np.random.default_rng(0).integers(4, 40, size=600)  # short histories, as on Amazon data
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    data = SequenceData(np.arange(600), np.ones(offsets[-1], dtype=np.int64), offsets,
                        lengths - 2, lengths - 1)
    index = build_train_index(data, 50)
    plain = TrainSampler(index, 256, 32, 1, 0, seed=3)
    grouped = TrainSampler(index, 256, 32, 1, 0, seed=3, group_by_length=True)
    for step in (0, 1):
        a, b = plain.micro_batches(step), grouped.micro_batches(step)
        assert sorted(np.concatenate([p for p, _ in a])) == sorted(np.concatenate([p for p, _ in b]))
        assert sum(w for _, w in b) == pytest.approx(1.0)
        longest = [index.end[p].max() for p, _ in b]
        assert all(index.end[p].max() <= index.end[q].min() for (p, _), (q, _) in zip(b, b[1:]))  # sorted
        # the columns micro-batches keep once all-padding columns are trimmed: far fewer when grouped
        assert sum(longest) < 0.8 * sum(index.end[p].max() for p, _ in a)


def test_every_rank_runs_the_same_number_of_eval_batches(ml100k):
    per_rank = [list(eval_batches(ml100k, "valid", 50, 100, rank=r, world_size=3)) for r in range(3)]
    assert len({len(p) for p in per_rank}) == 1
    users = torch.cat([b["user_ids"][:n] for p in per_rank for b, n in p])
    assert sorted(users.tolist()) == sorted(ml100k.user_ids[ml100k.valid_pos >= 1].tolist())


def test_max_users_is_a_seeded_random_sample_the_same_for_every_worker_count(ml100k):
    every, _ = eval_rows(ml100k, "valid")

    def users(world, seed=0, max_users=300):
        per_rank = [list(eval_batches(ml100k, "valid", 50, 64, rank=r, world_size=world, max_users=max_users,
                                      seed=seed)) for r in range(world)]
        assert len({len(p) for p in per_rank}) == 1  # every rank runs the same number of batches
        return sorted(torch.cat([b["user_ids"][:n] for p in per_rank for b, n in p]).tolist())

    one = users(1)
    assert len(one) == 300 and users(3) == one == users(1)  # any worker count, at every validation
    assert one != sorted(ml100k.user_ids[every[:300]].tolist())  # not the first 300 in id order
    rows = np.searchsorted(ml100k.user_ids, one)
    assert 0.35 < rows.mean() / len(ml100k.user_ids) < 0.65 and rows.max() > 0.9 * len(ml100k.user_ids)
    assert users(1, seed=1) != one
    assert users(2, max_users=10 ** 6) == sorted(ml100k.user_ids[every].tolist())  # more than there are: all
    assert user_sample(ml100k, "valid", 300, 0) == {"users": 300, "of": len(every), "seed": 0}
    assert user_sample(ml100k, "valid", None, 0) is None


@pytest.mark.parametrize("world,micro,grouped,weighting", [(1, 64, False, "labels"), (1, 16, True, "labels"),
                                                            (2, 8, True, "rows")])
def test_device_micro_batches_are_the_host_ones(ml100k, world, micro, grouped, weighting):
    """engine.kind=fast cuts its batches with torch ops on its device: the same samples, weights and
    tensors as the host path (here the device is the CPU; on a GPU the code is the same)."""
    index = build_train_index(ml100k, 50)
    for rank in range(world):
        sampler = TrainSampler(index, 64, micro, world, rank, seed=3, weighting=weighting, group_by_length=grouped)
        for step in (0, 1, sampler.steps_per_epoch):  # a new epoch: a new permutation on the device
            host, device = sampler.micro_batches(step), sampler.device_micro_batches(step, torch.device("cpu"))
            assert len(host) == len(device) == 64 // (micro * world)
            for (ids, w), (ids_t, w_t) in zip(host, device):
                assert ids_t.tolist() == ids.tolist() and float(w_t) == pytest.approx(w, rel=1e-6)
                a, b = collate_train(ml100k, index, ids, 50), collate_train(ml100k, index, ids_t, 50)
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
