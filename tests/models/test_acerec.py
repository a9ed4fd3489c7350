"""ACERec: mask structure, merger shapes/gradients, logQ correction, holistic scoring, ablation switches."""

import math

import numpy as np
import pytest
import torch

from distrec.models.backbones import TransformerDecoder
from distrec.models.methods.acerec import ACERec, acerec_mask
from distrec.tokenize.sid_table import SIDTable

N_ITEMS, M_DIGITS, CODEBOOK, D, K = 40, 8, 16, 32, 2


def sid_table():
    codes = np.random.default_rng(0).integers(0, CODEBOOK, (N_ITEMS, M_DIGITS))
    return SIDTable.from_codes(np.arange(1, N_ITEMS + 1), codes, [CODEBOOK] * M_DIGITS)


def make(**kw):
    torch.manual_seed(0)
    table = sid_table()
    width = K + (kw.get("intent", "summary") != "none")
    backbone = TransformerDecoder(D, 1, 2, 64, 0.0, max_len=6 * width)
    counts = torch.arange(N_ITEMS + 1, dtype=torch.float)
    return ACERec(table, backbone, D, 2, k=K, item_counts=counts, **kw)


def batch(B=3, L=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, N_ITEMS + 1, (B, L + 1), generator=g)
    ids[0, :3] = 0  # a short, left-padded history
    inp, tgt = ids[:, :-1].clone(), ids[:, 1:].clone()
    tgt[inp == 0] = 0
    return {"input_ids": inp, "target_ids": tgt, "target": ids[:, -1], "user_ids": torch.arange(B)}


def test_block_causal_mask_structure():
    allowed = acerec_mask(3, 2, intent=True)  # blocks of [z, z, h]
    assert allowed.shape == (9, 9)
    for i in range(9):
        for j in range(9):
            bi, bj, si, sj = i // 3, j // 3, i % 3, j % 3
            if bj < bi:
                expect = True  # every slot of earlier blocks
            elif bj > bi:
                expect = False  # never the future
            else:
                expect = sj < 2 or si == 2  # latents see latents; intent sees its whole block
            assert allowed[i, j].item() == expect, (i, j)


def test_merger_shapes_and_gradients():
    model = make()
    tokens, summary, latents = model.encode_items(torch.tensor([1, 2, 3]))
    assert tokens.shape == (3, M_DIGITS, D) and summary.shape == (3, D) and latents.shape == (3, K, D)
    latents.sum().backward()
    assert model.merger.query_base.grad.abs().sum() > 0
    assert torch.isfinite(latents).all()
    assert model.token_emb.weight.grad.abs().sum() > 0


def test_merger_attention_is_immune_to_the_scale_of_tokens_queries_and_projections():
    """The runaway seen on Beauty: the query path, then (with layer-normed inputs) the attention's own
    projections grew until every head read one token through a saturated softmax. Layer-normed inputs
    and per-head query/key norms make the merger blind to all of those scales."""
    model = make().eval()
    tokens = model.item_tokens(torch.tensor([1, 2, 3])) + model.sub_pos
    summary = model.item_summary(tokens)
    merger = model.merger

    def scaled(c):  # tokens and the whole query path c times larger
        with torch.no_grad():
            inner = merger.attn.n_heads * merger.attn.head_dim
            for p in (merger.query_base, merger.query_offset.weight, merger.query_offset.bias,
                      merger.attn.q.weight, merger.attn.q.bias):
                p.mul_(c)
            merger.attn.kv.weight[:inner].mul_(c)  # the keys' half
            merger.attn.kv.bias[:inner].mul_(c)
        return merger(c * tokens, summary), merger.attention_entropy(c * tokens, summary)

    small, small_entropy = scaled(10.0)  # large enough that LayerNorm's epsilon plays no part
    large, large_entropy = scaled(1e3)  # 1e4 times the first
    torch.testing.assert_close(large, small, rtol=1e-3, atol=1e-4)
    assert large_entropy == pytest.approx(small_entropy, rel=1e-3)


def test_merger_entropy_is_ln_m_for_even_attention_and_is_logged_with_code_usage():
    model = make()
    tokens = model.item_tokens(torch.tensor([1, 2])) + model.sub_pos
    with torch.no_grad():
        model.merger.attn.q.weight.zero_()
        model.merger.attn.q.bias.zero_()
    assert model.merger.attention_entropy(tokens, model.item_summary(tokens)) == pytest.approx(math.log(M_DIGITS))
    assert 0 < make().code_usage()["merger_entropy"] <= math.log(M_DIGITS) + 1e-6
    assert "merger_entropy" not in make(merger="mean").code_usage()


def test_recon_decoder_can_reconstruct_each_sub_space():
    """Trained alone, the decoder reaches a high fidelity. One whose m outputs are all mixes of the same
    k latent vectors cannot (0.05 on Beauty, even on memorised windows)."""
    model = make()
    items = torch.arange(1, N_ITEMS + 1)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith(("recon.", "merger."))], lr=3e-3)
    for _ in range(300):
        tokens, _, latents = model.encode_items(items)
        loss = 1 - torch.nn.functional.cosine_similarity(model.recon(latents), tokens.detach(), dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.fidelity(items) > 0.8


def test_logq_correction_matches_formula():
    model = make(beta=0.5)
    log_f = torch.log(torch.arange(N_ITEMS + 1, dtype=torch.float).clamp(min=1))
    torch.testing.assert_close(model.pop_bias, 0.5 * log_f / log_f.max())
    h, targets = torch.randn(4, D), torch.tensor([3, 7, 7, 30])
    with_bias = model.isa_loss(h, targets)
    model.pop_bias.zero_()
    assert not torch.isclose(with_bias, model.isa_loss(h, targets))


def test_holistic_scoring_equals_brute_force_sum():
    model = make().eval()
    b = batch()
    ids, scores = model.recommend(b, k=N_ITEMS)
    logp = model.digit_logprobs(b)
    codes = model.sid.codes
    brute = torch.stack([logp[:, torch.arange(M_DIGITS), codes[i]].sum(-1) for i in range(1, N_ITEMS + 1)], 1)
    expect_scores, expect_pos = brute.topk(N_ITEMS, dim=1)
    torch.testing.assert_close(scores, expect_scores, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(brute.gather(1, ids - 1), expect_scores, rtol=1e-5, atol=1e-4)


def test_training_loss_has_every_term_and_backpropagates():
    model = make()
    out = model(batch())
    assert set(out) >= {"loss", "mtp", "isa", "recon"}
    torch.testing.assert_close(out["loss"], out["mtp"] + 0.1 * out["isa"] + 0.03 * out["recon"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "static_intent" not in n)


@pytest.mark.parametrize("switch,value", [("merger", "mean"), ("merger", "mlp"), ("merger", "conv"),
                                          ("intent", "static"), ("intent", "none"), ("summary", "mean"),
                                          ("isa_weight", 0.0), ("recon_weight", 0.0)])
def test_each_ablation_switch_changes_what_it_names(switch, value):
    base, variant = make(), make(**{switch: value})
    b = batch()
    out_base, out_var = base(b), variant(b)
    if switch == "merger":
        assert type(variant.merger).__name__.lower().startswith(value)
        tokens = variant.item_tokens(torch.tensor([1]))
        assert variant.merger(tokens + variant.sub_pos, variant.item_summary(tokens)).shape == (1, K, D)
    elif switch == "intent":
        width = K + (value != "none")
        assert variant.slot_emb.shape[0] == width
        assert (variant.static_intent is not None) == (value == "static")
    elif switch == "summary":
        tokens = variant.item_tokens(torch.tensor([1, 2]))
        torch.testing.assert_close(variant.item_summary(tokens), tokens.mean(-2))  # RPG's item input
        assert not list(variant.summary.parameters())
    elif switch == "isa_weight":
        assert "isa" not in out_var and "isa" in out_base
    else:
        assert variant.recon is None and "recon" not in out_var
        assert math.isnan(variant.fidelity(torch.tensor([1, 2])))
    assert not torch.isclose(out_base["loss"], out_var["loss"])


def test_loss_decreases_when_training():
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    b = batch(B=8)
    first = model(b)["loss"].item()
    for _ in range(30):
        opt.zero_grad()
        model(b)["loss"].backward()
        opt.step()
    assert model(b)["loss"].item() < 0.7 * first


def test_extra_left_padding_changes_nothing():
    model = make().eval()
    b = batch()
    padded = {**b, "input_ids": torch.nn.functional.pad(b["input_ids"], (4, 0))}
    torch.testing.assert_close(model.digit_logprobs(b), model.digit_logprobs(padded))


def test_encoding_each_distinct_item_once_matches_encoding_every_occurrence():
    """user_states merges each distinct history item once; the result (and the recon loss) must be
    what merging every occurrence separately gives."""
    from distrec.models.methods.sid_common import left_aligned_positions

    model = make()
    b = batch(B=4, L=6)
    b["input_ids"][1:, :2] = b["input_ids"][0, 3:5]  # repeated items across users
    states, history = model.user_states(b["input_ids"])

    flat = b["input_ids"].reshape(-1)  # the per-occurrence reference
    tokens, summary, latents = model.encode_items(flat)
    blocks = torch.cat([latents, summary.unsqueeze(1)], dim=1) + model.slot_emb
    x = blocks.view(4, 6 * (K + 1), D)
    pad = (b["input_ids"] == 0).repeat_interleave(K + 1, dim=1)
    h = model.backbone(x, mask=acerec_mask(6, K, True), pad=pad, positions=left_aligned_positions(pad))
    torch.testing.assert_close(states, h.view(4, 6, K + 1, D)[:, :, -1], rtol=1e-5, atol=1e-5)

    real = flat != 0
    expected = 1 - torch.nn.functional.cosine_similarity(model.recon(latents[real]), tokens[real], dim=-1).mean()
    torch.testing.assert_close(model.recon_loss(history), expected, rtol=1e-5, atol=1e-6)


def test_code_usage_shows_predictions_that_ignore_the_history():
    model = make()
    model.train()
    healthy = model.code_usage()
    assert model.training  # the mode is restored
    assert healthy["items"] == N_ITEMS and healthy["paths"] >= N_ITEMS // 2 and healthy["codes_min"] > 1
    model.sid.item_tokens[1:] = model.sid.item_tokens[1]  # every history item reads as item 1
    collapsed = model.code_usage()
    assert collapsed["paths"] == collapsed["codes_min"] == 1 and collapsed["codes_mean"] == 1.0
    assert model.code_usage(probe=10)["items"] == 10


def test_backbone_can_be_set_up_as_rpgs_gpt2():
    """method.acerec.gpt2_init / embd_dropout / attn_dropout give the backbone RPG's GPT-2 set-up;
    unset, it keeps model.dropout everywhere and its own initialisation; other backbones refuse them."""
    from distrec.config import compose
    from distrec.errors import ConfigError
    from distrec.models.recommender import Catalog, build_model

    table = sid_table()

    def build(*overrides):
        cfg = compose(["method=acerec", "model=transformer", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
                       "model.d_ff=64", "model.dropout=0.1", "model.max_history=6", "method.acerec.k=2", *overrides])
        return build_model(cfg.model, cfg.method, Catalog(table.num_items, table))

    plain = build().backbone
    assert plain.drop.p == 0.1 and plain.blocks[0].attn.dropout == 0.1
    gpt2 = build("method.acerec.gpt2_init=true", "method.acerec.embd_dropout=0.5", "method.acerec.attn_dropout=0.4").backbone
    assert gpt2.drop.p == 0.5 and all(block.attn.dropout == 0.4 for block in gpt2.blocks)
    assert gpt2.blocks[0].drop.p == 0.1  # residual dropout stays model.dropout
    assert abs(float(gpt2.blocks[0].attn.qkv.weight.detach().std()) - 0.02) < 0.002
    assert abs(float(gpt2.blocks[1].ff[2].weight.detach().std()) - 0.01) < 0.001  # 0.02 / sqrt(2 n_layers)
    assert abs(float(plain.blocks[0].attn.qkv.weight.detach().std()) - 0.02) > 0.002
    with pytest.raises(ConfigError, match="model.backbone=transformer"):
        build("model=hstu", "model.d_model=32", "model.n_heads=2", "method.acerec.embd_dropout=0.5")


def test_token_dropout_acts_on_what_the_item_encoder_reads_in_training_only():
    """method.acerec.token_dropout drops token embeddings before summary and merger while training;
    the returned tokens (the reconstruction target) stay whole, and evaluation is deterministic."""
    from distrec.config import compose

    assert compose(["method=acerec"]).method.acerec.token_dropout == 0.0  # off unless asked for
    model = make(token_dropout=0.5)
    items = torch.arange(1, 9)
    model.train()
    tokens, s1, z1 = model.encode_items(items)
    _, s2, z2 = model.encode_items(items)
    assert torch.equal(tokens, model.item_tokens(items))  # the recon target is undropped
    assert not torch.allclose(s1, s2) and not torch.allclose(z1, z2)  # a new mask per pass
    model.eval()
    _, e1, l1 = model.encode_items(items)
    _, e2, l2 = model.encode_items(items)
    assert torch.equal(e1, e2) and torch.equal(l1, l2)
    whole = make()  # the same seed, no dropout: eval mode equals it
    assert torch.allclose(e1, whole.eval().encode_items(items)[1])
