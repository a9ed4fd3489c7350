"""Config of the `evaluate` stage; it becomes the serialised evaluation protocol."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EvalConfig:
    split: str = "test"  # valid | test
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    beam_width: int = 20  # generative decoding; must be >= max(ks)
    decoding: str = "auto"  # auto | beam | exhaustive | holistic | graph
    filter_history: bool = False  # mask items already in the history (not the papers' protocol)
    batch_size: int = 256
    # beam search: at most this many (user, beam) rows per forward; a batch of more users is cut into
    # pieces (each row holds its own decoder state; memory, not results, depends on it). null = no limit
    beam_rows: Optional[int] = 2048
    checkpoint: str = "best"  # best | last | path to a checkpoint directory
    max_users: Optional[int] = None  # evaluate a seeded random sample of this many users (null = all)
    sample_seed: int = 0  # seed of that sample, and of train.val_max_users' (the same users at every validation)
