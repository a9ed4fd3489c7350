"""Per-position sampled softmax: every position draws its own negatives, accidental hits are
masked, and the loss equals the textbook formula."""

import torch
import torch.nn.functional as F

from distrec.models.blocks.negatives import sample_negatives, sampled_softmax_loss
from distrec.models.methods.hstu_retrieval import HSTURetrieval
from distrec.models.methods.sasrec import SASRec


def test_every_position_gets_its_own_negatives():
    torch.manual_seed(0)
    target = torch.arange(1, 501)
    neg = sample_negatives(target, 16, num_items=10_000)
    assert neg.shape == (500, 16) and neg.min() >= 1 and neg.max() <= 10_000
    distinct_rows = {tuple(row.tolist()) for row in neg}
    assert len(distinct_rows) == 500  # shared negatives would give one row
    assert len(neg.unique()) > 5_000  # ~55% of a 10k catalog touched by 8,000 draws


def test_loss_matches_the_formula_and_masks_accidental_hits():
    torch.manual_seed(0)
    table = torch.randn(11, 4)
    query, target = torch.randn(3, 4), torch.tensor([1, 2, 3])
    negatives = torch.tensor([[1, 5, 6], [7, 8, 9], [3, 3, 10]])  # row 0: one hit; row 2: two hits
    loss = sampled_softmax_loss(query, target, lambda ids: table[ids], negatives, temperature=0.5)
    expected = []
    for n in range(3):
        keep = [r for r in negatives[n].tolist() if r != target[n]]
        logits = torch.stack([query[n] @ table[target[n]]] + [query[n] @ table[r] for r in keep]) / 0.5
        expected.append(-F.log_softmax(logits, 0)[0])
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def _hstu_batch(B=4, T=12, items=50):
    ids = torch.randint(1, items + 1, (B, T + 1))
    return {"input_ids": ids[:, :-1], "target_ids": ids[:, 1:]}


def test_hstu_and_sasrec_draw_per_position_negatives(monkeypatch):
    """Both methods call the sampler with one row per labelled position."""
    import distrec.models.blocks.negatives as negatives_module
    from distrec.models.methods import hstu_retrieval, sasrec

    shapes = []

    def spy(target, num, num_items):
        out = negatives_module.sample_negatives(target, num, num_items)
        shapes.append((tuple(target.shape), tuple(out.shape)))
        return out

    monkeypatch.setattr(hstu_retrieval, "sample_negatives", spy)
    monkeypatch.setattr(sasrec, "sample_negatives", spy)
    torch.manual_seed(0)
    batch = _hstu_batch()
    HSTURetrieval(50, d_model=16, n_layers=1, max_history=12, num_negatives=7)(batch)["loss"].backward()
    SASRec(50, d_model=16, n_layers=1, max_history=12, loss="sampled_softmax", num_negatives=7)(batch)
    assert shapes == [((48,), (48, 7)), ((48,), (48, 7))]


def test_hstu_meta_init_is_the_default():
    torch.manual_seed(0)
    layer = HSTURetrieval(50, d_model=64, n_layers=1, max_history=12).backbone.layers[0]
    assert layer.uvqk.bias is None and layer.norm_in.weight is None and layer.norm_attn.weight is None
    assert abs(layer.uvqk.weight.std().item() - 0.02) < 0.002
    bound = (6 / (layer.out.in_features + layer.out.out_features)) ** 0.5  # xavier-uniform
    assert layer.out.weight.abs().max() <= bound and layer.out.weight.abs().max() > 0.9 * bound
    torch_layer = HSTURetrieval(50, d_model=64, n_layers=1, max_history=12, init="torch",
                                norm_affine=True).backbone.layers[0]
    assert torch_layer.uvqk.bias is not None and torch_layer.norm_in.weight is not None
