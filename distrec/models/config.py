"""Configs of backbones (`model`) and methods (`method`). Plain dataclasses: no torch import."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelConfig:
    """Backbone architecture. `size` names a preset (debug/small/base/large/xl) that fills the
    dimensions left at null; explicit values win over the preset."""

    backbone: str = "transformer"  # transformer | t5 | hstu | sasrec
    size: str = "small"
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    d_ff: Optional[int] = None
    n_decoder_layers: Optional[int] = None  # t5 only
    dropout: float = 0.1
    max_history: int = 50  # items of history the model sees
    head_dim: Optional[int] = None  # per-head q/k(/v) width; null = d_model / n_heads (T5/TIGER: 64; HSTU: attention dim)
    linear_dim: Optional[int] = None  # hstu: per-head U/V width; null = d_model / n_heads
    rel_buckets: int = 32  # t5: relative position buckets
    rel_max_distance: int = 128  # t5: distance of the last bucket
    num_time_buckets: int = 128  # hstu: log time-gap buckets
    kernel: str = "pytorch"  # hstu attention kernel (registry in backbones/hstu.py)


@dataclass
class MethodConfig:
    """The recommender built on the backbone, and its method-specific knobs."""

    name: str = "sasrec"  # sasrec | hstu_retrieval | tiger | flat_decoder | rpg | acerec | intrr
    loss: str = "softmax"  # sasrec/hstu_retrieval: softmax | sampled_softmax | bce
    num_negatives: int = 128
    temperature: float = 1.0
    normalize: bool = False  # L2-normalised embeddings (HSTU retrieval)
    in_batch_negatives: bool = False  # hstu_retrieval: the batch's targets (up to num_negatives) as extra negatives
