"""Patch grid and spatial-block train/val/test split in which no parcel is labelled in two splits."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def patch_origins(height: int, width: int, patch_size: int) -> np.ndarray:
    """``[N, 2]`` (row, col) of the non-overlapping full patches that tile the grid."""
    rows = np.arange(0, height - patch_size + 1, patch_size)
    cols = np.arange(0, width - patch_size + 1, patch_size)
    return np.array([(r, c) for r in rows for c in cols], dtype=np.int32).reshape(-1, 2)


def assign_block_splits(n_blocks: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """``[N]`` split index (0 train, 1 val, 2 test) per block, in the given proportions, shuffled."""
    f = np.asarray(fractions, dtype=float)
    if (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"bad split fractions {fractions}")
    counts = np.floor(f / f.sum() * n_blocks).astype(int)
    for i in np.argsort(-(f / f.sum() * n_blocks - counts))[: n_blocks - counts.sum()]:
        counts[i] += 1
    # every split with a non-zero fraction gets at least one block when there are enough
    for i in range(3):
        if f[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[np.argmax(counts)] -= 1
            counts[i] += 1
    labels = np.repeat(np.arange(3), counts)
    return np.random.default_rng(seed).permutation(labels).astype(np.int8)


def parcel_splits(parcel_index: np.ndarray, origins: np.ndarray, block_split: np.ndarray,
                  patch_size: int, n_parcels: int) -> np.ndarray:
    """``[P]`` split of each parcel: the split of the block that holds most of its pixels (-1: in none)."""
    votes = np.zeros((n_parcels + 1, 3), dtype=np.int64)
    for (r, c), s in zip(origins, block_split):
        ids = parcel_index[r : r + patch_size, c : c + patch_size].ravel()
        votes[:, s] += np.bincount(ids, minlength=n_parcels + 1)
    split = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)
    return split[1:].astype(np.int8)
