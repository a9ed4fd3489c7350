"""The evaluation protocol: everything that decides what a metric means, written into every
metrics.json so two numbers are only compared when their protocols match."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from distrec.errors import ConfigError



def check_share(share: float, key: str) -> None:
    """A share of each list kept for new items is a fraction: refused outside [0, 1], naming the config key."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{key}={share} must be in [0, 1]")


@dataclass
class EvalProtocol:
    split: str = "test"  # valid: predict items[valid_pos]; test: predict items[test_pos]
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    ranking: str = "full-catalog"  # every item of the catalog is a candidate; no sampled negatives
    ties: str = "conservative"  # an item scoring exactly the target's score ranks above the target
    target: str = "leave-one-out: one held-out next item per user"
    filter_history: bool = False  # items already in the history are removed from the ranking
    decoding: str = "auto"  # generative methods: how SID sequences are decoded
    beam_width: int = 20
    checkpoint: str = "best"  # which trained weights were evaluated
    checkpoint_selection: str = "best validation ndcg@10"  # set from the model by `distrec evaluate`
    max_users: Optional[int] = None  # null = every user with a target in the split
    sample_seed: int = 0  # the seed of the max_users sample
    user_sample: Optional[dict] = None  # {"users": n, "of": N, "seed": s} when a sample was evaluated, else null
    method: str = ""
    dataset: str = ""
    data_hash: str = ""  # content hash of the prepared sequences
    sid_hash: Optional[str] = None  # SID table content hash (semantic-ID methods)
    new_item_share: float = 0.0  # places of each list kept for items added after training (eval.new_item_share)

    def __post_init__(self):
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ConfigError(f"eval.ks={list(self.ks)} must be a non-empty list of positive integers")
        self.ks = sorted({int(k) for k in self.ks})
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"eval.max_users={self.max_users} must be >= 1 (or null: every user)")
        check_share(self.new_item_share, "eval.new_item_share")
        if self.beam_width < max(self.ks):
            raise ConfigError(f"eval.beam_width={self.beam_width} is smaller than max(eval.ks)={max(self.ks)}: "
                              "a beam cannot return more items than its width; raise eval.beam_width")

    @classmethod
    def from_config(cls, cfg, **recorded) -> "EvalProtocol":
        """Build from the composed config (`cfg.eval`, `cfg.method`, `cfg.data`) plus hashes."""
        e = cfg.eval
        return cls(split=e.split, ks=list(e.ks), filter_history=e.filter_history, decoding=e.decoding,
                   beam_width=e.beam_width, checkpoint=str(e.checkpoint), max_users=e.max_users,
                   sample_seed=e.sample_seed, new_item_share=e.new_item_share,
                   method=cfg.method.name, dataset=cfg.data.name, **recorded)

    def to_dict(self) -> dict:
        return asdict(self)
