"""Block-wise compositing for ``cropmap build``: the area is cut into blocks of whole patches, each block is
composited and its patches written into a pre-created Zarr region, as one task of a Dask graph.

Compositing is per pixel (median per step, then gap filling along time), so a block's composite equals
the whole-area composite on its pixels and the dataset does not depend on the block size. Memory holds
one block's composite per running task, not the area's; the label rasters (6 B/px) stay on the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cluster import run_tasks
from ..nomenclature import IGNORE_INDEX

log = logging.getLogger(__name__)

DEFAULT_BLOCK = 1024
PATCH_VARS = ("x", "observed", "label", "parcel")


@dataclass(frozen=True)
class BlockJob:
    """The candidate patches of one block: ``index [n]`` their rows in the store, ``origins [n, 2]`` (row, col)
    in the imagery grid, ``labels [n, P, P]`` int16 before the observation mask, ``parcels [n, P, P]`` int32,
    ``train [n]`` bool; ``window`` = (row0, col0, height, width), the block's pixels that the patches cover."""

    window: tuple[int, int, int, int]
    index: np.ndarray
    origins: np.ndarray
    labels: np.ndarray
    parcels: np.ndarray
    train: np.ndarray


@dataclass(frozen=True)
class BlockResult:
    """``keep [n]``: the patch has a labelled, observed pixel. Train-patch sums per band, exact integers of
    DN over observed pixels: ``count``, ``total`` (sum of DN), ``squares`` (sum of DN²)."""

    index: np.ndarray
    keep: np.ndarray
    count: tuple[int, ...]
    total: tuple[int, ...]
    squares: tuple[int, ...]


def block_jobs(origins: np.ndarray, labels: np.ndarray, parcels: np.ndarray, train: np.ndarray,
               patch_size: int, block_size: int) -> list[BlockJob]:
    """Group the patches at ``origins [N, 2]`` into blocks of ``block_size`` px (rounded down to whole patches,
    at least one); ``labels``/``parcels [N, P, P]`` and ``train [N]`` are the patches' own."""
    step = max(block_size // patch_size, 1) * patch_size
    keys = origins // step  # [N, 2] block row, col
    jobs = []
    for key in np.unique(keys, axis=0):  # row-major order of the blocks
        idx = np.flatnonzero((keys == key).all(axis=1))
        o = origins[idx]
        r0, c0 = o.min(axis=0)
        r1, c1 = o.max(axis=0) + patch_size
        jobs.append(BlockJob(window=(int(r0), int(c0), int(r1 - r0), int(c1 - c0)), index=idx, origins=o,
                             labels=labels[idx], parcels=parcels[idx], train=train[idx]))
    return jobs


def composite_block(imagery: str, grid, keep_scl: Sequence[int], job: BlockJob, store: str) -> BlockResult:
    """Composite one block of ``imagery`` onto ``grid`` and write its patches at ``job.index`` of the arrays
    in ``store`` (x [N, C, T, P, P], observed [N, T, P, P], label/parcel [N, P, P], one chunk per patch, so that
    blocks never write the same chunk). Runs in a Dask task: opens everything itself."""
    import zarr
    from rasterio.windows import Window

    from ..sources.imagery import open_imagery
    from .composite import composite_stack

    r0, c0, h, w = job.window
    comp = composite_stack(open_imagery(imagery), grid, window=Window(c0, r0, w, h), keep_scl=keep_scl)
    values = np.nan_to_num(comp.values, nan=0.0)  # [T, C, h, w]
    group = zarr.open_group(store, mode="r+", zarr_format=2)
    arrays = {name: group[name] for name in PATCH_VARS}
    n_bands = values.shape[1]
    count, total, squares = [0] * n_bands, [0] * n_bands, [0] * n_bands
    keep = np.zeros(len(job.index), bool)
    ps = job.labels.shape[-1]
    for k, (r, c) in enumerate(job.origins):
        rr, cc = r - r0, c - c0
        observed = comp.observed[:, rr : rr + ps, cc : cc + ps]  # [T, P, P]
        label = job.labels[k].copy()
        label[~observed.any(axis=0)] = IGNORE_INDEX  # no observation: nothing to learn from
        keep[k] = (label != IGNORE_INDEX).any()
        x = np.clip(np.rint(values[:, :, rr : rr + ps, cc : cc + ps]), 0, 65535).astype(np.uint16)
        x = x.transpose(1, 0, 2, 3)  # [C, T, P, P]
        i = int(job.index[k])
        arrays["x"][i] = x
        arrays["observed"][i] = observed
        arrays["label"][i] = label
        arrays["parcel"][i] = job.parcels[k]
        if keep[k] and job.train[k]:
            for b in range(n_bands):
                dn = x[b][observed].astype(np.int64)
                count[b] += int(dn.size)
                total[b] += int(dn.sum())
                squares[b] += int((dn * dn).sum())
    return BlockResult(job.index, keep, tuple(count), tuple(total), tuple(squares))


def run_blocks(imagery: Path | str, grid, keep_scl: Sequence[int], jobs: list[BlockJob], store: Path, *,
               dask_address: str | None = None, workers: int = 1,
               progress: Callable[[int], None] | None = None) -> list[BlockResult]:
    """Run :func:`composite_block` for every job: in this process (``workers`` threads; 1 = one after the
    other) or on the Dask scheduler at ``dask_address``, whose workers must see ``imagery`` and ``store``
    at the same paths (a shared file system)."""
    # absolute paths: the workers of a cluster do not share this process's working directory
    img, dst = str(Path(imagery).absolute()), str(Path(store).absolute())
    tasks = [partial(composite_block, img, grid, tuple(keep_scl), job, dst) for job in jobs]
    return run_tasks(tasks, workers=workers, dask_address=dask_address,
                     on_done=(lambda i, r: progress(1)) if progress else None)


def band_norm(results: list[BlockResult]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of the train patches' observed reflectance, from the blocks' exact DN sums."""
    n_bands = len(results[0].count)
    mean, std = np.zeros(n_bands), np.zeros(n_bands)
    for b in range(n_bands):
        n = sum(r.count[b] for r in results)
        s = sum(r.total[b] for r in results)
        ss = sum(r.squares[b] for r in results)
        if n == 0:
            mean[b] = std[b] = np.nan  # as numpy's mean of nothing (callers check for a train split first)
            continue
        mean[b] = s / n / 10000.0
        std[b] = np.sqrt((n * ss - s * s) / (n * n)) / 10000.0  # python ints: exact until the division
    return mean, std


def compact(store: Path, keep: np.ndarray, batch: int = 64) -> None:
    """Drop the patches not in ``keep [N]`` from the patch arrays of ``store``, keeping their order.

    Kept patch ``j`` moves to its rank ``i <= j``; going in ascending order, a slot is overwritten only after
    its own patch has moved, so batches of ``batch`` patches are copied in place and the arrays then shrunk.
    """
    import zarr

    kept = np.flatnonzero(keep)
    group = zarr.open_group(str(store), mode="r+", zarr_format=2)
    for name in PATCH_VARS:
        arr = group[name]
        if len(kept) < len(keep):
            for a in range(0, len(kept), batch):
                src = kept[a : a + batch]
                moved = src != np.arange(a, a + len(src))
                if moved.any():
                    arr[a : a + len(src)] = arr.get_orthogonal_selection(src)
            arr.resize((len(kept), *arr.shape[1:]))
