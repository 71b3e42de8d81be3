"""Seamless windowed prediction: overlapping windows whose class probabilities are blended.

Neighbouring windows share ``overlap`` pixels. In each shared band a window's weight is 0 over the
``context`` pixels next to its own edge (where zero padding changes what the model sees), then ramps
linearly to 1; the two windows' weights sum to 1 across the band. When ``context`` covers the model's
receptive field, every pixel that gets weight saw exactly what it would see in a one-shot prediction
of the whole scene, so the mosaic equals it up to float rounding; with less context the ramps still
hide the seams.

Rows are handed out as soon as no later window can touch them, so memory holds one band of rows
(window height x scene width), whatever the area.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import numpy as np
import torch
from rasterio.windows import Window

log = logging.getLogger(__name__)

# (probabilities [K, h, w] float32, has_data [h, w] bool) of one window
WindowPredictor = Callable[[Window], tuple[np.ndarray, np.ndarray]]


def window_origins(total: int, window: int, stride: int, multiple: int = 1) -> list[tuple[int, int]]:
    """``(origin, size)`` of windows covering ``[0, total)``: every ``stride`` pixels, the last one
    reaching the end; origins stay multiples of ``multiple`` (the model's down-sampling factor, so
    that every window pools on the same pixel grid as a whole-scene prediction)."""
    if total <= window:
        return [(0, total)]
    if stride <= 0 or stride % multiple:
        raise ValueError(f"stride {stride} must be a positive multiple of {multiple}")
    origins = list(range(0, total - window, stride))
    last = (total - window) // multiple * multiple
    if last > origins[-1]:
        origins.append(last)
    sizes = [window] * (len(origins) - 1) + [total - origins[-1]]
    return list(zip(origins, sizes))


def blend_ramp(origin: int, size: int, total: int, overlap: int, context: int) -> np.ndarray:
    """``[size]`` float32 weights of one window along one axis: 0 on the ``context`` pixels next to an
    edge shared with another window, a linear ramp up to 1 over the rest of the overlap, 1 elsewhere;
    no ramp at the scene's own edges."""
    w = np.ones(size, dtype=np.float32)
    n = overlap - 2 * context  # ramp length; opposite ramps of two neighbours sum to 1
    ramp = np.concatenate([np.zeros(context), (np.arange(n) + 0.5) / n]).astype(np.float32)
    ramp = ramp[:size]
    if origin > 0:
        w[: len(ramp)] = np.minimum(w[: len(ramp)], ramp)
    if origin + size < total:
        w[size - len(ramp):] = np.minimum(w[size - len(ramp):], ramp[::-1])
    return w


def receptive_radius(model: torch.nn.Module, in_channels: int, multiple: int = 1, probe: int = 64,
                     max_probe: int = 1024) -> int | None:
    """How far (in pixels) an input pixel can change the model's output, measured by the gradient of
    a ``multiple`` x ``multiple`` block of outputs; None when it reaches the probe's edge at ``max_probe``
    (a model with global context)."""
    was_training = model.training
    model.eval()
    try:
        while probe <= max_probe:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, in_channels, 3, probe, probe, generator=g, requires_grad=True)
            doy = torch.tensor([[60.0, 150.0, 240.0]])
            c = probe // 2 // multiple * multiple
            with torch.enable_grad():
                model(x, doy)[0, :, c : c + multiple, c : c + multiple].sum().backward()
            reach = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero()
            lo, hi = reach.min(dim=0).values, reach.max(dim=0).values
            radius = int(max((c - lo).max(), (hi - (c + multiple - 1)).max()))
            if lo.min() > 0 and hi.max() < probe - 1:
                return radius
            probe *= 2
        return None
    finally:
        model.train(was_training)


def plan_context(radius: int | None, overlap: int, multiple: int) -> int:
    """Pixels of each overlap side given no weight: the receptive radius if the overlap allows it."""
    best = (overlap - 1) // 2
    if radius is None or radius > best:
        log.warning("the model sees %s px around a pixel, more than half the %d px window overlap: "
                    "blending hides seams but the mosaic may differ slightly from a whole-scene prediction "
                    "(raise --overlap to %s)", "the whole window" if radius is None else radius, overlap,
                    "a larger value" if radius is None else 2 * radius + 2)
        return best
    return radius


def stream_probabilities(predict: WindowPredictor, height: int, width: int, num_classes: int, *,
                         window: int, overlap: int, context: int, multiple: int = 1,
                         ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, probabilities [K, rows, W], has_data [rows, W])`` bands, top to bottom, covering
    the scene once; each band is final (every window touching it has been blended in)."""
    stride = (window - overlap) // multiple * multiple
    if overlap < 2 * context + 1 or stride <= 0:
        raise ValueError(f"window {window} with overlap {overlap} leaves no room to blend "
                         f"(overlap must exceed 2 x {context} px of context and be smaller than the window)")
    rows = window_origins(height, window, stride, multiple)
    cols = window_origins(width, window, stride, multiple)
    band = max(size for _, size in rows)
    acc = np.zeros((num_classes, band, width), dtype=np.float32)
    wsum = np.zeros((band, width), dtype=np.float32)
    seen = np.zeros((band, width), dtype=bool)
    col_weights = [blend_ramp(c, w, width, overlap, context) for c, w in cols]
    for i, (r, h) in enumerate(rows):
        wy = blend_ramp(r, h, height, overlap, context)
        for (c, w), wx in zip(cols, col_weights):
            prob, has = predict(Window(c, r, w, h))
            weight = wy[:, None] * wx[None, :]
            acc[:, :h, c : c + w] += prob * weight
            wsum[:h, c : c + w] += weight
            seen[:h, c : c + w] |= has
        done = (rows[i + 1][0] if i + 1 < len(rows) else height) - r  # rows no later window touches
        yield r, acc[:, :done] / wsum[None, :done], seen[:done].copy()
        # slide the band down to the next window row
        keep = band - done
        acc[:, :keep] = acc[:, done:].copy()
        acc[:, keep:] = 0
        wsum[:keep] = wsum[done:].copy()
        wsum[keep:] = 0
        seen[:keep] = seen[done:].copy()
        seen[keep:] = False
