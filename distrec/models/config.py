"""Configs of backbones (`model`) and methods (`method`). Plain dataclasses: no torch import."""

import copy
from dataclasses import dataclass, field
from typing import Optional


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
    init: str = "meta"  # hstu: meta (Meta's research code: bias-free N(0, 0.02) UVQK, xavier output) | torch
    norm_affine: bool = False  # hstu: learnable layer-norm scale/shift (Meta's: none)
    # recompute each block's activations in the backward pass instead of keeping them (memory for time;
    # the same losses): the backbones and SASRec's blocks
    activation_checkpointing: bool = False


@dataclass
class AceRecConfig:
    """ACERec (methods.md §1). Defaults from the paper summaries; see docs/acerec.md for the open choices."""

    k: int = 4  # latents per item (compression r = m / k)
    merger: str = "atm"  # atm | mean | mlp | conv (ablation)
    intent: str = "summary"  # summary (Intent Token initialised from the item summary) | static | none
    gamma: float = 0.03  # MTP temperature
    tau: float = 0.07  # ISA temperature
    beta: float = 0.02  # ISA popularity (logQ) correction strength
    isa_weight: float = 0.1  # lambda; 0 turns ISA off
    recon_weight: float = 0.03  # alpha (v2); 0 turns the reconstruction decoder off (v1)
    loss_positions: str = "all"  # all | last: which history positions carry the loss


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
    align_average: str = "occurrence"  # L_aln over every history item of every labelled prefix (released) | item
    init: str = "released"  # released: UID table and codebooks N(0, 1) | distrec: N(0, 0.02), N(0, 1/d)


@dataclass
class MethodConfig:
    """The recommender built on the backbone, and its method-specific knobs."""

    name: str = "sasrec"  # sasrec | hstu_retrieval | tiger | flat_decoder | rpg | acerec | intrr
    module: Optional[str] = None  # the Python module defining the method; null = distrec.models.methods.<name>
    loss: str = "softmax"  # sasrec/hstu_retrieval: softmax | sampled_softmax | bce
    num_negatives: int = 128
    temperature: float = 1.0
    normalize: bool = False  # L2-normalised embeddings (HSTU retrieval)
    in_batch_negatives: bool = False  # hstu_retrieval: the batch's targets (up to num_negatives) as extra negatives
    query_time: str = "next"  # hstu_retrieval: time-gap bias from the next item's time (Meta) | current
    # semantic-ID generation (tiger, flat_decoder, rpg)
    beam_width: int = 20  # beam search width (raised to k when k is larger)
    decoding: str = "auto"  # auto | beam | exhaustive (tiger/flat_decoder); auto | holistic | graph (rpg)
    user_tokens: int = 0  # tiger: hashed user-id buckets, one token after the history (paper: 2000); 0 = none
    rpg_embd_dropout: float = 0.5  # rpg: dropout on item (mean-pooled) + position embeddings (GPT-2 embd_pdrop)
    rpg_attn_dropout: float = 0.5  # rpg: attention dropout (GPT-2 attn_pdrop); model.dropout = residual
    rpg_graph_edges: int = 200  # rpg graph decoding: neighbours per item
    rpg_graph_beams: int = 20  # rpg graph decoding: beams (raised to k when k is larger)
    rpg_graph_steps: int = 3  # rpg graph decoding: propagation steps
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
}


def with_legacy_values(config: dict) -> dict:
    """A copy of {"model": ..., "method": ...} with the keys it predates set to their legacy values."""
    config = copy.deepcopy(config)
    for path, value in LEGACY_VALUES.items():
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], value)
    return config
