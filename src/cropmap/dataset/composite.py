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
    if obs.shape[0] == 1:
        return obs[0], seen
    # sort puts NaN last; the median index depends on each pixel's count of valid observations
    n_valid = np.isfinite(obs).sum(axis=0)  # [C, H, W]
    s = np.sort(obs, axis=0)
    lo = np.clip((n_valid - 1) // 2, 0, None)
    hi = np.clip(n_valid // 2, 0, None)
    a = np.take_along_axis(s, lo[None], axis=0)[0]
    b = np.take_along_axis(s, hi[None], axis=0)[0]
    med = (a + b) / 2
    med[n_valid == 0] = np.nan
    return med, seen


def fill_gaps(values: np.ndarray, observed: np.ndarray) -> None:
    """Fill unobserved steps in place by linear interpolation in time: ``values [T, C, H, W]``, ``observed [T, H, W]``.

    Steps before the first (after the last) observation take its value; never-observed pixels stay NaN.
    """
    t_len = values.shape[0]
    idx = np.arange(t_len)[:, None, None]
    prev = np.where(observed, idx, -1)
    prev = np.maximum.accumulate(prev, axis=0)  # last observed step at or before t
    nxt = np.where(observed, idx, t_len)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]  # first observed step at or after t
    has_prev, has_next = prev >= 0, nxt < t_len
    p = np.where(has_prev, prev, nxt).clip(0, t_len - 1)
    q = np.where(has_next, nxt, prev).clip(0, t_len - 1)
    span = (q - p).astype(np.float32)
    wgt = np.where(span > 0, (idx - p) / np.where(span > 0, span, 1), 0.0).astype(np.float32)
    vp = np.take_along_axis(values, p[:, None].repeat(values.shape[1], axis=1), axis=0)
    vq = np.take_along_axis(values, q[:, None].repeat(values.shape[1], axis=1), axis=0)
    filled = vp + (vq - vp) * wgt[:, None]
    np.copyto(values, filled, where=~observed[:, None])


def _check_values(values: np.ndarray, stack: SceneStack) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() > 20000:
        raise CropmapError(
            f"{stack.files[0].parent}: reflectance DN above 20000 (max {finite.max():.0f}); expected DN = reflectance x 10000"
        )
