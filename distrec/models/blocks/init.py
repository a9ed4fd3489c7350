"""Re-initialising a built module's weights in a way that also works when they are partitioned."""

from typing import Callable

from torch import nn


def reinit(module: nn.Module, fn: Callable[[nn.Module], None]) -> None:
    """fn(module): new initial values for `module`'s own parameters, after the module was built.

    Runs through `Module.apply`: under DeepSpeed's `zero.Init` (ZeRO-3, distrec.train.engine) a module's
    parameters are partitioned as soon as its __init__ returns, and `apply` is what zero.Init wraps to
    gather them for fn and keep rank 0's result. A direct `nn.init` call there would fill an empty
    tensor. Without zero.Init this is fn(module): the same random draws, so the same weights."""
    module.apply(lambda m: fn(m) if m is module else None)


def small_linear(module: nn.Linear) -> None:
    """GPT-2's Linear initialisation: weight N(0, 0.02), bias 0."""
    nn.init.normal_(module.weight, std=0.02)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
