"""Config of the `prepare` stage: which raw dataset, how to read it, filter and split it."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional


class Split(StrEnum):
    leave_one_out = "leave_one_out"  # valid = second-to-last item, test = last
    temporal = "temporal"  # global time cut-offs


class Categories(StrEnum):
    hierarchy = "hierarchy"  # a category path -> category_1..3
    tags = "tags"  # unordered (e.g. genres)


@dataclass
class ColumnMap:
    """Column names of generic parquet/CSV interaction tables (`format: table`)."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: Optional[str] = "timestamp"  # null when the table has no time column
    rating: Optional[str] = None


@dataclass
class SyntheticConfig:
    """Generated catalog with planted structure (see distrec/data/synthetic.py)."""

    num_items: int = 5000
    num_users: int = 4000
    categories: list[int] = field(default_factory=lambda: [8, 4, 4])  # branching of the 3-level hierarchy
    num_brands: int = 200
    zipf_exponent: float = 1.05  # item popularity inside a leaf category ~ rank^-s
    interest_level: int = 2  # a latent interest is a category subtree rooted at this level (1..3)
    user_interests: int = 3  # interests per user
    switch_prob: float = 0.2  # chance per step to move on to the user's next interest (temporal drift)
    noise_prob: float = 0.05  # chance per step of an item from anywhere in the catalog
    mean_length: float = 12.0
    min_length: int = 5
    max_length: int = 60
    timestamps: bool = True  # per-interaction unix seconds (needed for data.split=temporal)
    shard_items: int = 1_000_000  # items generated per shard (bounds memory for 10M catalogs)
    shard_users: int = 200_000  # users generated per sequences shard


@dataclass
class DataConfig:
    name: str = "synthetic"
    # normalized | s3rec | movielens | amazon2014 | amazon2023 | lcrec | unisrec | recbole | table | synthetic
    format: str = "synthetic"
    path: Optional[str] = None  # dataset directory (or file for `table`)
    files: dict[str, Any] = field(default_factory=dict)  # format-specific file names, see docs/data.md
    columns: ColumnMap = field(default_factory=ColumnMap)
    min_user_interactions: int = 0  # k-core filtering (0 = off); applied iteratively
    min_item_interactions: int = 0
    max_history: Optional[int] = None  # keep only the last N interactions per user
    min_rating: Optional[float] = None  # drop interactions rated below this (explicit-feedback data)
    categories: Categories = Categories.hierarchy
    split: Split = Split.leave_one_out
    temporal_valid_frac: float = 0.1  # temporal split: fraction of time span for validation
    temporal_test_frac: float = 0.1
    temporal_valid_start: Optional[int] = None  # explicit global cut-offs (unix seconds) override the fractions
    temporal_test_start: Optional[int] = None
    on_error: str = "raise"  # raise | skip (skipped rows are counted in stats.json)
    # a grown catalog: the data/ dir of an earlier prepare whose items keep their ids (1..M); the items
    # new here are numbered after them, so an earlier SID table extends (`tokenize --extend`)
    item_ids_from: Optional[str] = None
    num_shards: int = 4
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
