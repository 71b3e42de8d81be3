"""Patch grid and spatial-block train/val/test split in which no parcel is labelled in two splits."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
TINY_SPLIT_PATCHES = 4  # fewer patches in a split give a noisy epoch selection or score: build and train say so


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


def split_coverage(psplit: np.ndarray, parcel_class: np.ndarray, num_classes: int) -> np.ndarray:
    """``[3, K]`` number of parcels of each class in each split (parcels of no class or no split ignored)."""
    ok = (psplit >= 0) & (parcel_class >= 0)
    cov = np.zeros((3, num_classes), dtype=np.int64)
    np.add.at(cov, (psplit[ok], parcel_class[ok]), 1)
    return cov


def _score(cov: np.ndarray, min_parcels: int) -> tuple[int, int]:
    """(classes with parcels missing from train, classes of at least ``min_parcels`` parcels missing from val
    or test): lower is better, (0, 0) is what a class-aware split aims for."""
    total = cov.sum(axis=0)
    present = total > 0
    no_train = int((present & (cov[0] == 0)).sum())
    enough = total >= min_parcels
    no_eval = int((enough & (cov[1] == 0)).sum() + (enough & (cov[2] == 0)).sum())
    return no_train, no_eval


def class_aware_splits(parcel_index: np.ndarray, origins: np.ndarray, patch_size: int, parcel_class: np.ndarray,
                       num_classes: int, fractions: tuple[float, float, float], seed: int, *,
                       min_parcels: int = 3, tries: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Spatial blocks assigned to train/val/test with the classes in mind: ``(block split [N], parcel split [P])``.

    The seed's shuffle is kept when every class is in train and every class of at least ``min_parcels``
    parcels is in val and test (on a large area it nearly always is, so the split is the plain spatial
    one); otherwise up to ``tries`` further shuffles (seeded, so deterministic) are scored and the best kept.
    Blocks stay whole, so no parcel is labelled in two splits.
    """
    rng = np.random.default_rng([seed, 1])
    best = None
    for t in range(tries + 1):
        bs = assign_block_splits(len(origins), fractions, seed if t == 0 else int(rng.integers(2**31)))
        ps = parcel_splits(parcel_index, origins, bs, patch_size, len(parcel_class))
        score = _score(split_coverage(ps, parcel_class, num_classes), min_parcels)
        if best is None or score < best[0]:
            best = (score, bs, ps)
        if score == (0, 0):
            break
    return best[1], best[2]
