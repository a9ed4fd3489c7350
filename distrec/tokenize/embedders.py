"""Item embedders, keyed by `embed.method`: fit once on the catalog, then transform batches of items.

An embedder first builds its input table from the prepared data (`inputs(data)`: item_id plus the
columns it reads, e.g. `text` with categorical ids decoded to names), is fitted once on it, then
transforms batches of it. Inputs and outputs are Arrow/numpy only, so a fitted embedder can be
shipped to Ray Data workers (`distrec/parallel/embed.py`) and applied per block, or run in-process.

- `tfidf`: TF-IDF over the item's text fields (uni+bigrams, sublinear tf) + truncated SVD. Built in,
  no downloads. `embed.attribute_fields` adds categorical ids as words (`embed=tfidf_all`).
- `fields`: catalogs without text: categorical ids, multi-valued attributes and numeric columns are
  hashed into a sparse one-hot space (numeric standardised), idf-weighted, then truncated SVD.
- `sentence_transformer`: a pretrained sentence-transformers model (`embed.model`), text_encoder.py.
- `column`: a vector column the user already has in items.parquet (`embed.column`).
- `famae` (ReSID) is trained, not fitted: a model trained with the engine on the sequences, built by
  the embed stage (distrec/train/famae.py) with the same interface.
"""

from __future__ import annotations

import importlib
import logging
import re
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

from distrec.artifacts import check_same_dataset, dir_hash, shard_paths
from distrec.clustering.vectors import vectors_from_arrow
from distrec.errors import ConfigError, DataError, MissingExtra

log = logging.getLogger("distrec")

EMBEDDERS = {
    "tfidf": "distrec.tokenize.embedders:TfidfEmbedder",
    "fields": "distrec.tokenize.embedders:FieldsEmbedder",
    "sentence_transformer": "distrec.tokenize.text_encoder:SentenceTransformerEmbedder",
    "column": "distrec.tokenize.embedders:ColumnEmbedder",
}
# embedders that train a model on the sequences with the training engine: the embed stage builds them
TRAINED = {"famae": "ReSID's field-aware masked auto-encoder (distrec.train.famae)"}
NOT_FIELDS = {"item_id", "raw_id"}


def build_embedder(cfg):
    if cfg.method not in EMBEDDERS:
        raise ConfigError(f"embed.method='{cfg.method}' is unknown; choose one of {sorted([*EMBEDDERS, *TRAINED])}")
    module, name = EMBEDDERS[cfg.method].split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"embed.method='{cfg.method}' is not available in this build ({e})") from None
    try:
        return cls(cfg)
    except MissingExtra as e:
        if not cfg.fallback:
            raise
        log.warning("embed: %s\n  -> falling back to embed.method=%s (embed.fallback)", e, cfg.fallback)
        return build_embedder(OmegaConf.merge(cfg, {"method": cfg.fallback, "fallback": None}))


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows; all-zero rows (items with no content) stay zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


def text_inputs(data, fields: list[str], attribute_fields: list[str] = (), max_chars: int = 0) -> pa.Table:
    """(item_id, text): the item's text fields, each cut to `max_chars`, joined, categorical ids decoded
    (PreparedData.item_texts), then one word `<field>_<id>` per value of each attribute field (ids
    without readable names, e.g. Beauty's S3-Rec attr_ids: the brand and category path of the 2014
    metadata)."""
    present = [f for f in fields if f in data.items.column_names]
    attributes = [f for f in attribute_fields if f in data.items.column_names]
    if not present and not attributes:
        raise ConfigError(f"embed.text_fields={list(fields)} / embed.attribute_fields={list(attribute_fields)}: "
                          f"none is a field of the items (fields: {sorted(data.fields)})", )
    texts = data.item_texts(present, max_chars=max_chars)
    for name in attributes:
        if not data.fields.get(name, "").endswith("categorical"):
            raise ConfigError(f"embed.attribute_fields: '{name}' is a {data.fields.get(name)} field; list "
                              "categorical or multi_categorical fields (text fields go in embed.text_fields)")
        word = re.sub(r"\W", "_", name)
        for row, ids in enumerate(data.items.column(name).to_pylist()):
            words = [f"{word}_{v}" for v in (ids if isinstance(ids, list) else [ids]) if v]  # id 0 = missing
            texts[row] = " ".join([texts[row], *words]).strip()
    if not any(t.strip() for t in texts):
        raise DataError(f"every item has empty text in {present + attributes}", data.directory,
                        hint="pick other embed.text_fields, or use embed=fields for catalogs without text")
    return pa.table({"item_id": data.items.column("item_id"), "text": pa.array(texts, pa.string())})


def _svd(matrix, dim: int, seed: int, what: str):
    from sklearn.decomposition import TruncatedSVD

    if dim >= matrix.shape[1]:
        raise ConfigError(f"embed.dim={dim} must be smaller than the {what} ({matrix.shape[1]} features)",
                          )
    return TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=5, random_state=seed).fit(matrix)


class TfidfEmbedder:
    def __init__(self, cfg):
        self.cfg = cfg

    def inputs(self, data) -> pa.Table:
        return text_inputs(data, self.cfg.text_fields, self.cfg.attribute_fields, self.cfg.max_field_chars)

    def fit(self, inputs: pa.Table):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=self.cfg.min_df, ngram_range=(1, 2),
                                          max_features=1 << 18, dtype=np.float32)
        matrix = self.vectorizer.fit_transform(inputs.column("text").to_pylist())
        self.svd = _svd(matrix, self.cfg.dim, self.cfg.seed, "TF-IDF vocabulary")
        return self

    def transform(self, inputs: pa.Table) -> np.ndarray:
        return self.svd.transform(self.vectorizer.transform(inputs.column("text").to_pylist())).astype(np.float32)


class FieldsEmbedder:
    """Hashed one-hot of categorical / multi-valued / numeric fields + idf + truncated SVD."""

    def __init__(self, cfg):
        self.cfg = cfg

    def inputs(self, data) -> pa.Table:
        self.field_types = dict(data.fields)
        self.kinds = self._kinds(data.items)
        return data.items.select(["item_id", *self.kinds])

    def _kinds(self, items: pa.Table) -> dict[str, str]:
        names = list(self.cfg.fields) or [n for n in items.column_names if n not in NOT_FIELDS
                                          and self.field_types.get(n) != "text"
                                          and not pa.types.is_string(items.schema.field(n).type)]
        kinds = {}
        for name in names:
            if name not in items.column_names:
                raise ConfigError(f"embed.fields: '{name}' is not a column of items (columns: {items.column_names})")
            t = items.schema.field(name).type
            if pa.types.is_floating(t):
                kinds[name] = "numeric"
            elif pa.types.is_list(t) or pa.types.is_large_list(t):
                kinds[name] = "multi"
            elif pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_boolean(t):
                kinds[name] = "categorical"
            else:
                raise ConfigError(f"embed.fields: column '{name}' has type {t}, which the fields encoder cannot use")
        if not kinds:
            raise ConfigError(f"embed=fields found no categorical/numeric fields in items (columns: "
                              f"{items.column_names})", )
        return kinds

    def _sparse(self, items: pa.Table):
        import scipy.sparse as sp
        from sklearn.feature_extraction import FeatureHasher

        tokens = [[] for _ in range(items.num_rows)]
        numeric = []
        for name, kind in self.kinds.items():
            values = items.column(name).to_pylist()
            if kind == "numeric":
                v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
                numeric.append(np.nan_to_num((v - self.stats[name][0]) / self.stats[name][1]))
                continue
            for row, value in enumerate(values):
                if value is None or (value == 0 and self.field_types.get(name, "").endswith("categorical")):
                    continue  # 0 = missing categorical id
                for v in (value if kind == "multi" else [value]):
                    tokens[row].append(f"{name}={v}")
        hashed = FeatureHasher(n_features=self.cfg.hash_dim, input_type="string", alternate_sign=False).transform(tokens)
        if numeric:
            hashed = sp.hstack([hashed, sp.csr_matrix(np.column_stack(numeric))]).tocsr()
        return hashed

    def fit(self, items: pa.Table):
        from sklearn.feature_extraction.text import TfidfTransformer

        if not hasattr(self, "kinds"):  # fitted on a bare table (no prepared data): infer the kinds
            self.field_types = {}
            self.kinds = self._kinds(items)
        self.stats = {}
        for name, kind in self.kinds.items():
            if kind == "numeric":
                v = items.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                std = np.nanstd(v) if np.isfinite(v).any() else 1.0
                self.stats[name] = (float(np.nanmean(v)) if np.isfinite(v).any() else 0.0, float(std) or 1.0)
        matrix = self._sparse(items)
        self.idf = TfidfTransformer(sublinear_tf=True).fit(matrix)
        self.svd = _svd(self.idf.transform(matrix), self.cfg.dim, self.cfg.seed, "hashed field space")
        return self

    def transform(self, items: pa.Table) -> np.ndarray:
        return self.svd.transform(self.idf.transform(self._sparse(items))).astype(np.float32)


class ColumnEmbedder:
    def __init__(self, cfg):
        if not cfg.column:
            raise ConfigError("embed.column is required for embed=column: the items column holding the vectors")
        self.cfg = cfg

    def inputs(self, data) -> pa.Table:
        items = data.items
        if self.cfg.column not in items.column_names:
            raise ConfigError(f"embed.column='{self.cfg.column}' is not a column of items "
                              f"(columns: {items.column_names})")
        return items.select(["item_id", self.cfg.column])

    def fit(self, inputs: pa.Table):
        return self

    def transform(self, items: pa.Table) -> np.ndarray:
        return vectors_from_arrow(items.column(self.cfg.column), f"items column '{self.cfg.column}'")


def placeholder_vectors(item_ids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A unit vector per item, random but fixed by (seed, item id): the vector of an item with no content.

    An all-zero vector would put every such item on one point, so all of them would share one semantic
    ID (hundreds of items under one prefix on a large catalog); a random direction gives each one an
    ordinary, if meaningless, code. The same item gets the same vector in any batch or worker."""
    x = np.stack([np.random.default_rng([seed, int(i)]).standard_normal(dim) for i in item_ids])
    return normalize(x)


def embed_table(embedder, items: pa.Table, do_normalize: bool, seed: int = 0) -> pa.Table:
    """(item_id, vector fixed_size_list<float32>, no_content bool) for a batch of items.

    Items whose embedding is all zero (no text, no attribute) get `placeholder_vectors` and
    `no_content = true`, so the stage can report them."""
    x = embedder.transform(items)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        raise DataError(f"the {type(embedder).__name__} produced a NaN/inf vector for item "
                        f"{items.column('item_id')[row].as_py()}", hint="check that item's fields")
    empty = ~x.any(axis=1)
    if empty.any():
        x = x.copy()  # transform may return a read-only view (embed=column)
        x[empty] = placeholder_vectors(items.column("item_id").to_numpy()[empty], x.shape[1], seed)
    if do_normalize:
        x = normalize(x)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])
    return pa.table({"item_id": items.column("item_id").cast(pa.int64()), "vector": vectors,
                     "no_content": pa.array(empty)})


class ItemEmbeddings:
    """The embed/ artifact as the tokenize stage opens it: item_embeddings/ shards (item_id, vector,
    no_content) and the manifest that makes it complete; `dataset` refuses one made from other data."""

    def __init__(self, directory: str | Path, dataset: str | None = None):
        self.directory = Path(directory)
        if dataset is not None:
            check_same_dataset(self.directory, dataset)
        self.table_dir = self.directory / "item_embeddings"
        self.shards = shard_paths(self.table_dir)  # a DataError naming the directory when there are none

    @cached_property
    def content_hash(self) -> str:
        return dir_hash(self.table_dir)
