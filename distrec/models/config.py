"""Configs of backbones (`model`) and methods (`method`). Plain dataclasses: no torch import."""

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from distrec.eval.config import Decoding


class HSTUInit(StrEnum):
    meta = "meta"  # Meta's research code: bias-free N(0, 0.02) UVQK, xavier output
    torch = "torch"


class Loss(StrEnum):  # sasrec, hstu_retrieval
    softmax = "softmax"  # full softmax over the catalog
    sampled_softmax = "sampled_softmax"
    bce = "bce"  # one sampled negative


class QueryTime(StrEnum):  # hstu_retrieval: the time a position's time-gap bias measures from
    next = "next"  # the next item's (Meta)
    current = "current"


class Merger(StrEnum):  # ACERec: how an item's m SID tokens become k latents
    atm = "atm"  # the attentive token merger
    mean = "mean"
    mlp = "mlp"
    conv = "conv"


class Intent(StrEnum):  # ACERec's intent token
    summary = "summary"  # initialised from the item summary
    static = "static"
    none = "none"


class Summary(StrEnum):  # ACERec: the item summary s_i (the Intent Token's content, the merger's query source, ISA's target)
    mlp = "mlp"  # mean of the tokens -> LayerNorm -> 2-layer GELU MLP (the community port)
    mean = "mean"  # the mean of the tokens itself: RPG's item input


class LossPositions(StrEnum):
    all = "all"  # every history position carries the loss
    last = "last"


class AlignAverage(StrEnum):  # IntRR's L_aln
    occurrence = "occurrence"  # over every history item of every labelled prefix (released)
    item = "item"


class IntRRInit(StrEnum):
    released = "released"  # UID table and codebooks N(0, 1)
    distrec = "distrec"  # N(0, 0.02), N(0, 1/d)


@dataclass
class ModelConfig:
    """Backbone architecture. `size` names a preset (debug/small/base/large/xl/200m/400m/800m) that fills the
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
    init: HSTUInit = HSTUInit.meta  # hstu
    norm_affine: bool = False  # hstu: learnable layer-norm scale/shift (Meta's: none)
    # recompute each block's activations in the backward pass instead of keeping them (memory for time;
    # the same losses): the backbones and SASRec's blocks
    activation_checkpointing: bool = False


@dataclass
class AceRecConfig:
    """ACERec (methods.md §1). Defaults from the paper summaries; see docs/acerec.md for the open choices."""

    k: int = 4  # latents per item (compression r = m / k)
    merger: Merger = Merger.atm
    intent: Intent = Intent.summary
    summary: Summary = Summary.mlp  # the form of f_s, which the sources leave open
    gamma: float = 0.03  # MTP temperature
    tau: float = 0.07  # ISA temperature
    beta: float = 0.02  # ISA popularity (logQ) correction strength
    isa_weight: float = 0.1  # lambda; 0 turns ISA off
    recon_weight: float = 0.03  # alpha (v2); 0 turns the reconstruction decoder off (v1)
    loss_positions: LossPositions = LossPositions.all
    # The backbone set up as RPG's GPT-2 (ACERec's is "aligned with RPG"; model.backbone=transformer):
    # GPT-2's initialisation, and its dropouts on the slot contents entering the backbone (embd_pdrop)
    # and on attention probabilities (attn_pdrop); null = model.dropout. RPG's released values: true, 0.5, 0.5.
    gpt2_init: bool = False
    embd_dropout: Optional[float] = None
    attn_dropout: Optional[float] = None
    # dropout on an item's m token embeddings as they enter the summary and the merger (training only;
    # the reconstruction target and ISA's target summaries stay undropped). Not in the sources: a
    # regulariser of the item encoder, which nothing else drops (docs/acerec.md).
    token_dropout: float = 0.0


@dataclass
class IntRRConfig:
    """IntRR (methods.md §3). Defaults follow the released config unless noted."""

    uid_dim: int = 512  # UID embedding width (projected to d_model)
    hidden: int = 512  # RAN level-MLP hidden width
    temperature: float = 1.0  # RAN softmax temperature
    learn_temperature: bool = False
    align_weight: float = 0.1  # lambda of L_aln: the paper's lambda > 0 (released config 0.0 collapses: docs/intrr.md)
    item_ground_truth: bool = False  # item side follows the Stage-1 SID path instead of its own choices
    renormalise_beam: bool = True  # beam: each level's softmax over the valid children only, as released
    align_average: AlignAverage = AlignAverage.occurrence
    init: IntRRInit = IntRRInit.released


@dataclass
class RPGConfig:
    """RPG (methods.md): GPT-2's dropouts and the graph decoding."""

    embd_dropout: float = 0.5  # dropout on item (mean-pooled) + position embeddings (GPT-2 embd_pdrop)
    attn_dropout: float = 0.5  # attention dropout (GPT-2 attn_pdrop); model.dropout = residual
    graph_edges: int = 200  # graph decoding: neighbours per item
    graph_beams: int = 20  # graph decoding: beams (raised to k when k is larger)
    graph_steps: int = 3  # graph decoding: propagation steps


@dataclass
class MethodConfig:
    """The recommender built on the backbone, and its method-specific knobs."""

    name: str = "sasrec"  # sasrec | hstu_retrieval | tiger | flat_decoder | rpg | acerec | intrr
    module: Optional[str] = None  # the Python module defining the method; null = distrec.models.methods.<name>
    # settings of a method that has no node here (one added from outside distrec): the method checks them
    options: dict[str, Any] = field(default_factory=dict)
    loss: Loss = Loss.softmax  # sasrec, hstu_retrieval
    num_negatives: int = 128
    temperature: float = 1.0
    normalize: bool = False  # L2-normalised embeddings (HSTU retrieval)
    in_batch_negatives: bool = False  # hstu_retrieval: the batch's targets (up to num_negatives) as extra negatives
    query_time: QueryTime = QueryTime.next  # hstu_retrieval
    # semantic-ID generation (tiger, flat_decoder, rpg)
    beam_width: int = 20  # beam search width (raised to k when k is larger)
    decoding: Decoding = Decoding.auto  # one of the method's `decodings`
    user_tokens: int = 0  # tiger: hashed user-id buckets, one token after the history (paper: 2000); 0 = none
    rpg: RPGConfig = field(default_factory=RPGConfig)
    acerec: AceRecConfig = field(default_factory=AceRecConfig)
    intrr: IntRRConfig = field(default_factory=IntRRConfig)


# What each key meant before it existed: a config written without it (an older model.json or
# checkpoint) stands for this value, not for today's default. Add a key here whenever its default
# changes what an existing model computes.
LEGACY_VALUES = {
    ("model", "init"): "torch",
    ("model", "norm_affine"): True,
    ("method", "query_time"): "current",
    ("method", "intrr", "renormalise_beam"): False,
    ("method", "intrr", "align_average"): "item",
    ("method", "intrr", "init"): "distrec",
    ("method", "acerec", "summary"): "mlp",
}


# Where a key moved: an older config's value is read at its new place.
MOVED_KEYS = {("method", f"rpg_{key}"): ("method", "rpg", key)
              for key in ("embd_dropout", "attn_dropout", "graph_edges", "graph_beams", "graph_steps")}


def with_legacy_values(config: dict) -> dict:
    """A copy of {"model": ..., "method": ...} with moved keys at their new place and the keys it
    predates set to their legacy values."""
    config = copy.deepcopy(config)
    for old, new in MOVED_KEYS.items():
        parent = config.get(old[0]) or {}
        if old[-1] in parent:
            node = config
            for key in new[:-1]:
                node = node.setdefault(key, {})
            node[new[-1]] = parent.pop(old[-1])
    for path, value in LEGACY_VALUES.items():
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], value)
    return config
