"""HSTU: the vectorised layer against the loop reference, time buckets, kernel registry; HSTU
retrieval learns on real MovieLens-1M users and recommends valid items."""

import gzip
import json

import pytest
import torch

from distrec.config import compose
from distrec.errors import ConfigError
from distrec.models.backbones import HSTU
from distrec.models.backbones.hstu import time_buckets
from distrec.models.backbones.hstu_reference import reference_hstu
from distrec.models.blocks.masks import block_causal_mask, causal_mask
from distrec.models.recommender import Catalog, build_model


@pytest.mark.parametrize("heads,with_time,block,init", [(1, False, False, "meta"), (2, True, False, "torch"),
                                                         (2, True, True, "meta")])
def test_vectorised_hstu_matches_loop_reference(heads, with_time, block, init):
    torch.manual_seed(heads)
    model = HSTU(16, 2, heads, dropout=0.3, max_len=12, num_time_buckets=20, linear_dim=6, init=init,
                 norm_affine=init == "torch").eval()
    B, T = 2, 7
    x = torch.randn(B, T, 16)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, :2] = True
    ts = torch.cumsum(torch.randint(0, 10**6, (B, T)), 1) if with_time else None
    mask = block_causal_mask(torch.tensor([0, 0, 1, 1, 1, 2, 2])) if block else causal_mask(T)
    allowed = mask.expand(B, T, T) & ~pad[:, None, :]
    with torch.no_grad():
        fast = model(x, mask=mask, pad=pad, timestamps=ts)
        slow = reference_hstu(model, x, allowed, timestamps=ts)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_time_buckets_follow_the_log_formula():
    q = torch.tensor([[0, 1, 2, 86_400, 10**40 // 10**22]])  # dt = 0, 1, 2, one day, huge
    b = time_buckets(q, torch.zeros(1, 1, dtype=torch.long), num_buckets=40)[0, :, 0]
    assert b.tolist() == [0, 0, 2, 37, 40]  # floor(ln(max(dt,1)) / 0.301), clamped to num_buckets


def test_unknown_kernel_is_rejected():
    with pytest.raises(ConfigError, match="model.kernel"):
        HSTU(16, 1, 1, kernel="triton")


def test_hstu_ignores_padding_content():
    torch.manual_seed(0)
    model = HSTU(16, 2, 2, max_len=8).eval()
    x = torch.randn(1, 6, 16)
    pad = torch.tensor([[True, True, False, False, False, False]])
    other = x.clone()
    other[:, :2] = torch.randn(1, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, pad=pad)[:, 2:], model(other, pad=pad)[:, 2:])


def _ml1m_batch(data_root, users=200, T=30):
    with gzip.open(data_root / "ml-1m" / "sequences.jsonl.gz", "rt") as f:
        seqs = [json.loads(line)["items"] for _, line in zip(range(users), f)]
    inputs = torch.zeros(users, T, dtype=torch.long)
    targets = torch.zeros_like(inputs)
    for i, s in enumerate(seqs):
        s = s[-(T + 1):]
        n = len(s) - 1
        inputs[i, T - n:], targets[i, T - n:] = torch.tensor(s[:-1]), torch.tensor(s[1:])
    return inputs, targets


def test_hstu_retrieval_learns_on_real_ml1m_users(data_root):
    torch.manual_seed(0)
    cfg = compose(["model=hstu", "method=hstu_retrieval", "model.d_model=32", "model.n_layers=2", "model.n_heads=1",
                   "model.max_history=30", "model.dropout=0.0", "method.num_negatives=64"])
    model = build_model(cfg.model, cfg.method, Catalog(num_items=3706))
    inputs, targets = _ml1m_batch(data_root)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"input_ids": inputs, "target_ids": targets}

    def eval_loss():  # negatives are random: average a few draws
        with torch.no_grad():
            torch.manual_seed(123)
            return sum(model(batch)["loss"].item() for _ in range(4)) / 4

    before = eval_loss()
    for step in range(20):
        idx = torch.randint(0, len(inputs), (32,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model({"input_ids": inputs[idx], "target_ids": targets[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    print(f"sampled-softmax loss before {before:.3f} after {after:.3f}")
    assert after < before - 0.5, (before, after)

    ids, scores = model.recommend({"input_ids": inputs[:8]}, k=10)
    assert ids.shape == (8, 10) and scores.shape == (8, 10)
    assert ((ids >= 1) & (ids <= 3706)).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all() and (scores <= 1.0 + 1e-5).all()  # sorted cosines


def test_query_timestamps_replace_the_queries_times_only():
    """query_timestamps move the time-gap bias of each query; keys keep their own times."""
    torch.manual_seed(0)
    model = HSTU(16, 1, 1, max_len=8, num_time_buckets=40).eval()
    with torch.no_grad():
        model.layers[0].rab_time.copy_(torch.linspace(-1, 1, 41))  # make the time term visible
    x = torch.randn(1, 4, 16)
    ts = torch.tensor([[0, 100, 10_000, 1_000_000]])
    nxt = torch.tensor([[100, 10_000, 1_000_000, 5_000_000]])
    with torch.no_grad():
        same = model(x, timestamps=ts, query_timestamps=ts)
        moved = model(x, timestamps=ts, query_timestamps=nxt)
        torch.testing.assert_close(same, model(x, timestamps=ts))
        assert not torch.allclose(moved, same)
        assert not torch.allclose(moved, model(x, timestamps=nxt))  # keys keep their own times


def test_query_time_next_refuses_timestamps_without_the_next_items_times():
    cfg = compose(["model=hstu", "method=hstu_retrieval", "model.d_model=16", "model.n_layers=1", "model.n_heads=1",
                   "model.max_history=8"])
    model = build_model(cfg.model, cfg.method, Catalog(num_items=20)).eval()
    batch = {"input_ids": torch.tensor([[0, 3, 4, 5]]), "timestamps": torch.tensor([[0, 10, 20, 30]])}
    with pytest.raises(ValueError, match="next_timestamps"):
        model.recommend(batch, 5)
    ids, _ = model.recommend({**batch, "next_timestamps": torch.tensor([[0, 20, 30, 40]])}, 5)
    assert ids.shape == (1, 5)
