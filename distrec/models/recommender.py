"""The interface every method implements: `Recommender`, and where a method's class is found.

A method is one file: a `Recommender` subclass with a `name` (what `method.name` selects). The
pipeline reads its declarations instead of lists of names: `uses_sids` (the method reads the SID
table, so `distrec run` embeds and tokenizes first) and `decodings` (what `eval.decoding` may choose).

    cls = method_class("rpg")            # distrec.models.methods.rpg, the subclass named "rpg"
    model = cls.from_config(model_cfg, method_cfg, catalog)

A method outside distrec names its module in its config (`method.module: my_package.my_method`).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from distrec.errors import ConfigError

METHODS_PACKAGE = "distrec.models.methods"


@dataclass
class Catalog:
    """What a model needs to know about the items: their count, SIDs and popularity."""

    num_items: int  # item ids are 1..num_items; 0 is padding
    sid_table: Any = None  # distrec.tokenize.sid_table.SIDTable for semantic-ID methods
    item_counts: Any = None  # np.ndarray [num_items + 1] training-set frequency (0 for padding)


class Recommender(nn.Module):
    """A next-item recommender. Subclasses set the class attributes and implement the three methods:

        from_config(model_cfg, method_cfg, catalog) -> the model, built from its config
        forward(batch) -> {"loss": scalar tensor, any other scalars to log}   (the training loss)
        recommend(batch, k) -> (item ids [B, k], scores [B, k]), best first   (inference)
    """

    name: ClassVar[str]  # method.name
    uses_sids: ClassVar[bool] = True  # reads catalog.sid_table (the pipeline tokenizes first)
    decodings: ClassVar[tuple[str, ...]] = ("auto",)  # how `recommend` can generate; "auto" = the method's own
    auto_decoding: ClassVar[str] = "full_catalog"  # what "auto" is, by name (a score for every catalog item)
    # its parameters do not depend on the catalog: items added to the SID table after training
    # (`distrec tokenize --extend`) can be recommended (a method with an embedding per item sets False)
    extendable: ClassVar[bool] = True
    decoding: str = "auto"
    beam_width: int | None = None  # methods that decode with a beam set it
    # beam decoders whose `recommend(..., items_from=first)` searches only items first..N (eval.new_item_share)
    beams_new_items: ClassVar[bool] = False
    # the parts of the training loss `forward` reports beside "loss" (weighted or not): metrics.jsonl logs them
    loss_terms: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, model_cfg, method_cfg, catalog: Catalog) -> Recommender:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict:
        raise NotImplementedError

    def recommend(self, batch: dict, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def check_decoding(cls, decoding: str, key: str = "method.decoding") -> None:
        if decoding not in cls.decodings:
            raise ConfigError(f"{key}='{decoding}' is not available for {cls.__name__}; "
                              f"choose one of {list(cls.decodings)}")

    @property
    def decoding_name(self) -> str:
        """The decoding `recommend` runs, by name ("auto" resolved): what manifests and answers record."""
        return self.auto_decoding if self.decoding == "auto" else self.decoding

    def use_decoding(self, decoding: str, beam_width: int) -> None:
        """Evaluation's decoding and beam width, in place of those the model was trained with."""
        self.check_decoding(decoding, "eval.decoding")
        if decoding != "auto":
            self.decoding = decoding
        if self.beam_width is not None:
            self.beam_width = beam_width


def method_class(name: str, module: str | None = None) -> type[Recommender]:
    """The `Recommender` subclass called `name`, from `module` (default: distrec.models.methods.<name>)."""
    module = module or f"{METHODS_PACKAGE}.{name}"
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not module.startswith(e.name or "\0"):  # a module the method itself imports is missing
            raise
        hint = f"choose one of {builtin_methods()}" if module.startswith(METHODS_PACKAGE) else \
            "check method.module (a Python module importable from here)"
        raise ConfigError(f"method.name='{name}': no module {module}; {hint}") from None
    classes = _recommenders_named(found, name)
    if len(classes) != 1:
        raise ConfigError(f"method.name='{name}': {module} defines {len(classes)} Recommender subclasses named "
                          f"'{name}' (it must define one)")
    return classes[0]


def builtin_methods() -> list[str]:
    """The methods distrec ships: the modules of distrec.models.methods that define a Recommender."""
    package = importlib.import_module(METHODS_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if _recommenders_named(importlib.import_module(f"{METHODS_PACKAGE}.{info.name}"), info.name):
            names.append(info.name)
    return sorted(names)


def _recommenders_named(module, name: str) -> list[type[Recommender]]:
    return [c for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, Recommender) and getattr(c, "name", None) == name]


def build_model(model_cfg, method_cfg, catalog: Catalog) -> Recommender:
    cls = method_class(method_cfg.name, getattr(method_cfg, "module", None))  # untyped configs may lack `module`
    return cls.from_config(model_cfg, method_cfg, catalog)
