"""Cloud masking with SCL and compositing of a date stack onto a fixed time grid.

Each grid step takes the per-pixel median of its valid observations; steps without one are filled
by linear interpolation in time (nearest valid step at the ends), and the observed mask is kept so
that the model and the user know which values were seen and which were filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

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
        ok &= np.isin(scl, np.asarray(keep_scl, dtype=scl.dtype))
    return ok


def composite_stack(stack: SceneStack, grid: TimeGrid, *, window: Window | None = None,
                    keep_scl: Sequence[int] = DEFAULT_KEEP_SCL,
                    progress: Callable[[int], None] | None = None) -> Composite:
    """Composite ``stack`` (optionally one window of it) onto ``grid``; reads one step's dates at a time."""
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
    for t, idx in sorted(by_step.items()):
        obs = np.full((len(idx), 4, h, w), np.nan, dtype=np.float32)
        for k, i in enumerate(idx):
            dn, scl = stack.read(i, window)
            ok = valid_mask(dn, scl, keep_scl)
            obs[k][:, ok] = dn[:, ok]
        values[t], observed[t] = _nanmedian_first_axis(obs)
        if progress:
            progress(len(idx))
    _check_values(values, stack)
    fill_gaps(values, observed)
    return Composite(values, observed)


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
    """Fill unobserved steps in place by linear interpolation in time: ``values [T, C, H, W]``, ``observed [T, H, W]``.

    Steps before the first (after the last) observation take its value; never-observed pixels stay NaN.
    """
    t_len, n_bands = values.shape[:2]
    if observed.all():
        return
    # step indices as int16 ([T, H, W] arrays: int64 would make them the largest arrays of a window)
    step = np.int16 if t_len < 2**15 - 1 else np.int64
    idx = np.arange(t_len, dtype=step)[:, None, None]
    prev = np.maximum.accumulate(np.where(observed, idx, step(-1)), axis=0)  # last observed step at or before t
    nxt = np.minimum.accumulate(np.where(observed, idx, step(t_len))[::-1], axis=0)[::-1]  # first at or after t
    p = np.where(prev >= 0, prev, nxt).clip(0, t_len - 1)
    q = np.where(nxt < t_len, nxt, prev).clip(0, t_len - 1)
    del prev, nxt
    gap = ~observed
    span = (q[gap] - p[gap]).astype(np.float32)
    w = np.divide((idx - p)[gap], span, out=np.zeros(span.shape, np.float32), where=span > 0)
    npx = observed[0].size
    pixel = np.broadcast_to(np.arange(npx).reshape(observed.shape[1:]), observed.shape)[gap]
    flat_p = p[gap].astype(np.int64) * npx + pixel  # gather indices into a [T, H·W] band, only where a step is missing
    flat_q = q[gap].astype(np.int64) * npx + pixel
    for c in range(n_bands):
        band = values[:, c]  # [T, H, W] view
        src = band.reshape(-1)  # a copy: the view is strided over T
        vp, vq = src[flat_p], src[flat_q]
        band[gap] = vp + (vq - vp) * w


def _check_values(values: np.ndarray, stack: SceneStack) -> None:
    if not np.isnan(values).all() and np.nanmax(values) > 20000:
        raise CropmapError(
            f"{stack.files[0].parent}: reflectance DN above 20000 (max {np.nanmax(values):.0f}); expected DN = reflectance x 10000"
        )
