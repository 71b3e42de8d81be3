"""Per-parcel NDVI profiles from a built dataset (its gap-filled composites), and each class's median
profile: what an inspector compares a flagged parcel against (the report's red list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset.store import dataset_info, open_dataset

PATCHES_PER_READ = 32


def parcel_ndvi_profiles(data: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ID_PARCEL [P], day of year [T], mean NDVI [P, T])`` over each parcel's observed pixels in the
    dataset's patches (NaN where none), read a few patches at a time; the days count on past 365 for a
    season that crosses new year."""
    info = dataset_info(data)
    ds = open_dataset(data)
    bands = list(info.bands)
    red, nir = bands.index("B4"), bands.index("B8")
    n_parcels = int(ds.sizes.get("parcel", 0))
    t = int(ds.sizes["time"])
    total = np.zeros((n_parcels + 1, t))
    count = np.zeros((n_parcels + 1, t))  # pixels with an observation (or a gap-filled value) at each step
    n = int(ds.sizes["patch"])
    for start in range(0, n, PATCHES_PER_READ):
        idx = slice(start, min(start + PATCHES_PER_READ, n))
        x = ds["x"].isel(patch=idx, band=[red, nir]).values.astype(np.float64)  # [n, 2, T, P, P] DN
        parcel = ds["parcel"].isel(patch=idx).values  # [n, P, P]
        with np.errstate(invalid="ignore", divide="ignore"):
            ndvi = (x[:, 1] - x[:, 0]) / (x[:, 1] + x[:, 0])  # [n, T, P, P]; NaN where never observed (DN 0)
        sel = parcel > 0
        pid = parcel[sel]
        values = ndvi.transpose(0, 2, 3, 1)[sel]  # [m, T]
        valid = np.isfinite(values)
        values = np.where(valid, values, 0.0)
        for k in range(t):
            total[:, k] += np.bincount(pid, weights=values[:, k], minlength=n_parcels + 1)
            count[:, k] += np.bincount(pid, weights=valid[:, k], minlength=n_parcels + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = total[1:] / count[1:]
    profiles[count[1:] == 0] = np.nan
    ids = ds["parcel_id"].values.astype(str) if "parcel_id" in ds else np.arange(n_parcels).astype(str)
    doy = ds["doy"].values.astype(np.float64)
    # a season crossing new year: days after 31 December count on (366, 367, ...), so plots run left to right
    doy = doy + 365 * np.concatenate([[0], np.cumsum(np.diff(doy) < 0)])
    return ids, doy, profiles


def class_medians(profiles: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """``{class: [T] median profile}`` over the parcels of each class (parcels without pixels left out)."""
    out = {}
    ok = ~np.isnan(profiles).all(axis=1)
    for c in np.unique(classes[ok]):
        if c is None:
            continue
        out[str(c)] = np.nanmedian(profiles[ok & (classes == c)], axis=0)
    return out


def dataset_profiles(data: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(ID_PARCEL [P], day of year [T], NDVI [P, T], {class: median [T]})``: every parcel's profile and each
    class's median over the parcels declared as it (the dataset's class table)."""
    ids, doy, profiles = parcel_ndvi_profiles(data)
    table = dataset_info(data).class_table
    codes = open_dataset(data)["parcel_code"].values.astype(str)
    names = np.array([table.names[k] if k >= 0 else None for k in (table.class_of(c) for c in codes)], dtype=object)
    return ids, doy, profiles, class_medians(profiles, names)
