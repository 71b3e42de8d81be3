"""Property-based tests (hypothesis) of compositing, tiling/stitching and rasterization on random
series, grids and geometries: each property is checked against a rule that can be computed directly."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from cropmap.dataset.composite import composite_arrays, fill_gaps
from cropmap.dataset.rasterize import rasterize_parcels
from cropmap.prediction.windows import blend_ramp, stream_probabilities, window_origins

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# -- compositing ----------------------------------------------------------------------------------

@st.composite
def series(draw):
    """A random stack: ``dn [N, 4, H, W]``, ``valid [N, H, W]``, ``steps [N]`` (sorted), ``n_steps``."""
    n = draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n_steps = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dn = rng.integers(1, 12000, (n, 4, h, w)).astype(np.float32)
    valid = rng.random((n, h, w)) < draw(st.floats(0.0, 1.0))
    steps = np.sort(rng.integers(0, n_steps, n))
    return dn, valid, steps, n_steps, rng


@FAST
@given(series())
def test_all_clear_steps_are_the_median_of_their_observations(s):
    dn, _, steps, n_steps, _ = s
    comp = composite_arrays(dn, np.ones(dn.shape[:1] + dn.shape[2:], bool), steps, n_steps)
    for t in np.unique(steps):
        np.testing.assert_allclose(comp.values[t], np.median(dn[steps == t], axis=0), rtol=1e-6)
    assert comp.observed[np.unique(steps)].all() and comp.has_data.all()


@FAST
@given(series())
def test_masked_observations_never_reach_the_output(s):
    dn, valid, steps, n_steps, rng = s
    a = composite_arrays(dn, valid, steps, n_steps)
    other = np.where(valid[:, None], dn, rng.integers(1, 65535, dn.shape)).astype(np.float32)  # change only masked
    b = composite_arrays(other, valid, steps, n_steps)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.observed, b.observed)
    assert not a.has_data[~valid.any(axis=0)].any()  # never validly observed: no data, NaN values
    assert np.isnan(a.values[:, :, ~a.has_data]).all()


@FAST
@given(st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_gap_filling_stays_between_the_neighbouring_observations(t_len, seed, p):
    rng = np.random.default_rng(seed)
    observed = rng.random((t_len, 3, 4)) < p
    values = np.where(observed[:, None], rng.uniform(0, 10000, (t_len, 2, 3, 4)), np.nan).astype(np.float32)
    before = values.copy()
    fill_gaps(values, observed)
    np.testing.assert_array_equal(values[np.broadcast_to(observed[:, None], values.shape)],
                                  before[np.broadcast_to(observed[:, None], values.shape)])  # observations kept
    for y in range(3):
        for x in range(4):
            seen = np.flatnonzero(observed[:, y, x])
            if len(seen) == 0:
                assert np.isnan(values[:, :, y, x]).all()
                continue
            for t in range(t_len):
                prev = seen[seen <= t].max() if (seen <= t).any() else seen.min()
                nxt = seen[seen >= t].min() if (seen >= t).any() else seen.max()
                lo = np.minimum(before[prev, :, y, x], before[nxt, :, y, x])
                hi = np.maximum(before[prev, :, y, x], before[nxt, :, y, x])
                v = values[t, :, y, x]
                assert (v >= lo - 1e-2).all() and (v <= hi + 1e-2).all()


# -- tiling and stitching ------------------------------------------------------------------------

@FAST
@given(st.integers(1, 400), st.integers(16, 128), st.data())
def test_window_origins_cover_every_pixel_on_the_pooling_grid(total, window, data):
    multiple = data.draw(st.sampled_from([1, 2, 4, 8]))
    stride = data.draw(st.integers(1, max(1, window // multiple))) * multiple
    wins = window_origins(total, window, stride, multiple)
    covered = np.zeros(total, int)
    for o, s in wins:
        # the last window may reach up to multiple - 1 px further, to end on the axis from the pooling grid
        assert o % multiple == 0 and 0 < s < window + multiple and o + s <= total
        covered[o : o + s] += 1
    assert (covered >= 1).all() and wins[-1][0] + wins[-1][1] == total


@FAST
@given(st.integers(16, 96), st.integers(1, 6), st.data())
def test_blend_weights_of_regular_windows_sum_to_one(window, n_windows, data):
    """Where at most two windows meet (overlap <= stride), the ramps sum to 1; elsewhere the stream
    divides by the weight sum (checked by the pointwise test below)."""
    overlap = data.draw(st.integers(1, window // 2))
    context = data.draw(st.integers(0, (overlap - 1) // 2))
    stride = window - overlap
    total = stride * (n_windows - 1) + window  # the windows fall exactly on the axis
    wins = window_origins(total, window, stride)
    wsum = np.zeros(total, np.float64)
    for o, s in wins:
        w = blend_ramp(o, s, total, overlap, context)
        assert ((w >= 0) & (w <= 1)).all()
        wsum[o : o + s] += w
    np.testing.assert_allclose(wsum, 1.0, atol=1e-6)


def _field(seed: int, k: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, h, w)).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(axis=0)
    return prob.astype(np.float32), rng.random((h, w)) > 0.2


@FAST
@given(st.integers(1, 90), st.integers(1, 90), st.integers(16, 48), st.data())
def test_stream_of_a_pointwise_model_equals_the_whole_image(height, width, window, data):
    """A model that looks at one pixel at a time needs no context: the mosaic must equal its whole-image
    answer for any window, overlap, pooling multiple and strip width."""
    multiple = data.draw(st.sampled_from([1, 2, 4]))
    overlap = data.draw(st.integers(1, window - multiple))
    context = data.draw(st.integers(0, (overlap - 1) // 2))
    max_strip = data.draw(st.integers(2 * window, 4 * window))
    k = data.draw(st.integers(1, 4))
    prob, has = _field(data.draw(st.integers(0, 2**16)), k, height, width)

    def predict(win):
        r, c, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        return prob[:, r : r + h, c : c + w].copy(), has[r : r + h, c : c + w].copy()

    out = np.full((k, height, width), np.nan, np.float32)
    seen = np.zeros((height, width), bool)
    count = np.zeros((height, width), int)
    for r0, c0, p, hs in stream_probabilities(predict, height, width, k, window=window, overlap=overlap,
                                              context=context, multiple=multiple, max_strip=max_strip):
        out[:, r0 : r0 + hs.shape[0], c0 : c0 + hs.shape[1]] = p
        seen[r0 : r0 + hs.shape[0], c0 : c0 + hs.shape[1]] = hs
        count[r0 : r0 + hs.shape[0], c0 : c0 + hs.shape[1]] += 1
    assert (count == 1).all()  # every pixel handed out exactly once
    np.testing.assert_allclose(out, prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(seen, has)


# -- rasterization -------------------------------------------------------------------------------

# edges at these fractions of a pixel never pass through a pixel centre (0.5), so the rule is unambiguous
_FRACTIONS = st.sampled_from([0.0, 0.1, 0.3, 0.45, 0.55, 0.7, 0.9, 0.99])


@st.composite
def grids_and_rectangles(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    res = draw(st.sampled_from([10.0, 20.0, 60.0, 3.5]))
    x0 = draw(st.integers(-1000, 1000)) * 10.0 + 500000.0
    y0 = draw(st.integers(-1000, 1000)) * 10.0 + 5000000.0
    rects = []
    for _ in range(draw(st.integers(1, 5))):
        c0, r0 = draw(st.integers(-3, w + 2)), draw(st.integers(-3, h + 2))
        c1, r1 = c0 + draw(st.integers(1, w + 1)), r0 + draw(st.integers(1, h + 1))
        c0, r0, c1, r1 = (v + draw(_FRACTIONS) for v in (c0, r0, c1, r1))
        rects.append((r0, c0, r1, c1))  # pixel units, rows down
    return h, w, res, x0, y0, rects


@FAST
@given(grids_and_rectangles())
def test_rasterized_rectangles_hold_exactly_the_pixel_centres_inside(g):
    h, w, res, x0, y0, rects = g
    transform = Affine(res, 0.0, x0, 0.0, -res, y0)
    geoms = [box(x0 + c0 * res, y0 - r1 * res, x0 + c1 * res, y0 - r0 * res) for r0, c0, r1, c1 in rects]
    index = rasterize_parcels(gpd.GeoDataFrame(geometry=geoms, crs="EPSG:32631"), transform, (h, w))
    expected = np.zeros((h, w), np.int32)
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    for i, (r0, c0, r1, c1) in enumerate(rects):  # later rows win where parcels overlap
        expected[(cy > r0) & (cy < r1) & (cx > c0) & (cx < c1)] = i + 1
    np.testing.assert_array_equal(index, expected)
    # so each lone parcel's pixel count is its area in pixels, to within one pixel row and column
    r0, c0, r1, c1 = rects[-1]
    n = int((index == len(rects)).sum())
    inside_h = max(0.0, min(r1, h) - max(r0, 0))
    inside_w = max(0.0, min(c1, w) - max(c0, 0))
    assert abs(n - inside_h * inside_w) <= inside_h + inside_w + 1
