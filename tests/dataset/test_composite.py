import datetime as dt

import numpy as np
import pytest

from conftest import write_date
from cropmap.dataset.composite import composite_arrays, composite_stack, fill_gaps, valid_mask
from cropmap.dataset.timegrid import TimeGrid
from cropmap.sources.geotiff_folder import open_scene_folder


def test_valid_mask_uses_scl_and_nodata():
    dn = np.full((4, 1, 4), 500, dtype=np.uint16)
    dn[2, 0, 3] = 0  # one band missing -> nodata
    scl = np.array([[4, 9, 3, 5]], dtype=np.uint8)
    assert valid_mask(dn, scl).tolist() == [[True, False, False, False]]
    assert valid_mask(dn, None).tolist() == [[True, True, True, False]]
    assert valid_mask(dn, scl, keep_scl=(4, 9)).tolist() == [[True, True, False, False]]


def test_median_of_valid_observations_per_step():
    # 3 observations in step 0 for one pixel, the cloudy one excluded: median of 100 and 300 = 200
    dn = np.array([100, 5000, 300], dtype=np.float32)[:, None, None, None].repeat(4, axis=1)
    valid = np.array([True, False, True])[:, None, None]
    comp = composite_arrays(dn, valid, np.array([0, 0, 0]), 1)
    assert comp.values[0, :, 0, 0].tolist() == [200.0] * 4
    # an odd count takes the middle value
    comp = composite_arrays(dn, np.ones((3, 1, 1), bool), np.array([0, 0, 0]), 1)
    assert comp.values[0, 0, 0, 0] == 300.0


def test_gap_fill_is_linear_inside_and_constant_at_the_ends():
    values = np.full((6, 1, 1, 2), np.nan, dtype=np.float32)
    observed = np.zeros((6, 1, 2), dtype=bool)
    values[1, 0, 0, 0], values[4, 0, 0, 0] = 10.0, 40.0
    observed[1, 0, 0] = observed[4, 0, 0] = True
    fill_gaps(values, observed)
    assert values[:, 0, 0, 0].tolist() == [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]
    assert np.isnan(values[:, 0, 0, 1]).all()  # never observed: stays NaN (nodata downstream)


def test_timegrid_is_anchored_on_january_first():
    g = TimeGrid.covering([dt.date(2023, 1, 13), dt.date(2023, 3, 2)], 10)
    assert g.start == dt.date(2023, 1, 11) and g.steps == 6  # Mar 2 is 50 days after Jan 11
    assert g.step_of(dt.date(2023, 1, 20)) == 0 and g.step_of(dt.date(2023, 1, 21)) == 1
    assert g.day_of_year.tolist() == [16, 26, 36, 46, 56, 66]
    assert g.in_year(2024).start == dt.date(2024, 1, 11)
    assert TimeGrid.from_dict(g.to_dict()) == g


def test_composite_from_files_matches_hand_computed(tmp_path):
    shape = (4, 2, 3)
    scl_clear, scl_cloud = np.full(shape[1:], 4), np.full(shape[1:], 9)
    write_date(tmp_path, dt.date(2023, 1, 2), np.full(shape, 100), scl_clear)
    write_date(tmp_path, dt.date(2023, 1, 7), np.full(shape, 300), scl_clear)
    write_date(tmp_path, dt.date(2023, 1, 12), np.full(shape, 9000), scl_cloud)  # step 1 all cloudy
    write_date(tmp_path, dt.date(2023, 1, 25), np.full(shape, 800), scl_clear)  # step 2
    stack = open_scene_folder(tmp_path)
    grid = TimeGrid.covering(stack.dates, 10)
    comp = composite_stack(stack, grid)
    assert grid.steps == 3
    assert comp.values[:, 0, 0, 0].tolist() == [200.0, 500.0, 800.0]  # step 1 interpolated
    assert comp.observed[:, 0, 0].tolist() == [True, False, True]
    assert comp.has_data.all()


def test_out_of_range_reflectance_is_refused(tmp_path):
    from cropmap.errors import CropmapError

    write_date(tmp_path, dt.date(2023, 1, 2), np.full((4, 2, 2), 30000), np.full((2, 2), 4))
    stack = open_scene_folder(tmp_path)
    with pytest.raises(CropmapError, match="DN above 20000"):
        composite_stack(stack, TimeGrid.covering(stack.dates))


@pytest.mark.parametrize("seed", range(5))
def test_composite_matches_numpy_reference_on_random_stacks(seed):
    """Median per step = np.nanmedian of the valid observations; gaps = np.interp over observed steps."""
    rng = np.random.default_rng(seed)
    n, t_len = 12, 7
    dn = rng.integers(1, 5000, (n, 4, 3, 5)).astype(np.float32)
    valid = rng.random((n, 3, 5)) > 0.5
    steps = np.sort(rng.integers(0, t_len, n))
    comp = composite_arrays(dn, valid, steps, t_len)
    for t in np.unique(steps):
        obs = np.where(valid[steps == t][:, None], dn[steps == t], np.nan)
        seen = np.isfinite(obs[:, 0]).any(axis=0)
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RuntimeWarning)
            ref = np.nanmedian(obs, axis=0)
        np.testing.assert_allclose(comp.values[t][:, seen], ref[:, seen])
        assert (comp.observed[t] == seen).all()
    for y in range(3):
        for x in range(5):
            obs = comp.observed[:, y, x]
            for b in range(4):
                if obs.any():
                    ref = np.interp(np.arange(t_len), np.flatnonzero(obs), comp.values[obs, b, y, x])
                    np.testing.assert_allclose(comp.values[:, b, y, x], ref, rtol=1e-6)
                else:
                    assert np.isnan(comp.values[:, b, y, x]).all()


def _fill_reference(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Pixel by pixel, in float32: between observed steps p < t < q, v_p + (v_q - v_p) * (t - p) / (q - p)."""
    out = values.copy()
    t_len = values.shape[0]
    for y, x in np.ndindex(*observed.shape[1:]):
        seen = np.flatnonzero(observed[:, y, x])
        if len(seen) == 0:
            continue
        for t in np.flatnonzero(~observed[:, y, x]):
            p = seen[seen <= t].max() if (seen <= t).any() else seen.min()
            q = seen[seen >= t].min() if (seen >= t).any() else seen.max()
            w = np.float32(t - p) / np.float32(q - p) if q > p else np.float32(0)
            vp, vq = values[p, :, y, x], values[q, :, y, x]
            out[t, :, y, x] = vp + (vq - vp) * w
    assert t_len == out.shape[0]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_gap_fill_is_bit_identical_to_the_per_pixel_formula(seed):
    rng = np.random.default_rng(seed)
    t_len, h, w = 11, 6, 7
    observed = rng.random((t_len, h, w)) > rng.uniform(0.2, 0.8)
    observed[:, 0, 0] = False  # never observed: stays NaN
    observed[:, 0, 1] = True  # no gap
    observed[:, 0, 2] = np.arange(t_len) == 5  # one observation: constant
    values = np.where(observed[:, None], rng.uniform(0, 9000, (t_len, 4, h, w)), np.nan).astype(np.float32)
    ref = _fill_reference(values, observed)
    fill_gaps(values, observed)
    assert values.tobytes() == ref.tobytes()
    assert np.isnan(values[:, :, 0, 0]).all() and (values[:, :, 0, 2] == values[5, :, 0, 2]).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_valid_mask_is_the_same_for_every_scl_type(dtype):
    rng = np.random.default_rng(0)
    scl = rng.integers(0, 12, (9, 9))
    dn = rng.integers(0, 3, (4, 9, 9))
    ref = (dn > 0).all(axis=0) & np.isin(scl, [4, 5, 6, 7])
    np.testing.assert_array_equal(valid_mask(dn, scl.astype(dtype)), ref)
    only_4 = (dn > 0).all(axis=0) & (scl == 4)
    np.testing.assert_array_equal(valid_mask(dn, scl.astype(dtype), keep_scl=(4, 300)), only_4)
