"""One interface for every quantizer: numpy in, numpy out, so it runs in-process or in Ray actors.

    q = build_quantizer(cfg.tokenizer)      # from the `tokenizer` config group
    q.fit(x)                               # x: float32 [n, d]
    codes = q.encode(x)                    # int64 [n, L], digit l in [0, q.codebook_sizes[l])
    x_hat = q.decode(codes)                # where defined (reconstruction error in the report)
    q.save(dir); q = load_quantizer(dir)

`last_level_distances(x)` ([n, K] distances to every last-digit code, given the other digits) lets
the SID table re-assign colliding items to their next-best free code (`dedup: balanced`).

A new quantizer (e.g. GAOQ in quantizers/gaoq.py) subclasses `Quantizer`, implements `from_config`,
`fit`, `encode`, `_state`/`_load_state`, and is added to `QUANTIZERS`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from distrec.artifacts import read_json, write_json
from distrec.clustering.vectors import check_finite
from distrec.errors import ConfigError, DataError

QUANTIZERS = {
    "rq_kmeans": "distrec.tokenize.quantizers.rq_kmeans:RQKMeans",
    "rq_vae": "distrec.tokenize.quantizers.rq_vae:RQVAE",
    "opq": "distrec.tokenize.quantizers.pq:OPQ",
    "pq": "distrec.tokenize.quantizers.pq:PQ",
    "gaoq": "distrec.tokenize.quantizers.gaoq:GAOQ",  # ReSID; written by its own issue
    "hkmeans_local": "distrec.tokenize.quantizers.gaoq:HKMeansLocal",  # GAOQ without alignment (ReSID Q2)
}


class Quantizer:
    method: str = ""
    codebook_sizes: list[int]

    @classmethod
    def from_config(cls, cfg, progress: bool = True) -> "Quantizer":
        raise NotImplementedError

    def fit(self, x: np.ndarray) -> "Quantizer":
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.method} has no decoder")

    def last_level_distances(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.method} cannot rank last-level codes (use dedup=digit)")

    def run_on(self, executor) -> "Quantizer":
        """Run the parallel parts of `fit` where `executor` says (distrec.parallel.executor: in this
        process or on Ray workers); the codes do not depend on it. Most quantizers have none."""
        return self

    # ---- persistence: quantizer.json (method + params) and arrays.npz; subclasses add torch files
    def _state(self) -> tuple[dict, dict]:
        """(JSON-able params, dict of numpy arrays)."""
        raise NotImplementedError

    def _load_state(self, params: dict, arrays: dict, directory: Path) -> None:
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        params, arrays = self._state()
        np.savez(directory / "arrays.npz", **arrays)
        write_json(directory / "quantizer.json", {"method": self.method, "params": params})

    @staticmethod
    def check_input(x: np.ndarray, min_rows: int = 1, what: str = "catalog") -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise DataError(f"item vectors must be a 2-D array [items, dim], got shape {x.shape}")
        if len(x) == 0:
            raise DataError(f"the {what} is empty (0 item vectors)", hint="check the embeddings artifact")
        if len(x) < min_rows:
            raise ConfigError(f"a codebook of {min_rows} codes is larger than the {what} ({len(x)} items)")
        check_finite(x)
        return x

    def check_dim(self, x: np.ndarray, dim: int) -> None:
        if x.shape[1] != dim:
            raise DataError(f"vectors have dimension {x.shape[1]} but the {self.method} quantizer was fitted "
                            f"on dimension {dim}", hint="re-run tokenize on embeddings from the same embed run")


def quantizer_class(method: str):
    if method not in QUANTIZERS:
        raise ConfigError(f"tokenizer.method='{method}' is unknown; choose one of {sorted(QUANTIZERS)}")
    module, name = QUANTIZERS[method].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"tokenizer.method='{method}' is not available in this build ({e})") from None


def build_quantizer(cfg, progress: bool = True) -> Quantizer:
    return quantizer_class(cfg.method).from_config(cfg, progress=progress)


def load_quantizer(directory: str | Path) -> Quantizer:
    directory = Path(directory)
    spec = read_json(directory / "quantizer.json")
    cls = quantizer_class(spec["method"])
    q = cls.__new__(cls)
    with np.load(directory / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    q._load_state(spec["params"], arrays, directory)
    return q
