"""Cloud masking with SCL and compositing of a date stack onto a fixed time grid.

Each grid step takes the per-pixel median of its valid observations; steps without one are filled
by linear interpolation in time (nearest valid step at the ends), and the observed mask is kept so
that the model and the user know which values were seen and which were filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from rasterio.windows import Window

from ..errors import CropmapError
from ..sources.geotiff_folder import SceneStack
from .timegrid import TimeGrid

DEFAULT_KEEP_SCL = (4, 5, 6, 7)  # vegetation, not vegetated, water, unclassified


@dataclass
class Composite:
    """``values [T, C, H, W]`` float32 DN (gap-filled; NaN where a pixel was never observed),
    ``observed [T, H, W]`` bool (the step had at least one valid observation)."""

    values: np.ndarray
    observed: np.ndarray

    @property
    def has_data(self) -> np.ndarray:
        """``[H, W]`` pixels with at least one valid observation over the season."""
        return self.observed.any(axis=0)


def valid_mask(dn: np.ndarray, scl: np.ndarray | None, keep_scl: Sequence[int] = DEFAULT_KEEP_SCL) -> np.ndarray:
    """``[H, W]`` True where all bands hold data (DN > 0) and, if SCL is given, its class is kept."""
    ok = (dn > 0).all(axis=0)
    if scl is not None:
        if scl.dtype in (np.uint8, np.uint16):  # a lookup table: one gather, where isin compares once per class
            table = np.zeros(1 << (8 * scl.dtype.itemsize), dtype=bool)
            table[[k for k in keep_scl if 0 <= k < table.size]] = True
            ok &= table[scl]
        else:
            ok &= np.isin(scl, np.asarray(keep_scl, dtype=scl.dtype))
    return ok


def composite_stack(stack: SceneStack, grid: TimeGrid, *, window: Window | None = None,
                    keep_scl: Sequence[int] = DEFAULT_KEEP_SCL,
                    progress: Callable[[int], None] | None = None) -> Composite:
    """Composite ``stack`` (optionally one window of it) onto ``grid``; reads a batch of dates at a time."""
    h = stack.height if window is None else int(window.height)
    w = stack.width if window is None else int(window.width)
    values = np.full((grid.steps, 4, h, w), np.nan, dtype=np.float32)
    observed = np.zeros((grid.steps, h, w), dtype=bool)
    by_step: dict[int, list[int]] = {}
    for i, d in enumerate(stack.dates):
        t = grid.step_of(d)
        if 0 <= t < grid.steps:
            by_step.setdefault(t, []).append(i)
    if not by_step:
        raise CropmapError(
            f"{stack.files[0].parent}: no acquisition falls in the time grid {grid.start} + {grid.steps} x {grid.period_days} days"
        )
    steps = sorted(by_step.items())
    reads = _read_dates(stack, [i for _, idx in steps for i in idx], window, h * w)
    for t, idx in steps:
        # one date: read straight into its step (values is NaN until written)
        obs = values[t][None] if len(idx) == 1 else np.full((len(idx), 4, h, w), np.nan, dtype=np.float32)
        for k in range(len(idx)):
            dn, scl = next(reads)
            # one pass, no index arrays: a boolean-indexed copy was the largest cost of compositing a window
            np.copyto(obs[k], dn, where=valid_mask(dn, scl, keep_scl))
        if len(idx) == 1:
            observed[t] = np.isfinite(obs[0, 0])
        else:
            values[t], observed[t] = _nanmedian_first_axis(obs)
        if progress:
            progress(len(idx))
    _check_values(values, stack)
    fill_gaps(values, observed)
    return Composite(values, observed)


# DN and SCL read at once (a batch of dates): the few dates a window's reads are grouped in, while a batch stays
# a small part of the window's composite (T x 4 float32 values; 8 dates of 720 x 720 px are 41 MB)
READ_BATCH_DATES = 8
READ_BATCH_BYTES = 64 * 2**20


def _read_dates(stack: SceneStack, indices: list[int], window: Window | None, pixels: int) -> Iterator[tuple]:
    """``stack.read(i, window)`` for each of ``indices`` in order, read a batch of dates at a time."""
    batch = int(max(1, min(READ_BATCH_DATES, READ_BATCH_BYTES // (pixels * 5 * 2))))  # 4 bands + SCL, 2 bytes
    for start in range(0, len(indices), batch):
        yield from stack.read_steps(indices[start : start + batch], window)


def composite_arrays(dn: np.ndarray, valid: np.ndarray, steps: np.ndarray, n_steps: int) -> Composite:
    """In-memory form of :func:`composite_stack`: ``dn [N, C, H, W]``, ``valid [N, H, W]``, ``steps [N]``."""
    n, c, h, w = dn.shape
    values = np.full((n_steps, c, h, w), np.nan, dtype=np.float32)
    observed = np.zeros((n_steps, h, w), dtype=bool)
    for t in range(n_steps):
        sel = np.flatnonzero(steps == t)
        if len(sel) == 0:
            continue
        obs = dn[sel].astype(np.float32)
        obs[~np.broadcast_to(valid[sel][:, None], obs.shape)] = np.nan
        values[t], observed[t] = _nanmedian_first_axis(obs)
    fill_gaps(values, observed)
    return Composite(values, observed)


def _nanmedian_first_axis(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median over axis 0 ignoring NaN, without numpy's all-NaN warning: ``[N, C, H, W]`` -> ``[C, H, W]``."""
    seen = np.isfinite(obs[:, 0]).any(axis=0)
    n = obs.shape[0]
    if n == 1:
        return obs[0], seen
    if n == 2:  # the common case at a 5-day revisit and 10-day steps: mean of the valid ones
        a, b = obs
        return np.where(np.isnan(a), b, np.where(np.isnan(b), a, (a + b) / 2)), seen
    # sort along a contiguous last axis (NaN sorts last); the median index depends on each pixel's count
    s = np.sort(np.moveaxis(obs, 0, -1), axis=-1)  # [C, H, W, N]
    n_valid = np.isfinite(s).sum(axis=-1)
    lo = np.clip((n_valid - 1) // 2, 0, None)[..., None]
    hi = np.clip(n_valid // 2, 0, None)[..., None]
    med = (np.take_along_axis(s, lo, axis=-1) + np.take_along_axis(s, hi, axis=-1))[..., 0] / 2
    med[n_valid == 0] = np.nan
    return med, seen


def fill_gaps(values: np.ndarray, observed: np.ndarray) -> None:
    """Fill unobserved steps in place by linear interpolation in time: ``values [T, C, H, W]`` (C-contiguous),
    ``observed [T, H, W]``.

    Steps before the first (after the last) observation take its value; never-observed pixels stay NaN.
    """
    t_len, n_bands = values.shape[:2]
    if observed.all():
        return
    if not values.flags.c_contiguous:
        raise ValueError("fill_gaps needs a C-contiguous values array (it writes through a flat view)")
    npx = observed[0].size
    obs = observed.reshape(t_len, npx)
    # step indices as int16 ([T, H·W] arrays: int64 would make them the largest arrays of a window), swept step
    # by step: rows of H·W are contiguous, where an accumulate along T strides over the whole array per element
    step = np.int16 if t_len < 2**15 - 1 else np.int64
    prev = np.empty((t_len, npx), step)  # last observed step at or before t (-1: none)
    nxt = np.empty((t_len, npx), step)  # first observed step at or after t (t_len: none)
    last = np.full(npx, -1, step)
    for t in range(t_len):
        np.copyto(last, step(t), where=obs[t])
        prev[t] = last
    last.fill(t_len)
    for t in range(t_len - 1, -1, -1):
        np.copyto(last, step(t), where=obs[t])
        nxt[t] = last
    # only the missing steps are computed: their flat index t·H·W + pixel, in the order of a boolean mask
    gap = np.flatnonzero(~obs)
    t_gap, pixel = np.divmod(gap, npx)
    before, after = prev.reshape(-1)[gap], nxt.reshape(-1)[gap]
    del prev, nxt
    p = np.where(before >= 0, before, after).clip(0, t_len - 1)
    q = np.where(after < t_len, after, before).clip(0, t_len - 1)
    span = (q - p).astype(np.float32)
    w = np.divide((t_gap - p).astype(np.float32), span, out=np.zeros(span.shape, np.float32), where=span > 0)
    flat = values.reshape(-1)  # a view: [T, C, H·W] flattened
    at_p = p.astype(np.int64) * (n_bands * npx) + pixel  # band 0's gather indices; band c is c·H·W further
    at_q = q.astype(np.int64) * (n_bands * npx) + pixel
    at_t = t_gap * (n_bands * npx) + pixel
    for c in range(n_bands):
        off = c * npx
        vp, vq = flat[at_p + off], flat[at_q + off]  # observed steps (or NaN ones): never written below
        flat[at_t + off] = vp + (vq - vp) * w


def _check_values(values: np.ndarray, stack: SceneStack) -> None:
    top = np.fmax.reduce(values, axis=None)  # NaN-skipping max in one pass (nanmax copies the array first)
    if top > 20000:  # False for NaN: a window never observed
        raise CropmapError(
            f"{stack.files[0].parent}: reflectance DN above 20000 (max {top:.0f}); expected DN = reflectance x 10000"
        )
