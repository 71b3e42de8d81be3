"""Traffic-light markers per declared parcel, as an area monitoring system gives them: green, the satellite
evidence confirms the declared crop; red, another class is confidently predicted; orange, the evidence is
too weak to say (few clear pixels, or a probability between the two thresholds).

Thresholds are chosen on the parcels' own held-out (out-of-fold), calibrated probabilities, for a target
precision: if ``p_declared`` is calibrated, a red parcel's declaration is wrong with probability
``1 - p_declared``, so the red list's expected precision is the mean of ``1 - p_declared`` over it. The red
threshold is the highest ``p_declared`` whose list keeps that mean at or above the target; the green one
the lowest whose list keeps the mean ``p_declared`` at or above it. No known error list is needed, and
none is used (on the demo, the injected errors only measure the result).

Error estimates against the declarations (as theroggy/cropclassification reports them): alpha, the
expected share of right declarations that are flagged red (inspections for nothing); beta, the expected
share of wrong declarations that are not flagged red (errors let through).
"""

from __future__ import annotations

import numpy as np

TARGET_PRECISION = 0.9  # of the red list
MIN_CLEAR_PIXELS = 20  # fewer clear 10 m pixels (0.2 ha) than this is too little evidence for red or green
MARKERS = ("red", "orange", "green")


def red_threshold(p_declared: np.ndarray, target: float = TARGET_PRECISION) -> float | None:
    """The highest ``t`` such that the parcels with ``p_declared <= t`` have mean ``1 - p_declared >=
    target``; None when even the least likely declaration does not reach it."""
    p = np.sort(np.asarray(p_declared, dtype=np.float64))
    if len(p) == 0:
        return None
    expected = np.cumsum(1.0 - p) / np.arange(1, len(p) + 1)  # non-increasing: the list only gets worse
    ok = np.flatnonzero(expected >= target - 1e-12)
    return float(p[ok[-1]]) if len(ok) else None


def green_threshold(p_declared: np.ndarray, target: float = TARGET_PRECISION) -> float | None:
    """The lowest ``t`` such that the parcels with ``p_declared >= t`` have mean ``p_declared >= target``."""
    p = np.sort(np.asarray(p_declared, dtype=np.float64))[::-1]
    if len(p) == 0:
        return None
    expected = np.cumsum(p) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero(expected >= target - 1e-12)
    return float(p[ok[-1]]) if len(ok) else None


def assign_markers(p_declared: np.ndarray, agrees: np.ndarray, n_pixels: np.ndarray,
                   target: float = TARGET_PRECISION, min_pixels: int = MIN_CLEAR_PIXELS) -> tuple[np.ndarray, dict]:
    """``[P]`` marker per parcel ("" where there is no declared class to check) and the thresholds.

    ``agrees`` (bool, predicted = declared, NaN-free where a declaration exists) decides which side a parcel
    can be on: red needs another class predicted, green the declared one.
    """
    p = np.asarray(p_declared, dtype=np.float64)
    agrees = np.asarray(agrees, dtype=bool)
    enough = np.asarray(n_pixels) >= min_pixels
    known = ~np.isnan(p)
    red_pool, green_pool = known & enough & ~agrees, known & enough & agrees
    t_red, t_green = red_threshold(p[red_pool], target), green_threshold(p[green_pool], target)
    marker = np.where(known, "orange", "").astype(object)
    if t_red is not None:
        marker[red_pool & (p <= t_red)] = "red"
    if t_green is not None:
        marker[green_pool & (p >= t_green)] = "green"
    return marker, {"target_precision": target, "min_clear_pixels": min_pixels, "red_max_p_declared": t_red,
                    "green_min_p_declared": t_green}


def error_estimates(p_declared: np.ndarray, marker: np.ndarray) -> dict:
    """Expected red precision, alpha and beta from calibrated ``p_declared`` (see the module docstring)."""
    p = np.asarray(p_declared, dtype=np.float64)
    known = ~np.isnan(p)
    p, red = p[known], np.asarray(marker)[known] == "red"
    right, wrong = p.sum(), (1 - p).sum()
    return {"expected_red_precision": float((1 - p[red]).mean()) if red.any() else None,
            "alpha": float(p[red].sum() / right) if right > 0 else None,
            "beta": float((1 - p[~red]).sum() / wrong) if wrong > 0 else None,
            "expected_wrong_declarations": float(wrong)}


def inspection_sample(uncertain: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Indexes of ``n`` items for field checks by uncertainty sampling per group: the most uncertain item of
    each group in turn (groups in order of their most uncertain item), so that a rare class gets its checks
    as a frequent one does. ``uncertain [P]`` (higher: less sure; NaN: never picked), ``groups [P]``."""
    u = np.asarray(uncertain, dtype=np.float64)
    ok = ~np.isnan(u)
    queues = {}
    for g in np.unique(np.asarray(groups)[ok]):
        idx = np.flatnonzero(ok & (np.asarray(groups) == g))
        queues[g] = list(idx[np.argsort(-u[idx], kind="stable")])
    order = sorted(queues, key=lambda g: -u[queues[g][0]])
    picked: list[int] = []
    while len(picked) < n and any(queues.values()):
        for g in order:
            if queues[g] and len(picked) < n:
                picked.append(int(queues[g].pop(0)))
    return np.array(picked, dtype=np.int64)
