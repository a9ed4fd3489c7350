"""Where Ray runs: a local cluster or an existing one (address). No ray import here."""

from dataclasses import dataclass
from typing import Optional


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # null = start a local cluster in-process; "auto" = join the running one
    num_cpus: Optional[int] = None  # local cluster size (null = all cores)
    object_store_memory: Optional[int] = None  # bytes, local cluster only
    include_dashboard: bool = False
