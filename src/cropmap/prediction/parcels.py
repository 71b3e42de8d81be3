"""Per-parcel answers: each parcel's predicted class at every level of the hierarchy, its confidence,
the share of its pixels that agree, and whether its declaration agrees.

Pixel votes and probability sums are accumulated block by block (a parcel may cross any number of
windows or tiles) under the parcel's feature id in its file, so the results of several tiles add up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from affine import Affine
from rasterio.transform import array_bounds
from shapely.geometry import box

from ..atomic import atomic_path
from ..dataset.rasterize import rasterize_parcels
from ..errors import CropmapError
from ..nomenclature import ClassTable, coarser_levels

log = logging.getLogger(__name__)

PARCEL_FORMATS = {".gpkg": "GPKG", ".parquet": "Parquet", ".geoparquet": "Parquet"}


@dataclass
class ParcelStats:
    """``votes [P, K]`` pixels predicted as each class and ``prob_sum [P, K]`` summed probabilities,
    for the parcels with feature ids ``fids [P]``."""

    fids: np.ndarray
    votes: np.ndarray
    prob_sum: np.ndarray

    @classmethod
    def zeros(cls, fids: np.ndarray, num_classes: int) -> "ParcelStats":
        return cls(np.asarray(fids, dtype=np.int64), np.zeros((len(fids), num_classes), np.int64),
                   np.zeros((len(fids), num_classes), np.float64))

    def add_band(self, parcels: gpd.GeoDataFrame, transform: Affine, prob: np.ndarray, valid: np.ndarray) -> None:
        """Add one block: ``prob [K, rows, cols]``, ``valid [rows, cols]``, ``transform`` of its top-left pixel.

        ``parcels`` are in the imagery CRS with the same row order as ``fids``."""
        rows, width = valid.shape
        bounds = array_bounds(rows, width, transform)
        near = parcels.sindex.query(box(*bounds), predicate="intersects")
        if len(near) == 0:
            return
        near = np.sort(near)
        pid = rasterize_parcels(parcels.iloc[near], transform, (rows, width))  # 1 + position in `near`
        sel = valid & (pid > 0)
        if not sel.any():
            return
        # per-parcel sums by bincount over the parcels present (np.add.at is far slower on millions of pixels)
        present, local = np.unique(pid[sel] - 1, return_inverse=True)
        rows, k = near[present], self.votes.shape[1]
        p = prob[:, sel]  # [K, n]
        self.votes[rows] += np.bincount(local * k + p.argmax(axis=0), minlength=len(present) * k).reshape(-1, k)
        for c in range(k):
            self.prob_sum[rows, c] += np.bincount(local, weights=p[c], minlength=len(present))

    def merge(self, other: "ParcelStats") -> None:
        """Add another tile's stats (parcels matched by feature id)."""
        pos = {f: i for i, f in enumerate(self.fids)}
        idx = np.array([pos[f] for f in other.fids], dtype=np.int64)
        np.add.at(self.votes, idx, other.votes)
        np.add.at(self.prob_sum, idx, other.prob_sum)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fids=self.fids, votes=self.votes, prob_sum=self.prob_sum)

    @classmethod
    def load(cls, path: Path) -> "ParcelStats":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["fids"], z["votes"], z["prob_sum"])


def parcel_table(parcels: gpd.GeoDataFrame, stats: ParcelStats, table: ClassTable,
                 calibrate_on: np.ndarray | None = None) -> gpd.GeoDataFrame:
    """One row per parcel (same order as ``parcels``, whose ``fid`` column matches ``stats.fids``).

    For the model's own level: ``declared_class``, ``pred_class`` (majority of the parcel's pixels),
    ``pred_index``, ``p_declared`` and ``p_predicted`` (mean probability of the declared and of the predicted
    class), ``confidence`` (= ``p_predicted``, for compatibility) (mean probability of that class over the pixels), ``agreement``
    (share of pixels voting for it), ``agrees`` (declared = predicted; empty without a known declared
    code). For each coarser level L (group, coarse): ``declared_L``, ``pred_L``, ``confidence_L``,
    ``agreement_L``, ``agrees_L``, ``p_declared_L``; then ``n_pixels``, ``level`` (the model's own level)
    and ``temperature``.

    A parcel's probabilities are the mean of its pixels' (calibrated) probabilities. With ``calibrate_on``
    (``[P]`` bool, held-out parcels: the out-of-fold ones of a fold run), they are calibrated once more at the
    parcel level: a temperature fitted on those parcels' declarations (a pixel mean is not a calibrated parcel
    probability: pixels that agree at 0.7 each make a parcel that is right far more than 7 times in 10).
    """
    pos = {f: i for i, f in enumerate(stats.fids)}
    order = np.array([pos[f] for f in parcels["fid"]], dtype=np.int64)
    votes, prob_sum = stats.votes[order], stats.prob_sum[order]
    n_px = votes.sum(axis=1)
    has = n_px > 0
    declared = np.array([table.class_of(c) for c in parcels["CODE_CULTU"]], dtype=np.int64)
    temperature = 1.0
    if calibrate_on is not None:
        fit = np.asarray(calibrate_on, bool) & has & (declared >= 0)
        prob_sum, temperature = calibrated_parcel_sums(prob_sum, n_px, declared, fit)
    keep = [c for c in ("ID_PARCEL", "SURF_PARC", "CODE_CULTU", "CODE_GROUP") if c in parcels]
    res = gpd.GeoDataFrame(parcels[keep].copy(), geometry=parcels.geometry.values, crs=parcels.crs)
    for level, (names, m) in coarser_levels(table).items():
        v, s = votes @ m.astype(np.int64), prob_sum @ m
        top = v.argmax(axis=1)
        dec = np.where(declared >= 0, (m.argmax(axis=1))[np.maximum(declared, 0)], -1)
        suffix = "" if level == table.level else f"_{level}"
        res[f"declared{suffix or '_class'}"] = [names[d] if d >= 0 else None for d in dec]
        res[f"pred{suffix or '_class'}"] = [names[t] if h else None for t, h in zip(top, has)]
        pick = np.arange(len(top)), top
        if not suffix:
            res["pred_index"] = np.where(has, top, -1)
            # the (calibrated) mean probability of the declared class and of the predicted one
            res["p_declared"] = np.where(has & (dec >= 0), s[np.arange(len(dec)), np.maximum(dec, 0)]
                                         / np.maximum(n_px, 1), np.nan)
            res["p_predicted"] = np.where(has, s[pick] / np.maximum(n_px, 1), np.nan)
        else:
            res[f"p_declared{suffix}"] = np.where(has & (dec >= 0), s[np.arange(len(dec)), np.maximum(dec, 0)]
                                                  / np.maximum(n_px, 1), np.nan)
        res[f"confidence{suffix}"] = np.where(has, s[pick] / np.maximum(n_px, 1), np.nan)
        res[f"agreement{suffix}"] = np.where(has, v[pick] / np.maximum(n_px, 1), np.nan)
        # nullable boolean: empty where there is no declared class to compare
        res[f"agrees{suffix}"] = pd.array([bool(d == t) if (h and d >= 0) else None for d, t, h in zip(dec, top, has)],
                                          dtype="boolean")
    res["n_pixels"] = n_px
    res["level"] = table.level  # the level of the unsuffixed columns
    res["temperature"] = temperature  # the parcel-level calibration (1: none)
    if not has.all():
        log.warning("%d parcel(s) have no valid pixel in the imagery; their prediction is empty", int((~has).sum()))
    return res


def calibrated_parcel_sums(prob_sum: np.ndarray, n_px: np.ndarray, declared: np.ndarray, fit: np.ndarray
                           ) -> tuple[np.ndarray, float]:
    """``prob_sum [P, K]`` recalibrated: each parcel's mean probabilities ``q`` become ``softmax(log q / T)``,
    T fitted on the ``fit`` parcels' declared classes (see :mod:`cropmap.monitoring.calibration`); returned as
    sums again (times the pixel count), with T."""
    import torch

    from ..monitoring.calibration import fit_temperature

    if fit.sum() < 2:
        return prob_sum, 1.0
    q = prob_sum / np.maximum(n_px, 1)[:, None]
    logq = torch.from_numpy(np.log(np.clip(q, 1e-9, None)))
    t = fit_temperature(logq[torch.from_numpy(fit)], torch.from_numpy(declared[fit]))
    return torch.softmax(logq / t, dim=1).numpy() * n_px[:, None], t


def write_parcel_table(res: gpd.GeoDataFrame, out: Path, *, overwrite: bool) -> Path:
    """GeoPackage (layer ``predictions``) or GeoParquet, chosen by the file suffix."""
    fmt = PARCEL_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise CropmapError(f"{out}: unknown parcel output format; use one of {', '.join(PARCEL_FORMATS)}")
    with atomic_path(out, overwrite=overwrite) as tmp:
        if fmt == "GPKG":
            pyogrio.write_dataframe(res, tmp, layer="predictions", driver="GPKG")
        else:
            res.to_parquet(tmp, index=False)
    return out


def read_parcel_table(path: Path) -> gpd.GeoDataFrame:
    """A table written by ``write_parcel_table`` (for ``cropmap audit``)."""
    path = Path(path)
    if not path.exists():
        raise CropmapError(f"{path}: parcel predictions file does not exist")
    try:
        if PARCEL_FORMATS.get(path.suffix.lower()) == "Parquet":
            return gpd.read_parquet(path)
        return pyogrio.read_dataframe(path, layer="predictions")
    except Exception as e:
        raise CropmapError(f"{path}: not a parcel predictions file written by `cropmap predict` ({e})") from e


def bounds_in_crs(rasters: list[Path], vector: Path | str) -> tuple[float, float, float, float]:
    """Bounds of all ``rasters`` in the CRS of ``vector``, to read only the parcels of the area."""
    import rasterio
    from pyproj import Transformer

    crs = pyogrio.read_info(vector)["crs"]
    boxes = []
    for m in rasters:
        with rasterio.open(m) as src:
            boxes.append(Transformer.from_crs(src.crs, crs, always_xy=True).transform_bounds(*src.bounds))
    b = np.array(boxes)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())
