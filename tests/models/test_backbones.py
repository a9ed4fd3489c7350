"""Backbones: mask structure, KV-cache decoding == full forward, beam reorder, T5 buckets, every
mask on every backbone, shapes and gradient flow."""

import pytest
import torch

from distrec.config import compose
from distrec.models.backbones import HSTU, T5EncoderDecoder, TransformerDecoder, build_backbone
from distrec.models.backbones.t5 import relative_position_bucket
from distrec.models.blocks.masks import block_causal_mask, build_allowed, causal_mask

D = 32


def _inputs(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, :3] = True  # left padding, as the batches have it
    pad[B - 1, :1] = True
    ts = torch.cumsum(torch.randint(0, 200_000, (B, T), generator=g), 1)
    return x, pad, ts


def _decoders():
    torch.manual_seed(0)
    return [TransformerDecoder(D, 2, 4, 64, dropout=0.1, max_len=32).eval(), HSTU(D, 2, 2, dropout=0.1, max_len=32).eval()]


# ---------------------------------------------------------------- masks

def test_causal_mask_is_lower_triangular():
    m = causal_mask(4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]


def test_block_causal_mask_structure():
    blocks = torch.tensor([0, 0, 1, 1, 1, 2])
    m = block_causal_mask(blocks)
    for i in range(6):
        for j in range(6):
            assert m[i, j] == (blocks[j] <= blocks[i])
    assert m[2, 4] and not m[1, 2]  # sees later slots of its own block, never a later block


def test_block_causal_last_slot_variant():
    blocks = torch.tensor([[0, 0, 1, 1, 1]])
    m = block_causal_mask(blocks, last_sees_block=True)[0]
    assert m[4, 2] and m[4, 3] and m[4, 4]  # last slot of block 1 sees its whole block
    assert m[2, 2] and not m[2, 3] and not m[3, 2]  # other slots see only themselves in it
    assert m[2, 0] and m[2, 1] and m[3, 1]  # and every earlier block
    assert not m[0, 1] and m[1, 0]


def test_build_allowed_slices_queries_and_hides_padding():
    pad = torch.tensor([[True, False, False, False]])
    full = build_allowed(None, pad, 4, 4, "cpu")
    assert full.shape == (1, 4, 4) and not full[0, :, 0].any()
    last = build_allowed(causal_mask(4), pad, 1, 4, "cpu")
    assert last[0, 0].tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="does not fit"):
        build_allowed(causal_mask(3), None, 1, 4, "cpu")


# ---------------------------------------------------------------- KV cache

@pytest.mark.parametrize("which", [0, 1], ids=["transformer", "hstu"])
def test_incremental_decoding_equals_full_forward(which):
    model = _decoders()[which]
    x, pad, ts = _inputs()
    extra = (lambda sl: {"timestamps": ts[:, sl]}) if which == 1 else (lambda sl: {})
    with torch.no_grad():
        full = model(x, pad=pad, **extra(slice(None)))
        cache = model.init_cache(capacity=2)  # small: exercises buffer growth
        steps = [model(x[:, :4], pad=pad[:, :4], cache=cache, **extra(slice(0, 4)))]
        for t in range(4, x.shape[1]):
            steps.append(model(x[:, t:t + 1], pad=pad[:, t:t + 1], cache=cache, **extra(slice(t, t + 1))))
    inc = torch.cat(steps, 1)
    assert cache.length == x.shape[1]
    torch.testing.assert_close(inc[~pad], full[~pad], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("which", [0, 1], ids=["transformer", "hstu"])
def test_cache_reorder_follows_beams(which):
    model = _decoders()[which]
    x, pad, ts = _inputs()
    beams = torch.tensor([2, 0, 0])
    kw = (lambda idx, sl: {"timestamps": ts[idx][:, sl]}) if which == 1 else (lambda idx, sl: {})
    with torch.no_grad():
        cache = model.init_cache()
        model(x[:, :6], pad=pad[:, :6], cache=cache, **kw(slice(None), slice(0, 6)))
        cache.reorder(beams)
        step = model(x[beams, 6:7], cache=cache, **kw(beams, slice(6, 7)))
        full = model(x[beams, :7], pad=pad[beams, :7], **kw(beams, slice(0, 7)))
    torch.testing.assert_close(step[:, 0], full[:, 6], atol=2e-5, rtol=1e-4)


def test_t5_cached_decoding_equals_full_decode_and_reorders():
    torch.manual_seed(0)
    model = T5EncoderDecoder(D, 2, 2, 4, 64, dropout=0.1, head_dim=16).eval()
    x, pad, _ = _inputs()
    y = torch.randn(3, 5, D)
    with torch.no_grad():
        memory = model.encode(x, pad)
        full = model.decode(y, memory, pad)
        cache = model.init_cache()
        steps = [model.decode(y[:, :1], memory, pad, cache=cache)]
        for t in range(1, 4):
            steps.append(model.decode(y[:, t:t + 1], memory, pad, cache=cache))
        torch.testing.assert_close(torch.cat(steps, 1), full[:, :4], atol=2e-5, rtol=1e-4)
        # beam search: two beams per user (user-major), from the user's own rows only
        rows = torch.tensor([0, 0, 1, 1, 2, 2])
        cache.reorder(rows)
        last = model.decode(y[rows, 4:5], None, None, cache=cache)  # memory K/V come from the cache
        ref = model.decode(y[rows], memory[rows], pad[rows])
        torch.testing.assert_close(last[:, 0], ref[:, 4], atol=2e-5, rtol=1e-4)
        # the memory K/V stay one row per user, however many beams read them
        assert all(t.shape[0] == 3 for t in cache.static.values())


# ---------------------------------------------------------------- T5 relative positions

def test_t5_relative_position_buckets():
    rel = torch.tensor([0, -1, 1, -7, -8, -127, -200, 1000])  # key - query
    assert relative_position_bucket(rel, True, 32, 128).tolist() == [0, 1, 17, 7, 8, 15, 15, 31]
    rel = torch.tensor([0, -1, 3, -15, -16, -64, -128, -5000])
    assert relative_position_bucket(rel, False, 32, 128).tolist() == [0, 1, 0, 15, 16, 26, 31, 31]


def _debug_cfg(kind):
    return compose([f"model={kind}", "model.size=debug", f"model.d_model={D}", "model.n_layers=1", "model.n_heads=2",
                    "model.head_dim=16", "model.d_ff=64", "model.max_history=16"])


# ---------------------------------------------------------------- every mask on every backbone

def _run(model, x, mask):
    if isinstance(model, T5EncoderDecoder):
        return model.encode(x, mask=mask)
    return model(x, mask=mask)


@pytest.mark.parametrize("kind", ["transformer", "t5", "hstu"])
def test_block_causal_mask_on_every_backbone(kind):
    torch.manual_seed(0)
    cfg = _debug_cfg(kind)
    model = build_backbone(cfg.model).eval()
    blocks = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    mask = block_causal_mask(blocks)
    x = torch.randn(2, 8, 32)
    later = x.clone()
    later[:, 6:] += torch.randn(2, 2, 32)  # change only block 2 (not a constant shift: LayerNorm removes those)
    same_block = x.clone()
    same_block[:, 5] += torch.randn(2, 32)  # change the last slot of block 1
    with torch.no_grad():
        base, changed, changed_in_block = (_run(model, t, mask) for t in (x, later, same_block))
    torch.testing.assert_close(base[:, :6], changed[:, :6])  # earlier blocks never see block 2
    assert not torch.allclose(base[:, 3], changed_in_block[:, 3])  # slot 3 sees slot 5 of its block
    torch.testing.assert_close(base[:, :3], changed_in_block[:, :3])


# ---------------------------------------------------------------- shapes and gradients

@pytest.mark.parametrize("kind", ["transformer", "t5", "hstu"])
def test_shapes_and_every_parameter_gets_a_gradient(kind):
    torch.manual_seed(0)
    cfg = _debug_cfg(kind)
    model = build_backbone(cfg.model).train()
    x, pad, ts = _inputs(B=2, T=10)
    x = x.requires_grad_()
    if kind == "t5":
        h = model(x, x[:, :4] * 0.5, pad=pad)
        assert h.shape == (2, 4, D)
    else:
        h = model(x, pad=pad, **({"timestamps": ts[:2]} if kind == "hstu" else {}))
        assert h.shape == (2, 10, D)
    h.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", ["transformer", "t5", "hstu"])
def test_bf16_autocast_forward(kind):
    cfg = _debug_cfg(kind)
    model = build_backbone(cfg.model)
    x, pad, _ = _inputs(B=2, T=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model(x, x[:, :3], pad=pad) if kind == "t5" else model(x, pad=pad)
    assert torch.isfinite(h.float()).all()


def test_unknown_backbone_is_a_config_error():
    from distrec.errors import ConfigError

    cfg = compose(["model.backbone=lstm"])
    with pytest.raises(ConfigError, match="model.backbone"):
        build_backbone(cfg.model)


# ---------------------------------------------------------------- attention kernels

@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_few_key_attention_on_cpu_matches_sdpa(mask_kind, dtype):
    """`attend` runs few-key CPU attention as an explicit softmax (faster there); same values as SDPA."""
    import torch.nn.functional as F

    from distrec.models.blocks.attention import FEW_KEYS, attend
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(5, 2, n, 16, generator=g).to(dtype) for n in (4, FEW_KEYS, FEW_KEYS))
    allowed = torch.rand(5, 1, 4, FEW_KEYS, generator=g) > 0.3
    allowed[..., 0] = True
    mask = {"none": None, "bool": allowed,
            "additive": torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf")).to(dtype)}[mask_kind]
    got = attend(q, k, v, mask)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                          attn_mask=None if mask is None else mask if mask.dtype == torch.bool else mask.float())
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=0)


def test_causal_attention_on_cpu_matches_sdpa():
    """is_causal without a mask: query i sees keys 0..i (SDPA's convention, also where Tq < Tk)."""
    import torch.nn.functional as F

    from distrec.models.blocks.attention import attend
    g = torch.Generator().manual_seed(1)
    for tq in (12, 5):
        q, k, v = (torch.randn(3, 2, n, 8, generator=g) for n in (tq, 12, 12))
        torch.testing.assert_close(attend(q, k, v, is_causal=True),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=0)


def test_attention_dropout_on_cpu_drops_probabilities_as_sdpa_does():
    """CPU attention with dropout runs explicitly: every attention probability is zeroed with
    probability p and the rest scaled by 1 / (1 - p), so the output is unbiased (SDPA's dropout), and
    the gradient reaches q, k and v. Checked in distribution over many draws, at 250 keys."""
    import torch.nn.functional as F

    from distrec.models.blocks.attention import attend
    g = torch.Generator().manual_seed(2)
    p, draws = 0.3, 400
    q, k = (torch.randn(1, 1, 6, 8, generator=g) for _ in range(2))
    k = torch.randn(1, 1, 250, 8, generator=g)
    v = torch.eye(250).view(1, 1, 250, 250)  # output row = the (dropped) attention probabilities
    allowed = torch.rand(1, 1, 6, 250, generator=g) > 0.5
    allowed[..., 0] = True
    torch.manual_seed(0)
    out = torch.stack([attend(q, k, v, allowed, dropout_p=p) for _ in range(draws)])
    probs = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    kept = out > 0
    assert not kept[..., ~allowed[0, 0]].any()  # masked keys stay at 0
    torch.testing.assert_close(out[kept], (probs.expand_as(out) / (1 - p))[kept])  # kept: scaled
    dropped = 1 - kept.float().sum() / (draws * allowed.sum())
    assert abs(dropped - p) < 0.01, dropped
    torch.testing.assert_close(out.mean(0), probs, rtol=0.15, atol=1e-4)  # unbiased (4.5 standard errors)
    q.requires_grad_(True)
    k.requires_grad_(True)
    v = torch.randn(1, 1, 250, 8, requires_grad=True)
    attend(q, k, v, allowed, dropout_p=p).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))


@pytest.mark.parametrize("cross", [False, True])
def test_qk_norm_makes_attention_blind_to_the_scale_of_its_query_and_key_projections(cross):
    from distrec.models.blocks.attention import MultiHeadAttention

    def scaled_output(qk_norm, c):
        torch.manual_seed(0)
        attn = MultiHeadAttention(16, 2, cross=cross, qk_norm=qk_norm)
        with torch.no_grad():  # the query and key projections c times larger, the values untouched
            for linear, rows in ((attn.q, 16), (attn.kv, 16)) if cross else ((attn.qkv, 32),):
                linear.weight[:rows].mul_(c)
                linear.bias[:rows].mul_(c)
        x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
        memory = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(2)) if cross else None
        return attn(x, memory=memory), attn.probabilities(x, memory)

    out, probs = scaled_output(True, 10.0)  # large enough that LayerNorm's epsilon plays no part
    big_out, big_probs = scaled_output(True, 1000.0)
    torch.testing.assert_close(big_out, out, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(big_probs, probs, rtol=1e-3, atol=1e-5)
    plain, plain_big = scaled_output(False, 1.0)[1], scaled_output(False, 50.0)[1]
    assert (plain_big.max(-1).values.mean() > plain.max(-1).values.mean() + 0.2)  # sharper without the norms
