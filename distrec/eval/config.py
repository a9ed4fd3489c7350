"""Config of the `evaluate` stage; it becomes the serialised evaluation protocol."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional


class EvalSplit(StrEnum):
    valid = "valid"  # predict each user's validation item
    test = "test"


class Decoding(StrEnum):
    """How a generative method produces items (each method declares which it has: Recommender.decodings)."""

    auto = "auto"  # the method's own
    beam = "beam"  # constrained beam search over the SID trie
    exhaustive = "exhaustive"  # every item's SID scored
    holistic = "holistic"  # RPG: every item scored from the digit distributions
    graph = "graph"  # RPG: propagation over the item graph


@dataclass
class EvalConfig:
    split: EvalSplit = EvalSplit.test
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    beam_width: int = 20  # generative decoding; must be >= max(ks)
    decoding: Decoding = Decoding.auto
    filter_history: bool = False  # mask items already in the history (not the papers' protocol)
    batch_size: int = 256
    # beam search: at most this many (user, beam) rows per forward; a batch of more users is cut into
    # pieces (each row holds its own decoder state; memory, not results, depends on it). null = no limit
    beam_rows: Optional[int] = 2048
    checkpoint: str = "best"  # best | last | path to a checkpoint directory
    max_users: Optional[int] = None  # evaluate a seeded random sample of this many users (null = all)
    sample_seed: int = 0  # seed of that sample, and of train.val_max_users' (the same users at every validation)
    # with a SID table extended since training (`tokenize --extend`): up to this share of each top-K list is kept
    # for the items added since, the best-scoring ones (TIGER's cold-start epsilon); 0 = the model's ranking as is
    new_item_share: float = 0.0
