"""`model.activation_checkpointing`: blocks recompute their activations in the backward pass; the
outputs and gradients are the same as without it (dropout on: its draws are replayed)."""

import pytest
import torch

from distrec.models.backbones import build_backbone
from distrec.models.config import ModelConfig


def run(cfg: ModelConfig, x: torch.Tensor):
    torch.manual_seed(0)
    backbone = build_backbone(cfg).train()
    torch.manual_seed(1)
    if cfg.backbone == "t5":
        h = backbone(x, x[:, :3])
    else:
        h = backbone(x)
    h.pow(2).sum().backward()
    return h.detach(), {n: p.grad for n, p in backbone.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", ["transformer", "hstu", "t5"])
def test_recomputed_blocks_give_the_same_outputs_and_gradients(backbone):
    x = torch.randn(3, 7, 32)
    cfg = ModelConfig(backbone=backbone, size="debug", n_layers=2, dropout=0.3, max_history=7)
    h, grads = run(cfg, x)
    h_ckpt, grads_ckpt = run(ModelConfig(**{**cfg.__dict__, "activation_checkpointing": True}), x)
    assert torch.equal(h, h_ckpt)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_is_used(monkeypatch):
    """The recompute path is taken (a forward counted twice per block), not silently skipped."""
    cfg = ModelConfig(backbone="transformer", size="debug", n_layers=1, dropout=0.0, max_history=7,
                      activation_checkpointing=True)
    backbone = build_backbone(cfg).train()
    calls = []
    backbone.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    backbone(torch.randn(2, 7, 32)).sum().backward()
    assert len(calls) == 2
