"""Method name -> model class. Each class builds itself with `from_config(model, method, catalog)`.

Imported lazily so the CLI starts without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from distrec.errors import ConfigError

METHODS = {
    "sasrec": "distrec.models.methods.sasrec:SASRec",
    "acerec": "distrec.models.methods.acerec:ACERec",
    "intrr": "distrec.models.methods.intrr:IntRR",
    "hstu_retrieval": "distrec.models.methods.hstu_retrieval:HSTURetrieval",
    "tiger": "distrec.models.methods.tiger:TIGER",
    "flat_decoder": "distrec.models.methods.flat_decoder:FlatDecoder",
    "rpg": "distrec.models.methods.rpg:RPG",
    # added by later issues: hstu_retrieval, tiger, flat_decoder, rpg, acerec, intrr
}


@dataclass
class Catalog:
    """What a model needs to know about the items: their count, SIDs and popularity."""

    num_items: int  # item ids are 1..num_items; 0 is padding
    sid_table: Any = None  # distrec.tokenize.sid_table.SIDTable for semantic-ID methods
    item_counts: Any = None  # np.ndarray [num_items + 1] training-set frequency (0 for padding)


def build_model(model_cfg, method_cfg, catalog: Catalog):
    if method_cfg.name not in METHODS:
        raise ConfigError(f"method.name='{method_cfg.name}' is unknown; choose one of {sorted(METHODS)}")
    module, cls = METHODS[method_cfg.name].split(":")
    return getattr(importlib.import_module(module), cls).from_config(model_cfg, method_cfg, catalog)
