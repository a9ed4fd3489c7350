"""Config of `distrec sweep`: a grid over any config keys (docs/scaling.md)."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional


class Backend(StrEnum):
    ray = "ray"  # points as Ray tasks
    local = "local"  # one after another, no Ray


@dataclass
class SweepConfig:
    grid: dict[str, list[Any]] = field(default_factory=dict)  # config key -> values (cartesian product)
    points: list[dict[str, Any]] = field(default_factory=list)  # or an explicit list of override sets
    base: dict[str, Any] = field(default_factory=dict)  # overrides of every point (the command line wins)
    max_concurrent: int = 1  # points running at once
    cpus_per_point: float = 1.0  # Ray CPUs reserved by each point's job
    retries: int = 1  # extra attempts of a failed point before it is reported failed
    rerun_failed: bool = True  # a re-run retries points that failed before (finished ones are skipped)
    backend: Backend = Backend.ray
    out_dir: str = "${paths.root}/sweep"
    loss_key: str = "loss"  # results column fitted as the loss (valid_loss, falling back to train_loss)
    metric: str = "ndcg@10"  # test metric fitted and plotted beside the loss
    timeout_s: Optional[float] = None  # per stage of a point; null = no limit
    fit: bool = True  # fit power laws and write plots + report.md at the end
    recollect: bool = False  # re-read finished points' rows from their artifacts (after a results-code change)
