"""One module per on-disk format; each has `read(data_cfg, errors) -> RawData`."""

from __future__ import annotations

import importlib

from distrec.errors import ConfigError

READERS = {
    "normalized": "normalized",
    "s3rec": "text_sequences",
    "sasrec": "text_sequences",
    "movielens": "movielens",
    "amazon2014": "amazon",
    "amazon2023": "amazon",
    "lcrec": "lcrec",
    "unisrec": "unisrec",
    "recbole": "recbole",
    "table": "table",
}


def read(cfg, errors):
    if cfg.format not in READERS:
        raise ConfigError(f"data.format='{cfg.format}' is unknown; choose one of {sorted(READERS) + ['synthetic']}")
    if cfg.path is None:
        raise ConfigError(f"data.path is not set for data.format={cfg.format}; point it at the dataset")
    module = importlib.import_module(f"distrec.data.readers.{READERS[cfg.format]}")
    return module.read(cfg, errors)
