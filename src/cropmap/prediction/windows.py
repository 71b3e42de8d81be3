"""Seamless windowed prediction: overlapping windows whose class probabilities are blended.

Neighbouring windows share ``overlap`` pixels. In each shared band a window's weight is 0 over the
``context`` pixels next to its own edge (where zero padding changes what the model sees), then ramps
linearly to 1; the two windows' weights sum to 1 across the band. When ``context`` covers the model's
receptive field, every pixel that gets weight saw exactly what it would see in a one-shot prediction
of the whole scene, so the mosaic equals it up to float rounding; with less context the ramps still
hide the seams.

The scene is processed in vertical strips (at most ``max_strip`` px wide, sharing one window column)
and, within a strip, rows are handed out as soon as no later window can touch them, so memory holds
one band of rows (window height x strip width), whatever the area.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import numpy as np
import torch
from rasterio.windows import Window

from ..models.protocol import model_traits

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
    (a model with global context). Models that declare ``global_context`` (e.g. U-TAE, whose GroupNorm
    pools over the whole window) are not probed: the probe would grow to ``max_probe`` for nothing; nor are
those that declare their ``receptive_radius`` in pixels (the random forest)."""
    traits = model_traits(model)
    if traits.global_context:
        return None
    if traits.receptive_radius is not None:  # a model without gradients to probe (the forest: 0) says it itself
        return traits.receptive_radius
    if any(p.device.type != "cpu" for p in model.parameters()):
        # probed on a CPU copy: GPU convolution algorithms (FFT, Winograd) leave rounding noise in gradients that
        # are exactly zero outside the receptive field on the CPU
        import copy

        model = copy.deepcopy(model).cpu()
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


# the planner's largest window side. Memory grows with a window's area (its inputs, T x 4 bands in float32, twice
# with the read-ahead; the U-Net's activations; the band of rows being blended) while the model's px/s does not
# change with it (512-1024 px within 5 %); benchmarks/predict_large.py --size 2048, T = 36, 14 classes, 2 cores:
# peak RSS 1.71-1.91 GB with 720 px windows, 2.93 GB with 1024 px ones. 768 keeps a margin under 3 GB for models
# with more classes, and computes at most ~4 % more than 1024 on a whole tile (1.16 x the pixels against 1.12 x).
MAX_WINDOW = 768
# models that see the whole window (global context, e.g. U-TAE) are blended, never exact: their geometry is the
# one every model had before the planner, whose memory they were measured with
GLOBAL_CONTEXT_WINDOW = 512
GLOBAL_CONTEXT_OVERLAP = 64


def computed_pixels(total: int, window: int, overlap: int, multiple: int = 1) -> int:
    """Pixels along one axis of ``total`` that windows of ``window`` sharing ``overlap`` compute (each shared
    pixel once per window)."""
    stride = (window - overlap) // multiple * multiple
    return sum(size for _, size in window_origins(total, window, stride, multiple))


def plan_geometry(height: int, width: int, radius: int | None, multiple: int = 1, *, window: int | None = None,
                  overlap: int | None = None, max_window: int = MAX_WINDOW) -> tuple[int, int]:
    """``(window, overlap)`` for a ``height`` x ``width`` scene and a model that sees ``radius`` px around a pixel
    (None: the whole window) and pools by ``multiple``. Values given are kept. An overlap left out is the least
    that keeps the mosaic equal to a one-shot prediction: 2 x radius + 1, rounded up to a multiple of ``multiple``
    (so that windows step by whole pooling cells). A window left out is the one, up to ``max_window``, that
    computes the fewest pixels over this scene, overlaps and the scene's last windows included (the smallest of
    those that tie: memory grows with it)."""
    if radius is None:
        return (GLOBAL_CONTEXT_WINDOW if window is None else window,
                GLOBAL_CONTEXT_OVERLAP if overlap is None else overlap)
    if overlap is None:
        overlap = -(-(2 * radius + 1) // multiple) * multiple
    if window is not None:
        return window, overlap
    # at least twice the overlap: the scene's vertical strips share one window column (see column_strips)
    smallest = -(-max(2 * overlap, 64) // multiple) * multiple
    best_work, best = None, smallest
    for w in range(smallest, max(smallest, max_window) + 1, multiple):
        work = computed_pixels(height, w, overlap, multiple) * computed_pixels(width, w, overlap, multiple)
        if best_work is None or work < best_work:
            best_work, best = work, w
        if w >= height and w >= width:  # one window holds the scene: larger ones compute the same
            break
    return best, overlap


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


def column_strips(cols: list[tuple[int, int]], width: int, max_width: int) -> list[tuple[int, int, int, int]]:
    """Split the window columns into strips ``(first, last, own_lo, own_hi)``: strips share one window
    column (computed twice) and each owns the pixel columns that only its own windows weigh, so every
    strip's owned columns come out exactly as from one pass over the whole width.

    A strip spans at most ``max_width`` pixels (but at least two window columns). Splitting needs
    neighbours' overlaps not to reach past the next window's origin (window >= 2 x overlap)."""
    n = len(cols)

    def splittable(j: int) -> bool:  # window j shared; window j - 1 must not reach window j + 1's origin
        return 0 < j < n - 1 and cols[j - 1][0] + cols[j - 1][1] <= cols[j + 1][0]

    strips, first = [], 0
    while True:
        last = first + 1
        while last + 1 < n and cols[last + 1][0] + cols[last + 1][1] - cols[first][0] <= max_width:
            last += 1
        while last > first and last < n - 1 and not splittable(last):
            last -= 1
        if last >= n - 1 or last == first:
            strips.append((first, n - 1))
            break
        strips.append((first, last))
        first = last
    out = []
    for k, (a, b) in enumerate(strips):
        lo = 0 if k == 0 else cols[a + 1][0]
        hi = width if k == len(strips) - 1 else cols[b + 1][0]
        out.append((a, b, lo, hi))
    return out


def pipelined(predict: WindowPredictor, windows: list[Window]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``predict(w)`` for each window, in order. A predictor in two stages (``inputs(w)``, then
    ``probabilities(x)``) reads and composites the next window on a thread while the model runs on this
    one (rasterio, numpy and torch release the GIL), at most two windows' inputs in memory — when a core is
    left for it, or when the model runs on a GPU (a predictor's ``device``): with torch on every core the
    reader only slows the model (measured on 2 cores: benchmarks/predict_large.py 56.7 k px/s with it,
    60.8 k px/s without)."""
    import os

    import torch

    on_cpu = getattr(predict, "device", torch.device("cpu")).type == "cpu"
    spare_core = not on_cpu or torch.get_num_threads() < (os.cpu_count() or 1)
    if (not spare_core or not (hasattr(predict, "inputs") and hasattr(predict, "probabilities"))
            or len(windows) < 2):
        for w in windows:
            yield predict(w)
        return
    import rasterio
    from concurrent.futures import ThreadPoolExecutor

    env = rasterio.env.getenv() if rasterio.env.hasenv() else {}  # GDAL options are per thread: carry them

    def read(w: Window):
        with rasterio.Env(**env):
            return predict.inputs(w)

    with ThreadPoolExecutor(1, thread_name_prefix="cropmap-read") as pool:
        pending = pool.submit(read, windows[0])
        for k in range(len(windows)):
            x, has = pending.result()
            if k + 1 < len(windows):
                pending = pool.submit(read, windows[k + 1])
            yield predict.probabilities(x), has


def stream_probabilities(predict: WindowPredictor, height: int, width: int, num_classes: int, *,
                         window: int, overlap: int, context: int, multiple: int = 1, max_strip: int = 4096,
                         start_block: int = 0) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, col0, probabilities [K, rows, cols], has_data [rows, cols])`` blocks covering the
    scene once, strip by strip (at most ``max_strip`` px wide), top to bottom; each block is final.

    ``start_block`` resumes a run that yielded that many blocks: the blocks before it are not yielded, and
    of their windows only the rows that reach into the first block yielded are computed again (the one
    window row before it, unless the overlap exceeds half a window), so its values are bit-identical."""
    stride = (window - overlap) // multiple * multiple
    if overlap < 2 * context + 1 or stride <= 0:
        raise ValueError(f"window {window} with overlap {overlap} leaves no room to blend "
                         f"(overlap must exceed 2 x {context} px of context and be smaller than the window)")
    rows = window_origins(height, window, stride, multiple)
    cols = window_origins(width, window, stride, multiple)
    band = max(size for _, size in rows)
    row_weights = [blend_ramp(r, h, height, overlap, context) for r, h in rows]
    col_weights = [blend_ramp(c, w, width, overlap, context) for c, w in cols]
    block = -1
    for first, last, own_lo, own_hi in column_strips(cols, width, max_strip):
        if block + len(rows) < start_block:  # the whole strip was done
            block += len(rows)
            continue
        resume_row = start_block - block - 1  # the strip's row to yield from (0: all of them)
        # rows before it whose windows reach into it are computed again, without being yielded
        recompute_from = min([j for j in range(max(resume_row, 0)) if rows[j][0] + rows[j][1] > rows[resume_row][0]]
                             + [max(resume_row, 0)]) if resume_row > 0 else 0
        todo = [Window(c, r, w, h) for i, (r, h) in enumerate(rows) if i >= recompute_from
                for c, w in cols[first : last + 1]]
        results = pipelined(predict, todo)
        x0 = cols[first][0]
        span = cols[last][0] + cols[last][1] - x0
        acc = np.zeros((num_classes, band, span), dtype=np.float32)
        wsum = np.zeros((band, span), dtype=np.float32)
        seen = np.zeros((band, span), dtype=bool)
        own = slice(own_lo - x0, own_hi - x0)
        for i, (r, h) in enumerate(rows):
            block += 1
            if i < recompute_from:
                continue
            wy = row_weights[i]
            for j in range(first, last + 1):
                (c, w), wx = cols[j], col_weights[j]
                prob, has = next(results)  # the window (c, r, w, h): todo's order is this loop's
                weight = wy[:, None] * wx[None, :]
                acc[:, :h, c - x0 : c - x0 + w] += prob * weight
                wsum[:h, c - x0 : c - x0 + w] += weight
                seen[:h, c - x0 : c - x0 + w] |= has
            done = (rows[i + 1][0] if i + 1 < len(rows) else height) - r  # rows no later window touches
            if i >= resume_row:
                values = acc[:, :done, own]
                values /= wsum[None, :done, own]  # in place: the consumer is done with it before we go on
                yield r, own_lo, values, seen[:done, own].copy()
            # slide the band down to the next window row
            keep = band - done
            acc[:, :keep] = acc[:, done:].copy()
            acc[:, keep:] = 0
            wsum[:keep] = wsum[done:].copy()
            wsum[keep:] = 0
            seen[:keep] = seen[done:].copy()
            seen[keep:] = False
