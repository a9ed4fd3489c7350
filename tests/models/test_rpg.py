"""RPG on a real Beauty subset: loss decreases, zero-init heads start as identity, the batched loss is
RPG's definition row by row, every head and digit gets a gradient, holistic scoring equals the
per-item brute-force mean, graph decoding returns real items; the backbone is set up as the released
code's GPT-2 and rpg_beauty runs the released schedule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sid_subset import beauty_subset, eval_batch, sid_table, train_losses

from distrec.config import compose
from distrec.data.batches import build_train_index, collate_train
from distrec.models.recommender import Catalog, build_model


def tiny_rpg(table, decoding="auto", *overrides):
    cfg = compose(["method=rpg", "model=transformer", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                   "model.d_ff=64", "model.dropout=0.0", "model.max_history=20", "method.rpg.embd_dropout=0.1",
                   "method.rpg.attn_dropout=0.1", f"method.decoding={decoding}", "method.rpg.graph_edges=30",
                   *overrides])
    return build_model(cfg.model, cfg.method, Catalog(table.num_items, table))


def windows(data, max_history: int, n: int = 12) -> dict:
    """n first windows (every position labelled, left-padded) and n later ones (newest position only)."""
    index = build_train_index(data, max_history)
    ids = np.concatenate([np.flatnonzero(index.label_all)[:n], np.flatnonzero(~index.label_all)[:n]])
    assert len(ids) == 2 * n
    return collate_train(data, index, ids, max_history)


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


def test_rpg_loss_is_its_definition_row_by_row(beauty, table):
    """The batched loss equals RPG's loss computed one unpadded history at a time: at each labelled
    position t, the mean over digits d of the CE of the next item's code d under
    cos(head_d(h_t), e_{d,c}) / temperature (e tied to the input table). Guards the padding trim, the
    positions (0 at each history's first item), which positions are labelled and the target alignment."""
    model = tiny_rpg(table).eval()  # no dropout: the same function both ways
    with torch.no_grad():  # heads away from the identity
        model.heads.weight.normal_(0, 0.1)
        model.heads.bias.normal_(0, 0.1)
    batch = windows(beauty, 20)
    codes = torch.as_tensor(table.codes)
    code_emb = F.normalize(model.code_embeddings(), dim=-1)  # [m, M, D]
    terms = []
    with torch.no_grad():
        for inputs, targets in zip(batch["input_ids"], batch["target_ids"]):
            items, targets = inputs[inputs > 0], targets[inputs > 0]
            h = model.backbone(model.tokens(model.sid.item_tokens[items]).mean(1)[None])[0]
            for t in torch.nonzero(targets).flatten():
                states = h[t] + F.silu(h[t] @ model.heads.weight + model.heads.bias)  # [m, D]
                logits = torch.einsum("md,mcd->mc", F.normalize(states, dim=-1), code_emb) / model.temperature
                terms.append(F.cross_entropy(logits, codes[targets[t]]))
        loss = model(batch)["loss"]
    assert len(terms) == int((batch["target_ids"] > 0).sum()) > 24
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_rpg_gradient_reaches_every_head_and_digit(beauty, table):
    model = tiny_rpg(table)
    model(windows(beauty, 20))["loss"].backward()
    assert (model.heads.weight.grad.flatten(1).norm(dim=1) > 0).all()  # zero-init heads still learn
    start = int(model.sid.offsets[0])
    per_digit = model.tokens.weight.grad[start:start + 8 * 32].view(8, -1).norm(dim=1)
    assert (per_digit > 0).all()
    assert model.backbone.pos.weight.grad.norm() > 0


def test_rpg_backbone_is_set_up_as_gpt2(table):
    """The released RPG runs HF GPT2Model: N(0, 0.02) weights, zero biases, residual projections
    N(0, 0.02 / sqrt(2 n_layers)); embd_pdrop drops item and position embeddings together."""
    model = tiny_rpg(table)
    block = model.backbone.blocks[0]
    assert abs(float(block.attn.qkv.weight.detach().std()) - 0.02) < 0.002 and not block.attn.qkv.bias.any()
    assert abs(float(block.ff[2].weight.detach().std()) - 0.02 / math.sqrt(2)) < 0.002
    dropped = tiny_rpg(table, "auto", "method.rpg.embd_dropout=1.0", "method.rpg.attn_dropout=0.0").train()
    h, _ = dropped.hidden(torch.tensor([[0, 5, 7, 9], [3, 4, 5, 6]]))
    assert torch.allclose(h, h[:1, -1:].expand_as(h))  # no input left, positions included: one state


def test_rpg_beauty_runs_the_released_schedule():
    """RPG's default.yaml with the Beauty README's lr: AdamW betas (0.9, 0.999), no weight decay, lr 0.01,
    linear warmup over 10,000 steps then cosine, 150 epochs of batch 256, clip 1.0, validation once
    per epoch, patience 20 epochs."""
    t = compose(["experiment=rpg_beauty"]).train
    assert (t.lr, list(t.betas), t.weight_decay, t.schedule, t.warmup_steps, t.epochs) == \
        (0.01, [0.9, 0.999], 0.0, "cosine", 10000, 150)
    assert (t.global_batch_size, t.grad_clip, t.eval_every, t.patience) == (256, 1.0, 0, 20)


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
