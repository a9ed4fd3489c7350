"""Config of `distrec sweep`: a grid over any config keys."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SweepConfig:
    grid: dict[str, list[Any]] = field(default_factory=dict)  # config key -> values (cartesian product)
    points: list[dict[str, Any]] = field(default_factory=list)  # or an explicit list of override sets
    max_concurrent: int = 1
    retries: int = 1
    out_dir: str = "${paths.root}/sweep"
