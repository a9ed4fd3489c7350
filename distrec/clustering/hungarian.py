"""Shared anchor directions and the Hungarian matching of child clusters to them (GAOQ, ReSID).

Each level of GAOQ owns one set of g approximately orthonormal anchors, shared by every parent.
A parent's centred child centroids are matched one-to-one to anchors by maximising the total
cosine similarity (Hungarian algorithm, scipy's `linear_sum_assignment`), so a code index means
the same direction under every prefix.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = 1e-12


def make_anchors(dim: int, count: int, seed: int) -> np.ndarray:
    """`count` anchors [count, dim] from the QR of a seeded Gaussian matrix.

    count <= dim: exactly orthonormal rows. count > dim (more codes than dimensions, no
    orthonormal set exists): the union of ceil(count / dim) independent random orthonormal
    bases; rows within a block are orthonormal, rows of different blocks are unit vectors with
    small random overlap (|cos| ~ 1/sqrt(dim)).
    """
    rng = np.random.default_rng(seed)
    blocks, left = [], count
    while left > 0:
        q, r = np.linalg.qr(rng.standard_normal((dim, min(left, dim))))
        blocks.append((q * np.sign(np.diag(r))).T)  # sign fix: a unique, seed-determined basis
        left -= min(left, dim)
    return np.concatenate(blocks).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, EPS)


def match_to_anchors(centred: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Code (anchor index) of each of the b centred child centroids [b, d]; injective (b <= g).

    Maximises the summed cosine similarity between each child and its anchor. A zero vector
    (a child equal to its parent) has cosine 0 with every anchor and takes any free one.
    """
    if len(centred) > len(anchors):
        raise ValueError(f"{len(centred)} children but only {len(anchors)} anchors: codes would repeat")
    cosine = unit_rows(centred.astype(np.float64)) @ unit_rows(anchors.astype(np.float64)).T
    rows, cols = linear_sum_assignment(cosine, maximize=True)
    codes = np.empty(len(centred), dtype=np.int64)
    codes[rows] = cols
    return codes
