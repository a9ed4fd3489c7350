"""IntRR: straight-through selection, teacher forcing vs free running, prefix-valid beams, loss terms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distrec.models.backbones import TransformerDecoder
from distrec.models.methods.intrr import IntRR, RecursiveAssignmentNetwork
from distrec.tokenize.sid_table import SIDTable, add_dedup_digit

D = 16


def sid_table(num_items=30, sizes=(4, 4), seed=0):
    rng = np.random.default_rng(seed)
    codes, dedup_size = add_dedup_digit(rng.integers(0, sizes, size=(num_items, len(sizes))))
    return SIDTable.from_codes(np.arange(1, num_items + 1), codes, [*sizes, dedup_size], dedup="digit")


def make(table, **kw):
    torch.manual_seed(0)
    backbone = TransformerDecoder(D, 1, 2, 32, 0.0, max_len=8)
    return IntRR(table, backbone, D, uid_dim=8, hidden=32, **kw)


def batch(num_items=30, B=4, T=6):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, num_items + 1, (B, T + 1), generator=g)
    ids[0, :2] = 0
    inp, tgt = ids[:, :-1].clone(), ids[:, 1:].clone()
    tgt[inp == 0] = 0
    return {"input_ids": inp, "target_ids": tgt, "target": ids[:, -1]}


def test_straight_through_forward_is_hard_code_and_gradient_reaches_soft_mixture():
    ran = RecursiveAssignmentNetwork([5], D)
    guide = torch.randn(3, D, requires_grad=True)
    fused, (logits,) = ran.walk(guide)
    hard = ran.codebooks[0][logits.argmax(-1)]
    torch.testing.assert_close(fused, hard)  # forward value: exactly the selected code
    fused.sum().backward()
    # gradient flows to the guide through the soft mixture p @ C (a hard argmax alone has none)
    assert guide.grad is not None and guide.grad.abs().sum() > 0
    p = logits.softmax(-1).detach()
    soft_grad = torch.autograd.grad((p.requires_grad_() @ ran.codebooks[0]).sum(), p)[0]
    assert soft_grad.abs().sum() > 0


def test_straight_through_codebook_gradient_is_the_soft_mixtures():
    """As released (z = pC + (C[argmax] - pC).detach()): the codebook gets the soft mixture's gradient,
    every code by its probability, not a lookup's gradient on the selected row alone."""
    ran = RecursiveAssignmentNetwork([5], D)
    guide, g = torch.randn(3, D), torch.randn(3, D)
    fused, _ = ran.walk(guide)
    (fused * g).sum().backward()
    C = ran.codebooks[0]
    soft = (guide @ C.T / ran.temperature()).softmax(-1) @ C
    torch.testing.assert_close(C.grad, torch.autograd.grad((soft * g).sum(), C)[0])


def test_teacher_forcing_reads_the_true_path_and_free_running_its_own_choice():
    ran = RecursiveAssignmentNetwork([4, 4, 4], D)
    guide = torch.randn(6, D)
    _, free = ran.walk(guide)
    own = torch.stack([lg.argmax(-1) for lg in free], 1)
    _, forced_own = ran.walk(guide, own)  # teacher-forcing on its own choices == free running
    for a, b in zip(free, forced_own):
        torch.testing.assert_close(a, b)
    other = (own + 1) % 4
    _, forced = ran.walk(guide, other)
    torch.testing.assert_close(forced[0], free[0])  # level 1 reads only the guide
    assert not torch.allclose(forced[1], free[1])  # deeper levels read the forced path


def test_rec_loss_is_sum_of_level_cross_entropies():
    table = sid_table()
    model = make(table, align_weight=0.0)
    b = batch()
    out = model(b)
    states, targets, _, _ = model.encode(b)
    labelled = targets > 0
    path = model.sid.codes[targets[labelled]]
    _, logits = model.ran.walk(states[labelled], path)
    expect = sum(F.cross_entropy(lg, path[:, i]) for i, lg in enumerate(logits))
    torch.testing.assert_close(out["loss"], expect)
    assert "aln" not in out  # lambda = 0 (the released config): no L_aln


def test_alignment_loss_hand_computed_case():
    ran = RecursiveAssignmentNetwork([2], 2)
    with torch.no_grad():
        ran.codebooks[0].copy_(torch.eye(2))
    _, (logits,) = ran.walk(torch.tensor([[1.0, 0.0]]))
    # logits = [1, 0]; CE against code 1 = log(1 + e) - 0
    torch.testing.assert_close(F.cross_entropy(logits, torch.tensor([1])), torch.log1p(torch.tensor(np.e)).float())
    model = make(sid_table(), align_weight=0.5)
    out = model(batch())
    torch.testing.assert_close(out["loss"], out["rec"] + 0.5 * out["aln"])


def test_alignment_loss_averages_over_every_history_item_of_every_prefix():
    """As released (every prefix is a row): L_aln is the mean over the labelled prefixes' history items,
    so an item counts once per prefix it is in; align_average=item counts each distinct item once."""
    model = make(sid_table(), align_weight=0.1)
    b = batch()
    items = torch.unique(b["input_ids"][b["input_ids"] > 0])
    with torch.no_grad():
        _, logits = model.walk_items(items)
    per_item = dict(zip(items.tolist(), sum(F.cross_entropy(lg, model.sid.codes[items, level], reduction="none")
                                            for level, lg in enumerate(logits)).tolist()))
    occurrences = [per_item[int(i)] for row, tgt in zip(b["input_ids"], b["target_ids"])
                   for t in range(len(tgt)) if tgt[t] > 0 for i in row[:t + 1] if i > 0]
    torch.testing.assert_close(model(b)["aln"], torch.tensor(np.mean(occurrences), dtype=torch.float32))
    model.align_average = "item"
    torch.testing.assert_close(model(b)["aln"], torch.tensor(np.mean(list(per_item.values())), dtype=torch.float32))


@pytest.mark.parametrize("beam", [10, 25])
def test_prefix_masking_never_yields_an_invalid_sid(beam):
    table = sid_table(num_items=30)
    model = make(table, beam_width=beam).eval()
    ids, scores = model.recommend(batch(), k=10)
    valid = set(range(1, 31))
    assert ids.shape == (4, 10)
    assert all(int(i) in valid for i in ids.flatten())
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first


def test_renormalised_beam_scores_each_level_over_the_valid_children():
    """renormalise_beam (released IntRR): an item's score is the sum over levels of log-softmax over its
    prefix's valid children; the default normalises over every code."""
    model = make(sid_table(num_items=30), beam_width=40, renormalise_beam=True).eval()
    b = batch()
    ids, scores = model.recommend(b, k=5)
    with torch.no_grad():
        guide = model.encode(b)[0][:, -1].repeat_interleave(5, 0)
        path = model.sid.codes[ids.reshape(-1)]
        _, logits = model.ran.walk(guide, path)
    nodes, total = torch.zeros(len(path), dtype=torch.long), torch.zeros(len(path))
    for level, lg in enumerate(logits):
        children = model.sid.trie_children[level][nodes]
        logp = torch.log_softmax(lg.masked_fill(children < 0, float("-inf")), -1)
        total += logp.gather(1, path[:, level:level + 1]).squeeze(1)
        nodes = children.gather(1, path[:, level:level + 1]).squeeze(1)
    torch.testing.assert_close(scores.reshape(-1), total, atol=1e-5, rtol=0)
    model.renormalise_beam = False
    assert not torch.allclose(model.recommend(b, k=5)[1], scores)


def test_training_reduces_loss():
    model = make(sid_table(), align_weight=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    b = batch(B=8)
    first = model(b)["loss"].item()
    for _ in range(60):
        opt.zero_grad()
        model(b)["loss"].backward()
        opt.step()
    assert model(b)["loss"].item() < 0.7 * first


def test_extra_left_padding_changes_nothing():
    model = make(sid_table()).eval()
    b = batch()
    padded = {k: torch.nn.functional.pad(v, (3, 0)) if v.dim() == 2 else v for k, v in b.items()}
    torch.testing.assert_close(model(b)["loss"], model(padded)["loss"])
    assert torch.equal(model.recommend(b, 5)[0], model.recommend(padded, 5)[0])


def test_code_usage_shows_a_collapsed_item_side():
    model = make(sid_table(num_items=30, sizes=(8, 8)))
    with torch.no_grad():  # every item the same guide (the uid_proj bias): one path
        model.uid.weight.zero_()
    collapsed = model.code_usage()
    assert collapsed["items"] == 30
    assert collapsed["paths_l3"] == collapsed["codes_l1"] == collapsed["codes_l2"] == 1
    with torch.no_grad():  # guides that differ per item: many paths
        model.uid.weight.normal_()
        model.uid_proj.bias.zero_()
    healthy = model.code_usage()
    assert healthy["paths_l1"] == healthy["codes_l1"] > 1
    assert healthy["paths_l1"] <= healthy["paths_l2"] <= healthy["paths_l3"] <= 30
    assert healthy["paths_l3"] >= 15
    assert model.code_usage(chunk=7) == healthy  # chunking the catalog changes nothing


def test_code_usage_counts_the_paths_the_item_side_walks():
    model = make(sid_table(num_items=30))
    with torch.no_grad():
        model.uid.weight.normal_()
    _, logits = model.walk_items(torch.arange(1, 31))
    walked = {tuple(int(lg[i].argmax()) for lg in logits) for i in range(30)}
    usage = model.code_usage()
    assert usage["paths_l3"] == len(walked)
    assert usage["paths_l2"] == len({p[:2] for p in walked})
    assert usage["codes_l2"] == len({p[1] for p in walked})


def test_align_weight_defaults_to_the_papers_positive_lambda():
    from distrec.config import compose

    assert make(sid_table()).align_weight == 0.1
    assert compose(["method=intrr"]).method.intrr.align_weight == 0.1
    assert compose(["experiment=intrr_beauty"]).method.intrr.align_weight == 0.1


def test_alignment_average_and_beam_default_to_the_released_and_reject_unknown_values():
    from distrec.config import compose
    from distrec.errors import ConfigError

    assert compose(["method=intrr"]).method.intrr.align_average == "occurrence"
    assert compose(["method=intrr"]).method.intrr.renormalise_beam
    with pytest.raises(ConfigError, match=r"method.intrr.align_average: Invalid value 'position'"):
        compose(["method=intrr", "method.intrr.align_average=position"])
    with pytest.raises(ValueError, match="'position' is not a valid AlignAverage"):  # built directly
        make(sid_table(), align_average="position")
    with pytest.raises(ValueError, match="'xavier' is not a valid IntRRInit"):
        make(sid_table(), init="xavier")


def test_released_init_scales():
    """init=released (the default): UID table and codebooks N(0, 1), torch's defaults in the released code."""
    table = sid_table(num_items=400, sizes=(64, 64))
    ours, theirs = make(table, init="distrec"), make(table)
    std = lambda w: float(w.detach().std())  # noqa: E731
    assert abs(std(ours.uid.weight[1:]) - 0.02) < 0.002 and abs(std(ours.ran.codebooks[0]) - D ** -0.5) < 0.03
    assert abs(std(theirs.uid.weight[1:]) - 1.0) < 0.05 and abs(std(theirs.ran.codebooks[0]) - 1.0) < 0.1
