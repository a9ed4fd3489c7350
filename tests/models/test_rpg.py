"""RPG on a real Beauty subset: loss decreases, zero-init heads start as identity, holistic scoring
equals the per-item brute-force sum, graph decoding returns real items."""

import pytest
import torch
from sid_subset import beauty_subset, eval_batch, sid_table, train_losses

from distrec.config import compose
from distrec.models.registry import Catalog, build_model


def tiny_rpg(table, decoding="auto"):
    cfg = compose(["method=rpg", "model=transformer", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                   "model.d_ff=64", "model.dropout=0.0", "model.max_history=20", "method.rpg_embd_dropout=0.1",
                   "method.rpg_attn_dropout=0.1", f"method.decoding={decoding}", "method.rpg_graph_edges=30"])
    return build_model(cfg.model, cfg.method, Catalog(table.num_items, table))


@pytest.fixture(scope="module")
def beauty(data_root):
    return beauty_subset(data_root)


@pytest.fixture(scope="module")
def table():
    return sid_table(8, 32, dedup=False)  # long unordered IDs: 8 digits x 32 codes


def test_rpg_loss_decreases_on_beauty(beauty, table):
    model = tiny_rpg(table)
    heads = model.heads
    h = torch.randn(5, 32)
    assert torch.equal(heads(h), h.unsqueeze(1).expand(5, 8, 32))  # zero-init residual heads
    losses = train_losses(model, beauty, max_history=20, steps=15, batch_size=16, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0], losses


def test_rpg_holistic_is_brute_force_mean(beauty, table):
    model = tiny_rpg(table)
    train_losses(model, beauty, max_history=20, steps=5, batch_size=16, lr=1e-2)
    model.eval()
    batch = eval_batch(beauty, 20, users=3)
    ids, scores = model.recommend(batch, 10)
    h, _ = model.hidden(batch["input_ids"])
    logp = torch.log_softmax(model.digit_logits(h[:, -1]).float(), -1)  # [B, m, M]
    codes = torch.as_tensor(table.codes[1:])
    brute = torch.stack([logp[:, d, codes[:, d]] for d in range(codes.shape[1])], -1).mean(-1)  # [B, N]
    best = brute.topk(10, dim=1)
    torch.testing.assert_close(scores, best.values, atol=1e-5, rtol=0)
    assert torch.equal(ids, best.indices + 1)


def test_rpg_graph_decoding_real_items():
    """Graph building is quadratic in the catalog: a 3,000-item table and histories drawn from it."""
    table = sid_table(8, 32, dedup=False, num_items=3000)
    model = tiny_rpg(table, decoding="graph")
    model.eval()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1, 3001, (8, 12), generator=g)}
    batch["input_ids"][:3, :5] = 0  # left padding
    ids, scores = model.recommend(batch, 21)
    assert ids.shape == (8, 21) and (ids >= 1).all() and (ids <= table.num_items).all()
    assert model._graph is not None and model._graph.shape == (table.num_items + 1, 30)
    holistic = model.recommend(batch, 21, decoding="holistic")[1]
    assert (scores[:, 0] <= holistic[:, 0] + 1e-6).all()  # the graph only visits real items
    model.train()
    assert model._graph is None  # weights will change: the graph is rebuilt next time


@pytest.mark.ray
@pytest.mark.distributed
def test_rpg_trains_under_two_worker_zero2(data_root, ray_local, tmp_path, table):
    from sid_subset import prepare_beauty, train_zero2_one_step

    prepare_beauty(tmp_path, data_root, {"sids_pq": table})
    summary = train_zero2_one_step(tmp_path, "sids_pq", tmp_path / "train", "method=rpg", "model=transformer",
                                   "model.size=debug", "model.max_history=20")
    assert summary["steps"] == 1 and summary["world_size"] == 2
    assert summary["final_loss"] == summary["final_loss"] and summary["valid"]["users"] == 16
