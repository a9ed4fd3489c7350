"""Split definitions: where each user's validation and test targets sit in their sequence.

Every split fills `valid_pos`/`test_pos` (-1 = none) so that the contract of docs/architecture.md
holds: training uses `items[:valid_pos]`, or all items when valid_pos is -1, which is only the case
for users without any target (test_pos is then -1 too).
"""

from __future__ import annotations

import numpy as np

from distrec.errors import ConfigError


def train_end(valid_pos: np.ndarray, test_pos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Length of each user's training prefix; a test target never falls inside it."""
    first_target = np.where(valid_pos >= 0, valid_pos, test_pos)
    return np.where(first_target >= 0, first_target, lengths)


def leave_one_out(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last item = test, second to last = validation; users with fewer than 3 items only train (as SASRec)."""
    has_targets = lengths >= 3
    valid = np.where(has_targets, lengths - 2, -1).astype(np.int32)
    test = np.where(has_targets, lengths - 1, -1).astype(np.int32)
    return valid, test


def temporal_cutoffs(timestamps: np.ndarray, cfg) -> tuple[int, int]:
    """Global (validation start, test start) in unix seconds: explicit ones, or fractions of the time span."""
    t0, t1 = int(timestamps.min()), int(timestamps.max())
    span = t1 - t0
    test_start = cfg.temporal_test_start if cfg.temporal_test_start is not None \
        else t1 - int(span * cfg.temporal_test_frac)
    valid_start = cfg.temporal_valid_start if cfg.temporal_valid_start is not None \
        else test_start - int(span * cfg.temporal_valid_frac)
    if valid_start > test_start:
        raise ConfigError(f"data.temporal_valid_start ({valid_start}) is after data.temporal_test_start ({test_start})")
    return valid_start, test_start


def temporal(offsets: np.ndarray, timestamps: np.ndarray, valid_start: int, test_start: int):
    """Per user: validation target = first interaction in [valid_start, test_start), test target = first
    interaction at or after test_start. Returns (valid_pos, test_pos, keep_length, test_without_valid).

    Interactions after a user's last target are cut (they would be neither history nor target). A user
    with a test-period interaction but none in the validation period keeps only the history before
    test_start (no targets): otherwise their test item would sit in their training prefix."""
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    # timestamps are sorted within each user, so the first index at/after a cut = the count before it
    first_valid = np.add.reduceat((timestamps < valid_start).astype(np.int64), starts)
    first_test = np.add.reduceat((timestamps < test_start).astype(np.int64), starts)
    has_valid, has_test = first_valid < first_test, first_test < lengths
    valid = np.where(has_valid, first_valid, -1).astype(np.int32)
    test = np.where(has_valid & has_test, first_test, -1).astype(np.int32)
    keep = np.where(has_valid, np.where(has_test, first_test + 1, first_valid + 1),
                    np.where(has_test, first_test, lengths)).astype(np.int64)
    return valid, test, keep, int((has_test & ~has_valid).sum())
