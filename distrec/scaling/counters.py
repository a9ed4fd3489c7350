"""Parameter and FLOP counters for scaling-law sweeps (pure torch).

Parameters are split the way scaling-law papers split them (Kaplan et al. 2020): *embedding*
parameters are lookup tables (`nn.Embedding`/`nn.EmbeddingBag`: item, position, SID-token tables,
and any output table tied to one of them); everything else is *non-embedding*. Tables cost memory
but almost no compute, so compute laws are written in non-embedding parameters N.

FLOPs per token of a transformer-like backbone (one multiply-add = 2 FLOPs):

    forward  = 2 * N                                  every non-embedding weight: one multiply-add
             + attn * n_layers * T * d                attention scores (Q K^T) and values (A V)
             + 2 * d * V_out                          scoring the output table (catalog / vocab)
    training = 3 * forward                            backward costs twice the forward

with T the context length (`model.max_history`), d = d_model, V_out the output scores per token
(num_items for a full-softmax ID model, negatives + 1 for sampled softmax, the SID vocabulary for a
generative model; 0 to leave it out as Kaplan does). attn = 2 counts causal attention's useful half
(the brief's convention: 2 * n_layers * T * d forward); attn = 4 counts the dense T x T matmuls that
PyTorch actually runs, which is what `measured_flops` sees.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclass
class ParamCount:
    total: int
    embedding: int
    non_embedding: int


@contextlib.contextmanager
def parameters_on_meta():
    """Modules built inside keep their parameters on the meta device (shapes, no memory): each is moved
    there as it is registered, so at most one parameter is ever allocated. Buffers stay real (SID tables
    are read while a model is built), unlike under `torch.device("meta")`."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def count_params(model: nn.Module, trainable_only: bool = False) -> ParamCount:
    """Total / embedding / non-embedding parameters; shared (tied) tensors are counted once."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, EMBEDDING_TYPES)}
    seen, total, embedding = set(), 0, 0
    for p in model.parameters():  # parameters() already yields a tied tensor once
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) in embedding_ids:
            embedding += p.numel()
    return ParamCount(total=total, embedding=embedding, non_embedding=total - embedding)


def analytic_flops_per_token(n_non_embedding: int, n_layers: int, d_model: int, context: int,
                             output_size: int = 0, causal: bool = True, training: bool = True) -> float:
    """FLOPs per token of one forward (+ backward when `training`) pass; formula in the module doc."""
    attention = (2 if causal else 4) * n_layers * context * d_model
    forward = 2 * n_non_embedding + attention + 2 * d_model * output_size
    return float(3 * forward if training else forward)


def measured_flops(model: nn.Module, batch, loss_fn=None, backward: bool = True) -> int:
    """FLOPs PyTorch's FlopCounterMode sees for one forward (+ backward) of `model` on `batch`.

    `batch` is passed to the model as is (a dict for distrec models, a tensor for plain modules);
    `loss_fn(output) -> scalar` defaults to `output["loss"]` for dicts and `output.sum()` otherwise.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if loss_fn is None:
        def loss_fn(out):
            return out["loss"] if isinstance(out, dict) else out.float().sum()
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with counter:
        out = model(batch)
        if backward:
            loss_fn(out).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def model_flops_per_token(model: nn.Module, model_cfg, output_size: int = 0, training: bool = True) -> float:
    """Analytic FLOPs per token of a built distrec model, dimensions from its (resolved) config."""
    from distrec.models.presets import resolve_dims

    dims = resolve_dims(model_cfg)
    n_layers = dims.n_layers + (dims.n_decoder_layers if dims.backbone == "t5" else 0)
    return analytic_flops_per_token(count_params(model).non_embedding, n_layers, dims.d_model,
                                    dims.max_history, output_size=output_size, training=training)



def _cpu_attention_flops() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel that
    `F.scaled_dot_product_attention` runs here; count it like its CUDA twin (dense T x T)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    # FlopCounterMode hands custom counters the shapes of the op's tensor arguments
    def forward(query, key, value, *args, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
