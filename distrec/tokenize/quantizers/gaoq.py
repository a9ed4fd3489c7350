"""GAOQ (ReSID): globally aligned orthogonal quantization, a hierarchical balanced k-means.

    level 0: balanced k-means of all items into b_0 clusters; code = cluster id.
    level l: each node (prefix) splits its items into b_l children by balanced k-means; the child
             centroids, centred on the node's centroid, are matched (Hungarian, max cosine) to the
             level's shared anchors (QR of a random d x b_l matrix); code = anchor index.
    last   : every item of a node is its own child (matched to the last level's anchors the same
             way), so every leaf holds one item: the SID table has no collisions by construction.

The same code index therefore points the same way under every prefix ("global alignment").
`align=False` keeps each node's local cluster index instead: hierarchical k-means with local
indices, the paper's Q2 ablation (`tokenizer.method=hkmeans_local`).

Nodes below level 0 are independent given the shared anchors, so each level-0 cluster's subtree
is fitted as one job: in-process, or batched into Ray tasks (`run_on`; distrec/parallel/gaoq.py).
Branching factors: `tokenizer.gaoq.branching` ([b_0, ..., b_{L-1}], or without the last entry, which is
then the largest population a last-level node can have); empty = derived from the catalog size
(b_0 = b_1 ~ sqrt(N / 15), the paper's b_0 * b_1 ~ N / 10-20 rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from distrec.artifacts import Timer
from distrec.clustering.balanced import balanced_kmeans
from distrec.clustering.hungarian import make_anchors, match_to_anchors, unit_rows
from distrec.errors import ConfigError
from distrec.tokenize.quantizers.base import Quantizer

ITEMS_PER_PREFIX = 15  # target N / (b_0 * b_1) when branching is derived


# ------------------------------------------------------------------ branching factors

def derive_branching(num_items: int, levels: int, given: list[int] | None = None) -> list[int]:
    """Branching per level; the last one is the largest population a last-level node can reach."""
    given = [int(b) for b in (given or [])]
    if levels < 2:
        raise ConfigError("tokenizer.levels must be >= 2 for gaoq/hkmeans_local (the last level resolves collisions)")
    if given and len(given) not in (levels - 1, levels):
        raise ConfigError(f"tokenizer.gaoq.branching={given} needs {levels - 1} or {levels} entries for tokenizer.levels={levels}",
                          )
    if any(b < 1 for b in given):
        raise ConfigError(f"tokenizer.gaoq.branching={given}: every entry must be >= 1")
    inner = given[:levels - 1]
    if not inner:  # b_0 = b_1 ~ sqrt(N / 15); deeper inner levels (levels > 3) split in two
        b = max(2, round(math.sqrt(num_items / ITEMS_PER_PREFIX)))
        inner = ([b, b] + [2] * (levels - 3))[:levels - 1]
    population = num_items
    for b in inner:  # balanced clusters hold at most ceil(n / b) items
        population = math.ceil(population / b)
    if len(given) == levels and given[-1] < population:
        raise ConfigError(f"tokenizer.gaoq.branching={given}: a last-level node can hold {population} items, more than "
                          f"its {given[-1]} codes, so SIDs would collide",
                          )
    return inner + [given[-1] if len(given) == levels else population]


# ------------------------------------------------------------------ one subtree (runs in a worker)

@dataclass
class Plan:
    """What every subtree job shares: branching, per-level anchors, alignment on/off, k-means settings."""

    branching: list[int]
    anchors: list[np.ndarray]  # per level (entry 0 unused: level-0 codes are cluster ids)
    align: bool = True
    iters: int = 20
    seed: int = 0
    points_per_centroid: int = 256  # Lloyd steps on a sample of this many points per cluster

    def codes_for(self, level: int, centred: np.ndarray) -> np.ndarray:
        if self.align:
            return match_to_anchors(centred, self.anchors[level])
        return np.arange(len(centred), dtype=np.int64)  # local index: the order k-means gave

    def node_seed(self, prefix: tuple[int, ...]) -> int:
        """A per-node seed from the prefix alone: the same codes however the work is split."""
        return int(np.random.SeedSequence([self.seed, len(prefix), *prefix]).generate_state(1)[0] % (2 ** 31))


def fit_subtree(x: np.ndarray, centroid: np.ndarray, root_code: int, plan: Plan):
    """Codes of levels 1..L-1 for the items `x` of one level-0 cluster.

    Returns (codes int64 [n, L-1], node prefixes int64 [m, L-1] (-1 padded, full prefix incl.
    root_code), node centroids float32 [m, d]) for the nodes at depths 2..L-1.
    """
    levels = len(plan.branching)
    codes = np.zeros((len(x), levels - 1), dtype=np.int64)
    prefixes, centroids = [], []
    stack = [(np.arange(len(x)), centroid, 1, (int(root_code),))]
    while stack:
        idx, mu, level, prefix = stack.pop()
        sub = x[idx]
        if level == levels - 1:  # collision-resolving level: one item per child
            codes[idx, level - 1] = plan.codes_for(level, sub - mu)
            continue
        k = min(plan.branching[level], len(idx))
        child_centroids, labels = balanced_kmeans(sub, k, iters=plan.iters, seed=plan.node_seed(prefix),
                                                  points_per_centroid=plan.points_per_centroid)
        child_codes = plan.codes_for(level, child_centroids - mu)
        codes[idx, level - 1] = child_codes[labels]
        for j in range(k):
            child = prefix + (int(child_codes[j]),)
            prefixes.append(child + (-1,) * (levels - 1 - len(child)))
            centroids.append(child_centroids[j])
            stack.append((idx[labels == j], child_centroids[j], level + 1, child))
    d = x.shape[1]
    return (codes, np.asarray(prefixes, dtype=np.int64).reshape(-1, levels - 1),
            np.asarray(centroids, dtype=np.float32).reshape(-1, d))


def fit_subtrees(x: np.ndarray, jobs: list[tuple[int, np.ndarray, np.ndarray]], plan: Plan, progress: bool = False):
    """Run `fit_subtree` for each (root code, item rows, centroid) job in this process.

    Single-threaded BLAS: the matrices of one node are small, where OpenBLAS threads cost far
    more than they give (measured 3-50x slower on a busy 2-core machine); parallelism comes
    from running jobs in several Ray workers instead.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return [fit_subtree(x[rows], centroid, code, plan)
                for code, rows, centroid in tqdm(jobs, desc="gaoq subtrees", disable=not progress)]


# ------------------------------------------------------------------ catalog rows -> fitted codes

_HASH_MULT = np.random.default_rng(20240917).integers(1, 2 ** 63, size=4096, dtype=np.uint64) | np.uint64(1)


def row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact float32 bits (identifies catalog items at encode time)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    mult = np.resize(_HASH_MULT, bits.shape[1])
    with np.errstate(over="ignore"):
        return (bits * mult).sum(1) ^ (bits[:, ::2] * mult[: (bits.shape[1] + 1) // 2]).sum(1) * np.uint64(31)


def _occurrence(keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows have the same key (0 for the first)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.searchsorted(sorted_keys, sorted_keys, side="left")
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - first
    return rank


# ------------------------------------------------------------------ the quantizer

class GAOQ(Quantizer):
    method = "gaoq"
    align = True

    def __init__(self, levels: int = 3, branching: list[int] | None = None, iters: int = 20, seed: int = 0,
                 progress: bool = True, points_per_centroid: int = 256):
        self.levels, self.branching_cfg = levels, list(branching or [])
        self.points_per_centroid = points_per_centroid
        self.iters, self.seed, self.progress = iters, seed, progress
        self.fit_subtrees = fit_subtrees  # (x, jobs, plan, progress) -> parts: in this process unless `run_on`
        self.branching: list[int] = []
        self.anchors: list[np.ndarray] = []
        self.top_centroids = None  # float32 [b_0, d]
        self.node_prefixes = None  # int64 [m, L-1]: prefixes (length 2..L-1, -1 padded) of inner nodes
        self.node_centroids = None  # float32 [m, d]
        self.fitted_hashes = self.fitted_codes = None
        self.stats: dict = {}

    @property
    def codebook_sizes(self) -> list[int]:
        return list(self.branching)

    @classmethod
    def from_config(cls, cfg, progress: bool = True):
        return cls(cfg.levels, list(cfg.gaoq.branching), cfg.kmeans_iters, cfg.seed, progress, cfg.points_per_centroid)

    def run_on(self, executor) -> "GAOQ":
        self.fit_subtrees = executor.fit_subtrees  # the level-0 clusters' subtrees, in parallel
        return self

    def _plan(self, dim: int) -> Plan:
        anchors = [np.zeros((0, dim), np.float32)] + [
            make_anchors(dim, b, self.seed + 1000 * level) for level, b in enumerate(self.branching) if level > 0]
        return Plan(self.branching, anchors, self.align, self.iters, self.seed, self.points_per_centroid)

    # ---- fit
    def fit(self, x):
        """Single-threaded BLAS throughout (see `fit_subtrees`); Ray workers give the parallelism."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self._fit(x)

    def _fit(self, x):
        x = self.check_input(x)
        self.branching = derive_branching(len(x), self.levels, self.branching_cfg)
        self.levels = len(self.branching)
        if self.branching[0] > len(x):
            raise ConfigError(f"tokenizer.gaoq.branching[0]={self.branching[0]} is larger than the catalog ({len(x)} items)")
        plan = self._plan(x.shape[1])
        self.anchors = plan.anchors
        timer = Timer()
        with timer("level0"):
            self.top_centroids, top = balanced_kmeans(x, self.branching[0], iters=self.iters, seed=self.seed,
                                                      points_per_centroid=self.points_per_centroid)
        jobs = [(c, np.flatnonzero(top == c), self.top_centroids[c]) for c in range(self.branching[0])]
        with timer("subtrees"):
            parts = self.fit_subtrees(x, jobs, plan, self.progress)
        codes = np.empty((len(x), self.levels), dtype=np.int64)
        codes[:, 0] = top
        for (_, rows, _), (sub_codes, _, _) in zip(jobs, parts):
            codes[rows, 1:] = sub_codes
        self.node_prefixes = np.concatenate([p[1] for p in parts])
        self.node_centroids = np.concatenate([p[2] for p in parts])
        self.fitted_codes = codes
        self.fitted_hashes = row_hashes(x)
        self.stats = {**alignment_stats(x, codes), "timings_s": {k: round(v, 2) for k, v in timer.phases.items()}}
        return self

    # ---- encode: catalog rows get their fitted codes; new rows descend the tree
    def encode(self, x):
        x = self.check_input(x)
        self.check_dim(x, self.top_centroids.shape[1])
        keys = row_hashes(x)
        if len(keys) == len(self.fitted_hashes) and np.array_equal(keys, self.fitted_hashes):
            return self.fitted_codes.copy()  # the fitted catalog, in the same order
        codes = np.empty((len(x), self.levels), dtype=np.int64)
        fitted_order = np.argsort(self.fitted_hashes, kind="stable")
        sorted_fitted = self.fitted_hashes[fitted_order]
        start = np.searchsorted(sorted_fitted, keys, side="left")
        count = np.searchsorted(sorted_fitted, keys, side="right") - start
        rank = _occurrence(keys)  # duplicates: k-th copy -> k-th fitted row with that vector
        known = rank < count
        codes[known] = self.fitted_codes[fitted_order[start[known] + rank[known]]]
        new = np.flatnonzero(~known)
        if new.size:
            codes[new] = self._descend(x[new])
        return codes

    def _children(self):
        """prefix tuple -> (codes, centroids) of its inner-node children, built once."""
        if getattr(self, "_child_map", None) is None:
            self._child_map, self._centroid_of = {}, {}
            for c, mu in enumerate(self.top_centroids):
                self._centroid_of[(c,)] = mu
            for prefix, mu in zip(self.node_prefixes, self.node_centroids):
                p = tuple(int(v) for v in prefix if v >= 0)
                self._centroid_of[p] = mu
                self._child_map.setdefault(p[:-1], ([], []))
                self._child_map[p[:-1]][0].append(p[-1])
                self._child_map[p[:-1]][1].append(mu)
        return self._child_map, self._centroid_of

    def _descend(self, x):
        """Nearest centroid at every inner level, then the best last-level code still free."""
        children, centroid_of = self._children()
        codes = np.empty((len(x), self.levels), dtype=np.int64)
        codes[:, 0] = ((x[:, None, :] - self.top_centroids[None]) ** 2).sum(-1).argmin(1)
        for level in range(1, self.levels - 1):
            for i in range(len(x)):
                kids, mus = children[tuple(codes[i, :level])]
                codes[i, level] = kids[int(((np.asarray(mus) - x[i]) ** 2).sum(-1).argmin())]
        taken = {tuple(c) for c in self.fitted_codes.tolist()}
        for i, row in enumerate(self._last_scores(x, codes[:, :-1])):
            prefix = tuple(int(c) for c in codes[i, :-1])
            order = np.argsort(-row)
            free = [c for c in order if prefix + (int(c),) not in taken]
            codes[i, -1] = free[0] if free else order[0]
            taken.add(prefix + (int(codes[i, -1]),))
        return codes

    def _last_scores(self, x, prefixes):
        """[n, b_last] similarity of each row to every last-level code under its prefix."""
        _, centroid_of = self._children()
        mu = np.stack([centroid_of[tuple(int(c) for c in p)] for p in prefixes])
        centred = x - mu
        if self.align:
            return unit_rows(centred) @ unit_rows(self.anchors[-1]).T
        return np.zeros((len(x), self.branching[-1]), dtype=np.float32)  # local indices: no preference

    def last_level_distances(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        prefixes = self.encode(x)[:, :-1]
        return 1.0 - self._last_scores(x, prefixes)

    # ---- persistence
    def _state(self):
        params = dict(levels=self.levels, branching=self.branching, iters=self.iters, seed=self.seed,
                      points_per_centroid=self.points_per_centroid, stats=self.stats)
        arrays = {"top_centroids": self.top_centroids, "node_prefixes": self.node_prefixes,
                  "node_centroids": self.node_centroids, "fitted_hashes": self.fitted_hashes,
                  "fitted_codes": self.fitted_codes}
        arrays.update({f"anchors_{level}": a for level, a in enumerate(self.anchors)})
        return params, arrays

    def _load_state(self, params, arrays, directory):
        stats = params.pop("stats", {})
        params.pop("num_workers", None)  # saved before `run_on`: where it ran, not what it is
        self.__init__(**params, progress=False)
        self.branching, self.stats = list(params["branching"]), stats
        for name in ("top_centroids", "node_prefixes", "node_centroids", "fitted_hashes", "fitted_codes"):
            setattr(self, name, arrays[name])
        self.anchors = [arrays[f"anchors_{level}"] for level in range(self.levels)]


class HKMeansLocal(GAOQ):
    """Hierarchical balanced k-means with local indices: GAOQ without the anchor alignment."""

    method = "hkmeans_local"
    align = False


# ------------------------------------------------------------------ does a code mean one thing?

def alignment_stats(x: np.ndarray, codes: np.ndarray) -> dict:
    """Per level l >= 1, how much the meaning of code c_l depends on the prefix.

    r = x - mean of x's parent node (the centred residual a level-l code describes). With Gaussian
    entropy estimates, H(r | c_l) - H(r | c_<=l) = (d / 2) log2(var(r | c_l) / var(r | c_<=l)), an
    estimate of I(r; C_<l | c_l), the prefix-dependent ambiguity GAOQ lowers. Reported per dimension
    (bits) as `prefix_ambiguity_bits`, beside `entropy_given_code_bits` (H(r | c_l) / d, Gaussian).
    0 ambiguity = the code alone says as much about the residual as the code with its prefix.
    """
    x = x.astype(np.float64)
    out = []
    for level in range(1, codes.shape[1]):
        parent = _group_ids(codes[:, :level])
        residual = x - _group_means(x, parent)[parent]
        var_code = _within_var(residual, codes[:, level])
        var_prefix = _within_var(residual, _group_ids(codes[:, :level + 1]))
        out.append({
            "level": level,
            "entropy_given_code_bits": 0.5 * math.log2(2 * math.pi * math.e * max(var_code, 1e-30)),
            # undefined where every prefix holds one item (the collision-resolving last level)
            "prefix_ambiguity_bits": 0.5 * math.log2(max(var_code, 1e-30) / var_prefix) if var_prefix > 0 else None,
            "residual_var_given_code": var_code,
            "residual_var_given_prefix": var_prefix,
        })
    return {"per_level": out}


def _group_ids(codes: np.ndarray) -> np.ndarray:
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def _group_means(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    from distrec.clustering.kmeans import segment_sums

    k = int(groups.max()) + 1
    return segment_sums(x, groups, k) / np.maximum(np.bincount(groups, minlength=k), 1)[:, None]


def _within_var(x: np.ndarray, groups: np.ndarray) -> float:
    """Mean squared distance of rows to their group's mean, per dimension."""
    groups = _group_ids(groups.reshape(len(groups), -1))
    return float(((x - _group_means(x, groups)[groups]) ** 2).mean())
