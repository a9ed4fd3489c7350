"""SASRec: causality, padding invariance, the three losses, top-k, and that it learns."""

import pytest
import torch

from distrec.config import compose
from distrec.errors import ConfigError
from distrec.models.recommender import Catalog, build_model
from distrec.models.methods.sasrec import SASRec


def tiny(loss="softmax", **kw):
    torch.manual_seed(0)
    return SASRec(num_items=30, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, max_history=8,
                  loss=loss, num_negatives=5, **kw)


def test_builds_from_shipped_config():
    cfg = compose(["method=sasrec", "model.size=debug"])
    model = build_model(cfg.model, cfg.method, Catalog(num_items=50))
    assert isinstance(model, SASRec)
    assert model.item_emb.num_embeddings == 51 and model.max_history == cfg.model.max_history


def test_unknown_loss_is_refused():
    with pytest.raises(ConfigError, match=r"method.loss: Invalid value 'hinge', expected one of \[softmax, sampled_softmax, bce\]"):
        compose(["method.loss=hinge"])
    with pytest.raises(ValueError, match="'hinge' is not a valid Loss"):  # built directly
        tiny(loss="hinge")


def test_causal_and_left_padding_invariant():
    model = tiny().eval()
    ids = torch.tensor([[0, 0, 3, 4, 5, 6]])
    h = model.encode(ids)
    changed = ids.clone()
    changed[0, -1] = 7  # a later item must not change earlier states
    assert torch.allclose(model.encode(changed)[:, :-1], h[:, :-1], atol=1e-6)
    assert not torch.allclose(model.encode(changed)[:, -1], h[:, -1])
    more_padding = torch.tensor([[0, 0, 0, 0, 3, 4, 5, 6]])  # same history, wider batch
    assert torch.allclose(model.encode(more_padding)[:, -4:], h[:, -4:], atol=1e-6)


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "bce"])
def test_losses_backpropagate_and_ignore_unlabelled(loss):
    model = tiny(loss)
    batch = {"input_ids": torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
             "target_ids": torch.tensor([[0, 2, 3, 4], [5, 6, 7, 0]])}
    out = model(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["labelled_positions"].item() == 6
    out["loss"].backward()
    assert model.item_emb.weight.grad[0].abs().sum() == 0  # the padding row never learns


def test_recommend_never_returns_padding_and_is_sorted():
    model = tiny().eval()
    ids, scores = model.recommend({"input_ids": torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])}, k=30)
    assert ids.shape == (2, 30) and (ids > 0).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert sorted(ids[0].tolist()) == list(range(1, 31))  # the whole catalog, each item once


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "bce"])
def test_learns_a_deterministic_successor_under_bf16(loss):
    # item i is always followed by i + 1: after a little training the top-1 must be that item
    model = tiny(loss)
    seqs = torch.stack([torch.arange(s, s + 9) for s in range(1, 22)])  # items 1..29
    batch = {"input_ids": seqs[:, :-1], "target_ids": seqs[:, 1:]}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_value = model(batch)["loss"]
        opt.zero_grad()
        loss_value.backward()
        opt.step()
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        top, _ = model.recommend({"input_ids": seqs[:, :-1]}, k=1)
    accuracy = (top[:, 0] == seqs[:, -1]).float().mean().item()
    assert accuracy > (0.7 if loss == "bce" else 0.9), accuracy  # one negative learns slower


def test_length_groups_give_the_same_scores_as_one_row_at_a_time():
    torch.manual_seed(0)
    model = SASRec(num_items=30, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, max_history=40).eval()
    lengths = [1, 3, 8, 9, 16, 17, 33, 40]  # one row in every length group, and its edges
    rows = [torch.cat([torch.zeros(40 - n, dtype=torch.long), torch.randint(1, 31, (n,))]) for n in lengths]
    batch = torch.stack(rows[::-1])  # rows in another order than the groups
    together = model.score_all({"input_ids": batch})
    alone = torch.cat([model.score_all({"input_ids": row[None, row > 0]}) for row in batch])
    assert torch.allclose(together, alone, atol=1e-5)
    groups = list(model.length_groups(batch))
    assert [g[1].shape[1] for g in groups] == [8, 16, 32, 40]
    assert sorted(torch.cat([g[0] for g in groups]).tolist()) == list(range(8))
