"""FAMAE: masking touches only the target position; samples, masks, losses and diagnostics."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from distrec.models.methods.famae import FAMAE, FieldSpec, famae_sequences
from distrec.train.famae import bucketize, item_field_tables


def tiny(num_items=50, dim=16, sampled_min_vocab=20):
    g = torch.Generator().manual_seed(0)
    specs = [FieldSpec("item_id", num_items + 1), FieldSpec("brand", 6), FieldSpec("tags", 9, multi=True)]
    brand = torch.randint(1, 6, (num_items + 1,), generator=g)
    tags = torch.randint(0, 9, (num_items + 1, 3), generator=g)
    brand[0], tags[0] = 0, 0
    torch.manual_seed(0)
    return FAMAE(specs, [torch.arange(num_items + 1), brand, tags], dim=dim, layers=2, heads=2, ffn=32,
                 dropout=0.1, max_len=9, negatives=8, sampled_min_vocab=sampled_min_vocab).eval()


def test_masking_applies_only_to_the_target_position():
    m = tiny()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9]])
    other_target = seq.clone()
    other_target[0, -1] = 42
    other_history = seq.clone()
    other_history[0, 3] = 42
    all_masked = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        h = m.encode(seq, all_masked)
        # the target's own fields are all hidden: which item it is cannot matter
        torch.testing.assert_close(m.encode(other_target, all_masked), h)
        # history positions are never masked: changing one changes h
        assert not torch.allclose(m.encode(other_history, all_masked), h)
        # unmasked target fields are seen
        assert not torch.allclose(m.encode(other_target, torch.zeros(1, 3, dtype=torch.bool)),
                                  m.encode(seq, torch.zeros(1, 3, dtype=torch.bool)))
        # masking only the item id leaves the target's other fields visible
        id_only = torch.tensor([[True, False, False]])
        same_fields = seq.clone()
        same_fields[0, -1] = 10
        m.values_1[10], m.values_2[10] = m.values_1[9], m.values_2[9]
        torch.testing.assert_close(m.encode(same_fields, id_only), m.encode(seq, id_only))


def test_sample_masks_hide_between_one_and_all_fields():
    masks = FAMAE.sample_masks(4000, 3, generator=torch.Generator().manual_seed(1))
    k = masks.sum(1)
    assert k.min() == 1 and k.max() == 3
    counts = torch.bincount(k, minlength=4)[1:].float() / 4000  # K ~ U{1..J}
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.03)


def test_samples_are_history_then_target():
    inputs = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    targets = torch.tensor([[0, 0, 0, 0, 14], [22, 23, 24, 25, 26]])
    torch.manual_seed(0)
    seq = famae_sequences(inputs, targets, max_len=7)
    assert seq.shape == (2, 7)
    assert seq[0].tolist() == [0, 0, 0, 11, 12, 13, 14]  # only the last position is labelled
    t = seq[1, -1].item()
    assert 22 <= t <= 26 and seq[1, -2].item() == t - 1  # history ends right before its target
    assert seq[1, :-1][seq[1, :-1] > 0].tolist() == list(range(21, t))


def test_training_step_learns_and_uses_sampled_softmax():
    m = tiny(dim=32, sampled_min_vocab=20)  # item id vocab 51 > 20: trained by sampled softmax
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(3)
    # every user walks items in order: the next item is predictable
    starts = torch.randint(1, 40, (32, 1), generator=g)
    inputs = starts + torch.arange(8)[None]
    batch = {"input_ids": inputs, "target_ids": inputs + 1}
    seq = torch.cat([inputs, inputs[:, -1:] + 1], 1)
    id_only = torch.zeros(32, 3, dtype=torch.bool)
    id_only[:, 0] = True

    def id_nll():  # full-softmax NLL of the target id, only the id hidden, no dropout
        m.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(m.logits(0, m.encode(seq, id_only)), seq[:, -1]).item()

    before = id_nll()
    m.train()
    for _ in range(40):
        out = m(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert "loss_item_id" in out and "loss_tags" in out
    assert id_nll() < 0.75 * before
    m.eval()
    ids, scores = m.recommend({"input_ids": inputs[:4]}, 5)
    assert ids.shape == (4, 5) and (ids > 0).all()
    reps = m.item_representations()
    assert reps.shape == (51, 3 * 32) and torch.all(reps[0] == 0)


def test_field_tables_from_items():
    items = pa.table({"item_id": [2, 1, 3], "title": ["b", "a", "c"], "genres": [[1, 2], None, [3]],
                      "year": [1990.0, None, 2000.0], "brand": [0, 4, 2]})
    kinds = {"title": "text", "genres": "multi_categorical", "year": "numeric", "brand": "categorical"}
    specs, tables = item_field_tables(items, kinds, [], 4, {"genres": 0.5}, "items")
    assert [s.name for s in specs] == ["item_id", "genres", "year", "brand"]
    assert specs[1].multi and specs[1].weight == 0.5 and specs[1].vocab == 4
    assert tables[1][2].tolist() == [1, 2] and tables[1][1].tolist() == [0, 0]
    assert tables[2][1] == 0 and tables[2][2] < tables[2][3]  # missing year -> 0; buckets ordered
    assert tables[3].tolist() == [0, 4, 0, 2]
    from distrec.errors import ConfigError
    with pytest.raises(ConfigError, match="text"):
        item_field_tables(items, kinds, ["title"], 4, {}, "items")
    with pytest.raises(ConfigError, match="unknown"):
        item_field_tables(items, kinds, ["colour"], 4, {}, "items")
    assert bucketize([None, 1.0, 2.0, 3.0, 4.0], 2).tolist() == [0, 1, 1, 2, 2]
