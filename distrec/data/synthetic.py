"""Synthetic catalogs with planted structure, generated and written shard by shard.

Items sit in a 3-level category hierarchy (branching `categories`, e.g. 8 x 4 x 4 = 128 leaves).
Item i (1-based) lives in leaf (i-1) % L at popularity rank (i-1) // L, so any item can be drawn
from any subtree without holding the catalog: a catalog of 10M items never exists in memory.
Each item has a brand (brands belong to one top-level category), a price (log-normal around
its level-2 category's price) and a title built from brand, an adjective and its category words,
so text embedders see the hierarchy.

A user follows a few latent interests (subtrees rooted at `interest_level`). At each step they
stay with the current interest or, with `switch_prob`, move on to their next one (drift); the item
is a Zipf-popular item of a random leaf of that subtree; with `noise_prob` it comes from anywhere.
So the next item is predictable from the recent ones (same subtree) far better than from global
popularity alone. Every random number is a hash of (seed, stream, item or user id, step), so the
data depend on the seed only, not on how it is sharded.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from distrec.artifacts import Timer, staged_output, write_json, write_manifest, write_table
from distrec.data import splits
from distrec.errors import ConfigError

SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "zu", "shi", "per", "dan", "qu", "lex", "bor", "nim",
             "sa", "tor", "ve", "gli", "mon", "dri", "pa", "xe", "hul", "fi", "rent", "co", "bax", "ul"]
START_TIME = 1_600_000_000  # 2020-09-13, unix seconds
TIME_SPAN = 2 * 365 * 86_400  # users start within the first 3/4 of two years
MEAN_GAP = 3 * 86_400


def uniform(seed: int, stream: int, ids: np.ndarray, step: int = 0) -> np.ndarray:
    """Uniform floats in (0, 1), one per id: splitmix64 of (seed, stream, id, step), counter-based."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= np.uint64((seed * 1_000_003 + stream * 7_919 + step * 104_729) & 0xFFFFFFFFFFFFFFFF)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def pick(u: np.ndarray, n) -> np.ndarray:
    """Integer in [0, n) from a uniform."""
    return np.minimum((u * n).astype(np.int64), np.asarray(n) - 1)


def made_up_words(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct pronounceable words (category, brand and adjective names)."""
    words: dict[str, None] = {}
    while len(words) < n:
        parts = rng.choice(SYLLABLES, size=rng.integers(2, 4))
        words["".join(parts)] = None
    return list(words)


class Catalog:
    """Geometry and names of a synthetic catalog (small: names per category node and brand only)."""

    def __init__(self, cfg, seed: int):
        if len(cfg.categories) != 3 or min(cfg.categories) < 1:
            raise ConfigError(f"data.synthetic.categories={list(cfg.categories)} must be 3 positive branchings")
        if not 1 <= cfg.interest_level <= 3:
            raise ConfigError(f"data.synthetic.interest_level={cfg.interest_level} must be 1, 2 or 3")
        self.cfg = cfg
        self.branching = list(cfg.categories)
        self.num_items = cfg.num_items
        self.num_leaves = math.prod(self.branching)
        if self.num_items < self.num_leaves:
            raise ConfigError(f"data.synthetic.num_items={cfg.num_items} is below the {self.num_leaves} leaf categories")
        self.leaf_sizes = np.full(self.num_leaves, self.num_items // self.num_leaves, np.int64)
        self.leaf_sizes[: self.num_items % self.num_leaves] += 1
        self.interest_span = math.prod(self.branching[cfg.interest_level:])  # leaves per interest subtree
        self.num_interests = self.num_leaves // self.interest_span

        rng = np.random.default_rng([seed, 0])
        b1, b2, _ = self.branching
        words = made_up_words(rng, b1 + b1 * b2 + self.num_leaves + cfg.num_brands + 64)
        self.level_names = [words[:b1], words[b1: b1 + b1 * b2], words[b1 + b1 * b2: b1 + b1 * b2 + self.num_leaves]]
        rest = words[b1 + b1 * b2 + self.num_leaves:]
        self.brand_names, self.adjectives = [w.capitalize() for w in rest[: cfg.num_brands]], rest[cfg.num_brands:]
        self.level2_price = np.exp(rng.normal(3.0, 1.0, size=b1 * b2))

    def leaf_levels(self, leaf: np.ndarray) -> list[np.ndarray]:
        """0-based node index of a leaf at levels 1, 2, 3 (numbered across the whole level)."""
        _, b2, b3 = self.branching
        return [leaf // (b2 * b3), leaf // b3, leaf]

    def zipf_rank(self, u: np.ndarray, leaf: np.ndarray) -> np.ndarray:
        """Popularity rank inside each leaf, P(rank r) ~ (r+1)^-s (inverse CDF of the continuous law)."""
        m = self.leaf_sizes[leaf].astype(np.float64)
        s = self.cfg.zipf_exponent
        if abs(s - 1.0) < 1e-9:
            x = np.exp(u * np.log(m + 1))
        else:
            x = (1 + u * ((m + 1) ** (1 - s) - 1)) ** (1 / (1 - s))
        return np.minimum(np.floor(x) - 1, m - 1).astype(np.int64)

    def item_ids(self, leaf: np.ndarray, rank: np.ndarray) -> np.ndarray:
        return rank * self.num_leaves + leaf + 1

    # ---------------------------------------------------------------- items

    def items_shard(self, start: int, stop: int, seed: int) -> pa.Table:
        """Items start+1 .. stop (ids)."""
        ids = np.arange(start + 1, stop + 1, dtype=np.int64)
        leaf = (ids - 1) % self.num_leaves
        top, mid, _ = self.leaf_levels(leaf)
        per_top = max(1, self.cfg.num_brands // self.branching[0])
        brand = (top * per_top + pick(uniform(seed, 10, ids), per_top)) % self.cfg.num_brands
        normal = np.sqrt(-2 * np.log(uniform(seed, 11, ids))) * np.cos(2 * np.pi * uniform(seed, 12, ids))
        price = np.round(self.level2_price[mid] * np.exp(0.3 * normal), 2)
        names = [pa.array(n) for n in self.level_names]
        level_words = [names[0].take(top), names[1].take(mid), names[2].take(leaf)]
        brand_word = pa.array(self.brand_names).take(brand)
        adjective = pa.array(self.adjectives).take(pick(uniform(seed, 13, ids), len(self.adjectives)))
        model = pc.cast(pa.array(100 + pick(uniform(seed, 14, ids), 9_900)), pa.string())
        title = pc.binary_join_element_wise(brand_word, adjective, level_words[2], level_words[1], model, " ")
        path = pc.binary_join_element_wise(*level_words, " > ")
        return pa.table({
            "item_id": pa.array(ids),
            "raw_id": pc.cast(pa.array(ids), pa.string()),
            "title": title,
            "categories": path,
            "brand": pa.array(brand + 1),
            "category_1": pa.array(top + 1),
            "category_2": pa.array(mid + 1),
            "category_3": pa.array(leaf + 1),
            "price": pa.array(price),
        })

    def vocabularies(self) -> dict[str, list[str]]:
        """Categorical field -> names of ids 1..K (written to maps/<field>)."""
        b1, b2, b3 = self.branching
        level1, level2, level3 = self.level_names
        paths2 = [f"{level1[n // b2]} > {level2[n]}" for n in range(b1 * b2)]
        paths3 = [f"{paths2[n // b3]} > {level3[n]}" for n in range(self.num_leaves)]
        return {"brand": self.brand_names, "category_1": level1, "category_2": paths2, "category_3": paths3}

    # ---------------------------------------------------------------- sequences

    def user_batch(self, users: np.ndarray, seed: int):
        """(lengths, items [B, max_length], timestamps [B, max_length]) for the given user ids."""
        cfg = self.cfg
        p = 1.0 / max(1.0, cfg.mean_length - cfg.min_length + 1)  # geometric extra length, mean 1/p - 1
        extra = np.floor(np.log(uniform(seed, 20, users)) / np.log1p(-p)) if p < 1 else np.zeros(len(users))
        lengths = np.clip(cfg.min_length + extra.astype(np.int64), cfg.min_length, cfg.max_length)
        interests = np.stack([pick(uniform(seed, 21, users, k), self.num_interests)
                              for k in range(cfg.user_interests)], axis=1)
        current = np.zeros(len(users), np.int64)
        items = np.zeros((len(users), cfg.max_length), np.int64)
        timestamps = np.zeros((len(users), cfg.max_length), np.int64)
        clock = START_TIME + pick(uniform(seed, 27, users), TIME_SPAN * 3 // 4)
        for t in range(int(lengths.max())):
            rows = np.flatnonzero(lengths > t)  # users whose sequence reaches step t (most are short)
            u = users[rows]
            current[rows] = (current[rows] + (uniform(seed, 22, u, t) < cfg.switch_prob)) % cfg.user_interests
            leaf = interests[rows, current[rows]] * self.interest_span + pick(uniform(seed, 23, u, t), self.interest_span)
            noise = uniform(seed, 24, u, t) < cfg.noise_prob
            leaf[noise] = pick(uniform(seed, 25, u[noise], t), self.num_leaves)
            items[rows, t] = self.item_ids(leaf, self.zipf_rank(uniform(seed, 26, u, t), leaf))
            clock[rows] += (-np.log(uniform(seed, 28, u, t)) * MEAN_GAP).astype(np.int64) + 1
            timestamps[rows, t] = clock[rows]
        return lengths, items, timestamps


def generate(cfg, out: Path) -> Path:
    """`distrec prepare data=synthetic`: write the data/ artifact of a generated catalog."""
    data, syn = cfg.data, cfg.data.synthetic
    catalog = Catalog(syn, cfg.seed)
    timer = Timer()
    item_shards = max(data.num_shards, -(-syn.num_items // syn.shard_items))
    user_shards = max(1, -(-syn.num_users // syn.shard_users))
    if data.split == "temporal" and not syn.timestamps:
        raise ConfigError("data.split=temporal needs data.synthetic.timestamps=true")
    with staged_output(out) as tmp:
        with timer("items"):
            bounds = np.linspace(0, syn.num_items, item_shards + 1).astype(np.int64)
            for shard in tqdm(range(item_shards), desc="synthetic items", disable=not cfg.progress):
                write_items_shard(catalog.items_shard(int(bounds[shard]), int(bounds[shard + 1]), cfg.seed), tmp, shard)
                release_memory()
            for name, values in catalog.vocabularies().items():
                write_table(pa.table({"value": pa.array(values, pa.string()),
                                      "id": pa.array(np.arange(1, len(values) + 1))}), tmp / "maps" / name)
        with timer("sequences"):
            summary = write_sequences(catalog, cfg, tmp, user_shards)
        fields = {"title": "text", "categories": "text", "brand": "categorical", "category_1": "categorical",
                  "category_2": "categorical", "category_3": "categorical", "price": "numeric"}
        stats = {
            "name": data.name, "format": "synthetic", "users": summary["users"], "items": syn.num_items,
            "interactions": summary["interactions"], "has_timestamps": bool(syn.timestamps),
            "sequence_length": summary["lengths"], "fields": fields,
            "field_coverage": {name: 1.0 for name in fields}, "dropped": {}, "filtered": summary["filtered"],
            "k_core_rounds": 0, "num_interests": catalog.num_interests,
        }
        write_json(tmp / "splits.json", summary["split"])
        write_json(tmp / "stats.json", stats)
        write_manifest(tmp, stage="prepare", config=cfg, inputs={"generated": "distrec.data.synthetic"},
                       timings=timer.phases, counts={k: stats[k] for k in ("users", "items", "interactions")})
    return out


def write_items_shard(table: pa.Table, tmp: Path, shard: int) -> None:
    write_shard(table, tmp / "items", shard)
    write_shard(pa.table({"item_id": table.column("item_id"), "source_id": table.column("raw_id"),
                          "raw_id": table.column("raw_id")}), tmp / "maps" / "items", shard)


def write_shard(table: pa.Table, directory: Path, shard: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"part-{shard:05d}.parquet")


def release_memory() -> None:
    """Hand freed shard buffers back to the OS. Without it glibc keeps them (its mmap threshold grows
    after the first large free) and peak RSS creeps up shard after shard on 10M-item catalogs."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def sequences_shard(catalog: Catalog, users: np.ndarray, first_id: int, cfg, cuts) -> tuple[pa.Table, int]:
    """The sequences table of one batch of users (ids from `first_id`), split; and how many
    interactions the temporal split cut. Its own function so the batch's arrays die on return."""
    syn = cfg.data.synthetic
    lengths, items, times = catalog.user_batch(users, cfg.seed)
    mask = np.arange(syn.max_length) < lengths[:, None]
    flat_items, flat_times = items[mask], times[mask]
    offsets = np.r_[0, np.cumsum(lengths)]
    cut = 0
    if cuts is None:
        valid, test = splits.leave_one_out(lengths)
    else:
        valid, test, keep, _ = splits.temporal(offsets, flat_times, *cuts)
        within = np.arange(len(flat_items)) - np.repeat(offsets[:-1], lengths) < np.repeat(keep, lengths)
        cut = int((~within).sum())
        flat_items, flat_times = flat_items[within], flat_times[within]
        nonempty = keep > 0
        lengths, valid, test = keep[nonempty], valid[nonempty], test[nonempty]
        offsets = np.r_[0, np.cumsum(lengths)]
    user_ids = np.arange(first_id, first_id + len(lengths), dtype=np.int64)
    columns = {
        "user_id": pa.array(user_ids),
        "raw_user_id": pc.cast(pa.array(user_ids), pa.string()),
        "items": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat_items)),
    }
    if syn.timestamps:
        columns["timestamps"] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat_times))
    columns["valid_pos"] = pa.array(valid.astype(np.int32))
    columns["test_pos"] = pa.array(test.astype(np.int32))
    return pa.table(columns), cut


def write_sequences(catalog: Catalog, cfg, tmp: Path, user_shards: int) -> dict:
    """Generate users batch by batch; split each (leave-one-out or temporal) and write it as one shard."""
    data, syn = cfg.data, cfg.data.synthetic
    cuts = None
    if data.split == "temporal":  # global cut-offs over the nominal time range of the generator
        nominal = np.array([START_TIME, START_TIME + TIME_SPAN])
        cuts = splits.temporal_cutoffs(nominal, data)
    length_hist = np.zeros(syn.max_length + 1, np.int64)
    next_user, interactions, dropped_after_target, valid_users, test_users = 1, 0, 0, 0, 0
    bounds = np.linspace(0, syn.num_users, user_shards + 1).astype(np.int64)
    for shard in tqdm(range(user_shards), desc="synthetic users", disable=not cfg.progress):
        users = np.arange(bounds[shard] + 1, bounds[shard + 1] + 1, dtype=np.int64)
        table, cut = sequences_shard(catalog, users, next_user, cfg, cuts)
        write_shard(table, tmp / "sequences", shard)
        write_shard(pa.table({"user_id": table.column("user_id"), "source_id": table.column("raw_user_id"),
                              "raw_user_id": table.column("raw_user_id")}), tmp / "maps" / "users", shard)
        lengths = pc.list_value_length(table.column("items")).to_numpy()
        next_user += table.num_rows
        length_hist += np.bincount(lengths, minlength=syn.max_length + 1)
        interactions += int(lengths.sum())
        dropped_after_target += cut
        valid_users += int((table.column("valid_pos").to_numpy() >= 0).sum())
        test_users += int((table.column("test_pos").to_numpy() >= 0).sum())
        del table  # before the next batch is generated
        release_memory()
    users = next_user - 1
    split = {"kind": data.split, "counts": {"users": users, "valid_users": valid_users, "test_users": test_users},
             "train_prefix": "items[:valid_pos]; all items when valid_pos = -1 (then test_pos = -1 too)"}
    if cuts is not None:
        split.update(valid_start=int(cuts[0]), test_start=int(cuts[1]))
    present = np.flatnonzero(length_hist)
    cumulative = np.cumsum(length_hist)
    lengths_summary = {
        "min": int(present.min()), "max": int(present.max()),
        "mean": round(float((length_hist * np.arange(len(length_hist))).sum() / max(users, 1)), 3),
        "median": float(np.searchsorted(cumulative, users / 2)),
        "p90": float(np.searchsorted(cumulative, users * 0.9)),
    }
    filtered = {"after_last_target_or_test_without_valid": dropped_after_target} if cuts is not None else {}
    return {"users": users, "interactions": interactions, "lengths": lengths_summary, "split": split,
            "filtered": filtered}
