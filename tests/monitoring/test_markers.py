"""Markers: thresholds honour the target precision on hand-made tables; alpha and beta by hand."""

import numpy as np
import pytest

from cropmap.monitoring.markers import assign_markers, error_estimates, green_threshold, red_threshold


def test_red_threshold_keeps_the_expected_precision():
    p = np.array([0.3, 0.01, 0.6, 0.1, 0.05])
    # sorted 0.01, 0.05, 0.1, 0.3: mean(1 - p) 0.99, 0.97, 0.9467, 0.885 -> the list stops at 0.1
    assert red_threshold(p, 0.9) == 0.1
    assert red_threshold(p, 0.99) == 0.01
    assert red_threshold(p, 0.995) is None
    assert red_threshold(np.array([]), 0.9) is None


def test_green_threshold_keeps_the_expected_share_right():
    p = np.array([0.5, 0.99, 0.9, 0.95])
    # sorted down 0.99, 0.95, 0.9, 0.5: mean 0.99, 0.97, 0.9467, 0.835
    assert green_threshold(p, 0.9) == 0.9
    assert green_threshold(p, 0.8) == 0.5


def test_markers_on_a_hand_made_table():
    p = np.array([0.01, 0.05, 0.1, 0.3, 0.99, 0.95, 0.9, 0.5, 0.02, np.nan])
    agrees = np.array([False, False, False, False, True, True, True, True, False, False])
    n_pixels = np.array([100, 100, 100, 100, 100, 100, 100, 100, 5, 100])
    marker, th = assign_markers(p, agrees, n_pixels, target=0.9, min_pixels=20)
    assert list(marker) == ["red", "red", "red", "orange", "green", "green", "green", "orange", "orange", ""]
    assert th["red_max_p_declared"] == 0.1 and th["green_min_p_declared"] == 0.9
    red = marker == "red"
    assert (1 - p[red]).mean() >= 0.9  # the target, honoured
    e = error_estimates(p, marker)
    known = ~np.isnan(p)
    assert e["expected_red_precision"] == pytest.approx((1 - p[red]).mean())
    assert e["alpha"] == pytest.approx(p[red].sum() / p[known].sum())
    assert e["beta"] == pytest.approx((1 - p[known & ~red]).sum() / (1 - p[known]).sum())


def test_inspection_sample_takes_each_class_in_turn():
    from cropmap.monitoring.markers import inspection_sample

    u = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.05, np.nan])
    g = np.array(["wheat", "wheat", "wheat", "wheat", "vines", "vines", "vines"])
    # the rare class (vines) gets its most uncertain parcel second, not after every wheat parcel
    assert inspection_sample(u, g, 3).tolist() == [0, 4, 1]
    assert inspection_sample(u, g, 10).tolist() == [0, 4, 1, 5, 2, 3]  # NaN never picked
