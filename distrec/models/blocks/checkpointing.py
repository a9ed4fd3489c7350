"""Activation checkpointing (`model.activation_checkpointing`): a block's activations are not kept for
the backward pass but recomputed there, trading one more forward of the block for memory."""

import torch
from torch.utils.checkpoint import checkpoint


def run_block(block: torch.nn.Module, *args, recompute: bool = False):
    """block(*args); with `recompute` while gradients are being recorded, through torch's non-reentrant
    checkpoint (dropout draws are replayed: the same values as without)."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
