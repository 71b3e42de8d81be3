"""Class areas with confidence intervals: the stratified estimator of Olofsson et al. 2014 ("Good practices
for estimating area and assessing accuracy of land change", RSE 148), the map classes as strata.

With ``W_i`` the share of the map in class ``i`` and ``n_ij`` the reference sample units mapped ``i`` whose
reference class is ``j`` (``n_i`` in map class ``i``), the estimated area share of class ``j`` is
``p_j = sum_i W_i n_ij / n_i`` (their eq. 9), its standard error
``S(p_j) = sqrt(sum_i W_i^2 (n_ij / n_i)(1 - n_ij / n_i) / (n_i - 1))`` (eq. 10), and the 95 % interval
``± 1.96 S(p_j)`` times the mapped total. User's accuracy ``p_jj / p_j.``, producer's ``p_jj / p_.j``.

The reference sample is a user's file (``map_class,reference_class`` per sample unit, drawn stratified by
map class as the paper prescribes), or the held-out parcels of an out-of-fold parcel table (predicted class
against declared class, one unit per parcel): then the declarations are the reference and the parcels are
not a designed probability sample, which the output says.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ..atomic import atomic_path, refuse_existing
from ..errors import CropmapError

Z95 = 1.959964  # two-sided 95 % normal quantile
AREA_COLUMNS = ("class", "mapped_ha", "mapped_share", "sample_units", "estimated_ha", "ci95_ha", "estimated_share",
                "standard_error_share", "users_accuracy", "producers_accuracy")


@dataclass(frozen=True)
class AreaEstimate:
    classes: tuple[str, ...]
    mapped_ha: np.ndarray  # [K]
    estimated_ha: np.ndarray  # [K]
    ci95_ha: np.ndarray  # [K] half-width
    share: np.ndarray  # [K] estimated area share p_j
    standard_error: np.ndarray  # [K] S(p_j)
    users: np.ndarray  # [K]
    producers: np.ndarray  # [K]
    overall: float
    sample_units: np.ndarray  # [K] per map class


def stratified_estimate(counts: np.ndarray, mapped_ha: np.ndarray, classes, z: float = Z95) -> AreaEstimate:
    """Olofsson et al. (2014) from the sample ``counts [K, K]`` (rows map class, columns reference class)
    and the mapped area per class ``mapped_ha [K]``. Map classes without sample units add their map area's
    uncertainty to no class: their strata are left out of p_j (said by ``sample_units`` 0)."""
    n = np.asarray(counts, dtype=np.float64)
    mapped = np.asarray(mapped_ha, dtype=np.float64)
    total = mapped.sum()
    if total <= 0:
        raise CropmapError("the map has no mapped pixel: no area to estimate")
    w = mapped / total
    n_i = n.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_i[:, None] > 0, n / np.maximum(n_i, 1)[:, None], 0.0)  # n_ij / n_i
        p = w[:, None] * frac  # p_ij
        share = p.sum(axis=0)
        var = np.where(n_i[:, None] > 1, w[:, None] ** 2 * frac * (1 - frac) / np.maximum(n_i - 1, 1)[:, None], 0.0)
        se = np.sqrt(var.sum(axis=0))
        users = np.where(p.sum(axis=1) > 0, np.diag(p) / p.sum(axis=1), np.nan)
        producers = np.where(share > 0, np.diag(p) / share, np.nan)
    return AreaEstimate(tuple(classes), mapped, share * total, z * se * total, share, se, users, producers,
                        float(np.trace(p)), n_i.astype(np.int64))


def mapped_areas(map_path: Path | str) -> tuple[np.ndarray, list[str]]:
    """``[K]`` hectares per class of a cropmap class map (read by blocks) and its class names."""
    map_path = Path(map_path)
    try:
        with rasterio.open(map_path) as src:
            names = json.loads(src.tags().get("CLASS_NAMES", "null"))
            if not names:
                raise CropmapError(f"{map_path}: not a cropmap class map (no CLASS_NAMES tag; write it with "
                                   "`cropmap predict`)")
            px_ha = abs(src.transform.a * src.transform.e) / 1e4
            counts = np.zeros(len(names), np.int64)
            for _, win in src.block_windows(1):
                a = src.read(1, window=win)
                a = a[a < len(counts)]
                counts += np.bincount(a.ravel(), minlength=len(counts))
    except rasterio.errors.RasterioIOError as e:
        raise CropmapError(f"{map_path}: not a readable class map ({e})") from None
    return counts * px_ha, list(names)


def sample_counts(reference: Path | str, names: list[str]) -> tuple[np.ndarray, str]:
    """``[K, K]`` sample counts from a CSV ``map_class,reference_class`` or a parcel table from ``cropmap
    predict`` (out-of-fold parcels: pred_class against declared_class); and what the sample is."""
    reference = Path(reference)
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)), np.int64)
    if reference.suffix.lower() == ".csv":
        with open(reference, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        pairs = [(r.get("map_class"), r.get("reference_class")) for r in rows]
        what = f"reference sample {reference.name} ({len(pairs)} units)"
    else:
        from ..prediction.parcels import read_parcel_table

        gdf = read_parcel_table(reference)
        if "fold" not in gdf or not (gdf["fold"] >= 0).any():
            raise CropmapError(f"{reference}: no out-of-fold parcel (train with --folds, predict with --parcels-out): "
                               "in-sample parcels would grade the map with its own training labels")
        held = gdf[(gdf["fold"] >= 0) & gdf["declared_class"].notna() & gdf["pred_class"].notna()]
        pairs = list(zip(held["pred_class"], held["declared_class"]))
        what = (f"{len(pairs)} out-of-fold parcels of {reference.name}, declared class as the reference "
                "(not a designed probability sample)")
    unknown = sorted({str(v) for pair in pairs for v in pair if v not in index})
    if unknown:
        raise CropmapError(f"{reference}: class(es) not in the map: {', '.join(unknown[:5])}")
    for m, r in pairs:
        counts[index[m], index[r]] += 1
    if counts.sum() == 0:
        raise CropmapError(f"{reference}: no sample unit")
    return counts, what


def estimate_areas(map_path: Path | str, reference: Path | str, out: Path | str, *, z: float = Z95,
                   overwrite: bool = False) -> tuple[AreaEstimate, str]:
    """Write ``out`` (CSV, ``AREA_COLUMNS``, one row per class then ``overall``) from a class map and a
    reference sample; returns the estimate and what the sample is."""
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    mapped, names = mapped_areas(map_path)
    counts, what = sample_counts(reference, names)
    est = stratified_estimate(counts, mapped, names, z)
    total = est.mapped_ha.sum()
    fmt = lambda v, d=4: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    with atomic_path(out, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(AREA_COLUMNS)
            for i, name in enumerate(est.classes):
                w.writerow([name, fmt(est.mapped_ha[i], 2), fmt(est.mapped_ha[i] / total), int(est.sample_units[i]),
                            fmt(est.estimated_ha[i], 2), fmt(est.ci95_ha[i], 2), fmt(est.share[i]),
                            fmt(est.standard_error[i]), fmt(est.users[i]), fmt(est.producers[i])])
            w.writerow(["overall accuracy", fmt(total, 2), "1.0000", int(est.sample_units.sum()), "", "", "", "",
                        fmt(est.overall), ""])
    return est, what
