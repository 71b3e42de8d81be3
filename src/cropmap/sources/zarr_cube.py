"""Sentinel-2 time series as one Zarr cube: the format ``cropmap fetch-imagery`` writes and
``build``/``predict`` read lazily, one date and window at a time.

Layout (an xarray Dataset in a Zarr v2 store with consolidated metadata, what ``write_cube`` writes)::

    dims    time: T acquisitions, band: 4, y: H rows (north to south), x: W columns (west to east)
    dn      (time, band, y, x) uint16   harmonized DN: reflectance = DN / 10000, 0 = nodata
                                        (L2A baseline >= 04.00 offset already removed); no _FillValue
    scl     (time, y, x) uint8          Sentinel-2 scene classification, 0 = no data     [optional]
    written (time) bool                 True once the step's dn/scl are complete (resumable writes)
    time    (time) datetime64[ns]       acquisition time, ascending
    band    (band) str                  "B2", "B3", "B4", "B8"
    y, x    float64                     pixel-centre coordinates in the CRS, evenly spaced
    spatial_ref                         CF grid mapping (scalar) with attrs crs_wkt and GeoTransform;
                                        dn/scl carry grid_mapping = "spatial_ref"
    attrs   crs (WKT), transform (a, b, c, d, e, f as in rasterio's Affine), cropmap_cube = 1
    chunks  dn (1, 4, 512, 512), scl (1, 512, 512), written (1,): one chunk per date and tile

Readers also accept the looser forms other tools write: one (time, y, x) variable per band (``B02``
or ``B2``, ``blue``...) instead of ``dn``; a boolean ``valid`` (time, y, x) instead of or besides
``scl``; the CRS only as a grid mapping variable or only as the ``crs`` attribute (WKT or
``EPSG:n``); no ``transform`` attribute (the grid then comes from the x/y coordinates); scaled or
float reflectance (see :class:`cropmap.sources.imagery.XarrayStack`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from .geotiff_folder import BANDS
from .imagery import XarrayStack

CUBE_VERSION = 1
CHUNK = 512

ReadStep = Callable[[int], tuple[np.ndarray, "np.ndarray | None"]]


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Zarr group (v2 or v3)."""
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


def write_cube(path: Path | str, times: Sequence[dt.date | dt.datetime | np.datetime64], read_step: ReadStep, *,
               crs: CRS | str, transform: Affine, width: int, height: int, scl: bool = True,
               chunk: int = CHUNK, workers: int = 1, dask_address: str | None = None,
               progress: Callable[[int], None] | None = None) -> Path:
    """Write a cube one time step at a time: ``read_step(i) -> (dn [4, H, W] uint16, scl [H, W] or None)``.

    The store is laid out first (metadata and coordinates, no pixels); each step is then written and
    flagged in ``written``. Calling again with the same times and grid resumes: only the steps not
    flagged are read and written. Another grid or time axis in an existing store is an error.

    Steps own their chunks (one date per chunk), so they may be read and written in parallel: ``workers``
    threads here, or as tasks on the Dask scheduler at ``dask_address`` (whose workers must see ``path``
    and be able to run ``read_step``).
    """
    path = Path(path)
    crs = CRS.from_user_input(crs)
    stamps = np.array([np.datetime64(t, "ns") for t in times])
    if len(stamps) == 0:
        raise CropmapError(f"{path}: no time step to write")
    if (np.diff(stamps) <= np.timedelta64(0)).any():
        raise CropmapError(f"{path}: times must be strictly increasing")
    if path.exists():
        written = _existing_steps(path, stamps, crs, transform, width, height, scl)
    else:
        _lay_out(path, stamps, crs, transform, width, height, scl, chunk)
        written = np.zeros(len(stamps), dtype=bool)
    todo = [int(i) for i in np.flatnonzero(~written)]
    if dask_address or workers > 1:
        import dask

        where = path.absolute()  # the workers of a cluster do not share this process's working directory
        tasks = [dask.delayed(_write_step, pure=False)(where, i, read_step, width, height, scl) for i in todo]
        if dask_address:
            from dask.distributed import as_completed

            from ..cluster import dask_client

            with dask_client(dask_address) as client:
                for f in as_completed(client.compute(tasks)):
                    f.result()
                    if progress:
                        progress(1)
        else:
            dask.compute(*tasks, scheduler="threads", num_workers=workers)
            if progress:
                progress(len(tasks))
        return path
    for i in todo:
        _write_step(path, i, read_step, width, height, scl)
        if progress:
            progress(1)
    return path


def _write_step(path: Path, i: int, read_step: ReadStep, width: int, height: int, scl: bool) -> None:
    """Read step ``i`` and write it into its region of the cube, then flag it."""
    dn, s = read_step(i)
    if dn.shape != (len(BANDS), height, width) or dn.dtype != np.uint16:
        raise CropmapError(f"{path}: step {i} gives {dn.dtype} {dn.shape}; expected uint16 (4, {height}, {width})")
    data = {"dn": (("time", "band", "y", "x"), dn[None])}
    if scl:
        if s is None or s.shape != (height, width):
            raise CropmapError(f"{path}: step {i} has no SCL of shape ({height}, {width})")
        data["scl"] = (("time", "y", "x"), s.astype(np.uint8)[None])
    region = {"time": slice(i, i + 1)}
    xr.Dataset(data).to_zarr(path, region=region, consolidated=False, zarr_format=2)
    # flagged only after the pixels are on disk, so an interrupted step is redone
    xr.Dataset({"written": (("time",), np.ones(1, bool))}).to_zarr(path, region=region, consolidated=False,
                                                                  zarr_format=2)


def _lay_out(path: Path, stamps: np.ndarray, crs: CRS, transform: Affine, width: int, height: int, scl: bool,
             chunk: int) -> None:
    import dask.array as da

    t = len(stamps)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    gm = {"grid_mapping": "spatial_ref"}
    data = {"dn": (("time", "band", "y", "x"), da.zeros((t, 4, height, width), dtype=np.uint16,
                                                        chunks=(1, 4, chunk, chunk)), gm),
            "written": (("time",), np.zeros(t, bool))}
    if scl:
        data["scl"] = (("time", "y", "x"), da.zeros((t, height, width), dtype=np.uint8, chunks=(1, chunk, chunk)), gm)
    geo = " ".join(str(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    ds = xr.Dataset(
        data,
        coords={"time": stamps, "band": list(BANDS), "y": ys, "x": xs,
                "spatial_ref": ((), np.int32(0), {"crs_wkt": crs.to_wkt(), "GeoTransform": geo})},
        attrs={"crs": crs.to_wkt(), "transform": list(transform)[:6], "cropmap_cube": CUBE_VERSION},
    )
    # no _FillValue: 0 is nodata by contract, and xarray would otherwise decode the DN to float
    encoding = {"dn": {"chunks": (1, 4, chunk, chunk), "dtype": "uint16", "_FillValue": None},
                "written": {"chunks": (1,)}}
    if scl:
        encoding["scl"] = {"chunks": (1, chunk, chunk), "dtype": "uint8", "_FillValue": None}
    ds.to_zarr(path, mode="w-", compute=False, encoding=encoding, consolidated=True, zarr_format=2)


def _existing_steps(path: Path, stamps: np.ndarray, crs: CRS, transform: Affine, width: int, height: int,
                    scl: bool) -> np.ndarray:
    ds = _open(path)
    same = ("written" in ds and ds.sizes.get("time") == len(stamps)
            and (ds["time"].values.astype("datetime64[ns]") == stamps).all()
            and (ds.sizes.get("y"), ds.sizes.get("x")) == (height, width)
            and np.allclose(list(ds.attrs.get("transform", []))[:6], list(transform)[:6])
            and CRS.from_user_input(ds.attrs.get("crs", "")) == crs and ("scl" in ds) == scl)
    if not same:
        raise CropmapError(f"{path}: exists with another time axis or grid; remove it or write elsewhere")
    return ds["written"].values.astype(bool)


def _open(path: Path) -> xr.Dataset:
    try:
        try:
            return xr.open_zarr(path, consolidated=True, chunks=None, mask_and_scale=False)
        except (KeyError, FileNotFoundError, ValueError):
            return xr.open_zarr(path, consolidated=False, chunks=None, mask_and_scale=False)
    except CropmapError:
        raise
    except Exception as e:  # zarr raises several kinds for "not a store"
        raise CropmapError(f"{path}: not a readable Zarr store ({type(e).__name__}: {e})") from e


def open_cube(path: Path | str) -> XarrayStack:
    """Open a Zarr cube lazily (nothing read until ``read``)."""
    path = Path(path)
    ds = _open(path)
    if "written" in ds:
        done = ds["written"].values.astype(bool)
        if not done.all():
            raise CropmapError(f"{path}: incomplete cube ({int(done.sum())} of {done.size} time steps written); "
                               "rerun the write to resume it")
    return XarrayStack(path, ds, stacked="dn" if "dn" in ds.data_vars else None)
