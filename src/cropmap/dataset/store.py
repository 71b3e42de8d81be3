"""The on-disk dataset: an xarray/Zarr (v2) store that numpy, xarray, zarr or Dask users can open.

Variables (``patch`` is the patch axis, ``y``/``x`` pixels inside a patch):
  x [patch, band, time, y, x] uint16 DN (gap-filled composite; 0 where never observed)
  observed [patch, time, y, x] bool (step had a valid observation)
  label [patch, y, x] int16 class index, -1 = ignore (background, border, other split, uncovered code)
  parcel [patch, y, x] int32 1 + row in the parcel table, 0 = none
  origin [patch, 2] int32 (row, col) of the patch in the imagery grid
  split [patch] str train / val / test
  parcel_id, parcel_code, parcel_split [parcel] the parcel table
Attributes (JSON strings): class_table, time_grid, norm (per-band mean/std of reflectance), grid
(crs WKT, transform, width, height), build_config, source, preprocessing (the record of
:mod:`cropmap.dataset.preprocessing`, copied into every checkpoint trained on it).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..errors import CropmapError
from ..nomenclature import ClassTable
from .timegrid import TimeGrid

if TYPE_CHECKING:
    from .preprocessing import Preprocessing

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    class_table: ClassTable
    time_grid: TimeGrid
    norm_mean: np.ndarray  # [C] reflectance
    norm_std: np.ndarray  # [C]
    bands: tuple[str, ...]
    grid: dict
    n_patches: dict[str, int]
    preprocessing: "Preprocessing"


def write_dataset(path: Path, ds: xr.Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)


def open_dataset(path: Path | str) -> xr.Dataset:
    """Lazily open a dataset written by ``cropmap build``."""
    path = Path(path)
    if not path.exists():
        raise CropmapError(f"{path}: dataset does not exist (make it with `cropmap build`)")
    try:
        ds = xr.open_zarr(path, consolidated=True, chunks=None)
    except Exception as e:
        raise CropmapError(f"{path}: not a cropmap dataset ({e})") from e
    if ds.attrs.get("cropmap_dataset_version") != FORMAT_VERSION:
        raise CropmapError(f"{path}: not a cropmap dataset of format version {FORMAT_VERSION}")
    return ds


def dataset_info(path: Path | str) -> DatasetInfo:
    ds = open_dataset(path)
    norm = json.loads(ds.attrs["norm"])
    splits = ds["split"].values
    return DatasetInfo(
        path=Path(path),
        class_table=ClassTable.from_json(ds.attrs["class_table"]),
        time_grid=TimeGrid.from_dict(json.loads(ds.attrs["time_grid"])),
        norm_mean=np.asarray(norm["mean"], dtype=np.float32),
        norm_std=np.asarray(norm["std"], dtype=np.float32),
        bands=tuple(str(b) for b in ds["band"].values),
        grid=json.loads(ds.attrs["grid"]),
        n_patches={s: int((splits == s).sum()) for s in ("train", "val", "test")},
        preprocessing=_record(ds, norm),
    )


def _record(ds: xr.Dataset, norm: dict) -> "Preprocessing":
    """The dataset's preprocessing record (one of the keep_scl of its build config, for datasets of before)."""
    from .preprocessing import Preprocessing

    if "preprocessing" in ds.attrs:
        return Preprocessing.from_dict(json.loads(ds.attrs["preprocessing"]))
    cfg = json.loads(ds.attrs.get("build_config", "{}"))
    return Preprocessing(bands=tuple(str(b) for b in ds["band"].values), keep_scl=tuple(cfg.get("keep_scl", (4, 5, 6, 7))),
                         cloud_mask="unknown", period_days=int(cfg.get("period_days", 10)),
                         time_grid=json.loads(ds.attrs["time_grid"]), norm=norm)
